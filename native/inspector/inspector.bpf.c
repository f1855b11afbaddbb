// SPDX-License-Identifier: GPL-2.0
/* Crab inspector: syscall and sched tracepoints, filtered in the kernel to registered sandbox
 * cgroups (cgroup v2 ids). Mutation syscalls are recorded at sys_exit, only when they succeeded.
 * Writes are deduplicated in the kernel per (cgroup, tgid, fd, file, turn generation); their
 * bytes are summed in the sandbox's map value. */
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
#define FMODE_CREATED 0x100000
#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define S_IFLNK 0120000
#define PROT_WRITE 2
#define MAP_TYPE 0x0f
#define MAP_SHARED 1
#define MAP_SHARED_VALIDATE 3
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
#define NR_utime 132
#define NR_mknod 133
#define NR_setxattr 188
#define NR_lsetxattr 189
#define NR_fsetxattr 190
#define NR_removexattr 197
#define NR_lremovexattr 198
#define NR_fremovexattr 199
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
#define NR_utimensat 280
#define NR_fallocate 285
#define NR_pwritev 296
#define NR_renameat2 316
#define NR_copy_file_range 326
#define NR_pwritev2 328
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

struct pend {
  __u64 cgid;
  __u64 nr;
  __u64 args[6];
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct pend);
} pending SEC(".maps");

struct fdkey {
  __u64 cgid;
  __u64 file;
  __u32 tgid;
  __s32 fd;
};

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct fdkey);
  __type(value, __u64);
} fdseen SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 32 * 1024 * 1024);
} rb SEC(".maps");

/* Is this syscall (with these args) worth remembering at sys_enter? Cheap: nr switch + flags. */
static __always_inline int interesting(long nr, unsigned long *a)
{
  switch (nr) {
  case NR_write: case NR_pwrite64: case NR_writev: case NR_pwritev: case NR_pwritev2:
  case NR_sendfile: case NR_splice: case NR_copy_file_range: case NR_fallocate:
  case NR_truncate: case NR_ftruncate: case NR_chdir: case NR_fchdir: case NR_rename:
  case NR_mkdir: case NR_rmdir: case NR_creat: case NR_link: case NR_unlink: case NR_symlink:
  case NR_chmod: case NR_fchmod: case NR_chown: case NR_fchown: case NR_lchown: case NR_utime:
  case NR_mknod: case NR_setxattr: case NR_lsetxattr: case NR_fsetxattr: case NR_removexattr:
  case NR_lremovexattr: case NR_fremovexattr: case NR_utimes: case NR_mkdirat: case NR_mknodat:
  case NR_fchownat: case NR_futimesat: case NR_unlinkat: case NR_renameat: case NR_linkat:
  case NR_symlinkat: case NR_fchmodat: case NR_utimensat: case NR_renameat2: case NR_fchmodat2:
  case NR_setxattrat: case NR_removexattrat: case NR_listen: case NR_connect: case NR_sendmsg:
  case NR_io_uring_setup:
    return 1;
  case NR_sendto:
    return a[4] != 0;
  case NR_mmap:
    return (a[2] & PROT_WRITE) && ((a[3] & MAP_TYPE) == MAP_SHARED || (a[3] & MAP_TYPE) == MAP_SHARED_VALIDATE) &&
           (long)a[4] >= 0;
  case NR_open:
    return (a[1] & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_TMPFILE)) != 0;
  case NR_openat:
    return (a[2] & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_TMPFILE)) != 0;
  case NR_openat2:
    return 1; /* flags are in struct open_how: checked at exit */
  }
  return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int on_sys_enter(struct trace_event_raw_sys_enter *ctx)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  if (!bpf_map_lookup_elem(&sandboxes, &cgid))
    return 0;
  long nr = BPF_CORE_READ(ctx, id);
  unsigned long a[6];
#pragma unroll
  for (int i = 0; i < 6; i++)
    a[i] = BPF_CORE_READ(ctx, args[i]);
  if (!interesting(nr, a))
    return 0;
  struct pend p = { .cgid = cgid, .nr = nr };
#pragma unroll
  for (int i = 0; i < 6; i++)
    p.args[i] = a[i];
  __u32 tid = (__u32)bpf_get_current_pid_tgid();
  bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
  return 0;
}

