/*
 * crab-xattr: the file metadata work of fssnap that Node cannot do, in long-lived processes.
 *
 * Every path it touches is inside a tree a sandbox can write (an overlay upper, a staging upper
 * made from a manifest of one), so each request names its tree's root and every path is
 * relative to that root. A path's parent directory is resolved with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no symlink, "..", magic link
 * or mount point on the way is followed or crossed, so a symlink the sandbox planted cannot point
 * the helper at a host file. The last component is never followed either (*at calls with
 * AT_SYMLINK_NOFOLLOW, l*xattr through /proc/self/fd/<parent>/<name>). "." names the root.
 *
 * "serve" (the only mode): requests until stdin ends. Each request is "get\0" or "apply\0",
 * then the root ("<absolute path>\0"), then paths or records, then one empty field ("\0").
 * Each reply is "<length of the output in decimal>\n" followed by that output. On an error the
 * helper prints it on stderr and exits 1; the caller starts another.
 *
 * get: paths, each NUL-terminated. A path that does not exist (or whose parent is not a real
 * directory) is skipped. Output, for each attribute of each path, in input order and by name
 * (byte order): "<index of the path>\0<name>\0<value as lowercase hex>\0".
 *
 * apply: NUL-terminated records, in order:
 *   n <path> <whiteout|chr|blk|fifo> <raw dev_t>     mknodat, mode 0600
 *   o <path> <uid> <gid> <mode> <1 if symlink>       fchownat, then fchmodat unless a symlink
 *   x <path> <name> <value as hex>                   lsetxattr
 *   t <path> <mtime in ns>                           utimensat, atime = mtime
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "crab-xattr: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

/* The request's tree: its root, and the parent directory of the last path (reused by the next path in the same directory). */
static int root_fd = -1;
static int parent_fd = -1;
static char *parent_rel = NULL;

static void set_root(const char *root) {
  if (root_fd >= 0) close(root_fd);
  if (parent_fd >= 0) close(parent_fd);
  free(parent_rel);
  parent_fd = -1;
  parent_rel = NULL;
  if (root[0] != '/') { fprintf(stderr, "crab-xattr: root '%s' is not absolute\n", root); exit(1); }
  root_fd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root_fd < 0) die("open root", root);
}

/*
 * Resolves `rel` to (directory fd, last component) beneath the root. Returns -1 with errno set
 * (ENOENT, ENOTDIR, ELOOP for a symlink on the way, EXDEV for an escape) when the parent is not a
 * real directory inside the tree. `rel` must not be absolute or contain ".." components.
 */
static int resolve(const char *rel, const char **name) {
  if (rel[0] == '/' || rel[0] == '\0') { errno = EINVAL; return -1; }
  for (const char *c = rel; *c; ) {
    const char *e = strchrnul(c, '/');
    if (e - c == 2 && c[0] == '.' && c[1] == '.') { errno = EINVAL; return -1; }
    c = *e ? e + 1 : e;
  }
  const char *slash = strrchr(rel, '/');
  *name = slash ? slash + 1 : rel;
  if (!slash) return root_fd;
  size_t plen = (size_t)(slash - rel);
  if (parent_rel && strlen(parent_rel) == plen && memcmp(parent_rel, rel, plen) == 0) return parent_fd;
  if (parent_fd >= 0) close(parent_fd);
  free(parent_rel);
  parent_fd = -1;
  parent_rel = strndup(rel, plen);
  if (!parent_rel) die("strndup", rel);
  struct open_how how = {
    .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
  };
  int fd = (int)syscall(SYS_openat2, root_fd, parent_rel, &how, sizeof how);
  if (fd < 0) {
    int saved = errno;
    free(parent_rel);
    parent_rel = NULL;
    errno = saved;
    return -1;
  }
  return parent_fd = fd;
}

/* The path of `name` inside directory `dirfd` for the l*xattr calls (which have no *at form before Linux 6.13). */
static const char *at_path(int dirfd, const char *name) {
  static char buf[PATH_MAX + 64];
  if (snprintf(buf, sizeof buf, "/proc/self/fd/%d/%s", dirfd, name) >= (int)sizeof buf) { errno = ENAMETOOLONG; die("path", name); }
  return buf;
}

