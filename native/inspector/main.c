/* crab-inspector: one per host. Loads the BPF program, follows registered sandbox cgroups and
 * answers JSON-line requests on stdin with JSON-line replies on stdout (see README.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/types.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "inspector.h"
#include "agg.h"
#ifndef NO_SKEL
#include "inspector.skel.h"
#endif

#define AT_FDCWD_ (-100)
#define MAX_SANDBOXES 4096
#define RENAME_EXCHANGE_ 2
#define POLL_MS 50

static struct inspector_bpf *skel;
static struct ring_buffer *rb;
static int use_bpf = 1;
static struct sandbox *sbs[MAX_SANDBOXES];
static int nsbs;
static uint64_t events_total, events_unmatched;

/* ---- per-process cwd cache (events keep it current: fork copies, chdir updates, exit drops) ---- */
#define CWD_BUCKETS 16384
struct cwd_ent {
  uint32_t pid;
  char *cwd;
  struct cwd_ent *next;
};
static struct cwd_ent *cwd_tab[CWD_BUCKETS];

static struct cwd_ent **cwd_slot(uint32_t pid)
{
  struct cwd_ent **pp = &cwd_tab[pid % CWD_BUCKETS];
  while (*pp && (*pp)->pid != pid)
    pp = &(*pp)->next;
  return pp;
}
static const char *cwd_get(uint32_t pid)
{
  struct cwd_ent *e = *cwd_slot(pid);
  return e ? e->cwd : NULL;
}
static void cwd_set(uint32_t pid, const char *cwd)
{
  struct cwd_ent **pp = cwd_slot(pid);
  char *c = strdup(cwd);
  if (!c)
    return;
  if (*pp) {
    free((*pp)->cwd);
    (*pp)->cwd = c;
    return;
  }
  struct cwd_ent *e = calloc(1, sizeof(*e));
  if (!e) {
    free(c);
    return;
  }
  e->pid = pid;
  e->cwd = c;
  *pp = e;
}
static void cwd_del(uint32_t pid)
{
  struct cwd_ent **pp = cwd_slot(pid);
  if (*pp) {
    struct cwd_ent *e = *pp;
    *pp = e->next;
    free(e->cwd);
    free(e);
  }
}

static struct sandbox *last;
static struct sandbox *sb_by_cgid(uint64_t cgid)
{
  if (last && last->cgid == cgid)
    return last;
  for (int i = 0; i < nsbs; i++)
    if (sbs[i]->cgid == cgid)
      return last = sbs[i];
  return NULL;
}
static int sb_index(const char *name)
{
  for (int i = 0; i < nsbs; i++)
    if (strcmp(sbs[i]->name, name) == 0)
      return i;
  return -1;
}

/* readlink of /proc/PID/<what>, as seen inside the sandbox's root. */
static int proc_link(struct sandbox *s, uint32_t pid, const char *what, char *out, size_t len)
{
  char p[64];
  snprintf(p, sizeof(p), "/proc/%u/root", pid);
  char root[512];
  ssize_t rn = readlink(p, root, sizeof(root) - 1);
  if (rn > 0) {
    root[rn] = 0;
    snprintf(s->root, sizeof(s->root), "%s", root);
  }
  snprintf(p, sizeof(p), "/proc/%u/%s", pid, what);
  ssize_t n = readlink(p, out, len - 1);
  if (n <= 0)
    return -1;
  out[n] = 0;
  if (out[0] != '/')
    return -2; /* pipe:[…], socket:[…], anon_inode:… */
  size_t dl = strlen(" (deleted)");
  if ((size_t)n > dl && strcmp(out + n - dl, " (deleted)") == 0)
    return -3;
  size_t rl = strlen(s->root);
  if (rl > 1 && strncmp(out, s->root, rl) == 0 && (out[rl] == '/' || out[rl] == 0)) {
    if (out[rl] == 0)
      strcpy(out, "/");
    else
      memmove(out, out + rl, strlen(out + rl) + 1);
  }
  return 0;
}

