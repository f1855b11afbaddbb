#include "agg.h"
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#define TAB_SLOTS 8192
static char tomb_mark;
#define TOMB (&tomb_mark)

static uint64_t fnv(const char *s)
{
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

struct sandbox *agg_new(const char *name, uint64_t cgid)
{
  struct sandbox *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  snprintf(s->name, sizeof(s->name), "%s", name);
  s->cgid = cgid;
  s->tab = calloc(TAB_SLOTS, sizeof(struct pent));
  if (!s->tab) {
    free(s);
    return NULL;
  }
  return s;
}

static void clear_tab(struct sandbox *s)
{
  for (uint32_t i = 0; i < TAB_SLOTS; i++) {
    if (s->tab[i].path && s->tab[i].path != TOMB)
      free(s->tab[i].path);
    s->tab[i].path = NULL;
  }
  s->npaths = s->used = 0;
}

void agg_free(struct sandbox *s)
{
  if (!s)
    return;
  clear_tab(s);
  free(s->tab);
  free(s);
}

void agg_reset(struct sandbox *s)
{
  clear_tab(s);
  s->overflow = 0;
  s->unresolved = 0;
  s->bytes_base = s->bytes;
  s->drops_base = s->drops;
  s->events_base = s->events;
  s->interactions_base = s->interactions;
  s->proc_writes = 0;
  s->started.n = s->exited.n = s->execed.n = 0;
  s->started.overflow = s->exited.overflow = s->execed.overflow = 0;
  s->forks = s->execs = s->exits = 0;
  s->nnet = 0;
  s->net_overflow = 0;
  s->unknown[0] = 0;
  s->turn++;
}

static struct pent *lookup(struct sandbox *s, const char *path)
{
  uint32_t i = fnv(path) & (TAB_SLOTS - 1);
  for (uint32_t n = 0; n < TAB_SLOTS; n++, i = (i + 1) & (TAB_SLOTS - 1)) {
    struct pent *e = &s->tab[i];
    if (!e->path)
      return NULL;
    if (e->path != TOMB && strcmp(e->path, path) == 0)
      return e;
  }
  return NULL;
}

static void rehash(struct sandbox *s)
{
  struct pent *old = s->tab;
  struct pent *tab = calloc(TAB_SLOTS, sizeof(struct pent));
  if (!tab)
    return;
  s->tab = tab;
  s->used = 0;
  for (uint32_t i = 0; i < TAB_SLOTS; i++) {
    if (!old[i].path || old[i].path == TOMB)
      continue;
    uint32_t j = fnv(old[i].path) & (TAB_SLOTS - 1);
    while (tab[j].path)
      j = (j + 1) & (TAB_SLOTS - 1);
    tab[j] = old[i];
    s->used++;
  }
  free(old);
}

/* Finds or inserts; NULL when the table is full (overflow). */
static struct pent *upsert(struct sandbox *s, const char *path, int *fresh)
{
  struct pent *e = lookup(s, path);
  *fresh = 0;
  if (e)
    return e;
  if (s->npaths >= MAX_PATHS) {
    s->overflow = 1;
    return NULL;
  }
  if (s->used >= TAB_SLOTS * 3 / 4)
    rehash(s);
  uint32_t i = fnv(path) & (TAB_SLOTS - 1);
  while (s->tab[i].path && s->tab[i].path != TOMB)
    i = (i + 1) & (TAB_SLOTS - 1);
  e = &s->tab[i];
  if (!e->path)
    s->used++;
  e->path = strdup(path);
  if (!e->path) {
    e->path = TOMB;
    s->overflow = 1;
    return NULL;
  }
  e->born = 0;
  e->gone = 0;
  s->npaths++;
  *fresh = 1;
  return e;
}

static void drop(struct sandbox *s, struct pent *e)
{
  free(e->path);
  e->path = TOMB;
  s->npaths--;
}

int agg_ignored_path(const char *p)
{
  static const char *pre[] = { "/proc", "/sys", "/dev" };
  for (unsigned i = 0; i < sizeof(pre) / sizeof(pre[0]); i++) {
    size_t n = strlen(pre[i]);
    if (strncmp(p, pre[i], n) == 0 && (p[n] == 0 || p[n] == '/'))
      return 1;
  }
  return 0;
}

/* A path below a directory created this turn cannot have existed at the start of the turn. */
static int ancestor_born(struct sandbox *s, const char *path)
{
  char buf[4096];
  snprintf(buf, sizeof(buf), "%s", path);
  for (char *slash = strrchr(buf, '/'); slash && slash != buf; slash = strrchr(buf, '/')) {
    *slash = 0;
    struct pent *e = lookup(s, buf);
    if (e)
      return e->born && !e->gone;
  }
  return 0;
}

void agg_path(struct sandbox *s, enum agg_op op, const char *path)
{
  if (agg_ignored_path(path)) {
    /* A write into /proc (a process's mem, its fds, its settings) reaches a process like ptrace
     * does: no path effect, but an interaction (no "only the clock woke it" judgment this turn). */
    if (strncmp(path, "/proc/", 6) == 0 && op != AGG_REMOVE)
      s->proc_writes++;
    return;
  }
  int fresh;
  struct pent *e = upsert(s, path, &fresh);
  if (!e)
    return;
  if (fresh && ancestor_born(s, path))
    e->born = 1;
  switch (op) {
  case AGG_CREATE:
    /* created now: if new to this turn, it did not exist before; if removed earlier this turn,
     * it exists again (born keeps what we knew about the start of the turn) */
    if (fresh)
      e->born = 1;
    e->gone = 0;
    break;
  case AGG_MODIFY:
    e->gone = 0;
    break;
  case AGG_REMOVE:
    if (!fresh && e->born) {
      drop(s, e); /* created and removed in the same turn: no effect */
      return;
    }
    e->gone = 1;
    break;
  }
}

void agg_rename(struct sandbox *s, const char *from, const char *to, int exchange)
{
  if (exchange) {
    agg_path(s, AGG_MODIFY, from);
    agg_path(s, AGG_MODIFY, to);
    return;
  }
  /* entries below a renamed directory move with it */
  size_t fl = strlen(from);
  char *buf = NULL;
  for (uint32_t i = 0; i < TAB_SLOTS; i++) {
    struct pent *e = &s->tab[i];
    if (!e->path || e->path == TOMB)
      continue;
    if (strncmp(e->path, from, fl) == 0 && e->path[fl] == '/') {
      size_t n = strlen(to) + strlen(e->path + fl) + 1;
      buf = realloc(buf, n);
      if (!buf)
        return;
      snprintf(buf, n, "%s%s", to, e->path + fl);
      uint8_t born = e->born, gone = e->gone;
      /* the old name's child was moved away: it is gone under the old name */
      if (born)
        drop(s, e);
      else
        e->gone = 1;
      int fresh;
      struct pent *n2 = upsert(s, buf, &fresh);
      if (n2) {
        if (fresh)
          n2->born = born;
        n2->gone = gone;
      }
    }
  }
  free(buf);
  struct pent *src = lookup(s, from);
  int src_born = src ? src->born : 0;
  agg_path(s, AGG_REMOVE, from);
  int fresh;
  if (agg_ignored_path(to))
    return;
  struct pent *dst = upsert(s, to, &fresh);
  if (!dst)
    return;
  if (fresh && ancestor_born(s, to))
    dst->born = 1;
  /* whether `to` existed at the start of the turn is unknown unless we saw it: assume it did,
   * except when it is new to this turn and the source was itself created this turn and we
   * already know `to` was created this turn */
  (void)src_born;
  dst->gone = 0;
}

static int pid_find(struct pidset *p, uint32_t pid)
{
  for (uint32_t i = 0; i < p->n; i++)
    if (p->pids[i] == pid)
      return (int)i;
  return -1;
}

static void pid_add(struct pidset *p, uint32_t pid)
{
  if (pid_find(p, pid) >= 0)
    return;
  if (p->n >= MAX_PIDS) {
    p->overflow = 1;
    return;
  }
  p->pids[p->n++] = pid;
}

static int pid_del(struct pidset *p, uint32_t pid)
{
  int i = pid_find(p, pid);
  if (i < 0)
    return 0;
  p->pids[i] = p->pids[--p->n];
  return 1;
}

void agg_fork(struct sandbox *s, uint32_t child)
{
  s->forks++;
  pid_add(&s->started, child);
}

void agg_exec(struct sandbox *s, uint32_t pid)
{
  s->execs++;
  if (pid_find(&s->started, pid) < 0)
    pid_add(&s->execed, pid);
}

void agg_exit(struct sandbox *s, uint32_t pid)
{
  s->exits++;
  pid_del(&s->execed, pid);
  if (pid_del(&s->started, pid))
    return; /* started and ended in the same turn: no lasting effect */
  pid_add(&s->exited, pid);
}

int is_loopback(uint16_t family, const uint8_t *a)
{
  static const uint8_t zero[16];
  if (family == 2)
    return a[0] == 127 || memcmp(a, zero, 4) == 0;
  if (family == 10) {
    static const uint8_t one[16] = { [15] = 1 };
    if (memcmp(a, one, 16) == 0 || memcmp(a, zero, 16) == 0)
      return 1;
    static const uint8_t v4m[12] = { [10] = 0xff, [11] = 0xff };
    if (memcmp(a, v4m, 12) == 0)
      return a[12] == 127 || memcmp(a + 12, zero, 4) == 0;
  }
  return 0;
}

void agg_net(struct sandbox *s, uint32_t kind, uint32_t pid, uint16_t family, const uint8_t *addr, uint16_t port)
{
  if (kind != 1 /* listen */ && is_loopback(family, addr))
    return;
  for (uint32_t i = 0; i < s->nnet; i++) {
    struct netent *n = &s->net[i];
    if (n->kind == kind && n->family == family && n->port == port && memcmp(n->addr, addr, 16) == 0 &&
        (kind != 1 || n->pid == pid))
      return;
  }
  if (s->nnet >= MAX_NET) {
    s->net_overflow = 1;
    return;
  }
  struct netent *n = &s->net[s->nnet++];
  n->kind = kind;
  n->pid = pid;
  n->family = family;
  n->port = port;
  memcpy(n->addr, addr, 16);
}

void agg_compat_exec(struct sandbox *s, uint32_t pid, int is32)
{
  if (is32)
    pid_add(&s->compat, pid);
  else
    pid_del(&s->compat, pid);
}

void agg_compat_fork(struct sandbox *s, uint32_t parent, uint32_t child)
{
  if (pid_find(&s->compat, parent) >= 0)
    pid_add(&s->compat, child);
}

void agg_compat_exit(struct sandbox *s, uint32_t pid)
{
  pid_del(&s->compat, pid);
}

void agg_unknown(struct sandbox *s, const char *reason)
{
  if (!s->unknown[0])
    snprintf(s->unknown, sizeof(s->unknown), "%s", reason);
}

void agg_normalize(char *p)
{
  /* p is absolute; rewrite in place */
  char *out = p;
  const char *in = p;
  size_t len = 0;
  while (*in) {
    while (*in == '/')
      in++;
    if (!*in)
      break;
    const char *seg = in;
    while (*in && *in != '/')
      in++;
    size_t n = (size_t)(in - seg);
    if (n == 1 && seg[0] == '.')
      continue;
    if (n == 2 && seg[0] == '.' && seg[1] == '.') {
      while (len > 0 && out[len - 1] != '/')
        len--;
      if (len > 0)
        len--; /* the slash */
      continue;
    }
    out[len++] = '/';
    memmove(out + len, seg, n);
    len += n;
  }
  if (len == 0)
    out[len++] = '/';
  out[len] = 0;
}

void json_str(FILE *out, const char *s)
{
  fputc('"', out);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\')
      fprintf(out, "\\%c", *c);
    else if (*c < 0x20 || *c == 0x7f)
      fprintf(out, "\\u%04x", *c);
    else
      fputc(*c, out);
  }
  fputc('"', out);
}

