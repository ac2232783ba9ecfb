// SPDX-License-Identifier: GPL-2.0
/*
 * sock.bpf.c - the kernel side of socket tracing.
 *
 * In:  the socket I/O of the processes in the `targets` map, from one of
 *      two kinds of hook, chosen per process (the map's value):
 *      - HOOK_SYSCALLS: syscall tracepoints (accept, accept4, connect,
 *        read, readv, recvfrom, recvmsg, write, writev, sendto, sendmsg,
 *        close). Once enabled they are entered by every syscall of that
 *        kind of every process on the host, traced or not;
 *      - HOOK_LIBC: uprobes on the same functions of the libc the process
 *        maps (and recv, send, __read_chk, __recv_chk, __recvfrom_chk),
 *        attached with that process's pid, so the kernel puts breakpoints
 *        only into its address space: other processes run untouched;
 *      fork/exit to follow them (a child inherits its parent's kind and
 *      is announced with a TT_SOCK_EV_PROC record so that the loader
 *      attaches its uprobes; a libc-hooked child that execs before the
 *      loader has done so stops at the exec, TT_SOCK_F_HELD, until the
 *      loader sends SIGCONT, so a server started by a script loses no
 *      request), and uprobes on libssl (SSL_read,
 *      SSL_write, SSL_read_ex, SSL_write_ex), pid-scoped as well.
 * Out: records of include/tokentrace/sock.h in the `events` ring buffer:
 *      connection open (addresses), data (payload in chunks of at most
 *      TT_SOCK_CHUNK_MAX bytes, up to `capture_cap` bytes per syscall, the
 *      rest counted as missing), close. A refused record is counted in the
 *      per-CPU `losses` map and marks its connection, so that the next
 *      record of that connection carries TT_SOCK_F_LOST.
 * Assumes: CO-RE against the running kernel's BTF; tracepoints only (no
 *      kprobes, no fentry). Only TCP over IPv4/IPv6 is reported.
 *
 * The enter program of a syscall (or libc call) stashes its arguments per
 * thread; the exit program, knowing the byte count, copies the payload.
 * Every thread of an untraced process leaves a tracepoint after one hash
 * lookup; it never reaches a uprobe.
 *
 * A libc close can happen out of sight (libc's own internal closes), so
 * each connection remembers the struct file it was found on: when the fd
 * now holds another file, the old connection is closed and the fd looked
 * at afresh.
 *
 * TLS: while an SSL call runs on a thread (`ssl_calls`), the socket
 * syscalls it makes name the connection and are not emitted (ciphertext);
 * the cleartext is emitted when the SSL call returns. A connection whose
 * first bytes are a TLS record is marked TLS and its ciphertext is never
 * emitted. With memory BIOs (Python asyncio) SSL_read_ex makes no syscall:
 * it is tied to the TLS socket the thread read last, and the SSL object
 * remembers that connection for its writes (a server reads a request
 * before it writes; a write on an object never seen reading is dropped).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tokentrace/sock.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET		2
#define AF_INET6	10
#define IPPROTO_TCP	6
#define S_IFMT		00170000
#define S_IFSOCK	0140000
#define MAX_CHUNKS	(TT_SOCK_CAP_MAX / TT_SOCK_CHUNK_MAX)
#define MAX_IOV		16
#define HOOK_SYSCALLS	TT_SOCK_HOOK_SYSCALLS
#define HOOK_LIBC	TT_SOCK_HOOK_LIBC
#define TARGET_PENDING	TT_SOCK_TARGET_PENDING
#define SIG_STOP	19

/* set by the loader before load */
const volatile __u32 capture_cap = TT_SOCK_CAP_DEFAULT;

/* connection ids: unique for the life of the loaded program */
__u64 conn_seq = 0;

/* ---- maps ---------------------------------------------------------------- */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);	/* resized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);		/* tgid */
	__type(value, __u8);		/* HOOK_SYSCALLS or HOOK_LIBC */
} targets SEC(".maps");

/* what an enter program leaves for its exit program */
enum arg_kind { ARG_BUF = 0, ARG_IOV = 1, ARG_MSG = 2, ARG_ACCEPT = 3,
		ARG_CONNECT = 4 };

struct stash {
	__u64 ts;
	__u64 ptr;	/* buffer, iovec array or msghdr */
	__u64 cnt;	/* buffer size or iovec count */
	__s32 fd;
	__u8 kind;	/* enum arg_kind */
	__u8 dir;	/* TT_SOCK_DIR_* */
};

/* LRU: a thread killed inside a syscall never reaches its exit program;
 * its stash ages out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);		/* pid_tgid */
	__type(value, struct stash);
} stashes SEC(".maps");

struct conn_key {
	__u32 tgid;
	__s32 fd;
};