static const char *cwd_of(struct sandbox *s, uint32_t pid, char *buf, size_t len)
{
  const char *c = cwd_get(pid);
  if (c)
    return c;
  if (proc_link(s, pid, "cwd", buf, len) != 0)
    return NULL;
  cwd_set(pid, buf);
  return buf;
}

/* The directory the BPF program walked (components leaf first: "c/b/a/" is /a/b/c). */
static int d1_path(const struct ev_path *e, char *out, size_t len)
{
  if (!(e->flags & EVF_D1) || (e->flags & EVF_D1TRUNC))
    return -1;
  char tmp[DIRLEN + 1];
  memcpy(tmp, e->d1, DIRLEN);
  tmp[DIRLEN] = 0;
  size_t n = strlen(tmp), o = 0;
  out[0] = 0;
  /* walk components from the end of tmp (the root side) */
  while (n > 0) {
    if (tmp[n - 1] == '/')
      n--;
    size_t end = n;
    while (n > 0 && tmp[n - 1] != '/')
      n--;
    size_t cl = end - n;
    if (o + cl + 2 >= len)
      return -1;
    out[o++] = '/';
    memcpy(out + o, tmp + n, cl);
    o += cl;
  }
  if (o == 0)
    out[o++] = '/';
  out[o] = 0;
  return 0;
}

/* Resolves (dirfd, rel) of process pid to an absolute path inside the sandbox. 0 on success.
 * The base directory comes from the kernel-side walk when there is one (e->dfd), else /proc. */
static int resolve_e(struct sandbox *s, const struct ev_path *e, uint32_t pid, int64_t dirfd, const char *rel,
                     char *out, size_t len)
{
  if (rel[0] == '/') {
    snprintf(out, len, "%s", rel);
    agg_normalize(out);
    return 0;
  }
  char base[PATH_MAX];
  const char *b;
  if (e && (int)dirfd == e->dfd && d1_path(e, base, sizeof(base)) == 0) {
    b = base;
  } else if ((int)dirfd == AT_FDCWD_) {
    b = cwd_of(s, pid, base, sizeof(base));
  } else {
    char what[32];
    snprintf(what, sizeof(what), "fd/%d", (int)dirfd);
    b = proc_link(s, pid, what, base, sizeof(base)) == 0 ? base : NULL;
  }
  if (!b)
    return -1;
  snprintf(out, len, "%s/%s", b, rel);
  agg_normalize(out);
  return 0;
}

#define resolve(s, pid, dirfd, rel, out, len) resolve_e(s, e, pid, dirfd, rel, out, len)

static void path_effect_e(struct sandbox *s, const struct ev_path *e, uint32_t pid, int64_t dirfd, const char *rel,
                          enum agg_op op)
{
  char out[2 * PATH_MAX];
  if (resolve(s, pid, dirfd, rel, out, sizeof(out)) != 0) {
    s->unresolved++;
    return;
  }
  agg_path(s, op, out);
}

#define path_effect(s, pid, dirfd, rel, op) path_effect_e(s, e, pid, dirfd, rel, op)

