// SPDX-License-Identifier: GPL-2.0
/*
 * cpu.bpf.c - the CPU compute source, kernel side: exact on-CPU time of the
 * target processes' threads, from scheduler tracepoints only.
 *
 * In:  sched:sched_switch, sched:sched_process_fork, sched:sched_process_exit;
 *      the `targets` map (tgids) and `threads` map (tids), filled by user
 *      space (user/cpusource.c) before the target runs.
 * Out: struct tt_cpu_rec in the `rb` ring buffer (tokentrace/cpu.h): batches
 *      of up to 16 exact slices [start, end) of one thread, with the CPU;
 *      per-CPU counters (records lost, records sent, slices, no room).
 * Assumes: at sched_switch `current` is still the task switched out (true
 *      since the tracepoint is called before context_switch()), so its tgid
 *      comes from bpf_get_current_pid_tgid(); bpf_ktime_get_ns() is
 *      CLOCK_MONOTONIC, the collector's clock.
 *
 * The idea: a tid known to `threads` gets its switch-in time stamped in its
 * map entry; at switch-out the slice is appended to a batch held in the same
 * entry. A batch goes to the ring buffer when it holds 16 slices, when it
 * spans 10 ms or more (a compute-bound thread: one record per ~10 ms or per
 * long slice), when the thread exits, or when it is 10 ms old at the
 * thread's next switch-in. Slices stay exact (nothing is rounded or
 * merged), so the collector can compute both the union of busy time and the
 * plain sum of on-CPU time; batching only cuts the number of records and
 * ring-buffer submissions, which is what costs under a thread that wakes
 * thousands of times a second (an event loop serving streamed tokens).
 * Measured with the reference server (default model) under loadgen
 * --concurrency 4 --requests 300 --stream on the 2-core development VM:
 * 8531 slices in 3.67 s (2.3k slices/s) went out as 706 records (192
 * records/s, 12 slices per record); one record per slice would have been
 * 12 times the submissions for the same exact data. The on-CPU total was
 * within 0.3 % of the server's own getrusage (tests/e2e/test_run.c).
 *
 * Untraced switches cost two hash lookups that miss, and nothing else.
 * Targets are followed across fork and clone: a thread or process
 * created by a target process becomes a target thread (and its tid a target tgid, which
 * is harmless for a thread: a tid is never another live process's tgid).
 * A thread is dropped at its last switch-out after sched_process_exit.
 *
 * Records are sent with BPF_RB_NO_WAKEUP: the collector drains the ring at
 * least every 100 ms, so no wakeup is paid per record. A full ring buffer
 * drops the record and counts it in TT_CPU_CNT_LOST on that CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "tokentrace/cpu.h"

#define BATCH_SPAN_NS	(10ull * 1000 * 1000)
#define MAX_THREADS	8192

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);		/* tgid */
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);		/* tid */
	__type(value, struct tt_cpu_thread);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TT_CPU_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		(*c)++;
}

/* Send the pending batch of t (if any) and empty it. */
static __always_inline void emit(struct tt_cpu_thread *t)
{
	struct tt_cpu_rec *b = &t->batch;
	__u32 n = b->nslices;
	__u64 size;

	if (n == 0)
		return;
	if (n > TT_CPU_REC_SLICES)
		n = TT_CPU_REC_SLICES;
	size = sizeof(*b) - (TT_CPU_REC_SLICES - n) * sizeof(b->slices[0]);
	b->version = TT_CPU_REC_VERSION;
	b->type = TT_CPU_REC_SLICES_T;
	b->size = size;
	b->nslices = n;
	if (size > sizeof(*b))
		return;
	if (bpf_ringbuf_output(&rb, b, size, BPF_RB_NO_WAKEUP))
		count(TT_CPU_CNT_LOST);
	else
		count(TT_CPU_CNT_RECORDS);
	b->nslices = 0;
}