static void pids_json(FILE *out, const char *key, struct pidset *p)
{
  fprintf(out, "\"%s\":[", key);
  for (uint32_t i = 0; i < p->n; i++)
    fprintf(out, "%s%u", i ? "," : "", p->pids[i]);
  fputc(']', out);
}

static void addr_str(const struct netent *n, char *buf, size_t len)
{
  if (n->family == 2)
    inet_ntop(AF_INET, n->addr, buf, (socklen_t)len);
  else if (n->family == 10)
    inet_ntop(AF_INET6, n->addr, buf, (socklen_t)len);
  else
    snprintf(buf, len, "family:%u", n->family);
}

void agg_report(struct sandbox *s, FILE *out)
{
  char unknown[300];
  snprintf(unknown, sizeof(unknown), "%s", s->unknown);
  uint64_t drops = s->drops - s->drops_base;
  if (!unknown[0] && drops)
    snprintf(unknown, sizeof(unknown), "%llu events dropped", (unsigned long long)drops);
  if (!unknown[0] && s->overflow)
    snprintf(unknown, sizeof(unknown), "more than %d distinct paths", MAX_PATHS);
  if (!unknown[0] && (s->started.overflow || s->exited.overflow || s->execed.overflow))
    snprintf(unknown, sizeof(unknown), "more than %d processes", MAX_PIDS);
  if (!unknown[0] && (s->compat.n || s->compat.overflow))
    snprintf(unknown, sizeof(unknown), "a 32-bit process is running: its syscalls are not followed");
  if (!unknown[0] && s->net_overflow)
    snprintf(unknown, sizeof(unknown), "more than %d network effects", MAX_NET);

  fprintf(out, "\"sandbox\":");
  json_str(out, s->name);
  fprintf(out, ",\"turn\":%llu,\"fs\":{\"paths\":[", (unsigned long long)s->turn);
  int first = 1;
  for (uint32_t i = 0; i < TAB_SLOTS; i++) {
    struct pent *e = &s->tab[i];
    if (!e->path || e->path == TOMB)
      continue;
    const char *op = e->gone ? "removed" : e->born ? "created" : "modified";
    fprintf(out, "%s{\"path\":", first ? "" : ",");
    json_str(out, e->path);
    fprintf(out, ",\"op\":\"%s\"}", op);
    first = 0;
  }
  fprintf(out, "],\"overflow\":%s,\"unresolved\":%llu,\"bytes_written\":%llu},", s->overflow ? "true" : "false",
          (unsigned long long)s->unresolved, (unsigned long long)(s->bytes - s->bytes_base));
  fprintf(out, "\"proc\":{");
  pids_json(out, "started", &s->started);
  fputc(',', out);
  pids_json(out, "exited", &s->exited);
  fputc(',', out);
  pids_json(out, "execed", &s->execed);
  fprintf(out, ",\"forks\":%llu,\"execs\":%llu,\"exits\":%llu},", (unsigned long long)s->forks,
          (unsigned long long)s->execs, (unsigned long long)s->exits);
  fprintf(out, "\"listening\":[");
  first = 1;
  char abuf[64];
  for (uint32_t i = 0; i < s->nnet; i++) {
    struct netent *n = &s->net[i];
    if (n->kind != 1)
      continue;
    addr_str(n, abuf, sizeof(abuf));
    fprintf(out, "%s{\"pid\":%u,\"family\":\"%s\",\"addr\":\"%s\",\"port\":%u}", first ? "" : ",", n->pid,
            n->family == 2 ? "inet" : n->family == 10 ? "inet6" : "other", abuf, n->port);
    first = 0;
  }
  fprintf(out, "],\"external\":[");
  first = 1;
  for (uint32_t i = 0; i < s->nnet; i++) {
    struct netent *n = &s->net[i];
    if (n->kind == 1)
      continue;
    addr_str(n, abuf, sizeof(abuf));
    fprintf(out, "%s{\"kind\":\"%s\",\"pid\":%u,\"addr\":\"%s\",\"port\":%u}", first ? "" : ",",
            n->kind == 2 ? "connect" : "sendto", n->pid, abuf, n->port);
    first = 0;
  }
  fprintf(out, "],\"dropped\":%llu,\"events\":%llu,\"interactions\":%llu,\"unknown\":", (unsigned long long)drops,
          (unsigned long long)(s->events - s->events_base), (unsigned long long)(s->interactions - s->interactions_base + s->proc_writes));
  if (unknown[0])
    json_str(out, unknown);
  else
    fputs("null", out);
}