static void handle_path(struct sandbox *s, const struct ev_path *e)
{
  uint32_t pid = e->h.tgid;
  const __s64 *a = e->args;
  if (e->flags & (EVF_TRUNC1 | EVF_TRUNC2)) {
    agg_unknown(s, "path longer than the inspector reads");
    return;
  }
  switch (e->h.nr) {
  case 2: /* open */
  case 85: /* creat */
    path_effect(s, pid, AT_FDCWD_, e->p1, (e->flags & EVF_CREATED) ? AGG_CREATE : AGG_MODIFY);
    break;
  case 257: /* openat */
  case 437: /* openat2 */
    path_effect(s, pid, a[0], e->p1, (e->flags & EVF_CREATED) ? AGG_CREATE : AGG_MODIFY);
    break;
  case 76: case 90: case 92: case 94: case 132: case 188: case 189: case 197: case 198: case 235:
    path_effect(s, pid, AT_FDCWD_, e->p1, AGG_MODIFY);
    break;
  case 260: case 261: case 268: case 452: case 280: case 463: case 466:
    path_effect(s, pid, a[0], e->p1, AGG_MODIFY);
    break;
  case 83: case 133: /* mkdir, mknod */
    path_effect(s, pid, AT_FDCWD_, e->p1, AGG_CREATE);
    break;
  case 258: case 259: /* mkdirat, mknodat */
    path_effect(s, pid, a[0], e->p1, AGG_CREATE);
    break;
  case 84: case 87: /* rmdir, unlink */
    path_effect(s, pid, AT_FDCWD_, e->p1, AGG_REMOVE);
    break;
  case 263: /* unlinkat */
    path_effect(s, pid, a[0], e->p1, AGG_REMOVE);
    break;
  case 88: /* symlink: p1 = linkpath */
    path_effect(s, pid, AT_FDCWD_, e->p1, AGG_CREATE);
    break;
  case 266: /* symlinkat(target, newdirfd, linkpath): p1 = linkpath */
    path_effect(s, pid, a[1], e->p1, AGG_CREATE);
    break;
  case 86: /* link(old, new) */
    path_effect(s, pid, AT_FDCWD_, e->p2, AGG_CREATE);
    break;
  case 265: /* linkat(olddfd, old, newdfd, new) */
    path_effect(s, pid, a[2], e->p2, AGG_CREATE);
    break;
  case 82: case 264: case 316: { /* rename, renameat, renameat2 */
    int64_t d1 = e->h.nr == 82 ? AT_FDCWD_ : a[0];
    int64_t d2 = e->h.nr == 82 ? AT_FDCWD_ : a[2];
    char from[2 * PATH_MAX], to[2 * PATH_MAX];
    if (resolve(s, pid, d1, e->p1, from, sizeof(from)) != 0 || resolve(s, pid, d2, e->p2, to, sizeof(to)) != 0) {
      s->unresolved++;
      break;
    }
    agg_rename(s, from, to, e->h.nr == 316 && (a[4] & RENAME_EXCHANGE_));
    break;
  }
  case 80: { /* chdir */
    /* at sys_exit the walked cwd (d1) already is the new directory */
    char out[2 * PATH_MAX];
    if (e->p1[0] == '/') {
      snprintf(out, sizeof(out), "%s", e->p1);
      agg_normalize(out);
      cwd_set(pid, out);
    } else if (d1_path(e, out, sizeof(out)) == 0 || resolve(s, pid, AT_FDCWD_, e->p1, out, sizeof(out)) == 0)
      cwd_set(pid, out);
    else
      cwd_del(pid);
    break;
  }
  default:
    break;
  }
}

static void handle_fdop(struct sandbox *s, const struct ev_path *e)
{
  char what[32], out[PATH_MAX];
  if (e->flags & EVF_UNLINKED)
    return; /* a file with no name left: no path effect */
  int r = d1_path(e, out, sizeof(out));
  if (r != 0) {
    snprintf(what, sizeof(what), "fd/%d", e->dfd);
    r = proc_link(s, e->h.tgid, what, out, sizeof(out));
  }
  if (e->h.nr == 81) { /* fchdir */
    if (r == 0)
      cwd_set(e->h.tgid, out);
    else
      cwd_del(e->h.tgid);
    return;
  }
  if (r == -3)
    return; /* an unlinked file: no path effect */
  if (r != 0) {
    s->unresolved++;
    return;
  }
  agg_path(s, AGG_MODIFY, out);
}