#define CONN_TCP	(1u << 0)	/* a TCP socket we report */
#define CONN_OTHER	(1u << 1)	/* not a TCP socket: ignore until close */
#define CONN_TLS	(1u << 2)
#define CONN_LOST	(1u << 3)	/* a record was lost; mark the next */
#define CONN_SEEN	(1u << 4)	/* first bytes already looked at */

struct conn {
	__u64 id;
	__u64 file;	/* the struct file the fd held when it was looked at */
	__u32 flags;
	__u32 pad;
};

/* LRU: a process that exits closes its fds without close(); their entries
 * age out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn);
} conns SEC(".maps");

struct ssl_call {
	__u64 ts;
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr;	/* size_t * of the _ex variants, 0 otherwise */
	__s32 fd;	/* socket used inside the call, -1 if none */
	__u8 dir;
};

/* LRU for the same reason as stashes */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);		/* pid_tgid */
	__type(value, struct ssl_call);
} ssl_calls SEC(".maps");

struct ssl_key {
	__u32 tgid;
	__u32 pad;
	__u64 ssl;
};

/* the socket an SSL object works on, as learned from its calls */
struct ssl_sock {
	__s32 fd;
	__u32 direct;	/* seen in a syscall inside the call (socket BIO) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, struct ssl_sock);
} ssl_fds SEC(".maps");

/* the TLS socket each thread read last (memory-BIO servers) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);		/* pid_tgid */
	__type(value, __s32);		/* fd */
} last_tls_read SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tt_sock_loss);
} losses SEC(".maps");

struct data_rec {
	struct tt_sock_hdr hdr;
	struct tt_sock_data d;
	__u8 payload[TT_SOCK_CHUNK_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_rec);
} scratch SEC(".maps");

/* ---- helpers ------------------------------------------------------------- */

/* The kind of hook that traces tgid (HOOK_*), 0 when it is not traced. */
static __always_inline __u8 target_mode(__u32 tgid)
{
	__u8 *m = bpf_map_lookup_elem(&targets, &tgid);

	return m ? *m & ~TARGET_PENDING : 0;
}

static __always_inline bool is_target(__u32 tgid)
{
	return target_mode(tgid) != 0;
}

static __always_inline void count_loss(__u64 bytes)
{
	__u32 zero = 0;
	struct tt_sock_loss *l = bpf_map_lookup_elem(&losses, &zero);

	if (l) {
		l->events++;
		l->bytes += bytes;
	}
}

static __always_inline void fill_hdr(struct tt_sock_hdr *h, __u16 type,
				     __u32 size, __u64 ts, struct conn *c,
				     __s32 fd)
{
	__u64 id = bpf_get_current_pid_tgid();

	h->version = TT_SOCK_VERSION;
	h->type = type;
	h->size = size;
	h->ts_ns = ts;
	h->conn_id = c->id;
	h->tgid = id >> 32;
	h->tid = (__u32)id;
	h->fd = fd;
	h->flags = 0;
	if (c->flags & CONN_LOST)
		h->flags |= TT_SOCK_F_LOST;
	if (c->flags & CONN_TLS)
		h->flags |= TT_SOCK_F_TLS;
}

/*
 * Output a record; on failure count it and mark the connection. The reader
 * is woken only once the buffer is an eighth full (it also polls on a
 * timer): a wakeup per record would make the collector preempt the traced
 * server right as its syscalls return, and cost it a context switch each.
 */
static __always_inline void emit(void *rec, __u64 size, struct conn *c,
				 __u64 payload)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 ring = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	__u64 flags = avail + size >= ring / 8 ? BPF_RB_FORCE_WAKEUP :
		      BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_output(&events, rec, size, flags)) {
		count_loss(payload);
		c->flags |= CONN_LOST;
		return;
	}
	c->flags &= ~CONN_LOST;
}

/* The struct file behind fd of the current task, or NULL. */
static __always_inline struct file *fd_to_file(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *f = NULL;

	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return NULL;
	return f;
}