static __always_inline struct file *fd_file(int fd)
{
  struct task_struct *t = (struct task_struct *)bpf_get_current_task();
  struct files_struct *files = BPF_CORE_READ(t, files);
  if (!files)
    return 0;
  struct fdtable *fdt = BPF_CORE_READ(files, fdt);
  unsigned int max = BPF_CORE_READ(fdt, max_fds);
  if (fd < 0 || (unsigned int)fd >= max)
    return 0;
  struct file **fds = BPF_CORE_READ(fdt, fd);
  struct file *f = 0;
  bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
  return f;
}

#define AT_FDCWD -100

struct dirbuf {
  char d[DIRLEN];
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct dirbuf);
} scratch SEC(".maps");

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
 * EVF_D1TRUNC otherwise. A global function: the verifier checks it once, not per call site. */
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
  return c.res;
}

/* Walks into the scratch buffer, then copies it into the event. */
static __always_inline __u32 walk_path(struct dentry *d, struct vfsmount *vm, char *out)
{
  __u32 r = walk_global((__u64)d, (__u64)vm);
  __u32 zero = 0;
  struct dirbuf *sb = bpf_map_lookup_elem(&scratch, &zero);
  if (!sb) {
    out[0] = 0;
    return EVF_D1TRUNC;
  }
  bpf_probe_read_kernel(out, DIRLEN, sb->d);
  return r;
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

static __always_inline void count_drop(struct sb_val *v)
{
  if (v)
    __sync_fetch_and_add(&v->drops, 1);
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

/* An fd-based mutation: regular files only for writes (dirs too for metadata ops); once per turn. */
static __always_inline void fd_op(struct pend *p, struct sb_val *v, int fd, long ret, int is_write, int regular_only)
{
  struct file *f = fd_file(fd);
  if (!f)
    return;
  struct inode *ino = BPF_CORE_READ(f, f_inode);
  __u16 mode = BPF_CORE_READ(ino, i_mode);
  __u16 fmt = mode & S_IFMT;
  if (fmt != S_IFREG && (regular_only || (fmt != S_IFDIR && fmt != S_IFLNK)))
    return;
  if (is_write && ret > 0)
    __sync_fetch_and_add(&v->bytes, ret);
  __u32 tgid = bpf_get_current_pid_tgid() >> 32;
  struct fdkey k = { .cgid = p->cgid, .file = (__u64)f, .tgid = tgid, .fd = fd };
  __u64 gen = 0;
  __u64 *g = bpf_map_lookup_elem(&gens, &p->cgid);
  if (g)
    gen = *g;
  __u64 *seen = bpf_map_lookup_elem(&fdseen, &k);
  if (seen && *seen == gen)
    return;
  bpf_map_update_elem(&fdseen, &k, &gen, BPF_ANY);
  struct ev_path *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    /* forget it so the next write retries the report */
    bpf_map_delete_elem(&fdseen, &k);
    return;
  }
  fill_hdr(&e->h, EV_FDOP, p->nr, p->cgid, ret);
#pragma unroll
  for (int i = 0; i < 6; i++)
    e->args[i] = p->args[i];
  e->p1[0] = 0;
  e->p2[0] = 0;
  e->dfd = fd;
  __u32 flags = fmt == S_IFDIR ? EVF_DIR : 0;
  if (BPF_CORE_READ(ino, i_nlink) == 0)
    flags |= EVF_UNLINKED;
  flags |= walk_path(BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), e->d1);
  e->flags = flags;
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
}

/* dfd_arg: index of the dirfd argument (-1: AT_FDCWD); rel: which path (1, 2, 3 = either) triggers the walk */
static __always_inline void path_op(struct pend *p, struct sb_val *v, long ret, int a1, int a2, __u32 flags, int dfd_arg, int rel)
{
  struct ev_path *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    return;
  }
  fill_hdr(&e->h, EV_PATH, p->nr, p->cgid, ret);
#pragma unroll
  for (int i = 0; i < 6; i++)
    e->args[i] = p->args[i];
  e->p1[0] = 0;
  e->p2[0] = 0;
  if (a1 >= 0 && a1 < 6) {
    long n = bpf_probe_read_user_str(e->p1, PATHLEN, (void *)p->args[a1]);
    if (n >= PATHLEN)
      flags |= EVF_TRUNC1;
    if (n < 0)
      e->p1[0] = 0;
  }
  if (a2 >= 0 && a2 < 6) {
    long n = bpf_probe_read_user_str(e->p2, PATHLEN, (void *)p->args[a2]);
    if (n >= PATHLEN)
      flags |= EVF_TRUNC2;
    if (n < 0)
      e->p2[0] = 0;
  }
  e->d1[0] = 0;
  e->dfd = AT_FDCWD;
  if (dfd_arg >= 0 && dfd_arg < 6)
    e->dfd = (int)p->args[dfd_arg];
  int relative = ((rel & 1) && e->p1[0] != '/') || ((rel & 2) && e->p2[0] != '/');
  if (relative)
    flags |= walk_base(e->dfd, e->d1);
  e->flags = flags;
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
}

