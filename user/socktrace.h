/*
 * socktrace.h - socket tracing as a library: loads bpf/sock.bpf.c, reads
 * its ring buffer, keeps the connections, and feeds the request tracker.
 *
 * Use: socktrace_open(), socktrace_add_pid() for each target, then
 * socktrace_poll() in a loop, socktrace_stats(), socktrace_close().
 */
#ifndef TT_SOCKTRACE_H
#define TT_SOCKTRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hooks.h"
#include "requests.h"

struct socktrace;
struct stepprobe_site;

/* The step probe: an engine's step function ran on thread tid of pid from
 * start_ns to end_ns (CLOCK_MONOTONIC); batch: llama_decode's batch as
 * sock.h's runs (batch->nruns of them), NULL when it was not read (another
 * step function) or not whole (TT_SOCK_STEP_CUT). */
struct tt_sock_step;
typedef void (*socktrace_step_cb)(void *ctx, uint32_t pid, uint32_t tid,
				  uint64_t start_ns, uint64_t end_ns,
				  const struct tt_sock_step *batch);

/* Raw data hook: every captured piece of every connection (those the
 * target connect()ed too), before reqtrack. */
typedef void (*socktrace_data_cb)(void *ctx, const struct tt_conn_meta *conn,
				  enum tt_dir dir, uint64_t ts_ns,
				  const void *data, size_t len, size_t missing,
				  bool lost_before);

struct socktrace_opts {
	struct reqtrack *rt;		/* fed with data, close, lost; may be NULL */
	unsigned ringbuf_kb;		/* 0: 4096 KiB; rounded up to a power of 2 */
	unsigned capture_cap;		/* bytes per syscall; 0: TT_SOCK_CAP_DEFAULT */
	bool verbose;			/* libbpf messages on stderr */
	bool no_tls;			/* do not probe libssl */
	enum tt_hooks hooks;		/* socket I/O hooks (user/hooks.h) */
	bool cpu_compute;		/* the CPU compute source measures the
					   targets: auto keeps off uprobes */
	uint64_t idle_timeout_ns;	/* 0: 600 s; silent connections are closed */
	socktrace_data_cb on_data;	/* optional */
	void *ctx;
	/* the step probe (user/stepprobe.h): on every target where a step
	   function is found, or on step_site alone (--step-probe); off
	   without on_step or with no_step_probe */
	socktrace_step_cb on_step;
	void *step_ctx;
	const struct stepprobe_site *step_site;
	bool no_step_probe;
};

struct socktrace_stats {
	uint64_t events, open_events, data_events, close_events;
	uint64_t bytes, bytes_missing, tls_bytes;
	uint64_t client_bytes;		/* on connections the target opened */
	uint64_t lost_events, lost_bytes;	/* refused by the ring buffer */
	uint64_t lost_marks;		/* records flagged "earlier ones lost" */
	uint64_t conns_live, conns_timed_out;
	unsigned targets;		/* added by the caller */
	unsigned children;		/* followed across fork */
	unsigned libc_procs, syscall_procs, ssl_procs;	/* live, by hooks */
	bool syscall_hooks;		/* the syscall tracepoints are on */
	bool used_libc, used_syscalls;	/* some target had them, ever */
	unsigned ringbuf_kb, capture_cap;
	unsigned step_procs;		/* targets with the step probe, ever */
	uint64_t steps;			/* step windows seen */
	uint64_t step_batches;		/* of them, with llama_decode's batch */
	uint64_t step_batches_cut;	/* batches too big to read whole */
};

/*
 * Checks privilege, BTF and tracefs, loads and attaches the programs.
 * Returns 0, or with a message on stderr: -EPERM (no root / CAP_BPF),
 * -ENOENT (no BTF), -ENODEV (no tracefs), -EINVAL (bad option), other
 * -errno on load failure.
 */
int socktrace_open(const struct socktrace_opts *opts, struct socktrace **out);

/* Trace pid (a tgid) and its future children, with the hooks
 * opts.hooks picks for it; probes its libssl. */
int socktrace_add_pid(struct socktrace *st, pid_t pid);
/* The same for a pid about to exec exe: the hooks are picked for exe. */
int socktrace_add_pid_exe(struct socktrace *st, pid_t pid, const char *exe);

/* Waits up to timeout_ms for events and handles them; returns how many
 * were handled, or -errno. The kernel wakes the reader only when its buffer
 * fills up, so call this at least every 100 ms or so. */
int socktrace_poll(struct socktrace *st, int timeout_ms);

/* Handles what is left in the ring buffer without waiting. */
int socktrace_drain(struct socktrace *st);

void socktrace_stats(struct socktrace *st, struct socktrace_stats *out);
/* "libc", "syscalls", "libc+syscalls" or "none": the hooks that traced
 * some target. */
const char *socktrace_hooks_name(const struct socktrace_stats *s);

/* Detaches, unloads and frees; the tracker is left as it is (call
 * reqtrack_flush for what is still open). */
void socktrace_close(struct socktrace *st);

/* CLOCK_MONOTONIC now, the clock of every record. */
uint64_t socktrace_now_ns(void);

/* The ring buffer size actually used for a request of kb KiB. */
unsigned socktrace_ringbuf_bytes(unsigned kb);

#endif