static int on_event(void *ctx, void *data, size_t len)
{
  const struct ev_hdr *h = data;
  events_total++;
  struct sandbox *s = sb_by_cgid(h->cgid);
  if (!s) {
    events_unmatched++;
    return 0;
  }
  switch (h->type) {
  case EV_PATH:
    handle_path(s, data);
    break;
  case EV_FDOP:
    handle_fdop(s, data);
    break;
  case EV_FORK: {
    const struct ev_small *e = data;
    if (e->child_pid != e->child_tgid)
      break; /* a new thread */
    agg_fork(s, e->child_tgid);
    agg_compat_fork(s, h->tgid, e->child_tgid);
    const char *c = cwd_get(h->tgid);
    if (c) {
      char *dup = strdup(c);
      if (dup) {
        cwd_set(e->child_tgid, dup);
        free(dup);
      }
    }
    break;
  }
  case EV_EXEC:
    agg_exec(s, h->tgid);
    agg_compat_exec(s, h->tgid, !!(((const struct ev_path *)data)->flags & EVF_COMPAT));
    break;
  case EV_EXIT:
    agg_exit(s, h->tgid);
    agg_compat_exit(s, h->tgid);
    cwd_del(h->tgid);
    break;
  case EV_NET: {
    const struct ev_small *e = data;
    agg_net(s, e->kind, h->tgid, e->family, e->addr, e->port);
    break;
  }
  case EV_UNKNOWN:
    agg_unknown(s, "io_uring in use: its operations are not visible");
    break;
  }
  return 0;
}

/* ---- minimal JSON field access for flat request objects ---- */
static const char *jfield(const char *line, const char *key)
{
  char pat[80];
  snprintf(pat, sizeof(pat), "\"%s\"", key);
  const char *p = line;
  while ((p = strstr(p, pat))) {
    const char *q = p + strlen(pat);
    while (*q == ' ' || *q == '\t')
      q++;
    if (*q == ':') {
      q++;
      while (*q == ' ' || *q == '\t')
        q++;
      return q;
    }
    p = q;
  }
  return NULL;
}
static int jstr(const char *line, const char *key, char *out, size_t len)
{
  const char *q = jfield(line, key);
  if (!q || *q != '"')
    return -1;
  q++;
  size_t n = 0;
  while (*q && *q != '"' && n + 1 < len) {
    if (*q == '\\' && q[1])
      q++;
    out[n++] = *q++;
  }
  out[n] = 0;
  return *q == '"' ? 0 : -1;
}
static int jnum(const char *line, const char *key, long long *out)
{
  const char *q = jfield(line, key);
  if (!q)
    return -1;
  if (*q == '"')
    q++;
  char *end;
  errno = 0;
  long long v = strtoll(q, &end, 10);
  if (end == q || errno)
    return -1;
  *out = v;
  return 0;
}
static int jbool(const char *line, const char *key, int dflt)
{
  const char *q = jfield(line, key);
  if (!q)
    return dflt;
  if (strncmp(q, "true", 4) == 0)
    return 1;
  if (strncmp(q, "false", 5) == 0)
    return 0;
  return dflt;
}

static void reply_start(const char *id)
{
  fputs("{\"id\":", stdout);
  if (id[0])
    fputs(id, stdout);
  else
    fputs("null", stdout);
}
static void reply_err(const char *id, const char *code, const char *msg)
{
  reply_start(id);
  fprintf(stdout, ",\"ok\":false,\"code\":\"%s\",\"error\":", code);
  json_str(stdout, msg);
  fputs("}\n", stdout);
  fflush(stdout);
}

static void sync_counters(struct sandbox *s)
{
  if (!use_bpf)
    return;
  struct sb_val v;
  if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.sandboxes), &s->cgid, &v) == 0) {
    s->bytes = v.bytes;
    s->drops = v.drops;
    s->events = v.events;
    s->interactions = v.interactions;
  }
}

