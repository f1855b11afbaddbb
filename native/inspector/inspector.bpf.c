// SPDX-License-Identifier: GPL-2.0
/* Crab inspector: syscall-exit tracepoints plus the sched tracepoints, filtered in the kernel to
 * registered sandbox cgroups (cgroup v2 ids).
 *
 * Cost model (measured on the 2-core VM, getpid loop): any syscall tracepoint puts every syscall
 * on the host on the slow path; a raw_syscalls (or tp_btf/sys_exit) program then runs for every
 * syscall (~90 ns here even when empty, ~150 ns for the former enter+exit pair), while
 * syscalls:sys_exit_<name> tracepoints cost the other syscalls a bitmap test (~45 ns). So one
 * program, on_sys_exit, is attached by the helper to the exit tracepoints of the syscalls that can
 * mutate something (list in main.c) and nothing runs at sys_enter: the arguments are still in the
 * task's saved user registers at exit, so no per-syscall state is kept. It first rejects, with a
 * few compares and no map lookup, what cannot have an effect (openat without write access, a
 * failed call, …); only what is left pays for the cgroup lookup, and only sandbox tasks go on.
 * Mutations are recorded only when they succeeded (connect: also when in progress).
 *
 * In-kernel aggregation: an fd-based mutation (write family, ftruncate, mmap, …) is reported once
 * per turn per open file (`fdseen`, keyed by cgroup, struct file and dentry); an open for writing
 * marks its file as reported, so the writes that follow cost no event. Bytes are summed in the
 * sandbox's map value. Connects/sends to loopback are dropped in the kernel.
 *
 * 32-bit (compat) syscalls are not shown by syscalls:* tracepoints: exec of a 32-bit ELF is flagged
 * and the helper keeps such turns unknown while the process lives.
 *
 * Ring buffer: events are submitted without waking the helper until 1 MiB is pending (the helper
 * also polls every few ms and drains the buffer before every answer). Any reserve failure is
 * counted per cgroup (the turn becomes unknown). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "inspector.h"

char LICENSE[] SEC("license") = "GPL";

#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_TMPFILE 020000000
#define O_WRBITS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_TMPFILE)
#define FMODE_WRITE 0x2
#define FMODE_CREATED 0x100000
#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define S_IFLNK 0120000
#define PROT_WRITE 2
#define MAP_TYPE 0x0f
#define MAP_SHARED 1
#define MAP_SHARED_VALIDATE 3
#define AT_FDCWD -100
#define WAKE_BYTES (1 << 20)
#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115

/* x86_64 syscall numbers */
#define NR_write 1
#define NR_open 2
#define NR_mmap 9
#define NR_pwrite64 18
#define NR_writev 20
#define NR_sendfile 40
#define NR_connect 42
#define NR_sendto 44
#define NR_sendmsg 46
#define NR_listen 50
#define NR_kill 62
#define NR_truncate 76
#define NR_ftruncate 77
#define NR_chdir 80
#define NR_fchdir 81
#define NR_rename 82
#define NR_mkdir 83
#define NR_rmdir 84
#define NR_creat 85
#define NR_link 86
#define NR_unlink 87
#define NR_symlink 88
#define NR_chmod 90
#define NR_fchmod 91
#define NR_chown 92
#define NR_fchown 93
#define NR_lchown 94
#define NR_ptrace 101
#define NR_rt_sigqueueinfo 129
#define NR_utime 132
#define NR_mknod 133
#define NR_setxattr 188
#define NR_lsetxattr 189
#define NR_fsetxattr 190
#define NR_removexattr 197
#define NR_lremovexattr 198
#define NR_fremovexattr 199
#define NR_tkill 200
#define NR_tgkill 234
#define NR_utimes 235
#define NR_openat 257
#define NR_mkdirat 258
#define NR_mknodat 259
#define NR_fchownat 260
#define NR_futimesat 261
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_linkat 265
#define NR_symlinkat 266
#define NR_fchmodat 268
#define NR_splice 275
#define NR_tee 276
#define NR_vmsplice 278
#define NR_utimensat 280
#define NR_fallocate 285
#define NR_pwritev 296
#define NR_rt_tgsigqueueinfo 297
#define NR_open_by_handle_at 304
#define NR_process_vm_writev 311
#define NR_sendmmsg 307
#define NR_renameat2 316
#define NR_copy_file_range 326
#define NR_pwritev2 328
#define NR_pidfd_send_signal 424
#define NR_io_uring_setup 425
#define NR_openat2 437
#define NR_fchmodat2 452
#define NR_setxattrat 463
#define NR_removexattrat 466

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u64);
  __type(value, struct sb_val);
} sandboxes SEC(".maps");

