/* Per-sandbox aggregation of a turn's effects: distinct paths with net-zero cancellation,
 * process set changes, listening sockets, external connections. Pure: no BPF, no /proc. */
#ifndef CRAB_AGG_H
#define CRAB_AGG_H
#include <stdint.h>
#include <stdio.h>

#define MAX_PATHS 4096
#define MAX_PIDS 1024
#define MAX_NET 256

enum agg_op { AGG_CREATE = 1, AGG_MODIFY = 2, AGG_REMOVE = 3 };

struct pent {
  char *path;      /* NULL = empty slot; TOMB = deleted */
  uint8_t born;    /* did not exist at the start of the turn */
  uint8_t gone;    /* does not exist now */
};

struct pidset {
  uint32_t n;
  uint32_t pids[MAX_PIDS];
  int overflow;
};

struct netent {
  uint32_t kind;   /* net_kind */
  uint32_t pid;
  uint16_t family;
  uint16_t port;
  uint8_t addr[16];
};

struct sandbox {
  char name[128];
  uint64_t cgid;
  uint64_t turn;
  /* paths */
  struct pent *tab;   /* open addressing, TAB_SLOTS */
  uint32_t npaths;    /* live entries */
  uint32_t used;      /* live + tombstones */
  int overflow;
  uint64_t unresolved;
  uint64_t bytes_base, drops_base, events_base, interactions_base; /* map counters at the last reset */
  uint64_t bytes, drops, events, interactions;                     /* latest map counters */
  uint64_t proc_writes; /* writes into /proc this turn: interactions the path events show (not in the map) */
  /* processes */
  struct pidset started, exited, execed;
  uint64_t forks, execs, exits;
  /* network */
  struct netent net[MAX_NET];
  uint32_t nnet;
  int net_overflow;
  /* 32-bit processes alive in the sandbox (kept across turns): their syscalls are not followed,
   * so every turn while one lives is unknown */
  struct pidset compat;
  char unknown[256];
  char root[512];     /* host path of the sandbox's root as readlink(/proc/PID/root) shows it */
};

struct sandbox *agg_new(const char *name, uint64_t cgid);
void agg_free(struct sandbox *s);
/* Starts a new turn (forgets everything but identity and counter bases). */
void agg_reset(struct sandbox *s);
void agg_path(struct sandbox *s, enum agg_op op, const char *path);
void agg_rename(struct sandbox *s, const char *from, const char *to, int exchange);
void agg_fork(struct sandbox *s, uint32_t child);
void agg_exec(struct sandbox *s, uint32_t pid);
void agg_exit(struct sandbox *s, uint32_t pid);
void agg_net(struct sandbox *s, uint32_t kind, uint32_t pid, uint16_t family, const uint8_t *addr, uint16_t port);
void agg_unknown(struct sandbox *s, const char *reason);
/* pid exec'd a program: a 32-bit one (is32) or not; a fork of a 32-bit process is one too. */
void agg_compat_exec(struct sandbox *s, uint32_t pid, int is32);
void agg_compat_fork(struct sandbox *s, uint32_t parent, uint32_t child);
void agg_compat_exit(struct sandbox *s, uint32_t pid);
/* Writes the report object (no trailing newline). */
void agg_report(struct sandbox *s, FILE *out);
/* 1 when the path is outside what the inspector reports (/proc, /sys, /dev). */
int agg_ignored_path(const char *path);
/* Normalizes an absolute path in place: collapses //, ., .. */
void agg_normalize(char *path);
void json_str(FILE *out, const char *s);
int is_loopback(uint16_t family, const uint8_t *addr);
#endif