/* The struct sock of file f, or NULL. */
static __always_inline struct sock *file_to_sock(struct file *f)
{
	struct socket *sock;
	umode_t mode;

	if (!f)
		return NULL;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline bool sock_is_tcp(struct sock *sk, __u16 *family)
{
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (fam != AF_INET && fam != AF_INET6)
		return false;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return false;
	*family = fam;
	return true;
}

static __always_inline void emit_open(struct conn *c, __s32 fd,
				      struct sock *sk, __u16 family,
				      __u16 role, __u64 ts)
{
	struct {
		struct tt_sock_hdr hdr;
		struct tt_sock_open o;
	} rec = {};

	fill_hdr(&rec.hdr, TT_SOCK_EV_OPEN, sizeof(rec), ts, c, fd);
	rec.o.family = family;
	rec.o.role = role;
	rec.o.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	rec.o.remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		bpf_core_read(rec.o.local_addr, 4,
			      &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(rec.o.remote_addr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(rec.o.local_addr, 16,
			      &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(rec.o.remote_addr, 16,
			      &sk->__sk_common.skc_v6_daddr);
	}
	emit(&rec, sizeof(rec), c, 0);
}

static __always_inline void emit_close(struct conn *c, __s32 fd, __u64 ts)
{
	struct tt_sock_hdr h;

	fill_hdr(&h, TT_SOCK_EV_CLOSE, sizeof(h), ts, c, fd);
	emit(&h, sizeof(h), c, 0);
}

/*
 * The connection of (tgid, fd): known, or created now (with an open record)
 * when fd is a TCP socket. NULL for anything else.
 */
static __always_inline struct conn *conn_get(__u32 tgid, __s32 fd,
					     __u16 role, __u64 ts, bool fresh)
{
	struct conn_key k = { .tgid = tgid, .fd = fd };
	struct conn nc = {}, *c;
	struct sock *sk;
	__u16 family = 0;

	struct file *f = fd_to_file(fd);

	c = bpf_map_lookup_elem(&conns, &k);
	if (c && !fresh && c->file == (__u64)f)
		return (c->flags & CONN_TCP) ? c : NULL;
	if (c && c->file != (__u64)f && (c->flags & CONN_TCP))
		emit_close(c, fd, ts);	/* closed out of sight */
	sk = file_to_sock(f);
	nc.file = (__u64)f;
	if (!sk || !sock_is_tcp(sk, &family)) {
		nc.flags = CONN_OTHER;
		bpf_map_update_elem(&conns, &k, &nc, BPF_ANY);
		return NULL;
	}
	nc.id = __sync_fetch_and_add(&conn_seq, 1) + 1;
	nc.flags = CONN_TCP;
	bpf_map_update_elem(&conns, &k, &nc, BPF_ANY);
	c = bpf_map_lookup_elem(&conns, &k);
	if (c)
		emit_open(c, fd, sk, family, role, ts);
	return c;
}

/* ---- payload ------------------------------------------------------------- */

/*
 * The copy of one syscall's (or SSL call's) bytes, one chunk per call of a
 * global function, so that the verifier checks one step once and not every
 * unrolled chunk. It holds scalars only: each step looks its connection and
 * scratch record up.
 */
struct copy_ctx {
	struct conn_key key;
	__u64 src;		/* the buffer, or the iovec array */
	__u64 iovcnt;
	__u64 cap;		/* bytes to capture: min(total, capture_cap) */
	__u64 total;		/* bytes the call moved */
	__u64 done;		/* bytes captured so far */
	__u64 iov_base, iov_len, off;
	__u32 idx;		/* current iovec */
	__u32 seq;
	__u32 failed;
};

/* One record of n (<= TT_SOCK_CHUNK_MAX) bytes from user memory src. */
static __always_inline int put_chunk(struct copy_ctx *cx, __u64 src, __u32 n,
				     __u32 missing)
{
	__u32 zero = 0;
	struct data_rec *r = bpf_map_lookup_elem(&scratch, &zero);
	struct conn *c = bpf_map_lookup_elem(&conns, &cx->key);

	if (!r || !c)
		return -1;
	if (n > TT_SOCK_CHUNK_MAX)
		n = TT_SOCK_CHUNK_MAX;
	barrier_var(n);
	if (n > TT_SOCK_CHUNK_MAX)
		return -1;
	if (n && bpf_probe_read_user(r->payload, n, (void *)src))
		return -1;
	r->hdr.size = sizeof(r->hdr) + sizeof(r->d) + n;
	r->d.len = n;
	r->d.missing = missing;
	r->d.seq = cx->seq++;
	if (c->flags & CONN_LOST)
		r->hdr.flags |= TT_SOCK_F_LOST;
	else
		r->hdr.flags &= ~TT_SOCK_F_LOST;
	emit(r, sizeof(r->hdr) + sizeof(r->d) + n, c, n + missing);
	cx->done += n;
	return 0;
}

static __always_inline int buf_step(struct copy_ctx *cx)
{
	__u64 left = cx->cap - cx->done;
	bool last = left <= TT_SOCK_CHUNK_MAX;
	__u32 n = last ? left : TT_SOCK_CHUNK_MAX;

	if (put_chunk(cx, cx->src + cx->done, n,
		      last ? cx->total - cx->cap : 0)) {
		cx->failed = 1;
		return 1;
	}
	return last;
}

static __always_inline int iov_step(struct copy_ctx *cx)
{
	__u64 left = cx->cap - cx->done, n;
	struct iovec iov;

	if (!left || cx->idx >= cx->iovcnt || cx->idx >= MAX_IOV)
		return 1;
	if (cx->off == 0) {
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(cx->src +
					cx->idx * sizeof(iov)))) {
			cx->failed = 1;
			return 1;
		}
		cx->iov_base = (__u64)iov.iov_base;
		cx->iov_len = iov.iov_len;
	}
	n = cx->iov_len - cx->off;
	if (n > left)
		n = left;
	if (n > TT_SOCK_CHUNK_MAX)
		n = TT_SOCK_CHUNK_MAX;
	if (n && put_chunk(cx, cx->iov_base + cx->off, n, 0)) {
		cx->failed = 1;
		return 1;
	}
	cx->off += n;
	if (cx->off >= cx->iov_len) {
		cx->idx++;
		cx->off = 0;
	}
	return 0;
}

/* One chunk; non-zero when the copy is over. */
__noinline int tt_copy_step(struct copy_ctx *cx)
{
	if (!cx)
		return 1;
	return cx->iovcnt ? iov_step(cx) : buf_step(cx);
}

/* The record that reports what could not be captured, when needed. */
__noinline int tt_copy_tail(struct copy_ctx *cx)
{
	if (!cx)
		return 0;
	if ((cx->iovcnt || cx->failed) && (cx->done < cx->total || !cx->seq))
		return put_chunk(cx, 0, 0, cx->total - cx->done);
	return 0;
}

static __always_inline int rec_start(struct conn *c, __s32 fd, __u64 ts,
				     __u8 dir, __u8 source, __u64 total)
{
	__u32 zero = 0;
	struct data_rec *r = bpf_map_lookup_elem(&scratch, &zero);

	if (!r)
		return -1;
	fill_hdr(&r->hdr, TT_SOCK_EV_DATA, 0, ts, c, fd);
	r->d.dir = dir;
	r->d.source = source;
	r->d.total = total;
	return 0;
}

/*
 * Emit `total` bytes moved on connection c: from one buffer (iovcnt 0) or
 * an iovec array. What is not captured is reported as missing.
 */
static __always_inline void emit_payload(struct conn *c, __s32 fd, __u64 ts,
					 __u8 dir, __u8 source, __u64 src,
					 __u64 iovcnt, __u64 total)
{
	struct copy_ctx cx = {};

	if (rec_start(c, fd, ts, dir, source, total))
		return;
	cx.key.tgid = bpf_get_current_pid_tgid() >> 32;
	cx.key.fd = fd;
	cx.src = src;
	cx.iovcnt = iovcnt;
	cx.total = total;
	cx.cap = total < capture_cap ? total : capture_cap;
	for (int i = 0; i < MAX_CHUNKS + MAX_IOV; i++)
		if (tt_copy_step(&cx))
			break;
	tt_copy_tail(&cx);
}

/* ---- TLS ----------------------------------------------------------------- */

/* A TLS record header: handshake (22) .. application data (23), 3.x */
static __always_inline bool looks_like_tls(__u64 buf, __u64 len)
{
	__u8 h[3] = {};

	if (len < 3 || bpf_probe_read_user(h, sizeof(h), (void *)buf))
		return false;
	return h[0] >= 20 && h[0] <= 23 && h[1] == 3 && h[2] <= 4;
}

/*
 * Data moved by a socket syscall on a connection: decides whether it is
 * ciphertext to hide (inside an SSL call, or a TLS connection).
 * Returns true when the payload must not be emitted.
 */
static __always_inline bool tls_filter(__u64 pid_tgid, struct conn *c,
				       __s32 fd, struct stash *s)
{
	struct ssl_call *call = bpf_map_lookup_elem(&ssl_calls, &pid_tgid);

	if (call) {
		call->fd = fd;
		c->flags |= CONN_TLS | CONN_SEEN;
	}
	if (!(c->flags & CONN_SEEN)) {
		c->flags |= CONN_SEEN;
		if (s->kind == ARG_BUF && looks_like_tls(s->ptr, s->cnt))
			c->flags |= CONN_TLS;
	}
	if (!(c->flags & CONN_TLS))
		return false;
	if (s->dir == TT_SOCK_DIR_IN)
		bpf_map_update_elem(&last_tls_read, &pid_tgid, &fd, BPF_ANY);
	return true;
}

/* ---- syscalls ------------------------------------------------------------ */

static __always_inline int stash_args(__u64 ptr, __u64 cnt, __s32 fd,
				      __u8 kind, __u8 dir, __u8 hook)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct stash s = {};

	if (target_mode(id >> 32) != hook)
		return 0;
	s.ts = bpf_ktime_get_ns();
	s.ptr = ptr;
	s.cnt = cnt;
	s.fd = fd;
	s.kind = kind;
	s.dir = dir;
	bpf_map_update_elem(&stashes, &id, &s, BPF_ANY);
	return 0;
}