static void handle_line(char *line)
{
  char id[64] = "", op[32] = "", name[128] = "";
  const char *idp = jfield(line, "id");
  if (idp) {
    size_t n = 0;
    if (*idp == '"') { /* keep string ids verbatim */
      id[n++] = '"';
      idp++;
      while (*idp && *idp != '"' && n < sizeof(id) - 2)
        id[n++] = *idp++;
      id[n++] = '"';
    } else {
      while ((*idp == '-' || (*idp >= '0' && *idp <= '9')) && n < sizeof(id) - 1)
        id[n++] = *idp++;
    }
    id[n] = 0;
  }
  if (jstr(line, "op", op, sizeof(op)) != 0) {
    reply_err(id, "BAD_REQUEST", "missing op");
    return;
  }
  jstr(line, "sandbox", name, sizeof(name));

  if (strcmp(op, "ping") == 0) {
    reply_start(id);
    fputs(",\"ok\":true}\n", stdout);
  } else if (strcmp(op, "add") == 0) {
    long long cg;
    if (!name[0] || jnum(line, "cgroup_id", &cg) != 0 || cg <= 0) {
      reply_err(id, "BAD_REQUEST", "add needs sandbox and cgroup_id");
      return;
    }
    if (sb_index(name) >= 0 || sb_by_cgid((uint64_t)cg)) {
      reply_err(id, "EXISTS", "sandbox or cgroup already registered");
      return;
    }
    if (nsbs >= MAX_SANDBOXES) {
      reply_err(id, "FULL", "too many sandboxes");
      return;
    }
    struct sandbox *s = agg_new(name, (uint64_t)cg);
    if (!s) {
      reply_err(id, "NOMEM", "out of memory");
      return;
    }
    if (use_bpf) {
      struct sb_val v = { 0 };
      uint64_t gen = 0, key = (uint64_t)cg;
      if (bpf_map_update_elem(bpf_map__fd(skel->maps.gens), &key, &gen, BPF_ANY) ||
          bpf_map_update_elem(bpf_map__fd(skel->maps.sandboxes), &key, &v, BPF_NOEXIST)) {
        agg_free(s);
        reply_err(id, "BPF", strerror(errno));
        return;
      }
    }
    sbs[nsbs++] = s;
    reply_start(id);
    fputs(",\"ok\":true}\n", stdout);
  } else if (strcmp(op, "remove") == 0) {
    int i = sb_index(name);
    if (i < 0) {
      reply_err(id, "NOT_FOUND", "no such sandbox");
      return;
    }
    struct sandbox *s = sbs[i];
    if (use_bpf) {
      bpf_map_delete_elem(bpf_map__fd(skel->maps.sandboxes), &s->cgid);
      bpf_map_delete_elem(bpf_map__fd(skel->maps.gens), &s->cgid);
      ring_buffer__consume(rb);
    }
    sbs[i] = sbs[--nsbs];
    agg_free(s);
    last = NULL;
    reply_start(id);
    fputs(",\"ok\":true}\n", stdout);
  } else if (strcmp(op, "effects") == 0) {
    int i = sb_index(name);
    if (i < 0) {
      reply_err(id, "NOT_FOUND", "no such sandbox");
      return;
    }
    struct sandbox *s = sbs[i];
    if (use_bpf)
      ring_buffer__consume(rb); /* everything the turn did, up to now */
    sync_counters(s);
    reply_start(id);
    fputs(",\"ok\":true,", stdout);
    agg_report(s, stdout);
    fputs("}\n", stdout);
    if (jbool(line, "reset", 1)) {
      if (use_bpf) {
        uint64_t gen = s->turn + 1;
        bpf_map_update_elem(bpf_map__fd(skel->maps.gens), &s->cgid, &gen, BPF_ANY);
      }
      agg_reset(s);
    }
  } else if (strcmp(op, "stats") == 0) {
    reply_start(id);
    fprintf(stdout, ",\"ok\":true,\"bpf\":%s,\"sandboxes\":%d,\"events\":%llu,\"unmatched\":%llu}\n",
            use_bpf ? "true" : "false", nsbs, (unsigned long long)events_total,
            (unsigned long long)events_unmatched);
  } else if (strcmp(op, "inject") == 0 && !use_bpf) {
    /* test mode: feed already-resolved effects into the aggregator */
    int i = sb_index(name);
    if (i < 0) {
      reply_err(id, "NOT_FOUND", "no such sandbox");
      return;
    }
    struct sandbox *s = sbs[i];
    char kind[32] = "", path[PATH_MAX] = "", path2[PATH_MAX] = "", addr[64] = "";
    long long pid = 0, port = 0, n = 0;
    jstr(line, "kind", kind, sizeof(kind));
    jstr(line, "path", path, sizeof(path));
    jstr(line, "path2", path2, sizeof(path2));
    jstr(line, "addr", addr, sizeof(addr));
    jnum(line, "pid", &pid);
    jnum(line, "port", &port);
    if (path[0])
      agg_normalize(path);
    if (path2[0])
      agg_normalize(path2);
    if (strcmp(kind, "create") == 0)
      agg_path(s, AGG_CREATE, path);
    else if (strcmp(kind, "modify") == 0)
      agg_path(s, AGG_MODIFY, path);
    else if (strcmp(kind, "remove") == 0)
      agg_path(s, AGG_REMOVE, path);
    else if (strcmp(kind, "rename") == 0 || strcmp(kind, "exchange") == 0)
      agg_rename(s, path, path2, kind[0] == 'e');
    else if (strcmp(kind, "fork") == 0)
      agg_fork(s, (uint32_t)pid);
    else if (strcmp(kind, "exec") == 0)
      agg_exec(s, (uint32_t)pid);
    else if (strcmp(kind, "exit") == 0)
      agg_exit(s, (uint32_t)pid);
    else if (strcmp(kind, "connect") == 0 || strcmp(kind, "sendto") == 0 || strcmp(kind, "listen") == 0) {
      uint8_t a[16] = { 0 };
      uint16_t fam = strchr(addr, ':') ? 10 : 2;
      inet_pton(fam == 10 ? AF_INET6 : AF_INET, addr, a);
      agg_net(s, kind[0] == 'l' ? NET_LISTEN : kind[0] == 'c' ? NET_CONNECT : NET_SENDTO, (uint32_t)pid, fam, a,
              (uint16_t)port);
    } else if (strcmp(kind, "drop") == 0) {
      jnum(line, "n", &n);
      s->drops += (uint64_t)(n > 0 ? n : 1);
    } else if (strcmp(kind, "bytes") == 0) {
      jnum(line, "n", &n);
      s->bytes += (uint64_t)n;
    } else if (strcmp(kind, "interaction") == 0) {
      jnum(line, "n", &n);
      s->interactions += (uint64_t)(n > 0 ? n : 1);
    } else if (strcmp(kind, "unknown") == 0)
      agg_unknown(s, path[0] ? path : "injected");
    else {
      reply_err(id, "BAD_REQUEST", "unknown inject kind");
      return;
    }
    reply_start(id);
    fputs(",\"ok\":true}\n", stdout);
  } else {
    reply_err(id, "BAD_REQUEST", "unknown op");
  }
  fflush(stdout);
}