/* turn generation per sandbox (key: cgroup id); the helper bumps it at each reset */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u64);
  __type(value, __u64);
} gens SEC(".maps");

/* "Already reported this turn": an open file, keyed by its struct file, dentry and inode number
 * (a struct file freed and reused for another path would also need its dentry's address reused
 * and the same inode number to match). Value: the turn generation. An LRU eviction only costs a
 * repeated report. */
struct fkey {
  __u64 cgid;
  __u64 file;
  __u64 dentry;
  __u64 ino;
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct fkey);
  __type(value, __u64);
} fdseen SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 32 * 1024 * 1024);
} rb SEC(".maps");

struct dirbuf {
  char d[DIRLEN];
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct dirbuf);
} scratch SEC(".maps");

/* One syscall of a sandbox task, as seen at its exit. */
struct sc {
  __u64 cgid;
  struct sb_val *v;
  long nr;
  long ret;
  unsigned long a[6];
};

/* ---- events: reserve, fill the common part, submit ---- */

static __always_inline void *ev_reserve(struct sb_val *v, __u64 size)
{
  void *e = bpf_ringbuf_reserve(&rb, size, 0);
  if (!e)
    __sync_fetch_and_add(&v->drops, 1);
  return e;
}

static __always_inline void ev_submit(struct sb_val *v, void *e)
{
  __sync_fetch_and_add(&v->events, 1);
  /* wake the helper only once a batch is pending: it also polls, and drains before answering */
  __u64 fl = bpf_ringbuf_query(&rb, BPF_RB_AVAIL_DATA) >= WAKE_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
  bpf_ringbuf_submit(e, fl);
}

static __always_inline void fill_hdr(struct ev_hdr *h, __u32 type, __u32 nr, __u64 cgid, long ret)
{
  __u64 pt = bpf_get_current_pid_tgid();
  h->type = type;
  h->nr = nr;
  h->tgid = pt >> 32;
  h->tid = (__u32)pt;
  h->cgid = cgid;
  h->ret = ret;
}

static __always_inline struct ev_small *small_new(struct sb_val *v, __u32 type, __u32 nr, __u64 cgid, long ret)
{
  struct ev_small *e = ev_reserve(v, sizeof(*e));
  if (!e)
    return 0;
  __builtin_memset(e, 0, sizeof(*e));
  fill_hdr(&e->h, type, nr, cgid, ret);
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  return e;
}

/* A path event with empty strings; args copied from the syscall (or zero). */
static __always_inline struct ev_path *path_new(struct sb_val *v, __u32 type, __u32 nr, __u64 cgid, long ret,
                                                const unsigned long *args)
{
  struct ev_path *e = ev_reserve(v, sizeof(*e));
  if (!e)
    return 0;
  fill_hdr(&e->h, type, nr, cgid, ret);
#pragma unroll
  for (int i = 0; i < 6; i++)
    e->args[i] = args ? args[i] : 0;
  e->flags = 0;
  e->dfd = AT_FDCWD;
  e->p1[0] = 0;
  e->p2[0] = 0;
  e->d1[0] = 0;
  return e;
}

