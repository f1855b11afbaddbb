/* Shared between the BPF program and the helper: event layouts and map values. */
#ifndef CRAB_INSPECTOR_H
#define CRAB_INSPECTOR_H

#define PATHLEN 1024
#define COMMLEN 16

enum ev_type {
  EV_PATH = 1,   /* successful path syscall (p1/p2 read at sys_exit) */
  EV_FDOP = 2,   /* first mutation through an fd (write family, ftruncate, fchmod, mmap…) in a turn */
  EV_FORK = 3,
  EV_EXEC = 4,
  EV_EXIT = 5,
  EV_NET = 6,    /* listen / connect / sendto / sendmsg */
  EV_UNKNOWN = 7 /* something the inspector cannot follow (io_uring, …) */
};

enum net_kind { NET_LISTEN = 1, NET_CONNECT = 2, NET_SENDTO = 3 };

/* ev_small.kind of EV_UNKNOWN */
enum unk_kind { UNK_IO_URING = 1 };

/* ev_path.flags */
#define EVF_CREATED 1u   /* open() created the file (FMODE_CREATED) */
#define EVF_TRUNC1 2u    /* p1 did not fit */
#define EVF_TRUNC2 4u
#define EVF_DIR 8u       /* fd op on a directory */
#define EVF_D1 16u       /* d1 holds the walked base directory (dirfd `dfd`, or cwd for AT_FDCWD) */
#define EVF_D1TRUNC 32u  /* the walk did not reach the root (too deep/long): d1 is unusable */
#define EVF_UNLINKED 64u /* fd op on a file with no name left */
#define EVF_COMPAT 128u  /* EV_EXEC: a 32-bit program (its compat syscalls are not followed) */
#define DIRLEN 1024
#define NAME_MAX_ 255

struct ev_hdr {
  __u32 type;
  __u32 nr;     /* syscall number, or 0 */
  __u32 tgid;
  __u32 tid;
  __u64 cgid;
  __s64 ret;
};

struct ev_path {
  struct ev_hdr h;
  __s64 args[6];
  __u32 flags;
  __s32 dfd;  /* the dirfd d1 was walked from (AT_FDCWD = cwd); for EV_FDOP the fd */
  char p1[PATHLEN];
  char p2[PATHLEN];
  /* Path components of the base directory (or of the fd's file), leaf first, each followed by '/',
   * up to the process's root: "c/b/a/" is /a/b/c; "" is the root itself. */
  char d1[DIRLEN];
};

struct ev_small {
  struct ev_hdr h;
  __s32 fd;
  __u32 flags;
  __u64 ino;
  __u32 child_tgid;  /* EV_FORK */
  __u32 child_pid;
  __u16 family;      /* EV_NET */
  __u16 port;        /* host order */
  __u32 kind;
  __u8 addr[16];
  char comm[COMMLEN];
};

/* Value of the `sandboxes` map (key: cgroup v2 id). Counters are cumulative; the helper diffs them. */
struct sb_val {
  __u64 unused;
  __u64 bytes;     /* bytes written to regular files (sum of write-family return values) */
  __u64 drops;     /* ring buffer reserve failures */
  __u64 events;    /* events submitted */
  /* Calls by which one process can change another without the process probe seeing it: signals
   * (not signal 0), ptrace, process_vm_writev, splice/tee/vmsplice (pipe data moved without read). */
  __u64 interactions;
};

#endif