/* The syscalls whose exit the BPF program follows (syscalls:sys_exit_<name>): every one it
 * handles, and no other (each other syscall then costs the kernel a bitmap test, no program run). */
static const char *const SYSCALLS[] = {
  "write", "pwrite64", "writev", "pwritev", "pwritev2", "sendfile64", "splice", "copy_file_range",
  "connect", "sendto", "sendmsg", "sendmmsg", "listen", "io_uring_setup",
  "open", "openat", "openat2", "creat", "open_by_handle_at", "mmap", "fallocate", "truncate", "ftruncate",
  "chdir", "fchdir", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
  "unlink", "unlinkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown",
  "fchown", "lchown", "fchownat", "utime", "utimes", "futimesat", "utimensat", "mknod", "mknodat",
  "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat",
  "removexattrat",
  "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal", "ptrace",
  "process_vm_writev", "tee", "vmsplice",
};
#define NSYSCALLS (sizeof(SYSCALLS) / sizeof(SYSCALLS[0]))
static struct bpf_link *sys_links[NSYSCALLS];

/* Attaches on_sys_exit to each syscall's exit tracepoint. A syscall this kernel does not have
 * (no tracepoint directory) is skipped: nothing can call it. */
static int attach_syscalls(void)
{
  for (size_t i = 0; i < NSYSCALLS; i++) {
    char dir[128];
    snprintf(dir, sizeof(dir), "/sys/kernel/tracing/events/syscalls/sys_exit_%s", SYSCALLS[i]);
    if (access(dir, F_OK) != 0 && errno == ENOENT && access("/sys/kernel/tracing/events/syscalls", F_OK) == 0)
      continue;
    char tp[64];
    snprintf(tp, sizeof(tp), "sys_exit_%s", SYSCALLS[i]);
    sys_links[i] = bpf_program__attach_tracepoint(skel->progs.on_sys_exit, "syscalls", tp);
    if (!sys_links[i]) {
      int err = errno;
      fprintf(stderr, "attach syscalls:%s: %s\n", tp, strerror(err));
      errno = err;
      return -1;
    }
  }
  return 0;
}