static __always_inline __u64 turn_gen(__u64 cgid)
{
  __u64 *g = bpf_map_lookup_elem(&gens, &cgid);
  return g ? *g : 0;
}

static __always_inline int seen_this_turn(struct fkey *k, __u64 gen)
{
  __u64 *s = bpf_map_lookup_elem(&fdseen, k);
  return s && *s == gen;
}

/* ---- path resolution in the kernel ---- */

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* The struct file of the current task's fd (0 if none), as a plain address (for map keys, the
 * walk and BPF_CORE_READ); BTF() of it allows plain loads instead of one helper call per field. */
static __always_inline struct file *fd_file(int fd)
{
  struct task_struct *t = bpf_get_current_task_btf();
  struct fdtable *fdt = t->files->fdt;
  if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
    return 0;
  struct file *f = 0;
  bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
  return f;
}
#define BTF(type, p) ((type *)bpf_rdonly_cast(p, bpf_core_type_id_kernel(type)))

struct walk_ctx {
  __u64 d, vm, m, rootd, rootm, moff;
  __u32 off;
  __u32 res;
};

/* One step of the walk up from a dentry (a bpf_loop callback: verified once, not unrolled). */
static long walk_step(__u32 idx, void *arg)
{
  struct walk_ctx *c = arg;
  __u32 zero = 0;
  struct dirbuf *sb = bpf_map_lookup_elem(&scratch, &zero);
  if (!sb) {
    c->res = EVF_D1TRUNC;
    return 1;
  }
  struct dentry *d = (struct dentry *)c->d;
  struct vfsmount *vm = (struct vfsmount *)c->vm;
  if (c->d == c->rootd && c->vm == c->rootm) {
    c->res = EVF_D1;
    return 1;
  }
  struct dentry *mroot = BPF_CORE_READ(vm, mnt_root);
  if (d == mroot) {
    struct mount *m = (struct mount *)c->m;
    struct mount *parent = BPF_CORE_READ(m, mnt_parent);
    if (parent == m || !parent) {
      c->res = EVF_D1; /* the root of its mount namespace */
      return 1;
    }
    c->d = (__u64)BPF_CORE_READ(m, mnt_mountpoint);
    c->m = (__u64)parent;
    c->vm = (__u64)parent + c->moff;
    return 0;
  }
  struct dentry *up = BPF_CORE_READ(d, d_parent);
  if (up == d || !up) {
    c->res = EVF_D1;
    return 1;
  }
  const unsigned char *name = BPF_CORE_READ(d, d_name.name);
  __u32 off = c->off;
  if (off > DIRLEN - NAME_MAX_ - 2) {
    c->res = EVF_D1TRUNC;
    return 1;
  }
  off &= DIRLEN - 1;
  long n = bpf_probe_read_kernel_str(sb->d + off, NAME_MAX_ + 1, name);
  if (n <= 1) {
    c->res = EVF_D1TRUNC;
    return 1;
  }
  off += n;
  sb->d[(off - 1) & (DIRLEN - 1)] = '/';
  sb->d[off & (DIRLEN - 1)] = 0;
  c->off = off;
  c->d = (__u64)up;
  return 0;
}

/* Walks from (dentry, vfsmount) up to the current task's root, writing names leaf first into the
 * per-CPU scratch buffer (each followed by '/'). Returns EVF_D1 when it reached the root,
 * EVF_D1TRUNC otherwise, or'd with the length written << 8. A global function: the verifier checks it once, not per call site. */
