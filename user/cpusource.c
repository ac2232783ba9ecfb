/*
 * cpusource.c - the CPU compute source, user side: loads bpf/cpu.bpf.c,
 * marks the target pids, reads the batches of on-CPU slices from the ring
 * buffer and hands each slice to a tt_compute_sink as a TT_IV_CPU interval.
 *
 * In:  pids (cpusource_add_pid); struct tt_cpu_rec from the ring buffer.
 * Out: the "cpu" device (id 0, kind TT_DEV_CPU) at open, intervals while
 *      polling, and at stop the pending and running slices and the losses.
 * Assumes: single-threaded use; CLOCK_MONOTONIC is bpf_ktime_get_ns().
 *
 * Exact totals at stop: the stop time is taken first, then the programs
 * are detached (nothing changes in the maps after that), the ring buffer is
 * drained, and the `threads` map is walked: each entry's batch not yet sent
 * is delivered, and a thread still on a CPU gets its running slice
 * [switch-in, stop). A slice that began after the stop time is cut to
 * nothing.
 *
 * Record rate and accuracy under the reference server: see the top
 * comment of bpf/cpu.bpf.c (about 12 slices per record at load; on-CPU
 * totals within 0.3 % of the process's own rusage). `tokentrace run`
 * prints slices, records and records/s for every run.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tokentrace/cpu.h"
#include "cpu.skel.h"
#include "cpusource.h"
#include "tracefs.h"

struct cpusource {
	struct cpu_bpf *skel;
	struct ring_buffer *rb;
	struct tt_compute_sink sink;
	struct cpusource_stats st;
	int ncpus;
	int stopped;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void deliver(struct cpusource *cs, uint32_t tgid, uint32_t tid,
		    uint64_t start, uint64_t end, uint32_t cpu)
{
	struct tt_interval iv = {
		.start_ns = start, .end_ns = end, .device = 0,
		.pid = tgid, .tid = tid, .stream = cpu, .kind = TT_IV_CPU,
	};

	cs->st.slices++;
	if (cs->sink.interval)
		cs->sink.interval(cs->sink.ctx, &iv);
}

/* Deliver the slices of one record; -EINVAL if it is not one we know. */
static int deliver_rec(struct cpusource *cs, const struct tt_cpu_rec *r,
		       size_t len)
{
	size_t hdr = offsetof(struct tt_cpu_rec, slices);
	uint16_t n;

	if (len < hdr || r->version != TT_CPU_REC_VERSION ||
	    r->type != TT_CPU_REC_SLICES_T || r->size > len) {
		cs->st.bad_records++;
		return -EINVAL;
	}
	n = r->nslices;
	if (n > TT_CPU_REC_SLICES || hdr + n * sizeof(r->slices[0]) > r->size) {
		cs->st.bad_records++;
		return -EINVAL;
	}
	for (uint16_t i = 0; i < n; i++) {
		const struct tt_cpu_slice *s = &r->slices[i];
		uint64_t start = r->base_ns + s->off_ns;

		deliver(cs, r->tgid, r->tid, start, start + s->dur_ns, s->cpu);
	}
	return 0;
}

static int on_record(void *ctx, void *data, size_t len)
{
	struct cpusource *cs = ctx;

	cs->st.records++;
	deliver_rec(cs, data, len);
	return 0;
}

static void send_device(struct cpusource *cs)
{
	struct tt_device dev = { .id = 0, .kind = TT_DEV_CPU };

	snprintf(dev.name, sizeof(dev.name), "cpu");
	if (cs->sink.device)
		cs->sink.device(cs->sink.ctx, &dev);
}

int cpusource_open(struct cpusource **out, const struct tt_compute_sink *sink)
{
	struct cpusource *cs;
	int err;

	*out = NULL;
	cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	if (sink)
		cs->sink = *sink;
	cs->ncpus = libbpf_num_possible_cpus();
	if (tracefs_ensure("sched")) {
		err = -ENODEV;
		goto fail;
	}
	cs->skel = cpu_bpf__open_and_load();
	if (!cs->skel) {
		err = -errno;
		fprintf(stderr, "tokentrace: loading the CPU source's eBPF "
			"program failed: %s (run as root; the kernel needs BTF "
			"and the sched tracepoints)\n", strerror(-err));
		goto fail;
	}
	err = cpu_bpf__attach(cs->skel);
	if (err) {
		fprintf(stderr, "tokentrace: attaching to sched:sched_switch "
			"failed: %s\n", strerror(-err));
		goto fail;
	}
	cs->rb = ring_buffer__new(bpf_map__fd(cs->skel->maps.rb), on_record,
				  cs, NULL);
	if (!cs->rb) {
		err = -errno;
		fprintf(stderr, "tokentrace: CPU source ring buffer: %s\n",
			strerror(-err));
		goto fail;
	}
	send_device(cs);
	*out = cs;
	return 0;
fail:
	cpusource_close(cs);
	return err ? err : -EINVAL;
}

static int add_thread(struct cpusource *cs, uint32_t tid, uint64_t now)
{
	struct tt_cpu_thread t = { .on_ns = now, .on_cpu = 0 };

	/* on_ns = now: a thread on a CPU right now is counted from now;
	 * one that is not gets a fresh switch-in time before it runs. */
	return bpf_map__update_elem(cs->skel->maps.threads, &tid, sizeof(tid),
				    &t, sizeof(t), BPF_NOEXIST);
}