static void detach_syscalls(void)
{
  for (size_t i = 0; i < NSYSCALLS; i++)
    if (sys_links[i])
      bpf_link__destroy(sys_links[i]);
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list args)
{
  if (level == LIBBPF_DEBUG)
    return 0;
  return vfprintf(stderr, fmt, args);
}

int main(int argc, char **argv)
{
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--no-bpf") == 0)
      use_bpf = 0;
    else {
      fprintf(stderr, "usage: crab-inspector [--no-bpf]\n");
      return 2;
    }
  }
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  if (use_bpf) {
    libbpf_set_print(libbpf_log);
    struct rlimit r = { RLIM_INFINITY, RLIM_INFINITY };
    setrlimit(RLIMIT_MEMLOCK, &r);
    skel = inspector_bpf__open_and_load();
    if (!skel) {
      fprintf(stdout, "{\"event\":\"error\",\"error\":\"cannot load the BPF program: %s\"}\n", strerror(errno));
      return 1;
    }
    bpf_program__set_autoattach(skel->progs.on_sys_exit, false);
    if (inspector_bpf__attach(skel) || attach_syscalls()) {
      fprintf(stdout,
              "{\"event\":\"error\",\"error\":\"cannot attach the BPF program (is tracefs mounted at "
              "/sys/kernel/tracing?): %s\"}\n",
              strerror(errno));
      detach_syscalls();
      inspector_bpf__destroy(skel);
      return 1;
    }
    rb = ring_buffer__new(bpf_map__fd(skel->maps.rb), on_event, NULL, NULL);
    if (!rb) {
      fprintf(stdout, "{\"event\":\"error\",\"error\":\"ring buffer: %s\"}\n", strerror(errno));
      inspector_bpf__destroy(skel);
      return 1;
    }
  }
  fprintf(stdout, "{\"event\":\"ready\",\"version\":1,\"bpf\":%s,\"pid\":%d}\n", use_bpf ? "true" : "false",
          getpid());
  fflush(stdout);

  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (!buf)
    return 1;
  struct pollfd pfd[2] = { { .fd = 0, .events = POLLIN }, { .fd = use_bpf ? ring_buffer__epoll_fd(rb) : -1, .events = POLLIN } };
  for (;;) {
    /* the BPF side wakes us only once a batch is pending: drain it every POLL_MS anyway */
    int n = poll(pfd, use_bpf ? 2 : 1, use_bpf ? POLL_MS : 1000);
    if (n < 0 && errno != EINTR)
      break;
    if (use_bpf)
      ring_buffer__consume(rb); /* cheap when empty; also when only requests woke us */
    if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(0, buf + len, cap - len - 1);
      if (r == 0)
        break; /* parent gone */
      if (r < 0 && errno != EAGAIN && errno != EINTR)
        break;
      if (r > 0) {
        len += (size_t)r;
        buf[len] = 0;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
          *nl = 0;
          if (nl > start)
            handle_line(start);
          start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
        if (len + 1 >= cap) {
          cap *= 2;
          char *nb = realloc(buf, cap);
          if (!nb)
            break;
          buf = nb;
        }
      }
    }
  }
  if (rb)
    ring_buffer__free(rb);
  detach_syscalls();
  if (skel)
    inspector_bpf__destroy(skel);
  return 0;
}