static __always_inline void handle_accept(struct stash *s, long ret, __u64 now)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (ret >= 0)
		conn_get(tgid, ret, s->kind == ARG_ACCEPT ?
			 TT_SOCK_ROLE_ACCEPTED : TT_SOCK_ROLE_CONNECTED, now,
			 true);
}

static __always_inline void handle_data(__u64 id, struct stash *s, long ret,
					__u64 now)
{
	struct user_msghdr msg = {};
	struct conn *c;
	__u64 ts = s->dir == TT_SOCK_DIR_IN ? now : s->ts;

	c = conn_get(id >> 32, s->fd, TT_SOCK_ROLE_UNKNOWN, ts, false);
	if (!c)
		return;
	if (s->kind == ARG_MSG) {
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)s->ptr))
			return;
		s->kind = ARG_IOV;
		s->ptr = (__u64)msg.msg_iov;
		s->cnt = msg.msg_iovlen;
	}
	if (s->kind == ARG_IOV && !(c->flags & CONN_SEEN)) {
		struct iovec iov = {};

		if (!bpf_probe_read_user(&iov, sizeof(iov), (void *)s->ptr) &&
		    looks_like_tls((__u64)iov.iov_base, iov.iov_len))
			c->flags |= CONN_TLS;
	}
	if (tls_filter(id, c, s->fd, s))
		return;
	if (s->kind == ARG_BUF)
		emit_payload(c, s->fd, ts, s->dir, TT_SOCK_SRC_SYSCALL,
			     s->ptr, 0, ret);
	else if (s->cnt)
		emit_payload(c, s->fd, ts, s->dir, TT_SOCK_SRC_SYSCALL,
			     s->ptr, s->cnt, ret);
}