__noinline int walk_global(__u64 dentry, __u64 vfsmnt)
{
  __u32 zero = 0;
  struct dirbuf *sb = bpf_map_lookup_elem(&scratch, &zero);
  if (!sb)
    return EVF_D1TRUNC;
  sb->d[0] = 0;
  struct task_struct *t = (struct task_struct *)bpf_get_current_task();
  struct fs_struct *fs = BPF_CORE_READ(t, fs);
  struct walk_ctx c = {
    .d = dentry,
    .vm = vfsmnt,
    .rootd = (__u64)BPF_CORE_READ(fs, root.dentry),
    .rootm = (__u64)BPF_CORE_READ(fs, root.mnt),
    .moff = bpf_core_field_offset(struct mount, mnt),
    .off = 0,
    .res = EVF_D1TRUNC,
  };
  c.m = vfsmnt - c.moff;
  bpf_loop(64, walk_step, &c, 0);
  return c.res | (c.off << 8);
}

/* Walks into the scratch buffer, then copies what it wrote (and its NUL) into the event. */
static __always_inline __u32 walk_path(struct dentry *d, struct vfsmount *vm, char *out)
{
  __u32 r = walk_global((__u64)d, (__u64)vm);
  __u32 zero = 0;
  struct dirbuf *sb = bpf_map_lookup_elem(&scratch, &zero);
  if (!sb) {
    out[0] = 0;
    return EVF_D1TRUNC;
  }
  __u32 n = ((r >> 8) & (DIRLEN - 1)) + 1;
  bpf_probe_read_kernel(out, n, sb->d);
  return r & 0xff;
}

/* Base directory of a relative path: the dirfd's file, or the cwd for AT_FDCWD. */
static __always_inline __u32 walk_base(int dfd, char *buf)
{
  if (dfd == AT_FDCWD) {
    struct task_struct *t = (struct task_struct *)bpf_get_current_task();
    struct fs_struct *fs = BPF_CORE_READ(t, fs);
    return walk_path(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), buf);
  }
  struct file *f = fd_file(dfd);
  if (!f)
    return 0;
  return walk_path(BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), buf);
}

/* ---- the kinds of record ---- */

#define FD_REGULAR 1 /* regular files only (writes); else directories and symlinks too (metadata) */
#define FD_OPENED 2  /* the fd was just opened: report it even if its key looks seen */

/* An fd-based mutation (or an open that returned the fd): the file's own path, walked in the
 * kernel. Once per turn per open file when the file is open for writing: only a file opened this
 * turn can reuse the address of one reported this turn, and its open was reported then. A file
 * open read-only (fchmod, fsetxattr, …) is reported every time: it may not have been. */
static __always_inline void fd_op(struct sc *c, int fd, long bytes, int how)
{
  struct file *f = fd_file(fd);
  if (!f)
    return;
  struct file *bf = BTF(struct file, f);
  struct inode *ino = bf->f_inode;
  __u16 fmt = ino->i_mode & S_IFMT;
  if (fmt != S_IFREG && ((how & FD_REGULAR) || (fmt != S_IFDIR && fmt != S_IFLNK)))
    return;
  if (bytes > 0)
    __sync_fetch_and_add(&c->v->bytes, bytes);
  struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
  int writable = bf->f_mode & FMODE_WRITE;
  struct fkey k = { .cgid = c->cgid, .file = (__u64)f, .dentry = (__u64)d, .ino = ino->i_ino };
  __u64 gen = turn_gen(c->cgid);
  if (writable && !(how & FD_OPENED) && seen_this_turn(&k, gen))
    return;
  struct ev_path *e = path_new(c->v, EV_FDOP, c->nr, c->cgid, c->ret, c->a);
  if (!e)
    return;
  e->dfd = fd;
  __u32 flags = fmt == S_IFDIR ? EVF_DIR : 0;
  if (ino->i_nlink == 0)
    flags |= EVF_UNLINKED;
  flags |= walk_path(d, BPF_CORE_READ(f, f_path.mnt), e->d1);
  e->flags = flags;
  ev_submit(c->v, e);
  if (writable)
    bpf_map_update_elem(&fdseen, &k, &gen, BPF_ANY);
}

/* A path syscall. a1/a2: argument index of the path(s) to read (-1: none); dfd_arg: index of the
 * dirfd argument (-1: AT_FDCWD); rel: which path (1, 2, 3 = either) being relative triggers the
 * walk of the base directory. */