/* Append [start, end) on cpu to t's batch; send it when it is due. */
static __always_inline void add_slice(struct tt_cpu_thread *t, __u32 tid,
				      __u64 start, __u64 end, __u32 cpu)
{
	struct tt_cpu_rec *b = &t->batch;
	__u32 n;

	if (b->nslices && start - b->base_ns > 0xffffffffull)
		emit(t);
	n = b->nslices;
	if (n >= TT_CPU_REC_SLICES) {
		emit(t);
		n = 0;
	}
	if (n == 0) {
		b->base_ns = start;
		b->tgid = bpf_get_current_pid_tgid() >> 32;
		b->tid = tid;
	}
	b->slices[n & (TT_CPU_REC_SLICES - 1)].off_ns = start - b->base_ns;
	b->slices[n & (TT_CPU_REC_SLICES - 1)].cpu = cpu;
	b->slices[n & (TT_CPU_REC_SLICES - 1)].dur_ns = end - start;
	b->nslices = n + 1;
	count(TT_CPU_CNT_SWITCHES);
	if (n + 1 >= TT_CPU_REC_SLICES || end - b->base_ns >= BATCH_SPAN_NS)
		emit(t);
}

/*
 * The slice that ends now. Its length is the growth of the task's own
 * sum_exec_runtime since its last switch-out (the scheduler has just
 * updated it for prev), so the total stays exact even when a switch-in
 * was never seen (a tracepoint program is skipped while another BPF
 * program runs on the same CPU, the likely cause of the holes seen under
 * load), and on_ns is then stale or missing. The
 * first slice of a thread, with no sum yet, is measured from on_ns.
 */
static __always_inline void switch_out(struct tt_cpu_thread *t, __u32 tid,
				       __u64 now)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 sum = BPF_CORE_READ(task, se.sum_exec_runtime), dur = 0;
	__u64 start;
	__u32 cpu = t->on_ns ? t->on_cpu : bpf_get_smp_processor_id();

	if (t->sum_ns && sum >= t->sum_ns)
		dur = sum - t->sum_ns;
	else if (t->on_ns && now > t->on_ns)
		dur = now - t->on_ns;
	t->sum_ns = sum;
	if (dur > now)
		dur = now;
	start = now - dur;
	if (start < t->last_end_ns)	/* never overlap its own last slice */
		start = t->last_end_ns;
	if (dur && start < now) {
		add_slice(t, tid, start, now, cpu);
		t->last_end_ns = now;
	}
	t->on_ns = 0;
	if (t->exiting) {
		emit(t);
		bpf_map_delete_elem(&threads, &tid);
	}
}

static __always_inline void switch_in(struct tt_cpu_thread *t, __u64 now)
{
	if (t->batch.nslices && now - t->batch.base_ns >= BATCH_SPAN_NS)
		emit(t);
	t->on_ns = now;
	t->on_cpu = bpf_get_smp_processor_id();
}

SEC("tracepoint/sched/sched_switch")
int tt_cpu_switch(struct trace_event_raw_sched_switch *ctx)
{
	__u32 prev = ctx->prev_pid, next = ctx->next_pid;
	struct tt_cpu_thread *t;
	__u64 now = 0;

	if (prev && (t = bpf_map_lookup_elem(&threads, &prev))) {
		now = bpf_ktime_get_ns();
		switch_out(t, prev, now);
	}
	if (next && (t = bpf_map_lookup_elem(&threads, &next))) {
		if (!now)
			now = bpf_ktime_get_ns();
		switch_in(t, now);
	}
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int tt_cpu_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 child = ctx->child_pid;
	struct tt_cpu_thread zero = {};
	__u8 one = 1;

	if (!bpf_map_lookup_elem(&targets, &tgid))
		return 0;
	bpf_map_update_elem(&targets, &child, &one, BPF_ANY);
	if (bpf_map_update_elem(&threads, &child, &zero, BPF_NOEXIST) &&
	    !bpf_map_lookup_elem(&threads, &child))
		count(TT_CPU_CNT_NO_ROOM);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int tt_cpu_exit(struct trace_event_raw_sched_process_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct tt_cpu_thread *t;
	bool group_dead = tid == tgid;

	t = bpf_map_lookup_elem(&threads, &tid);
	if (!t)
		return 0;
	t->exiting = 1;
	if (bpf_core_field_exists(ctx->group_dead))
		group_dead = ctx->group_dead;
	if (tid != tgid)
		bpf_map_delete_elem(&targets, &tid);
	if (group_dead)
		bpf_map_delete_elem(&targets, &tgid);
	return 0;
}