/* A syscall's return (hook HOOK_SYSCALLS: -errno on failure) or a libc
 * call's (HOOK_LIBC: -1 and errno). */
static __always_inline int exit_common(long ret, __u8 hook)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct stash *sp, s;
	__u64 now;

	if (target_mode(id >> 32) != hook)
		return 0;
	sp = bpf_map_lookup_elem(&stashes, &id);
	if (!sp)
		return 0;
	s = *sp;
	bpf_map_delete_elem(&stashes, &id);
	now = bpf_ktime_get_ns();
	if (s.kind == ARG_ACCEPT || s.kind == ARG_CONNECT) {
		/* failed, and not EINPROGRESS (libc: -1 either way; a
		 * connection that never was is closed like any other) */
		if (s.kind == ARG_CONNECT && ret != 0 && ret != -115 &&
		    !(hook == HOOK_LIBC && ret == -1))
			return 0;
		handle_accept(&s, s.kind == ARG_CONNECT ? s.fd : ret, now);
		return 0;
	}
	if (ret > 0)
		handle_data(id, &s, ret, now);
	return 0;
}

#define ENTER(name, ptr_arg, cnt_arg, kind, dir)			\
SEC("tracepoint/syscalls/sys_enter_" #name)				\
int enter_##name(struct trace_event_raw_sys_enter *ctx)		\
{									\
	return stash_args(ptr_arg, cnt_arg, (__s32)ctx->args[0], kind,	\
			  dir, HOOK_SYSCALLS);				\
}									\
SEC("tracepoint/syscalls/sys_exit_" #name)				\
int exit_##name(struct trace_event_raw_sys_exit *ctx)			\
{									\
	return exit_common(ctx->ret, HOOK_SYSCALLS);			\
}

ENTER(read, ctx->args[1], ctx->args[2], ARG_BUF, TT_SOCK_DIR_IN)
ENTER(recvfrom, ctx->args[1], ctx->args[2], ARG_BUF, TT_SOCK_DIR_IN)
ENTER(readv, ctx->args[1], ctx->args[2], ARG_IOV, TT_SOCK_DIR_IN)
ENTER(recvmsg, ctx->args[1], 0, ARG_MSG, TT_SOCK_DIR_IN)
ENTER(write, ctx->args[1], ctx->args[2], ARG_BUF, TT_SOCK_DIR_OUT)
ENTER(sendto, ctx->args[1], ctx->args[2], ARG_BUF, TT_SOCK_DIR_OUT)
ENTER(writev, ctx->args[1], ctx->args[2], ARG_IOV, TT_SOCK_DIR_OUT)
ENTER(sendmsg, ctx->args[1], 0, ARG_MSG, TT_SOCK_DIR_OUT)
ENTER(accept, 0, 0, ARG_ACCEPT, 0)
ENTER(accept4, 0, 0, ARG_ACCEPT, 0)
ENTER(connect, 0, 0, ARG_CONNECT, 0)

static __always_inline int close_common(__s32 fd, __u8 hook)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .tgid = id >> 32, .fd = fd };
	struct conn *c;

	if (target_mode(k.tgid) != hook)
		return 0;
	c = bpf_map_lookup_elem(&conns, &k);
	if (!c)
		return 0;
	if (c->flags & CONN_TCP)
		emit_close(c, k.fd, bpf_ktime_get_ns());
	bpf_map_delete_elem(&conns, &k);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	return close_common((__s32)ctx->args[0], HOOK_SYSCALLS);
}