static int cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Output of the request under way (sent with its length). */
static FILE *out;

/* Reads the next NUL-terminated field of a request; dies on a truncated one. */
static char *field(char **buf, size_t *cap) {
  ssize_t n = getdelim(buf, cap, '\0', stdin);
  if (n <= 0 || (*buf)[n - 1] != '\0') { fprintf(stderr, "crab-xattr: truncated request\n"); exit(1); }
  return *buf;
}

static int list_xattrs(void) {
  size_t cap = 0;
  char *rel = NULL;
  unsigned long idx = 0;
  char *names = NULL, *val = NULL;
  size_t names_cap = 0, val_cap = 0;
  static const char hex[] = "0123456789abcdef";
  for (;;) {
    field(&rel, &cap);
    if (rel[0] == '\0') break; /* end of the request */
    const char *name;
    int dirfd = resolve(rel, &name);
    ssize_t len = -1;
    if (dirfd < 0) {
      /* gone, or its parent is not a real directory of the tree (then the path is not in the tree) */
      if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP && errno != EXDEV) die("resolve", rel);
    } else {
      const char *path = at_path(dirfd, name);
      for (;;) {
        ssize_t need = llistxattr(path, NULL, 0);
        if (need < 0 && errno == ENOENT) break;
        if (need < 0) die("llistxattr", rel);
        if (need == 0) { len = 0; break; }
        if ((size_t)need > names_cap) {
          names_cap = (size_t)need;
          names = realloc(names, names_cap);
          if (!names) die("realloc", rel);
        }
        len = llistxattr(path, names, names_cap);
        if (len >= 0) break;
        if (errno == ENOENT) break;
        if (errno != ERANGE) die("llistxattr", rel); /* ERANGE: grew meanwhile, ask again */
      }
      if (len > 0) {
        size_t count = 0;
        for (ssize_t i = 0; i < len; i++) if (names[i] == '\0') count++;
        const char **list = malloc(count * sizeof *list);
        if (!list) die("malloc", rel);
        size_t k = 0;
        for (ssize_t i = 0; i < len; i += (ssize_t)strlen(names + i) + 1) list[k++] = names + i;
        qsort(list, count, sizeof *list, cmp);
        for (size_t j = 0; j < count; j++) {
          ssize_t vl;
          for (;;) {
            ssize_t need = lgetxattr(path, list[j], NULL, 0);
            if (need < 0) die("lgetxattr", rel);
            if ((size_t)need + 1 > val_cap) {
              val_cap = (size_t)need + 1;
              val = realloc(val, val_cap);
              if (!val) die("realloc", rel);
            }
            vl = lgetxattr(path, list[j], val, val_cap);
            if (vl >= 0) break;
            if (errno != ERANGE) die("lgetxattr", rel); /* ERANGE: grew meanwhile, ask again */
          }
          fprintf(out, "%lu%c%s%c", idx, 0, list[j], 0);
          for (ssize_t b = 0; b < vl; b++) {
            putc(hex[(unsigned char)val[b] >> 4], out);
            putc(hex[(unsigned char)val[b] & 15], out);
          }
          putc(0, out);
        }
        free(list);
      }
    }
    idx++;
  }
  free(rel);
  free(names);
  free(val);
  return 0;
}

static unsigned long long number(const char *s, const char *path) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || end == s) { fprintf(stderr, "crab-xattr: bad number '%s' for %s\n", s, path); exit(1); }
  return v;
}

