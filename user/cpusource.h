/*
 * cpusource.h - the CPU compute source: on-CPU intervals of target
 * processes' threads, from the kernel program bpf/cpu.bpf.c.
 *
 * In:  pids to trace (cpusource_add_pid), followed across fork and clone.
 * Out: the "cpu" device (id 0) and one TT_IV_CPU interval per slice a
 *      thread spent on a CPU (tid, CPU number as stream), to a
 *      tt_compute_sink; at stop, the slices still pending in the kernel and
 *      those of threads still on a CPU, then the losses.
 * Assumes: root (or CAP_BPF + CAP_PERFMON), kernel BTF, tracefs events for
 *      sched:*; one sink callback at a time (single-threaded caller).
 */
#ifndef TT_CPUSOURCE_H
#define TT_CPUSOURCE_H

#include <stdint.h>

#include "compute.h"

struct cpusource;

struct cpusource_stats {
	uint64_t records;	/* ring-buffer records read */
	uint64_t slices;	/* intervals delivered */
	uint64_t lost;		/* records the kernel dropped (ring full) */
	uint64_t no_room;	/* threads not traced: map full */
	uint64_t bad_records;	/* records with an unknown version/size */
	uint64_t flushed;	/* intervals delivered by the stop flush */
};

/*
 * Load and attach the program. Returns 0 and *out, or a negative errno
 * (-EPERM: no privilege) after printing what failed to stderr.
 */
int cpusource_open(struct cpusource **out, const struct tt_compute_sink *sink);

/* Trace pid and all its current threads. Negative errno on failure. */
int cpusource_add_pid(struct cpusource *cs, uint32_t pid);

/* The fd to wait on (readable when records are ready); also poll on a
 * timeout: records are written without wakeups (see bpf/cpu.bpf.c). */
int cpusource_fd(const struct cpusource *cs);

/* Deliver what is in the ring buffer, waiting up to timeout_ms for it.
 * Returns the number of records read, or a negative errno. */
int cpusource_poll(struct cpusource *cs, int timeout_ms);

/*
 * Detach, drain the ring buffer, deliver every pending slice and the
 * running slices of threads still on a CPU, cut at now_ns, then the losses.
 * Returns 0 or a negative errno. Idempotent.
 */
int cpusource_stop(struct cpusource *cs, uint64_t now_ns);

void cpusource_get_stats(struct cpusource *cs, struct cpusource_stats *st);

void cpusource_close(struct cpusource *cs);

#endif
