/*
 * crab-xattr: the file metadata work of fssnap that Node cannot do, in one short process.
 *
 * Without arguments (capture): lists the extended attributes of many paths (every changed entry
 * of an overlay upper, trusted.overlay.* included, which needs root). stdin: paths, each
 * terminated by NUL. Symlinks are not followed; a path that does not exist is skipped. stdout,
 * for each attribute of each path, in input order and by name (byte order):
 * "<index of the path>\0<name>\0<value as lowercase hex>\0".
 *
 * With "apply" (materialize): applies NUL-terminated records from stdin, in order, never
 * following symlinks:
 *   n <path> <whiteout|chr|blk|fifo> <raw dev_t>     mknod, mode 0600
 *   o <path> <uid> <gid> <mode> <1 if symlink>       lchown, then chmod unless a symlink
 *   x <path> <name> <value as hex>                   lsetxattr
 *   t <path> <mtime in ns>                           utimensat, atime = mtime
 * Exit 1 on any error, naming the record's path.
 *
 * With "serve": both, for many requests, so that a busy host does not fork a process per capture
 * (a fork of a big Node process blocks its event loop). Each request is "get\0" or "apply\0",
 * then the paths or records as above, then one empty field ("\0"). Each reply is
 * "<length of the output in decimal>\n" followed by that output. On an error the helper exits as
 * above; the caller starts another.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "crab-xattr: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static int cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Output of the request under way: stdout, or a buffer while serving (sent with its length). */
static FILE *out;