static int unhex(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

static int apply(void) {
  char *op = NULL, *path = NULL, *a = NULL, *b = NULL, *c = NULL, *d = NULL;
  size_t opc = 0, pathc = 0, ac = 0, bc = 0, cc = 0, dc = 0;
  for (;;) {
    field(&op, &opc);
    if (op[0] == '\0') break; /* end of the request */
    if (op[1] != '\0') { fprintf(stderr, "crab-xattr: bad apply record kind\n"); return 1; }
    field(&path, &pathc);
    const char *name;
    int dirfd = resolve(path, &name);
    if (dirfd < 0) die("resolve", path);
    switch (op[0]) {
    case 'n': {
      field(&a, &ac);
      field(&b, &bc);
      mode_t type = strcmp(a, "blk") == 0 ? S_IFBLK : strcmp(a, "fifo") == 0 ? S_IFIFO : S_IFCHR;
      if (strcmp(a, "whiteout") && strcmp(a, "chr") && strcmp(a, "blk") && strcmp(a, "fifo")) { fprintf(stderr, "crab-xattr: bad node kind %s\n", a); return 1; }
      if (mknodat(dirfd, name, type | 0600, (dev_t)number(b, path)) != 0) die("mknod", path);
      break;
    }
    case 'o': {
      field(&a, &ac);
      field(&b, &bc);
      field(&c, &cc);
      field(&d, &dc);
      if (fchownat(dirfd, name, (uid_t)number(a, path), (gid_t)number(b, path), AT_SYMLINK_NOFOLLOW) != 0) die("lchown", path);
      /* not through a symlink: glibc does AT_SYMLINK_NOFOLLOW with fchmodat2 or an O_PATH descriptor */
      if (strcmp(d, "1") != 0 && fchmodat(dirfd, name, (mode_t)(number(c, path) & 07777), AT_SYMLINK_NOFOLLOW) != 0) die("chmod", path);
      break;
    }
    case 'x': {
      field(&a, &ac);
      field(&b, &bc);
      size_t len = strlen(b);
      if (len % 2) { fprintf(stderr, "crab-xattr: odd hex value for %s\n", path); return 1; }
      for (size_t i = 0; i < len / 2; i++) b[i] = (char)(unhex(b[2 * i]) << 4 | unhex(b[2 * i + 1]));
      if (lsetxattr(at_path(dirfd, name), a, b, len / 2, 0) != 0) die("lsetxattr", path);
      break;
    }
    case 't': {
      field(&a, &ac);
      /* signed: times before 1970 exist; the nanoseconds of a timespec are never negative */
      char *end;
      errno = 0;
      long long ns = strtoll(a, &end, 10);
      if (errno || *end || end == a) { fprintf(stderr, "crab-xattr: bad time '%s' for %s\n", a, path); return 1; }
      long long sec = ns / 1000000000ll, rem = ns % 1000000000ll;
      if (rem < 0) { sec -= 1; rem += 1000000000ll; }
      struct timespec ts[2] = {{(time_t)sec, (long)rem}, {(time_t)sec, (long)rem}};
      if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) != 0) die("utimensat", path);
      break;
    }
    default:
      fprintf(stderr, "crab-xattr: unknown apply record '%c'\n", op[0]);
      return 1;
    }
  }
  free(op);
  free(path);
  free(a);
  free(b);
  free(c);
  free(d);
  return 0;
}

/* Requests until stdin ends; each reply is the request's output, preceded by its length. */
static int serve(void) {
  char *op = NULL, *root = NULL, *reply = NULL;
  size_t opc = 0, rootc = 0, reply_len = 0;
  while (getdelim(&op, &opc, '\0', stdin) > 0) {
    set_root(field(&root, &rootc));
    out = open_memstream(&reply, &reply_len);
    if (!out) die("open_memstream", "reply");
    int rc;
    if (strcmp(op, "get") == 0) rc = list_xattrs();
    else if (strcmp(op, "apply") == 0) rc = apply();
    else { fprintf(stderr, "crab-xattr: unknown request '%s'\n", op); return 2; }
    if (rc != 0) return rc;
    if (fclose(out) != 0) die("write", "reply");
    if (printf("%zu\n", reply_len) < 0 || fwrite(reply, 1, reply_len, stdout) != reply_len || fflush(stdout) != 0) die("write", "stdout");
    free(reply);
    reply = NULL;
  }
  if (ferror(stdin)) die("read", "stdin");
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "serve") == 0) return serve();
  fprintf(stderr, "usage: crab-xattr serve < requests (see the comment at the top of crab-xattr.c)\n");
  return 2;
}