/* ---- libc ---------------------------------------------------------------- */

/*
 * One entry program per argument shape, each attached (pid-scoped) to the
 * libc functions of that shape; one return program for all of them. A
 * _chk variant that calls the plain function nests two stashes on one
 * thread: the inner return consumes the stash, the outer finds none.
 */
SEC("uprobe")
int BPF_KPROBE(libc_in_buf, int fd, void *buf, __u64 n)
{
	return stash_args((__u64)buf, n, fd, ARG_BUF, TT_SOCK_DIR_IN,
			  HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_in_iov, int fd, void *iov, int cnt)
{
	return stash_args((__u64)iov, cnt, fd, ARG_IOV, TT_SOCK_DIR_IN,
			  HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_in_msg, int fd, void *msg)
{
	return stash_args((__u64)msg, 0, fd, ARG_MSG, TT_SOCK_DIR_IN,
			  HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_out_buf, int fd, void *buf, __u64 n)
{
	return stash_args((__u64)buf, n, fd, ARG_BUF, TT_SOCK_DIR_OUT,
			  HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_out_iov, int fd, void *iov, int cnt)
{
	return stash_args((__u64)iov, cnt, fd, ARG_IOV, TT_SOCK_DIR_OUT,
			  HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_out_msg, int fd, void *msg)
{
	return stash_args((__u64)msg, 0, fd, ARG_MSG, TT_SOCK_DIR_OUT,
			  HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_accept, int fd)
{
	return stash_args(0, 0, fd, ARG_ACCEPT, 0, HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_connect, int fd)
{
	return stash_args(0, 0, fd, ARG_CONNECT, 0, HOOK_LIBC);
}

SEC("uprobe")
int BPF_KPROBE(libc_close, int fd)
{
	return close_common(fd, HOOK_LIBC);
}

SEC("uretprobe")
int BPF_KRETPROBE(libc_ret, long ret)
{
	return exit_common(ret, HOOK_LIBC);
}

/* ---- following processes ------------------------------------------------- */

SEC("raw_tp/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u8 mode;
	struct tt_sock_hdr h = {};

	if (ctgid == ptgid || !(mode = target_mode(ptgid)))
		return 0;
	if (mode == HOOK_LIBC)
		mode |= TARGET_PENDING;
	bpf_map_update_elem(&targets, &ctgid, &mode, BPF_ANY);
	/* its uprobes (libc, libssl) are the loader's to attach */
	h.version = TT_SOCK_VERSION;
	h.type = TT_SOCK_EV_PROC;
	h.size = sizeof(h);
	h.ts_ns = bpf_ktime_get_ns();
	h.tgid = ctgid;
	h.tid = ptgid;
	h.fd = -1;
	if (bpf_ringbuf_output(&events, &h, sizeof(h), BPF_RB_FORCE_WAKEUP))
		count_loss(0);
	return 0;
}

/* A libc-hooked target runs a new program: its libc may be another, or
 * none (a static binary); the loader looks again. */
SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 *m = bpf_map_lookup_elem(&targets, &tgid);
	struct tt_sock_hdr h = {};

	if (!m)
		return 0;
	h.version = TT_SOCK_VERSION;
	h.type = TT_SOCK_EV_PROC;
	h.size = sizeof(h);
	h.ts_ns = bpf_ktime_get_ns();
	h.tgid = tgid;
	h.tid = tgid;
	h.fd = -1;
	h.flags = TT_SOCK_F_EXEC;
	/* a target on the syscall tracepoints keeps them: the loader only
	   looks for the new program's step function */
	if ((*m & ~TARGET_PENDING) != HOOK_LIBC) {
		if (bpf_ringbuf_output(&events, &h, sizeof(h), 0))
			count_loss(0);
		return 0;
	}
	/* a child not hooked yet runs its new program only once it is: it
	 * stops here, and the loader lets it go on when it has its uprobes
	 * (TT_SOCK_F_HELD); never when the loader would not hear of it */
	if (*m & TARGET_PENDING)
		h.flags |= TT_SOCK_F_HELD;
	if (bpf_ringbuf_output(&events, &h, sizeof(h), BPF_RB_FORCE_WAKEUP)) {
		count_loss(0);
		return 0;
	}
	if (h.flags & TT_SOCK_F_HELD)
		bpf_send_signal(SIG_STOP);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int on_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;

	if ((__u32)id == tgid)
		bpf_map_delete_elem(&targets, &tgid);
	return 0;
}

/* ---- libssl -------------------------------------------------------------- */

static __always_inline int ssl_enter(__u64 ssl, __u64 buf, __u64 len_ptr,
				     __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call call = {};

	if (!is_target(id >> 32))
		return 0;
	call.ts = bpf_ktime_get_ns();
	call.ssl = ssl;
	call.buf = buf;
	call.len_ptr = len_ptr;
	call.fd = -1;
	call.dir = dir;
	bpf_map_update_elem(&ssl_calls, &id, &call, BPF_ANY);
	return 0;
}

/*
 * The fd an SSL call worked on: the socket it read or wrote itself (socket
 * BIO); else, for a socket-BIO object, the one it used before (data already
 * buffered); else, for a read, the TLS socket this thread read last (memory
 * BIO: the ciphertext came in just before); else what the object learned.
 */
static __always_inline __s32 ssl_fd(__u64 id, struct ssl_call *call)
{
	struct ssl_key k = { .tgid = id >> 32, .ssl = call->ssl };
	struct ssl_sock ss = { .fd = call->fd, .direct = 1 }, *known;
	__s32 *fdp;

	known = bpf_map_lookup_elem(&ssl_fds, &k);
	if (ss.fd < 0 && known && known->direct)
		return known->fd;
	if (ss.fd < 0 && call->dir == TT_SOCK_DIR_IN) {
		fdp = bpf_map_lookup_elem(&last_tls_read, &id);
		if (fdp) {
			ss.fd = *fdp;
			ss.direct = 0;
		}
	}
	if (ss.fd >= 0) {
		bpf_map_update_elem(&ssl_fds, &k, &ss, BPF_ANY);
		return ss.fd;
	}
	return known ? known->fd : -1;
}

static __always_inline int ssl_exit(int ret)
{
	__u64 id = bpf_get_current_pid_tgid(), n = 0, ts, now;
	struct ssl_call *cp, call;
	struct conn *c;
	__s32 fd;

	cp = bpf_map_lookup_elem(&ssl_calls, &id);
	if (!cp)
		return 0;
	call = *cp;
	bpf_map_delete_elem(&ssl_calls, &id);
	if (ret <= 0)
		return 0;
	if (call.len_ptr) {
		if (bpf_probe_read_user(&n, sizeof(n), (void *)call.len_ptr))
			return 0;
	} else {
		n = ret;
	}
	fd = ssl_fd(id, &call);
	if (fd < 0 || !n)
		return 0;
	now = bpf_ktime_get_ns();
	ts = call.dir == TT_SOCK_DIR_IN ? now : call.ts;
	c = conn_get(id >> 32, fd, TT_SOCK_ROLE_UNKNOWN, ts, false);
	if (!c)
		return 0;
	c->flags |= CONN_TLS | CONN_SEEN;
	emit_payload(c, fd, ts, call.dir, TT_SOCK_SRC_TLS, call.buf, 0, n);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_enter, void *ssl, void *buf, int num)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, TT_SOCK_DIR_IN);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_enter, void *ssl, const void *buf, int num)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, TT_SOCK_DIR_OUT);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_enter, void *ssl, void *buf, size_t num,
	       size_t *readbytes)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)readbytes,
			 TT_SOCK_DIR_IN);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_enter, void *ssl, const void *buf, size_t num,
	       size_t *written)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)written,
			 TT_SOCK_DIR_OUT);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_ret, long ret)
{
	return ssl_exit((int)ret);
}