int cpusource_add_pid(struct cpusource *cs, uint32_t pid)
{
	char path[64];
	struct dirent *de;
	uint8_t one = 1;
	DIR *d;
	int err, n = 0;

	err = bpf_map__update_elem(cs->skel->maps.targets, &pid, sizeof(pid),
				   &one, sizeof(one), BPF_ANY);
	if (err) {
		fprintf(stderr, "tokentrace: cannot trace pid %u: targets map: "
			"%s\n", pid, strerror(-err));
		return err;
	}
	/* targets first, then the threads: a clone in between is caught by
	 * the fork tracepoint, and BPF_NOEXIST keeps its entry. */
	snprintf(path, sizeof(path), "/proc/%u/task", pid);
	d = opendir(path);
	if (!d) {
		err = -errno;
		fprintf(stderr, "tokentrace: cannot trace pid %u: %s: %s\n",
			pid, path, strerror(errno));
		return err;
	}
	while ((de = readdir(d))) {
		char *end;
		unsigned long tid = strtoul(de->d_name, &end, 10);

		if (*end || !tid)
			continue;
		err = add_thread(cs, tid, mono_ns());
		if (err && err != -EEXIST)
			fprintf(stderr, "tokentrace: cannot trace thread %lu of "
				"pid %u: %s\n", tid, pid, strerror(-err));
		else
			n++;
	}
	closedir(d);
	return n ? 0 : -ESRCH;
}

int cpusource_fd(const struct cpusource *cs)
{
	return ring_buffer__epoll_fd(cs->rb);
}

int cpusource_poll(struct cpusource *cs, int timeout_ms)
{
	int n;

	if (cs->stopped)
		return 0;
	/* Records come without wakeups: consume first, then wait. */
	n = ring_buffer__consume(cs->rb);
	if (n == 0 && timeout_ms > 0)
		n = ring_buffer__poll(cs->rb, timeout_ms);
	return n == -EINTR ? 0 : n;
}

static uint64_t counter_sum(struct cpusource *cs, uint32_t idx)
{
	uint64_t vals[cs->ncpus > 0 ? cs->ncpus : 1], sum = 0;

	if (cs->ncpus <= 0 ||
	    bpf_map__lookup_elem(cs->skel->maps.counters, &idx, sizeof(idx),
				 vals, sizeof(vals), 0))
		return 0;
	for (int i = 0; i < cs->ncpus; i++)
		sum += vals[i];
	return sum;
}

/* The tgid of a thread whose entry never had a batch: from /proc. */
static uint32_t tgid_of(uint32_t tid)
{
	char path[64], line[128];
	uint32_t tgid = tid;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%u/status", tid);
	f = fopen(path, "r");
	if (!f)
		return tid;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %u", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

static void flush_thread(struct cpusource *cs, uint32_t tid,
			 struct tt_cpu_thread *t, uint64_t now)
{
	uint64_t before = cs->st.slices;
	uint32_t tgid;

	if (t->batch.nslices) {
		t->batch.size = sizeof(t->batch);
		t->batch.version = TT_CPU_REC_VERSION;
		t->batch.type = TT_CPU_REC_SLICES_T;
		deliver_rec(cs, &t->batch, sizeof(t->batch));
	}
	if (t->on_ns && t->on_ns < now) {
		tgid = t->batch.tid == tid && t->batch.tgid ? t->batch.tgid
							    : tgid_of(tid);
		deliver(cs, tgid, tid, t->on_ns, now, t->on_cpu);
	}
	cs->st.flushed += cs->st.slices - before;
}

int cpusource_stop(struct cpusource *cs, uint64_t now_ns)
{
	struct bpf_map *map;
	uint32_t key, next;
	struct tt_compute_losses l = {};
	int fd, err;

	if (cs->stopped)
		return 0;
	cpu_bpf__detach(cs->skel);
	cs->stopped = 1;
	ring_buffer__consume(cs->rb);
	map = cs->skel->maps.threads;
	fd = bpf_map__fd(map);
	for (err = bpf_map_get_next_key(fd, NULL, &next); !err;
	     err = bpf_map_get_next_key(fd, &key, &next)) {
		struct tt_cpu_thread t;

		key = next;
		if (bpf_map_lookup_elem(fd, &key, &t) == 0)
			flush_thread(cs, key, &t, now_ns);
	}
	cs->st.lost = counter_sum(cs, TT_CPU_CNT_LOST);
	cs->st.no_room = counter_sum(cs, TT_CPU_CNT_NO_ROOM);
	l.cpu_events_lost = cs->st.lost;
	if (cs->sink.losses)
		cs->sink.losses(cs->sink.ctx, 0, &l);
	return 0;
}

void cpusource_get_stats(struct cpusource *cs, struct cpusource_stats *st)
{
	if (!cs->stopped) {
		cs->st.lost = counter_sum(cs, TT_CPU_CNT_LOST);
		cs->st.no_room = counter_sum(cs, TT_CPU_CNT_NO_ROOM);
	}
	*st = cs->st;
}

void cpusource_close(struct cpusource *cs)
{
	if (!cs)
		return;
	ring_buffer__free(cs->rb);
	cpu_bpf__destroy(cs->skel);
	free(cs);
}
