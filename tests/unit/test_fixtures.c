/*
 * Recorded traces kept in tests/data (a CPU run of the reference server; a
 * run on two simulated GPUs in tensor parallel, with the server's truth
 * log; GPU runs saved by tests/gpu/check.sh) read back and report with
 * every nanosecond of busy device time accounted for, on every CI run.
 */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/collect.h"
#include "../../user/report.h"
#include "../../user/tracefile.h"

#define MAX_FIXTURES 64

static char fixtures[MAX_FIXTURES][512];
static int nfixtures;

static int found(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	size_t n = strlen(path);

	(void)st;
	(void)ftw;
	if (type == FTW_F && n > 3 && !strcmp(path + n - 3, ".tt") &&
	    nfixtures < MAX_FIXTURES)
		snprintf(fixtures[nfixtures++], sizeof(fixtures[0]), "%s",
			 path);
	return 0;
}

static void check_fixture(const char *path, bool *saw_gpu)
{
	struct collect c;
	struct tracefile_header h = { 0 };
	struct collect_prices p = { NULL, 0, -1, -1 };
	struct report_input in;
	struct report r = { 0 };
	uint64_t sum = 0;

	collect_init(&c);
	cr_assert_eq(collect_load(&c, path, stderr, &h), 0, "%s", path);
	cr_expect_eq(c.trace_blocks_skipped, 0, "%s: damaged blocks", path);
	cr_assert_eq(collect_report_input(&c, &p, &in), 0, "%s", path);
	cr_assert_eq(report_build(&in, &r), 0, "%s: report or conservation",
		     path);
	cr_expect_gt(r.nreqs, 0, "%s: no requests", path);
	cr_expect_gt(r.busy_ns, 0, "%s: no busy time", path);
	for (size_t i = 0; i < r.nreqs; i++)
		sum += r.reqs[i].gpu_ns;
	cr_expect_eq(sum + r.unattributed_ns, r.busy_ns,
		     "%s: %llu + %llu != %llu", path, (unsigned long long)sum,
		     (unsigned long long)r.unattributed_ns,
		     (unsigned long long)r.busy_ns);
	for (size_t i = 0; i < r.ndevs; i++)
		if (r.devs[i].dev.kind == TT_DEV_GPU && r.devs[i].busy_ns)
			*saw_gpu = true;
	report_free(&r);
	collect_free(&c);
}

Test(fixtures, recorded_traces_report_and_conserve_device_time)
{
	bool saw_gpu = false;

	nfixtures = 0;
	cr_assert_eq(nftw("tests/data", found, 16, FTW_PHYS), 0,
		     "run the tests from the repository root");
	cr_assert_gt(nfixtures, 0, "tests/data holds no trace");
	for (int i = 0; i < nfixtures; i++)
		check_fixture(fixtures[i], &saw_gpu);
	if (!saw_gpu)	/* a note, not a warning: Criterion fails on those */
		fprintf(stderr, "fixtures: no GPU trace in tests/data yet: "
			"tests/gpu/check.sh on a GPU machine records one\n");
}

/* ---- the simulated tensor-parallel run against its truth ----------------- */

#define SIM_TRACE "tests/data/gpu-sim-tp2.tt"
#define SIM_TRUTH "tests/data/gpu-sim-tp2.truth.jsonl"

struct sim_truth {
	double busy_ns[2], comm_ns[2];
	char id[256][64];
	double compute_ns[256];
	int nreq;
};

static void sim_devices(const cJSON *o, struct sim_truth *t)
{
	const cJSON *d;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices")) {
		int k = cJSON_GetObjectItem(d, "device")->valueint;

		cr_assert(k == 0 || k == 1);
		t->busy_ns[k] += cJSON_GetObjectItem(d, "busy_ns")->valuedouble;
		t->comm_ns[k] += cJSON_GetObjectItem(d, "comm_ns")->valuedouble;
	}
}

static void load_sim_truth(struct sim_truth *t)
{
	static char line[1 << 20];
	FILE *f = fopen(SIM_TRUTH, "r");

	cr_assert_not_null(f, "%s (run from the repository root)", SIM_TRUTH);
	memset(t, 0, sizeof(*t));
	while (fgets(line, sizeof(line), f)) {
		cJSON *o = cJSON_Parse(line);
		const char *type;

		cr_assert_not_null(o);
		type = cJSON_GetObjectItem(o, "type")->valuestring;
		if (!strcmp(type, "step") || !strcmp(type, "warmup"))
			sim_devices(o, t);
		else if (!strcmp(type, "request") && t->nreq < 256) {
			snprintf(t->id[t->nreq], 64, "%s",
				 cJSON_GetObjectItem(o, "id")->valuestring);
			t->compute_ns[t->nreq++] = cJSON_GetObjectItem(o,
				"compute_ns")->valuedouble;
		}
		cJSON_Delete(o);
	}
	fclose(f);
}

/* Host index of a simulated device: the last byte of its UUID. */
static int sim_index(const struct tt_device *d)
{
	size_t n = strlen(d->uuid);

	return n >= 2 ? (int)strtol(d->uuid + n - 2, NULL, 16) : -1;
}

Test(fixtures, simulated_tensor_parallel_trace_matches_its_truth)
{
	static struct sim_truth t;
	struct collect c;
	struct tracefile_header h = { 0 };
	struct collect_prices p = { NULL, 0, -1, -1 };
	struct report_input in;
	struct report r = { 0 };
	double got = 0, want = 0;
	int gpus = 0, ok = 0, matched = 0;

	load_sim_truth(&t);
	collect_init(&c);
	cr_assert_eq(collect_load(&c, SIM_TRACE, stderr, &h), 0);
	cr_assert_eq(collect_report_input(&c, &p, &in), 0);
	cr_assert_eq(report_build(&in, &r), 0);
	for (size_t i = 0; i < r.ndevs; i++) {
		const struct report_device *d = &r.devs[i];
		int k = sim_index(&d->dev);

		if (d->dev.kind != TT_DEV_GPU)
			continue;
		gpus++;
		cr_assert(k == 0 || k == 1, "device %s", d->dev.uuid);
		/* every record arrived: busy and all-reduce time exact */
		cr_expect_eq((double)d->busy_ns, t.busy_ns[k], "device %d", k);
		cr_expect_eq((double)d->comm_ns, t.comm_ns[k], "device %d", k);
		cr_expect_eq(d->attributed_ns + d->unattributed_ns, d->busy_ns);
		cr_expect_eq(d->steps.source, STEPS_FROM_COPIES, "device %d", k);
	}
	cr_expect_eq(gpus, 2);
	for (size_t i = 0; i < r.nreqs; i++)
		for (int k = 0; k < t.nreq; k++)
			if (!strcmp(r.reqs[i].req.id, t.id[k])) {
				got += (double)r.reqs[i].gpu_ns;
				want += t.compute_ns[k];
			}
	for (size_t i = 0; i < r.nreqs; i++)
		for (int k = 0; k < t.nreq; k++)
			if (!strcmp(r.reqs[i].req.id, t.id[k])) {
				double e = ((double)r.reqs[i].gpu_ns / got) /
					   (t.compute_ns[k] / want) - 1;

				matched++;
				ok += fabs(e) <= 0.05;
			}
	cr_expect_eq(matched, t.nreq, "every request of the truth traced");
	cr_expect_geq(ok, (int)ceil(0.95 * matched), "%d of %d requests "
		      "within 5%% of their true share", ok, matched);
	cr_expect_not_null(findings_get(&r.findings, "communication_share"));
	cr_expect_eq(r.nservers, 1);
	report_free(&r);
	collect_free(&c);
}
