/*
 * sock.h - the records the kernel side (bpf/sock.bpf.c) sends to the
 * collector (user/socktrace.c) through the ring buffer.
 *
 * In:  nothing; this header only describes a layout.
 * Out: struct tt_sock_hdr, followed by a type-specific body:
 *      TT_SOCK_EV_OPEN  -> struct tt_sock_open   (addresses of a connection)
 *      TT_SOCK_EV_DATA  -> struct tt_sock_data + `len` payload bytes
 *      TT_SOCK_EV_CLOSE -> nothing more
 *      TT_SOCK_EV_PROC  -> nothing more: a traced process (tid = its
 *                          parent) forked child tgid, traced with the
 *                          parent's hooks; the loader attaches its
 *                          uprobes (libc, libssl). With TT_SOCK_F_EXEC:
 *                          tgid exec'd a new program, whose step
 *                          function the loader looks for, and whose hooks
 *                          it picks again when they were libc's
 *      TT_SOCK_EV_STEP  -> struct tt_sock_step: an engine's step function
 *                          returned (ts_ns; tid: the thread that ran it);
 *                          for llama_decode, with the runs of its batch
 * Assumes: both sides are compiled for the same little-endian host. Every
 *      record starts with a version and its total size in bytes, so a
 *      reader skips records it does not know. Fields are fixed-size and
 *      naturally aligned; the layout is the same under clang -target bpf
 *      and gcc.
 *
 * Time (ts_ns) is CLOCK_MONOTONIC in nanoseconds (bpf_ktime_get_ns):
 *  - data the server read: the time the syscall returned (the data had
 *    arrived);
 *  - data the server wrote: the time the syscall was entered (the server
 *    started sending);
 *  - TLS cleartext: the return of SSL_read/SSL_read_ex for reads, the entry
 *    of SSL_write/SSL_write_ex for writes;
 *  - open: accept/connect return, or the first data seen on the socket;
 *  - close: entry of close().
 *
 * A connection is known by conn_id, unique for the life of one loaded
 * program (a reused fd is a new connection with a new id).
 */
#ifndef TT_SOCK_H
#define TT_SOCK_H

#ifdef __bpf__
/* vmlinux.h provides __u8 .. __u64 */
#else
#include <linux/types.h>
#endif

#define TT_SOCK_VERSION		1
#define TT_SOCK_CHUNK_MAX	4096	/* payload bytes in one data record */
#define TT_SOCK_CAP_DEFAULT	16384	/* payload bytes per syscall, default */
#define TT_SOCK_CAP_MAX		65536	/* payload bytes per syscall, at most */

enum tt_sock_ev_type {
	TT_SOCK_EV_OPEN = 1,
	TT_SOCK_EV_DATA = 2,
	TT_SOCK_EV_CLOSE = 3,
	TT_SOCK_EV_PROC = 4,
	TT_SOCK_EV_STEP = 5,
};

/* The value of the `targets` map: which hooks trace that process. */
enum tt_sock_hook {
	TT_SOCK_HOOK_SYSCALLS = 1,	/* syscall tracepoints */
	TT_SOCK_HOOK_LIBC = 2,		/* pid-scoped uprobes on its libc */
};

/* hdr.flags */
#define TT_SOCK_F_LOST	(1u << 0) /* earlier events of this connection were
				     lost (ring buffer full) */
#define TT_SOCK_F_TLS	(1u << 1) /* connection carries TLS; data records
				     are cleartext from the libssl probes */
#define TT_SOCK_F_EXEC	(1u << 2) /* TT_SOCK_EV_PROC: an exec, not a fork */
/* In the targets map: a forked child not hooked yet (the loader writes the
 * plain kind once it is). */
#define TT_SOCK_TARGET_PENDING	0x80
#define TT_SOCK_F_HELD	(1u << 3) /* with TT_SOCK_F_EXEC: the process is
				     stopped until the loader sends SIGCONT */

/* tt_sock_open.role */
enum tt_sock_role {
	TT_SOCK_ROLE_UNKNOWN = 0,	/* first seen on data */
	TT_SOCK_ROLE_ACCEPTED = 1,	/* accept()ed: the process is the server */
	TT_SOCK_ROLE_CONNECTED = 2,	/* connect()ed: the process is the client */
};

/* tt_sock_data.dir, as seen from the traced process */
enum tt_sock_data_dir {
	TT_SOCK_DIR_IN = 0,	/* read by the process */
	TT_SOCK_DIR_OUT = 1,	/* written by the process */
};

/* tt_sock_data.source */
enum tt_sock_source {
	TT_SOCK_SRC_SYSCALL = 0,	/* plaintext socket syscall */
	TT_SOCK_SRC_TLS = 1,		/* SSL_read/SSL_write cleartext */
};

struct tt_sock_hdr {
	__u16 version;		/* TT_SOCK_VERSION */
	__u16 type;		/* enum tt_sock_ev_type */
	__u32 size;		/* bytes of the whole record, header included */
	__u64 ts_ns;
	__u64 conn_id;
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u32 flags;		/* TT_SOCK_F_* */
};

struct tt_sock_open {
	__u16 family;		/* AF_INET (2) or AF_INET6 (10) */
	__u16 local_port;	/* host byte order */
	__u16 remote_port;	/* host byte order */
	__u16 role;		/* enum tt_sock_role */
	__u8 local_addr[16];	/* IPv4 in the first 4 bytes, network order */
	__u8 remote_addr[16];
};

struct tt_sock_data {
	__u32 len;		/* payload bytes following this struct */
	__u32 missing;		/* bytes the syscall moved beyond the capture
				   cap, after these (0 but in the last record
				   of a syscall) */
	__u16 dir;		/* enum tt_sock_data_dir */
	__u16 source;		/* enum tt_sock_source */
	__u32 seq;		/* index of this record within its syscall */
	__u64 total;		/* bytes the syscall moved in all */
};

/*
 * llama_decode's batch (llama.h's struct llama_batch, read at the call's
 * entry) as runs: consecutive tokens of one sequence at consecutive
 * positions. llama-server puts each slot's tokens together, so a run is
 * one slot's prefill chunk or its one decoded token.
 */
#define TT_SOCK_STEP_RUNS	64	/* runs kept per call */
#define TT_SOCK_STEP_TOKENS	8192	/* tokens looked at per call */

struct tt_sock_run {
	__s32 seq;		/* sequence id (llama-server: the slot) */
	__s32 pos;		/* position of its first token */
	__u32 tokens;
	__u32 out;		/* of them, tokens whose logits were asked */
};

enum {
	TT_SOCK_STEP_BATCH = 1,	/* the batch was read: n_tokens and runs */
	TT_SOCK_STEP_CUT = 2,	/* more runs or tokens than were kept */
};

struct tt_sock_step {
	__u64 start_ns;		/* its entry; the header's ts_ns: its return */
	__s64 ret;		/* what it returned */
	__u32 n_tokens;		/* the batch's tokens */
	__u16 nruns;		/* runs that follow (the record's size says
				   the same) */
	__u16 flags;		/* TT_SOCK_STEP_* */
	struct tt_sock_run runs[TT_SOCK_STEP_RUNS];
};

/* Per-CPU loss counters (map `losses`): what the ring buffer refused. */
struct tt_sock_loss {
	__u64 events;
	__u64 bytes;
};

#endif