/* ---- an engine's step function ------------------------------------------- */

/*
 * The step probe: a pid-scoped uprobe on the entry of an engine's step
 * function (llama.cpp's llama_decode, the reference server's
 * rs_engine_step, or one named by --step-probe) and another on its
 * return. A call that returns is one step window, sent as a
 * TT_SOCK_EV_STEP record. On llama_decode (llama_enter) the record also
 * carries the call's batch as runs of one sequence each (sock.h). A
 * thread killed inside the call leaves its entry to age out of the LRU
 * map.
 */
struct step_rec {
	struct tt_sock_hdr h;
	struct tt_sock_step s;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);		/* pid_tgid */
	__type(value, struct step_rec);	/* its entry, its batch */
} step_entry SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct step_rec);
} step_scratch SEC(".maps");

/* This CPU's scratch record, its entry time set and no batch. */
static __always_inline struct step_rec *step_begin(void)
{
	__u32 zero = 0;
	struct step_rec *r = bpf_map_lookup_elem(&step_scratch, &zero);

	if (!r)
		return NULL;
	r->s.start_ns = bpf_ktime_get_ns();
	r->s.n_tokens = 0;
	r->s.nruns = 0;
	r->s.flags = 0;
	return r;
}

SEC("uprobe")
int step_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct step_rec *r = step_begin();

	if (r)
		bpf_map_update_elem(&step_entry, &id, r, BPF_ANY);
	return 0;
}