static __always_inline void path_op(struct sc *c, int a1, int a2, __u32 flags, int dfd_arg, int rel)
{
  struct ev_path *e = path_new(c->v, EV_PATH, c->nr, c->cgid, c->ret, c->a);
  if (!e)
    return;
  if (a1 >= 0 && a1 < 6) {
    long n = bpf_probe_read_user_str(e->p1, PATHLEN, (void *)c->a[a1]);
    if (n >= PATHLEN)
      flags |= EVF_TRUNC1;
    if (n < 0)
      e->p1[0] = 0;
  }
  if (a2 >= 0 && a2 < 6) {
    long n = bpf_probe_read_user_str(e->p2, PATHLEN, (void *)c->a[a2]);
    if (n >= PATHLEN)
      flags |= EVF_TRUNC2;
    if (n < 0)
      e->p2[0] = 0;
  }
  if (dfd_arg >= 0 && dfd_arg < 6)
    e->dfd = (int)c->a[dfd_arg];
  int relative = ((rel & 1) && e->p1[0] != '/') || ((rel & 2) && e->p2[0] != '/');
  if (relative)
    flags |= walk_base(e->dfd, e->d1);
  e->flags = flags;
  ev_submit(c->v, e);
}

/* open family: only regular files and directories (not pipes, sockets, ttys, /dev/null). A file
 * opened for writing is marked reported for the turn: its writes then cost no event. */
static __always_inline void open_op(struct sc *c, int a, int dfd_arg)
{
  if (c->nr == NR_openat2) {
    __u64 fl = 0;
    bpf_probe_read_user(&fl, sizeof(fl), (void *)c->a[2]);
    if (!(fl & O_WRBITS))
      return;
    c->a[2] = fl;
  }
  struct file *f = fd_file((int)c->ret);
  if (!f)
    return;
  struct file *bf = BTF(struct file, f);
  struct inode *ino = bf->f_inode;
  __u16 fmt = ino->i_mode & S_IFMT;
  if (fmt != S_IFREG && fmt != S_IFDIR)
    return;
  __u32 fmode = bf->f_mode;
  __u64 drops = c->v->drops;
  path_op(c, a, -1, (fmode & FMODE_CREATED) ? EVF_CREATED : 0, dfd_arg, 1);
  if ((fmode & FMODE_WRITE) && c->v->drops == drops) {
    struct fkey k = { .cgid = c->cgid, .file = (__u64)f, .dentry = (__u64)BPF_CORE_READ(f, f_path.dentry), .ino = ino->i_ino };
    __u64 gen = turn_gen(c->cgid);
    bpf_map_update_elem(&fdseen, &k, &gen, BPF_ANY);
  }
}

static __always_inline int loopback(__u16 fam, const __u8 *a)
{
  if (fam == AF_INET)
    return a[0] == 127 || (a[0] | a[1] | a[2] | a[3]) == 0;
  __u64 hi = 0, lo = 0;
  __builtin_memcpy(&hi, a, 8);
  __builtin_memcpy(&lo, a + 8, 8);
  if (hi == 0 && (lo == 0 || lo == 0x0100000000000000ULL)) /* ::, ::1 */
    return 1;
  if (hi == 0 && (lo & 0xffffffffULL) == 0xffff0000ULL) /* ::ffff:a.b.c.d */
    return a[12] == 127 || (a[12] | a[13] | a[14] | a[15]) == 0;
  return 0;
}

/* connect/sendto/sendmsg: the destination address, read from user memory; loopback is no
 * external effect and is not reported. */