static __always_inline void small_ev(struct sb_val *v, __u32 type, __u32 nr, __u64 cgid, long ret, __u32 kind)
{
  struct ev_small *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    return;
  }
  __builtin_memset(e, 0, sizeof(*e));
  fill_hdr(&e->h, type, nr, cgid, ret);
  e->kind = kind;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
}

/* connect/sendto/sendmsg: the destination address, read from user memory. */
static __always_inline void net_addr(struct pend *p, struct sb_val *v, long ret, __u32 kind, void *uaddr)
{
  if (!uaddr)
    return;
  __u16 fam = 0;
  if (bpf_probe_read_user(&fam, sizeof(fam), uaddr))
    return;
  if (fam != AF_INET && fam != AF_INET6)
    return;
  struct ev_small *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    return;
  }
  __builtin_memset(e, 0, sizeof(*e));
  fill_hdr(&e->h, EV_NET, p->nr, p->cgid, ret);
  e->kind = kind;
  e->family = fam;
  e->fd = (int)p->args[0];
  __u16 port = 0;
  bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
  e->port = __builtin_bswap16(port);
  if (fam == AF_INET)
    bpf_probe_read_user(e->addr, 4, uaddr + 4);
  else
    bpf_probe_read_user(e->addr, 16, uaddr + 8);
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
}