static int list_xattrs(int serve) {
  size_t cap = 0;
  char *path = NULL;
  ssize_t n;
  unsigned long idx = 0;
  char *names = NULL, *val = NULL;
  size_t names_cap = 0, val_cap = 0;
  static const char hex[] = "0123456789abcdef";
  while ((n = getdelim(&path, &cap, '\0', stdin)) > 0) {
    if (path[n - 1] != '\0') { fprintf(stderr, "crab-xattr: unterminated path\n"); return 1; }
    if (serve && n == 1) break; /* end of the request */
    ssize_t len;
    for (;;) {
      ssize_t need = llistxattr(path, NULL, 0);
      if (need < 0 && errno == ENOENT) { len = -1; break; }
      if (need < 0) die("llistxattr", path);
      if (need == 0) { len = 0; break; }
      if ((size_t)need > names_cap) {
        names_cap = (size_t)need;
        names = realloc(names, names_cap);
        if (!names) die("realloc", path);
      }
      len = llistxattr(path, names, names_cap);
      if (len >= 0) break;
      if (errno == ENOENT) { len = -1; break; }
      if (errno != ERANGE) die("llistxattr", path); /* ERANGE: grew meanwhile, ask again */
    }
    if (len > 0) {
      size_t count = 0;
      for (ssize_t i = 0; i < len; i++) if (names[i] == '\0') count++;
      const char **list = malloc(count * sizeof *list);
      if (!list) die("malloc", path);
      size_t k = 0;
      for (ssize_t i = 0; i < len; i += (ssize_t)strlen(names + i) + 1) list[k++] = names + i;
      qsort(list, count, sizeof *list, cmp);
      for (size_t j = 0; j < count; j++) {
        ssize_t vl;
        for (;;) {
          ssize_t need = lgetxattr(path, list[j], NULL, 0);
          if (need < 0) die("lgetxattr", path);
          if ((size_t)need + 1 > val_cap) {
            val_cap = (size_t)need + 1;
            val = realloc(val, val_cap);
            if (!val) die("realloc", path);
          }
          vl = lgetxattr(path, list[j], val, val_cap);
          if (vl >= 0) break;
          if (errno != ERANGE) die("lgetxattr", path); /* ERANGE: grew meanwhile, ask again */
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
    idx++;
  }
  free(path);
  free(names);
  free(val);
  if (ferror(stdin)) die("read", "stdin");
  if (serve && n <= 0) { fprintf(stderr, "crab-xattr: request not terminated\n"); exit(1); }
  if (fflush(out) != 0) die("write", "stdout");
  return 0;
}

/* Reads the next NUL-terminated field of an apply record; dies on a truncated record. */
static char *field(char **buf, size_t *cap) {
  ssize_t n = getdelim(buf, cap, '\0', stdin);
  if (n <= 0 || (*buf)[n - 1] != '\0') { fprintf(stderr, "crab-xattr: truncated apply record\n"); exit(1); }
  return *buf;
}

static unsigned long long number(const char *s, const char *path) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || end == s) { fprintf(stderr, "crab-xattr: bad number '%s' for %s\n", s, path); exit(1); }
  return v;
}

static int unhex(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

static int apply(int serve) {
  char *op = NULL, *path = NULL, *a = NULL, *b = NULL, *c = NULL, *d = NULL;
  size_t opc = 0, pathc = 0, ac = 0, bc = 0, cc = 0, dc = 0;
  ssize_t n;
  while ((n = getdelim(&op, &opc, '\0', stdin)) > 0) {
    if (serve && n == 1) break; /* end of the request */
    if (n != 2) { fprintf(stderr, "crab-xattr: bad apply record kind\n"); return 1; }
    field(&path, &pathc);
    switch (op[0]) {
    case 'n': {
      field(&a, &ac);
      field(&b, &bc);
      mode_t type = strcmp(a, "blk") == 0 ? S_IFBLK : strcmp(a, "fifo") == 0 ? S_IFIFO : S_IFCHR;
      if (strcmp(a, "whiteout") && strcmp(a, "chr") && strcmp(a, "blk") && strcmp(a, "fifo")) { fprintf(stderr, "crab-xattr: bad node kind %s\n", a); return 1; }
      if (mknod(path, type | 0600, (dev_t)number(b, path)) != 0) die("mknod", path);
      break;
    }
    case 'o': {
      field(&a, &ac);
      field(&b, &bc);
      field(&c, &cc);
      field(&d, &dc);
      if (lchown(path, (uid_t)number(a, path), (gid_t)number(b, path)) != 0) die("lchown", path);
      if (strcmp(d, "1") != 0 && chmod(path, (mode_t)(number(c, path) & 07777)) != 0) die("chmod", path);
      break;
    }
    case 'x': {
      field(&a, &ac);
      field(&b, &bc);
      size_t len = strlen(b);
      if (len % 2) { fprintf(stderr, "crab-xattr: odd hex value for %s\n", path); return 1; }
      for (size_t i = 0; i < len / 2; i++) b[i] = (char)(unhex(b[2 * i]) << 4 | unhex(b[2 * i + 1]));
      if (lsetxattr(path, a, b, len / 2, 0) != 0) die("lsetxattr", path);
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
      if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) die("utimensat", path);
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
  if (ferror(stdin)) die("read", "stdin");
  if (serve && n <= 0) { fprintf(stderr, "crab-xattr: request not terminated\n"); exit(1); }
  return 0;
}

/* Requests until stdin ends; each reply is the request's output, preceded by its length. */
static int serve(void) {
  char *op = NULL, *reply = NULL;
  size_t opc = 0, reply_len = 0;
  ssize_t n;
  while ((n = getdelim(&op, &opc, '\0', stdin)) > 0) {
    out = open_memstream(&reply, &reply_len);
    if (!out) die("open_memstream", "reply");
    int rc;
    if (strcmp(op, "get") == 0) rc = list_xattrs(1);
    else if (strcmp(op, "apply") == 0) rc = apply(1);
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
  out = stdout;
  if (argc == 2 && strcmp(argv[1], "apply") == 0) return apply(0);
  if (argc == 2 && strcmp(argv[1], "serve") == 0) return serve();
  if (argc != 1) { fprintf(stderr, "usage: crab-xattr [apply|serve] < records\n"); return 2; }
  return list_xattrs(0);
}