static __always_inline void net_addr(struct sc *c, __u32 kind, void *uaddr)
{
  if (!uaddr)
    return;
  __u16 fam = 0;
  if (bpf_probe_read_user(&fam, sizeof(fam), uaddr))
    return;
  if (fam != AF_INET && fam != AF_INET6)
    return;
  __u8 addr[16] = {};
  if (fam == AF_INET)
    bpf_probe_read_user(addr, 4, uaddr + 4);
  else
    bpf_probe_read_user(addr, 16, uaddr + 8);
  if (loopback(fam, addr))
    return;
  __u16 port = 0;
  bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
  struct ev_small *e = small_new(c->v, EV_NET, c->nr, c->cgid, c->ret);
  if (!e)
    return;
  e->kind = kind;
  e->family = fam;
  e->fd = (int)c->a[0];
  e->port = __builtin_bswap16(port);
  __builtin_memcpy(e->addr, addr, 16);
  ev_submit(c->v, e);
}

/* listen(fd): the bound local address, read from the socket. */
static __always_inline void net_listen(struct sc *c)
{
  struct file *f = fd_file((int)c->a[0]);
  if (!f)
    return;
  struct socket *sock = BPF_CORE_READ(f, private_data);
  struct sock *sk = BPF_CORE_READ(sock, sk);
  if (!sk)
    return;
  struct ev_small *e = small_new(c->v, EV_NET, c->nr, c->cgid, c->ret);
  if (!e)
    return;
  e->kind = NET_LISTEN;
  e->fd = (int)c->a[0];
  e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
  e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
  if (e->family == AF_INET) {
    __u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
    __builtin_memcpy(e->addr, &a, 4);
  } else if (e->family == AF_INET6) {
    BPF_CORE_READ_INTO(e->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
  }
  ev_submit(c->v, e);
}

static __always_inline void unknown_ev(struct sc *c, __u32 kind)
{
  struct ev_small *e = small_new(c->v, EV_UNKNOWN, c->nr, c->cgid, c->ret);
  if (!e)
    return;
  e->kind = kind;
  ev_submit(c->v, e);
}

/* ---- sys_exit ---- */

/* Can this syscall, with this result, have had an effect worth reporting? Only compares on the
 * number, the arguments in registers and the return value: no helper call. Network attempts count
 * even when they failed in flight (connect in progress); everything else only when it succeeded. */
static __always_inline int candidate(long nr, struct pt_regs *regs, long ret)
{
  switch (nr) {
  case NR_write: case NR_pwrite64: case NR_writev: case NR_pwritev: case NR_pwritev2:
  case NR_sendfile: case NR_splice: case NR_copy_file_range:
    return ret > 0;
  case NR_connect:
    return ret == 0 || ret == -EINPROGRESS;
  /* interactions: a signal number 0 only tests that the target exists */
  case NR_kill: case NR_tkill: case NR_rt_sigqueueinfo: case NR_pidfd_send_signal:
    return ret == 0 && regs->si != 0;
  case NR_tgkill: case NR_rt_tgsigqueueinfo:
    return ret == 0 && regs->dx != 0;
  case NR_ptrace:
    return ret >= 0;
  case NR_process_vm_writev: case NR_tee: case NR_vmsplice:
    return ret > 0;
  case NR_sendto:
    return ret >= 0 && regs->r8 != 0;
  case NR_sendmmsg:
    return ret > 0;
  case NR_open:
    return ret >= 0 && (regs->si & O_WRBITS);
  case NR_openat:
    return ret >= 0 && (regs->dx & O_WRBITS);
  case NR_open_by_handle_at:
    return ret >= 0 && (regs->dx & (O_WRONLY | O_RDWR | O_TRUNC));
  case NR_mmap: {
    unsigned long prot = regs->dx, type = regs->r10 & MAP_TYPE;
    return ret >= 0 && (prot & PROT_WRITE) && (type == MAP_SHARED || type == MAP_SHARED_VALIDATE) && (long)regs->r8 >= 0;
  }
  case NR_fallocate: case NR_truncate: case NR_ftruncate: case NR_chdir: case NR_fchdir: case NR_rename:
  case NR_mkdir: case NR_rmdir: case NR_creat: case NR_link: case NR_unlink: case NR_symlink:
  case NR_chmod: case NR_fchmod: case NR_chown: case NR_fchown: case NR_lchown: case NR_utime:
  case NR_mknod: case NR_setxattr: case NR_lsetxattr: case NR_fsetxattr: case NR_removexattr:
  case NR_lremovexattr: case NR_fremovexattr: case NR_utimes: case NR_mkdirat: case NR_mknodat:
  case NR_fchownat: case NR_futimesat: case NR_unlinkat: case NR_renameat: case NR_linkat:
  case NR_symlinkat: case NR_fchmodat: case NR_utimensat: case NR_renameat2: case NR_fchmodat2:
  case NR_setxattrat: case NR_removexattrat: case NR_listen: case NR_sendmsg: case NR_io_uring_setup:
  case NR_openat2:
    return ret >= 0;
  }
  return 0;
}

static __always_inline void on_syscall(struct sc *c)
{
  switch (c->nr) {
  case NR_kill: case NR_tkill: case NR_tgkill: case NR_rt_sigqueueinfo: case NR_rt_tgsigqueueinfo:
  case NR_pidfd_send_signal: case NR_ptrace: case NR_process_vm_writev: case NR_tee: case NR_vmsplice:
    __sync_fetch_and_add(&c->v->interactions, 1);
    return;
  case NR_connect:
    net_addr(c, NET_CONNECT, (void *)c->a[1]);
    return;
  case NR_sendto:
    net_addr(c, NET_SENDTO, (void *)c->a[4]);
    return;
  case NR_sendmsg: {
    void *name = 0;
    bpf_probe_read_user(&name, sizeof(name), (void *)c->a[1]);
    net_addr(c, NET_SENDTO, name);
    return;
  }
  case NR_sendmmsg: /* the destinations of the first messages sent (each struct mmsghdr: 64 bytes) */
#pragma unroll
    for (int i = 0; i < 4; i++) {
      if (i >= c->ret)
        break;
      void *name = 0;
      bpf_probe_read_user(&name, sizeof(name), (void *)(c->a[1] + 64 * i));
      net_addr(c, NET_SENDTO, name);
    }
    return;
  case NR_io_uring_setup:
    unknown_ev(c, UNK_IO_URING);
    return;
  case NR_listen:
    net_listen(c);
    return;
  case NR_write: case NR_pwrite64: case NR_writev: case NR_pwritev: case NR_pwritev2: case NR_sendfile:
    fd_op(c, (int)c->a[0], c->ret, FD_REGULAR);
    return;
  case NR_splice:
    __sync_fetch_and_add(&c->v->interactions, 1);
    fd_op(c, (int)c->a[2], c->ret, FD_REGULAR);
    return;
  case NR_copy_file_range:
    fd_op(c, (int)c->a[2], c->ret, FD_REGULAR);
    return;
  case NR_fallocate: case NR_ftruncate:
    fd_op(c, (int)c->a[0], 0, FD_REGULAR);
    return;
  case NR_mmap:
    fd_op(c, (int)c->a[4], 0, FD_REGULAR);
    return;
  case NR_open_by_handle_at:
    fd_op(c, (int)c->ret, 0, FD_REGULAR | FD_OPENED);
    return;
  case NR_fchmod: case NR_fchown: case NR_fsetxattr: case NR_fremovexattr: case NR_fchdir:
    fd_op(c, (int)c->a[0], 0, 0);
    return;
  case NR_open: case NR_creat:
    open_op(c, 0, -1);
    return;
  case NR_openat: case NR_openat2:
    open_op(c, 1, 0);
    return;
  case NR_utimensat:
    if (c->a[1] == 0) { /* utimensat(fd, NULL, …) = futimens */
      fd_op(c, (int)c->a[0], 0, 0);
      return;
    }
    path_op(c, 1, -1, 0, 0, 1);
    return;
  case NR_truncate: case NR_chdir: case NR_mkdir: case NR_rmdir: case NR_unlink: case NR_chmod:
  case NR_chown: case NR_lchown: case NR_utime: case NR_mknod: case NR_setxattr: case NR_lsetxattr:
  case NR_removexattr: case NR_lremovexattr: case NR_utimes:
    path_op(c, 0, -1, 0, -1, 1);
    return;
  case NR_mkdirat: case NR_mknodat: case NR_fchownat: case NR_futimesat: case NR_unlinkat:
  case NR_fchmodat: case NR_fchmodat2: case NR_setxattrat: case NR_removexattrat:
    path_op(c, 1, -1, 0, 0, 1);
    return;
  case NR_rename:
    path_op(c, 0, 1, 0, -1, 3);
    return;
  case NR_link:
    path_op(c, 0, 1, 0, -1, 2);
    return;
  case NR_symlink:
    path_op(c, 1, -1, 0, -1, 1);
    return;
  case NR_symlinkat:
    path_op(c, 2, -1, 0, 1, 1);
    return;
  case NR_renameat: case NR_renameat2:
    path_op(c, 1, 3, 0, 0, 3);
    return;
  case NR_linkat:
    path_op(c, 1, 3, 0, 2, 2);
    return;
  }
}

/* Context of a syscalls:sys_exit_* tracepoint as a BPF program sees it. */
struct sys_exit_ctx {
  __u64 unused;
  int nr;
  long ret;
};

/* Attached by the helper to syscalls:sys_exit_<name> for each syscall in SYSCALLS (inspector.h):
 * the kernel tests a bitmap for every other syscall and never runs this program for it. The
 * arguments are read from the task's saved user registers (unchanged since sys_enter). */
SEC("tracepoint")
int on_sys_exit(struct sys_exit_ctx *ctx)
{
  long nr = ctx->nr, ret = ctx->ret;
  struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
  if (!candidate(nr, regs, ret))
    return 0;
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  struct sc c = { .cgid = cgid, .v = v, .nr = nr, .ret = ret };
  c.a[0] = regs->di;
  c.a[1] = regs->si;
  c.a[2] = regs->dx;
  c.a[3] = regs->r10;
  c.a[4] = regs->r8;
  c.a[5] = regs->r9;
  on_syscall(&c);
  return 0;
}

/* ---- processes ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  struct ev_small *e = small_new(v, EV_FORK, 0, cgid, 0);
  if (!e)
    return 0;
  e->child_tgid = BPF_CORE_READ(child, tgid);
  e->child_pid = BPF_CORE_READ(child, pid);
  ev_submit(v, e);
  return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  struct ev_path *e = path_new(v, EV_EXEC, 0, cgid, old_pid, 0);
  if (!e)
    return 0;
  e->dfd = 0;
  const char *fn = BPF_CORE_READ(bprm, filename);
  if (bpf_probe_read_kernel_str(e->p1, PATHLEN, fn) < 0)
    e->p1[0] = 0;
  bpf_get_current_comm(e->p2, COMMLEN);
  /* a 32-bit ELF: its syscalls are compat ones, which syscalls:* tracepoints do not show */
  char hdr[5] = {};
  bpf_core_read(hdr, sizeof(hdr), &bprm->buf);
  if (hdr[0] == 0x7f && hdr[1] == 'E' && hdr[2] == 'L' && hdr[3] == 'F' && hdr[4] == 1 /* ELFCLASS32 */)
    e->flags |= EVF_COMPAT;
  ev_submit(v, e);
  return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_proc_exit, struct task_struct *p)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
    return 0; /* a thread, not a process */
  struct ev_small *e = small_new(v, EV_EXIT, 0, cgid, BPF_CORE_READ(p, exit_code));
  if (!e)
    return 0;
  ev_submit(v, e);
  return 0;
}