/* listen(fd): the bound local address, read from the socket. */
static __always_inline void net_listen(struct pend *p, struct sb_val *v, long ret)
{
  struct file *f = fd_file((int)p->args[0]);
  if (!f)
    return;
  struct socket *sock = BPF_CORE_READ(f, private_data);
  struct sock *sk = BPF_CORE_READ(sock, sk);
  if (!sk)
    return;
  struct ev_small *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    return;
  }
  __builtin_memset(e, 0, sizeof(*e));
  fill_hdr(&e->h, EV_NET, p->nr, p->cgid, ret);
  e->kind = NET_LISTEN;
  e->fd = (int)p->args[0];
  e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
  e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
  if (e->family == AF_INET) {
    __u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
    __builtin_memcpy(e->addr, &a, 4);
  } else if (e->family == AF_INET6) {
    BPF_CORE_READ_INTO(e->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
  }
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int on_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  __u32 tid = (__u32)bpf_get_current_pid_tgid();
  struct pend *pp = bpf_map_lookup_elem(&pending, &tid);
  if (!pp)
    return 0;
  struct pend p = *pp;
  bpf_map_delete_elem(&pending, &tid);
  long ret = BPF_CORE_READ(ctx, ret);
  long nr = BPF_CORE_READ(ctx, id);
  if (nr != (long)p.nr || p.cgid != cgid)
    return 0;

  /* network effects count even when the syscall failed: the attempt may have left the host */
  switch (nr) {
  case NR_connect:
    if (ret == 0 || ret == -EINPROGRESS)
      net_addr(&p, v, ret, NET_CONNECT, (void *)p.args[1]);
    return 0;
  case NR_sendto:
    if (ret >= 0)
      net_addr(&p, v, ret, NET_SENDTO, (void *)p.args[4]);
    return 0;
  case NR_sendmsg: {
    if (ret < 0)
      return 0;
    void *name = 0;
    bpf_probe_read_user(&name, sizeof(name), (void *)p.args[1]);
    net_addr(&p, v, ret, NET_SENDTO, name);
    return 0;
  }
  case NR_io_uring_setup:
    if (ret >= 0)
      small_ev(v, EV_UNKNOWN, nr, cgid, ret, 0);
    return 0;
  }
  if (ret < 0)
    return 0;

  switch (nr) {
  case NR_write: case NR_pwrite64: case NR_writev: case NR_pwritev: case NR_pwritev2:
    if (ret > 0)
      fd_op(&p, v, (int)p.args[0], ret, 1, 1);
    return 0;
  case NR_sendfile:
    if (ret > 0)
      fd_op(&p, v, (int)p.args[0], ret, 1, 1);
    return 0;
  case NR_splice: case NR_copy_file_range:
    if (ret > 0)
      fd_op(&p, v, (int)p.args[2], ret, 1, 1);
    return 0;
  case NR_fallocate: case NR_ftruncate:
    fd_op(&p, v, (int)p.args[0], 0, 0, 1);
    return 0;
  case NR_mmap:
    fd_op(&p, v, (int)p.args[4], 0, 0, 1);
    return 0;
  case NR_fchmod: case NR_fchown: case NR_fsetxattr: case NR_fremovexattr: case NR_fchdir:
    fd_op(&p, v, (int)p.args[0], 0, 0, 0);
    return 0;
  case NR_listen:
    net_listen(&p, v, ret);
    return 0;
  case NR_open: case NR_creat: case NR_openat: case NR_openat2: {
    int a = (nr == NR_open || nr == NR_creat) ? 0 : 1;
    if (nr == NR_openat2) {
      __u64 fl = 0;
      bpf_probe_read_user(&fl, sizeof(fl), (void *)p.args[2]);
      if (!(fl & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_TMPFILE)))
        return 0;
      p.args[2] = fl;
    }
    struct file *f = fd_file((int)ret);
    if (!f)
      return 0;
    struct inode *ino = BPF_CORE_READ(f, f_inode);
    __u16 fmt = BPF_CORE_READ(ino, i_mode) & S_IFMT;
    if (fmt != S_IFREG && fmt != S_IFDIR)
      return 0; /* pipes, sockets, ttys, /dev/null */
    __u32 fl = (BPF_CORE_READ(f, f_mode) & FMODE_CREATED) ? EVF_CREATED : 0;
    path_op(&p, v, ret, a, -1, fl, a == 0 ? -1 : 0, 1);
    return 0;
  }
  case NR_utimensat:
    if (p.args[1] == 0) { /* utimensat(fd, NULL, …) = futimens */
      fd_op(&p, v, (int)p.args[0], 0, 0, 0);
      return 0;
    }
    path_op(&p, v, ret, 1, -1, 0, 0, 1);
    return 0;
  case NR_truncate: case NR_chdir: case NR_mkdir: case NR_rmdir: case NR_unlink: case NR_chmod:
  case NR_chown: case NR_lchown: case NR_utime: case NR_mknod: case NR_setxattr: case NR_lsetxattr:
  case NR_removexattr: case NR_lremovexattr: case NR_utimes:
    path_op(&p, v, ret, 0, -1, 0, -1, 1);
    return 0;
  case NR_mkdirat: case NR_mknodat: case NR_fchownat: case NR_futimesat: case NR_unlinkat:
  case NR_fchmodat: case NR_fchmodat2: case NR_setxattrat: case NR_removexattrat:
    path_op(&p, v, ret, 1, -1, 0, 0, 1);
    return 0;
  case NR_rename:
    path_op(&p, v, ret, 0, 1, 0, -1, 3);
    return 0;
  case NR_link:
    path_op(&p, v, ret, 0, 1, 0, -1, 2);
    return 0;
  case NR_symlink:
    path_op(&p, v, ret, 1, -1, 0, -1, 1);
    return 0;
  case NR_symlinkat:
    path_op(&p, v, ret, 2, -1, 0, 1, 1);
    return 0;
  case NR_renameat: case NR_renameat2:
    path_op(&p, v, ret, 1, 3, 0, 0, 3);
    return 0;
  case NR_linkat:
    path_op(&p, v, ret, 1, 3, 0, 2, 2);
    return 0;
  }
  return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  struct ev_small *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    return 0;
  }
  __builtin_memset(e, 0, sizeof(*e));
  fill_hdr(&e->h, EV_FORK, 0, cgid, 0);
  e->child_tgid = BPF_CORE_READ(child, tgid);
  e->child_pid = BPF_CORE_READ(child, pid);
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
  return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
  __u64 cgid = bpf_get_current_cgroup_id();
  struct sb_val *v = bpf_map_lookup_elem(&sandboxes, &cgid);
  if (!v)
    return 0;
  struct ev_path *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
  if (!e) {
    count_drop(v);
    return 0;
  }
  fill_hdr(&e->h, EV_EXEC, 0, cgid, old_pid);
  __builtin_memset(e->args, 0, sizeof(e->args));
  e->flags = 0;
  e->dfd = 0;
  e->d1[0] = 0;
  const char *fn = BPF_CORE_READ(bprm, filename);
  if (bpf_probe_read_kernel_str(e->p1, PATHLEN, fn) < 0)
    e->p1[0] = 0;
  bpf_get_current_comm(e->p2, COMMLEN);
  __sync_fetch_and_add(&v->events, 1);
  bpf_ringbuf_submit(e, 0);
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
  small_ev(v, EV_EXIT, 0, cgid, BPF_CORE_READ(p, exit_code), 0);
  return 0;
}
