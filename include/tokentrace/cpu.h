/*
 * tokentrace/cpu.h - records from the CPU source's kernel program
 * (bpf/cpu.bpf.c) to its loader (user/cpusource.c), through a BPF ring
 * buffer.
 *
 * In:  nothing; this header only defines layouts both sides share.
 * Out: struct tt_cpu_rec, one batch of exact on-CPU slices of one thread.
 * Assumes: both sides are built from the same tree, little-endian fields,
 *          times in CLOCK_MONOTONIC ns (bpf_ktime_get_ns()).
 *
 * A record has a fixed layout, a version and its own size, so a reader
 * skips what it does not know: it checks `version`, then reads `nslices`
 * slices, never more than fit in `size`.
 */
#ifndef TOKENTRACE_CPU_H
#define TOKENTRACE_CPU_H

#ifndef __VMLINUX_H__
#include <stdint.h>
typedef uint16_t __tt_u16;
typedef uint32_t __tt_u32;
typedef uint64_t __tt_u64;
#else
typedef __u16 __tt_u16;
typedef __u32 __tt_u32;
typedef __u64 __tt_u64;
#endif

#define TT_CPU_REC_VERSION	1
#define TT_CPU_REC_SLICES	16	/* slices per record at most */

enum tt_cpu_rec_type {
	TT_CPU_REC_SLICES_T = 1,	/* a batch of on-CPU slices */
};

/* One stretch of a thread on one CPU: [base + off_ns, + dur_ns). */
struct tt_cpu_slice {
	__tt_u32 off_ns;	/* start, relative to the record's base_ns */
	__tt_u32 cpu;		/* CPU the thread ran on */
	__tt_u64 dur_ns;
};

struct tt_cpu_rec {
	__tt_u16 version;	/* TT_CPU_REC_VERSION */
	__tt_u16 size;		/* bytes of this record, header included */
	__tt_u16 type;		/* enum tt_cpu_rec_type */
	__tt_u16 nslices;	/* slices that follow, 1..TT_CPU_REC_SLICES */
	__tt_u32 tgid;		/* process */
	__tt_u32 tid;		/* thread */
	__tt_u64 base_ns;	/* start of the first slice */
	struct tt_cpu_slice slices[TT_CPU_REC_SLICES];
};

/*
 * Per-thread state in the kernel's `threads` map, keyed by tid. User space
 * reads it once at stop to flush what is still pending (the batch not yet
 * sent, and the slice of a thread still on a CPU).
 */
struct tt_cpu_thread {
	__tt_u64 on_ns;		/* switch-in time, 0 while off CPU */
	__tt_u32 on_cpu;	/* CPU it was switched in on */
	__tt_u32 exiting;	/* sched_process_exit seen: drop at switch-out */
	struct tt_cpu_rec batch;	/* nslices == 0: nothing pending */
	__tt_u64 sum_ns;	/* task's sum_exec_runtime at its last
				   switch-out, 0 before the first */
	__tt_u64 last_end_ns;	/* end of its last slice */
};

/* Indexes of the per-CPU `counters` array. */
enum tt_cpu_counter {
	TT_CPU_CNT_LOST = 0,	/* records dropped: ring buffer full */
	TT_CPU_CNT_RECORDS,	/* records sent */
	TT_CPU_CNT_SWITCHES,	/* target slices seen */
	TT_CPU_CNT_NO_ROOM,	/* threads not tracked: threads map full */
	TT_CPU_CNT_MAX,
};

#endif
