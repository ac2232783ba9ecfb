/*
 * The reference server's simulated CUDA devices (tools/refserver/sim.c):
 * steps simulated on 1 and 4 devices, their records sent through the
 * CUPTI library's conversion and transport to a record file, decoded by
 * the collector's receiver, and checked against what the simulator says
 * it did: busy time per device is the union of its records, the entries
 * share every kernel, only rank 0 copies the sampled ids out, all-reduces
 * only under tensor parallelism, copies on the second stream lie inside
 * kernels, the devices say they are simulated, and a step returns only
 * once its device work has ended.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../tools/refserver/sim.h"
#include "../../user/collect.h"
#include "../../user/cuptirecv.h"
#include "../../user/steps.h"

#define SIM_STEPS 6

struct sim_run {
	struct collect c;
	struct rs_sim_step step[SIM_STEPS];
	uint64_t entry_ns[SIM_STEPS][4];
	uint64_t returned_ns[SIM_STEPS];
	char truth[4096];
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Two prefills, then decodes of both, on gpus devices. */
static void simulate(struct sim_run *x, int gpus, bool graphs)
{
	char path[] = "/tmp/tt-sim-XXXXXX", tpath[] = "/tmp/tt-simt-XXXXXX";
	struct rs_sim_cfg cfg;
	struct tt_compute_sink sink;
	struct rs_sim *s;
	char err[256] = "";
	int fd = mkstemp(path), tfd = mkstemp(tpath);
	FILE *truth = fdopen(tfd, "w+");

	cr_assert(fd >= 0 && truth);
	close(fd);
	rs_sim_cfg_default(&cfg);
	cfg.gpus = gpus;
	cfg.graphs = graphs;
	cfg.noise = 0;
	cfg.layers = 2;
	cfg.max_batch = 2;
	unsetenv("TOKENTRACE_CUPTI_SOCKET");
	setenv("TOKENTRACE_CUPTI_FILE", path, 1);
	s = rs_sim_new(&cfg, truth, err, sizeof(err));
	if (!s && strstr(err, "built without")) {
		unlink(path);
		unlink(tpath);
		cr_skip_test("%s", err);
	}
	cr_assert_not_null(s, "%s", err);
	for (int k = 0; k < SIM_STEPS; k++) {
		struct rs_sim_work w[2] = {
			{ .prefill = !k, .pos = k ? 99 + k : 0,
			  .tokens = k ? 1 : 100, .samples = true },
			{ .prefill = !k, .pos = k ? 19 + k : 0,
			  .tokens = k ? 1 : 20, .samples = true },
		};

		rs_sim_run(s, w, 2, x->entry_ns[k], &x->step[k]);
		x->returned_ns[k] = mono_ns();
	}
	rs_sim_free(s);
	unsetenv("TOKENTRACE_CUPTI_FILE");

	size_t len = 0;
	FILE *f = fopen(path, "r");
	static char buf[8 << 20];

	cr_assert_not_null(f);
	len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	collect_init(&x->c);
	collect_sink(&x->c, &sink);
	struct cuptirecv *r = cuptirecv_open(NULL, &sink);

	cr_assert_not_null(r);
	cr_assert_gt(cuptirecv_decode(r, buf, len), 0, "no records decoded");
	cuptirecv_close(r);
	rewind(truth);
	x->truth[fread(x->truth, 1, sizeof(x->truth) - 1, truth)] = 0;
	fclose(truth);
	unlink(path);
	unlink(tpath);
}

/* The collector's device id of ordinal k. */
static uint32_t dev_of(const struct sim_run *x, uint32_t k)
{
	for (size_t i = 0; i < x->c.ndevs; i++)
		if (x->c.devs[i].ordinal == k)
			return x->c.devs[i].id;
	cr_assert_fail("no device of ordinal %u", k);
	return 0;
}

static const char *name_of(const struct sim_run *x, uint32_t id)
{
	for (size_t i = 0; i < x->c.nnames; i++)
		if (x->c.names[i].name_id == id)
			return x->c.names[i].name;
	return "";
}

/* Busy time per ordinal: the warm-up's (from the truth line) + steps'. */
static uint64_t sim_busy(const struct sim_run *x, int k)
{
	char key[32];
	const char *p;
	uint64_t busy = 0;

	snprintf(key, sizeof(key), "\"device\":%d,\"busy_ns\":", k);
	p = strstr(x->truth, key);
	cr_assert_not_null(p, "warm-up line: %s", x->truth);
	busy = strtoull(p + strlen(key), NULL, 10);
	for (int s = 0; s < SIM_STEPS; s++)
		busy += x->step[s].busy_ns[k];
	return busy;
}

static void check_union(struct sim_run *x, int gpus)
{
	for (int k = 0; k < gpus; k++) {
		struct steps_span *sp;
		size_t n;
		uint64_t busy;

		cr_assert_eq(steps_union(x->c.ivs, x->c.nivs, dev_of(x, k), 0,
					 UINT64_MAX, &sp, &n, &busy), 0);
		free(sp);
		cr_expect_eq(busy, sim_busy(x, k), "device %d: union %llu, "
			     "simulated %llu", k, (unsigned long long)busy,
			     (unsigned long long)sim_busy(x, k));
	}
}