/* struct llama_batch of llama.h, as the x86-64 ABI lays it out */
struct llama_batch_abi {
	__s32 n_tokens;
	__u32 pad;
	__u64 token, embd, pos, n_seq_id, seq_id, logits;
};

struct batch_walk {
	__u64 pos, seq_id, logits;
	__u32 n;
};

/* Token i of the batch into the scratch record's runs; 1 stops. */
static long walk_token(__u32 i, void *data)
{
	struct batch_walk *w = data;
	__u32 zero = 0;
	struct step_rec *r = bpf_map_lookup_elem(&step_scratch, &zero);
	__s32 seq = 0, pos = -1;
	__u64 p = 0;
	__s8 out = 0;
	__u16 k;

	if (!r || i >= w->n)
		return 1;
	if (w->seq_id &&
	    (bpf_probe_read_user(&p, sizeof(p), (void *)(w->seq_id + 8ull * i)) ||
	     !p || bpf_probe_read_user(&seq, sizeof(seq), (void *)p)))
		goto cut;
	if (w->pos && bpf_probe_read_user(&pos, sizeof(pos),
					  (void *)(w->pos + 4ull * i)))
		goto cut;
	if (!w->logits)
		out = i + 1 == w->n;	/* llama.cpp: the last token only */
	else if (bpf_probe_read_user(&out, sizeof(out),
				     (void *)(w->logits + i)))
		goto cut;
	k = r->s.nruns;
	if (k > 0 && k <= TT_SOCK_STEP_RUNS) {
		struct tt_sock_run *last = &r->s.runs[(k - 1) &
						      (TT_SOCK_STEP_RUNS - 1)];

		if (last->seq == seq &&
		    (pos < 0 || last->pos + (__s32)last->tokens == pos)) {
			last->tokens++;
			last->out += out != 0;
			return 0;
		}
	}
	if (k >= TT_SOCK_STEP_RUNS)
		goto cut;
	struct tt_sock_run *n = &r->s.runs[k & (TT_SOCK_STEP_RUNS - 1)];

	n->seq = seq;
	n->pos = pos;
	n->tokens = 1;
	n->out = out != 0;
	r->s.nruns = k + 1;
	return 0;
cut:
	r->s.flags |= TT_SOCK_STEP_CUT;
	return 1;
}

SEC("uprobe")
int llama_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct step_rec *r = step_begin();

	if (!r)
		return 0;
#if defined(__TARGET_ARCH_x86)
	/* a struct of 56 bytes is passed in memory: above the return
	   address at the entry */
	struct llama_batch_abi b;

	if (!bpf_probe_read_user(&b, sizeof(b),
				 (void *)(PT_REGS_SP(ctx) + 8)) &&
	    b.n_tokens > 0) {
		struct batch_walk w = { .pos = b.pos, .seq_id = b.seq_id,
					.logits = b.logits,
					.n = (__u32)b.n_tokens };

		r->s.n_tokens = (__u32)b.n_tokens;
		r->s.flags = TT_SOCK_STEP_BATCH;
		if (w.n > TT_SOCK_STEP_TOKENS) {
			w.n = TT_SOCK_STEP_TOKENS;
			r->s.flags |= TT_SOCK_STEP_CUT;
		}
		bpf_loop(w.n, walk_token, &w, 0);
		/* the walk used this CPU's scratch: look it up again */
		__u32 zero = 0;

		r = bpf_map_lookup_elem(&step_scratch, &zero);
		if (!r)
			return 0;
	}
#endif
	bpf_map_update_elem(&step_entry, &id, r, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(step_exit, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct step_rec *r = bpf_map_lookup_elem(&step_entry, &id);
	__u32 n, size;

	if (!r)
		return 0;
	r->h.version = TT_SOCK_VERSION;
	r->h.type = TT_SOCK_EV_STEP;
	r->h.ts_ns = bpf_ktime_get_ns();
	r->h.conn_id = 0;
	r->h.tgid = id >> 32;
	r->h.tid = (__u32)id;
	r->h.fd = -1;
	r->h.flags = 0;
	r->s.ret = ret;
	n = r->s.nruns;
	if (n > TT_SOCK_STEP_RUNS)
		n = TT_SOCK_STEP_RUNS;
	size = sizeof(r->h) + __builtin_offsetof(struct tt_sock_step, runs) +
	       n * sizeof(struct tt_sock_run);
	r->h.size = size;
	if (bpf_ringbuf_output(&events, r, size, 0))
		count_loss(0);
	bpf_map_delete_elem(&step_entry, &id);
	return 0;
}