Test(sim, busy_time_is_the_union_of_the_records_on_one_device)
{
	static struct sim_run x;

	simulate(&x, 1, false);
	cr_expect_eq(x.c.ndevs, 1);
	check_union(&x, 1);
	collect_free(&x.c);
}

Test(sim, busy_time_is_the_union_of_the_records_on_four_devices)
{
	static struct sim_run x;

	simulate(&x, 4, true);
	cr_expect_eq(x.c.ndevs, 4);
	check_union(&x, 4);
	collect_free(&x.c);
}

Test(sim, the_entries_share_every_kernel)
{
	static struct sim_run x;

	simulate(&x, 4, false);
	for (int s = 0; s < SIM_STEPS; s++) {
		uint64_t sum = x.entry_ns[s][0] + x.entry_ns[s][1];
		uint64_t total = x.step[s].total_ns;

		/* each entry's time is rounded once */
		cr_expect(sum + 2 >= total && sum <= total + 2,
			  "step %d: entries %llu, devices %llu", s,
			  (unsigned long long)sum, (unsigned long long)total);
	}
	/* the prefill of 100 tokens costs more than the one of 20 */
	cr_expect_gt(x.entry_ns[0][0], x.entry_ns[0][1]);
	collect_free(&x.c);
}

Test(sim, only_rank_0_copies_and_all_ranks_all_reduce)
{
	static struct sim_run x;
	int dtoh[4] = { 0 }, nccl[4] = { 0 };

	simulate(&x, 4, false);
	for (size_t i = 0; i < x.c.nivs; i++) {
		const struct tt_interval *iv = &x.c.ivs[i];
		int k = -1;

		for (int o = 0; o < 4; o++)
			if (dev_of(&x, (uint32_t)o) == iv->device)
				k = o;
		cr_assert(k >= 0);
		if (iv->kind == TT_IV_MEMCPY && iv->copy_kind == TT_COPY_DTOH)
			dtoh[k]++;
		if (iv->kind == TT_IV_KERNEL &&
		    strstr(name_of(&x, iv->name_id), "AllReduce"))
			nccl[k]++;
	}
	cr_expect_gt(dtoh[0], SIM_STEPS, "rank 0 copies the ids of each step");
	for (int k = 1; k < 4; k++) {
		cr_expect_eq(dtoh[k], 0, "rank %d copied ids out", k);
		cr_expect_eq(nccl[k], nccl[0], "rank %d all-reduces", k);
	}
	cr_expect_gt(nccl[0], 0);
	for (int s = 0; s < SIM_STEPS; s++)
		cr_expect_gt(x.step[s].comm_ns[1], 0);
	collect_free(&x.c);
}

Test(sim, one_device_has_no_all_reduce)
{
	static struct sim_run x;

	simulate(&x, 1, false);
	for (size_t i = 0; i < x.c.nivs; i++)
		cr_expect_null(strstr(name_of(&x, x.c.ivs[i].name_id), "nccl"));
	for (int s = 0; s < SIM_STEPS; s++)
		cr_expect_eq(x.step[s].comm_ns[0], 0);
	collect_free(&x.c);
}

Test(sim, second_stream_copies_lie_inside_kernels)
{
	static struct sim_run x;
	int inside = 0, copies = 0;

	simulate(&x, 2, false);
	for (size_t i = 0; i < x.c.nivs; i++) {
		const struct tt_interval *c = &x.c.ivs[i];

		if (c->kind != TT_IV_MEMCPY || c->copy_kind != TT_COPY_DTOD)
			continue;
		copies++;
		for (size_t j = 0; j < x.c.nivs; j++) {
			const struct tt_interval *k = &x.c.ivs[j];

			if (k->kind == TT_IV_KERNEL && k->device == c->device &&
			    k->start_ns <= c->start_ns && k->end_ns >= c->end_ns) {
				inside++;
				break;
			}
		}
	}
	cr_expect_gt(copies, 0);
	cr_expect_eq(inside, copies);
	collect_free(&x.c);
}

Test(sim, devices_say_they_are_simulated)
{
	static struct sim_run x;

	simulate(&x, 2, false);
	for (size_t i = 0; i < x.c.ndevs; i++) {
		cr_expect_not_null(strstr(x.c.devs[i].name, "Simulated"));
		/* "TTSIMGPU" in hex */
		cr_expect_eq(strncmp(x.c.devs[i].uuid, "54545349-4d47", 13), 0,
			     "uuid %s", x.c.devs[i].uuid);
	}
	collect_free(&x.c);
}

Test(sim, a_step_returns_once_its_device_work_ended)
{
	static struct sim_run x;

	simulate(&x, 2, true);
	for (int s = 0; s < SIM_STEPS; s++) {
		uint64_t end = 0;

		/* the work launched while step s ran */
		for (size_t i = 0; i < x.c.nivs; i++)
			if ((s == 0 || x.c.ivs[i].start_ns > x.returned_ns[s - 1]) &&
			    x.c.ivs[i].start_ns < x.returned_ns[s] &&
			    x.c.ivs[i].end_ns > end)
				end = x.c.ivs[i].end_ns;
		cr_expect_leq(end, x.returned_ns[s], "step %d returned %lld ns "
			      "before its work ended", s,
			      (long long)(end - x.returned_ns[s]));
	}
	collect_free(&x.c);
}
