/*
 * test_gpusim.c - the GPU path end to end against an exact truth: the
 * reference server on simulated CUDA devices (--device sim, tensor
 * parallel over 1, 2 or 8 devices, with and without CUDA graphs, and two
 * servers at once on devices of their own) runs under `tokentrace run
 * --compute cupti`; its device records travel the CUPTI library's own
 * conversion and transport to the collector, its requests the sockets.
 * What tokentrace reports is checked against the server's truth log:
 * each device's busy and all-reduce time to the nanosecond, every
 * request's share of GPU time, tenant totals, the warm-up left
 * unattributed, conservation per device and in total, and a trace file
 * that reads back to the live report.
 *
 * In:  build/tokentrace, build/refserver (built with the CUPTI headers),
 *      build/loadgen; run from the repository root.
 * Out: Criterion suite "gpusim"; the figures of every mix are logged.
 * Assumes: root (eBPF); without the CUDA toolkit's headers the simulator
 *      is not built and the suite is skipped, saying so.
 *
 * The truth of a request is the simulator's: each kernel's time shared by
 * the entries of its step in proportion to their part of its cost, summed
 * over devices (tools/refserver/sim.c). tokentrace sees none of it: only
 * kernel and copy records, and token writes.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define GS_MAX_REQS	4096
#define GS_MAX_DEVS	8
#define GS_MAX_SERVERS	2
#define GS_SHARE_TOL	0.05	/* a request's share, relative */
/* The goal, held by the test: 95 % of requests within 5 % of their true
 * share, tenants within 2 %. */
#define GS_SHARE_FRAC	0.95	/* of requests within it, at least */
#define GS_TENANT_TOL	0.02	/* a tenant's share, relative */

/* One server of a mix and the load on it. */
struct gs_server {
	int gpus, gpu_index, max_batch, layers;
	bool graphs;
	const char *gpu_name;	/* NULL: the simulator's */
	double usd_per_hour;	/* its price by that name, 0: none */
	int requests;		/* per tenant shape */
	int concurrency;	/* per tenant shape */
	int prefill_chunk;	/* --prefill-chunk, 0: none */
};

struct gs_req {
	char id[64], tenant[64];
	double compute_ns;
};

struct gs_truth {
	struct gs_req req[GS_MAX_REQS];
	int nreq;
	double busy_ns[GS_MAX_DEVS], comm_ns[GS_MAX_DEVS];
	double warm_ns[GS_MAX_DEVS];
	int ndev, steps;
};

static struct gs_truth truth[GS_MAX_SERVERS];

static void setup(void)
{
	e2e_setup("gpusim", 0);
	memset(truth, 0, sizeof(truth));
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, true);
}

TestSuite(gpusim, .init = setup, .fini = teardown, .timeout = 180);

/* ---- the servers under tracing ---------------------------------------- */

/* The refserver arguments of server i, appended at argv[n]. */
static int server_args(char **argv, int n, int i, const struct gs_server *s)
{
	static char buf[GS_MAX_SERVERS][8][64];

	snprintf(buf[i][0], 64, "%d", s->gpus);
	snprintf(buf[i][1], 64, "%d", s->gpu_index);
	snprintf(buf[i][2], 64, "%d", s->max_batch);
	snprintf(buf[i][3], 64, "%d", s->layers);
	e2e_path(buf[i][4], 64, i ? "port1" : "port0");
	e2e_path(buf[i][5], 64, i ? "truth1.jsonl" : "truth0.jsonl");
	const char *a[] = { "build/refserver", "--device", "sim", "--gpus",
			    buf[i][0], "--gpu-index", buf[i][1],
			    "--max-batch", buf[i][2], "--port", "0",
			    "--port-file", buf[i][4], "--truth", buf[i][5],
			    "--kernel-noise", "0.05", "--ctx", "2048" };
	for (size_t k = 0; k < sizeof(a) / sizeof(a[0]); k++)
		argv[n++] = (char *)a[k];
	if (s->layers) {
		argv[n++] = "--layers";
		argv[n++] = buf[i][3];
	}
	if (s->graphs)
		argv[n++] = "--graphs";
	if (s->prefill_chunk) {
		snprintf(buf[i][6], 64, "%d", s->prefill_chunk);
		argv[n++] = "--prefill-chunk";
		argv[n++] = buf[i][6];
	}
	if (s->gpu_name) {
		argv[n++] = "--gpu-name";
		argv[n++] = (char *)s->gpu_name;
	}
	return n;
}

/* Two servers as one command: started together, both stopped on SIGTERM. */
static const char *two_server_script(const struct gs_server *s)
{
	static char path[128];
	char *a0[40], *a1[40];
	int n0 = server_args(a0, 0, 0, &s[0]), n1 = server_args(a1, 0, 1, &s[1]);
	FILE *f;

	e2e_path(path, sizeof(path), "two-servers.sh");
	f = fopen(path, "w");
	cr_assert_not_null(f, "cannot write %s", path);
	fprintf(f, "#!/bin/sh\n");
	for (int i = 0; i < n0; i++)
		fprintf(f, "'%s'%s", a0[i], i + 1 < n0 ? " " : " & a=$!\n");
	for (int i = 0; i < n1; i++)
		fprintf(f, "'%s'%s", a1[i], i + 1 < n1 ? " " : " & b=$!\n");
	fprintf(f, "trap 'kill -TERM $a $b; wait $a; wait $b; exit 0' TERM\n"
		   "wait\n");
	fclose(f);
	chmod(path, 0755);
	return path;
}

static pid_t start_run(const struct gs_server *s, int nsrv, int *port)
{
	static char sum[128], trace[128];
	char *argv[64] = { "build/tokentrace", "run", "--compute", "cupti",
			   "--summary", sum, "-o", trace, "--", NULL };
	int n = 9;
	pid_t tt;

	e2e_path(sum, sizeof(sum), "summary.json");
	e2e_path(trace, sizeof(trace), "trace.tt");
	if (nsrv == 1)
		n = server_args(argv, n, 0, &s[0]);
	else
		argv[n++] = (char *)two_server_script(s);
	argv[n] = NULL;
	tt = e2e_spawn(argv, "run.log", NULL);
	for (int i = 0; i < nsrv; i++)
		port[i] = e2e_wait_port(i ? "port1" : "port0", tt, 20000,
					"run.log", "run");
	return tt;
}

/*
 * Load on server i: two tenants of opposite shapes at once, a prompt-heavy
 * one (long prompts, a few tokens) and a decode-heavy one (short prompts,
 * long completions), so that a split by tokens alone would be far off.
 */
static void start_load(pid_t *lg, int i, int port, const struct gs_server *s)
{
	static char url[GS_MAX_SERVERS][96], out[GS_MAX_SERVERS][2][128];
	static char reqs[GS_MAX_SERVERS][16], conc[GS_MAX_SERVERS][16];
	static char ten[GS_MAX_SERVERS][2][32], seed[GS_MAX_SERVERS][2][16];
	static const char *shape[2][2] = { { "300-1200", "2-12" },
					   { "16-96", "24-160" } };

	snprintf(url[i], sizeof(url[i]), "http://127.0.0.1:%d", port);
	snprintf(reqs[i], sizeof(reqs[i]), "%d", s->requests);
	snprintf(conc[i], sizeof(conc[i]), "%d", s->concurrency);
	for (int k = 0; k < 2; k++) {
		char log[32];

		snprintf(ten[i][k], sizeof(ten[i][k]), "s%d-%s", i,
			 k ? "decode" : "prompt");
		snprintf(seed[i][k], sizeof(seed[i][k]), "%d", 10 * i + k + 1);
		snprintf(log, sizeof(log), "load%d%d.log", i, k);
		e2e_path(out[i][k], sizeof(out[i][k]), log);
		strcat(out[i][k], ".jsonl");
		char *argv[] = { "build/loadgen", "--url", url[i], "--stream",
				 "--quiet", "--out", out[i][k],
				 "--requests", reqs[i], "--concurrency",
				 conc[i], "--tenants", ten[i][k],
				 "--prompt-len", (char *)shape[k][0],
				 "--max-tokens", (char *)shape[k][1],
				 "--seed", seed[i][k], NULL };
		lg[2 * i + k] = e2e_spawn(argv, log, NULL);
	}
}

/* ---- the truth log ------------------------------------------------------ */

static void truth_devices(struct gs_truth *t, const cJSON *o, double *busy,
			  double *comm)
{
	const cJSON *d;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices")) {
		int k = (int)e2e_num(d, "device");

		cr_assert(k >= 0 && k < GS_MAX_DEVS, "truth device %d", k);
		busy[k] += e2e_num(d, "busy_ns");
		comm[k] += e2e_num(d, "comm_ns");
		if (k + 1 > t->ndev)
			t->ndev = k + 1;
	}
}

static void truth_line(struct gs_truth *t, const cJSON *o)
{
	const char *type = e2e_str(o, "type");
	double none[GS_MAX_DEVS];

	if (!strcmp(type, "warmup")) {
		truth_devices(t, o, t->warm_ns, none);
		truth_devices(t, o, t->busy_ns, t->comm_ns);
	} else if (!strcmp(type, "step")) {
		truth_devices(t, o, t->busy_ns, t->comm_ns);
		t->steps++;
	} else if (!strcmp(type, "request") &&
		   !strcmp(e2e_str(o, "status"), "ok")) {
		struct gs_req *r = &t->req[t->nreq];

		cr_assert_lt(t->nreq, GS_MAX_REQS, "too many requests");
		snprintf(r->id, sizeof(r->id), "%s", e2e_str(o, "id"));
		snprintf(r->tenant, sizeof(r->tenant), "%s",
			 e2e_str(o, "tenant"));
		r->compute_ns = e2e_num(o, "compute_ns");
		t->nreq++;
	}
}

static void load_truth(int i)
{
	static char line[1 << 20];
	char p[128];
	FILE *f;

	e2e_path(p, sizeof(p), i ? "truth1.jsonl" : "truth0.jsonl");
	f = fopen(p, "r");
	cr_assert_not_null(f, "no truth log %s", p);
	while (fgets(line, sizeof(line), f)) {
		cJSON *o = cJSON_Parse(line);

		cr_assert_not_null(o, "truth line is not JSON: %.200s", line);
		truth_line(&truth[i], o);
		cJSON_Delete(o);
	}
	fclose(f);
	cr_assert_gt(truth[i].nreq, 0, "no requests in truth log %d", i);
}

/* ---- checks --------------------------------------------------------------- */

/* The host index a simulated device's UUID ends with. */
static int host_index(const cJSON *d)
{
	const char *u = e2e_str_or(d, "uuid");
	size_t n = strlen(u);

	return n >= 2 ? (int)strtol(u + n - 2, NULL, 16) : -1;
}

/* Server i's device of ordinal k in the report, or NULL. */
static const cJSON *report_dev(const cJSON *o, const struct gs_server *s,
			       int k)
{
	const cJSON *d;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		if (!strcmp(e2e_str(d, "kind"), "gpu") &&
		    host_index(d) == s->gpu_index + k)
			return d;
	return NULL;
}

static const cJSON *find_id(const cJSON *arr, const char *key, const char *v)
{
	const cJSON *x;

	cJSON_ArrayForEach(x, arr)
		if (!strcmp(e2e_str_or(x, key), v))
			return x;
	return NULL;
}

static bool has_finding(const cJSON *o, const char *id)
{
	return find_id(cJSON_GetObjectItem(o, "findings"), "id", id) != NULL;
}

/* Every device of server i: busy and all-reduce time exact, conserved,
 * steps cut at the copies, warm-up unattributed; returns attributed ns. */
static double check_devices(const cJSON *o, int i, const struct gs_server *s)
{
	const struct gs_truth *t = &truth[i];
	double attributed = 0;

	cr_assert_eq(t->ndev, s->gpus, "truth %d has %d devices", i, t->ndev);
	for (int k = 0; k < s->gpus; k++) {
		const cJSON *d = report_dev(o, s, k);

		cr_assert_not_null(d, "server %d device %d not in the report",
				   i, k);
		double busy = e2e_num(d, "busy_ns");
		double att = e2e_num(d, "attributed_ns");
		double un = e2e_num(d, "unattributed_ns");

		cr_expect_eq(busy, t->busy_ns[k], "server %d device %d busy "
			     "%.0f ns, truth %.0f ns", i, k, busy,
			     t->busy_ns[k]);
		cr_expect_eq(e2e_num(d, "comm_ns"), t->comm_ns[k], "server %d "
			     "device %d all-reduce %.0f ns, truth %.0f ns", i,
			     k, e2e_num(d, "comm_ns"), t->comm_ns[k]);
		cr_expect_eq(att + un, busy, "server %d device %d: %.0f + "
			     "%.0f != busy %.0f", i, k, att, un, busy);
		cr_expect_str_eq(e2e_str(d, "steps_source"), "copies",
				 "server %d device %d", i, k);
		/* the warm-up is busy time of no request, and nothing else
		 * is (every step served one) */
		cr_expect(un >= t->warm_ns[k] && un <= t->warm_ns[k] +
			  0.005 * busy, "server %d device %d: unattributed "
			  "%.3f ms, warm-up %.3f ms", i, k, un / 1e6,
			  t->warm_ns[k] / 1e6);
		attributed += att;
	}
	return attributed;
}

struct gs_share {
	const char *id;
	double got, want;
};

static int by_err_desc(const void *a, const void *b)
{
	const struct gs_share *x = a, *y = b;
	double ex = fabs(x->got / x->want - 1), ey = fabs(y->got / y->want - 1);

	return ex < ey ? 1 : ex > ey ? -1 : 0;
}

/* Requests and tenants of server i against the truth; returns the sum of
 * their attributed ns. */
static double check_shares(const cJSON *o, int i, const char *mix)
{
	static struct gs_share sh[GS_MAX_REQS];
	static struct e2e_iv iv[GS_MAX_REQS];
	char name[64];
	const struct gs_truth *t = &truth[i];
	const cJSON *reqs = cJSON_GetObjectItem(o, "requests");
	double sum_got = 0, sum_want = 0, ten_got[2] = { 0 },
	       ten_want[2] = { 0 };
	int n = 0, ok = 0;

	for (int k = 0; k < t->nreq; k++) {
		const cJSON *r = find_id(reqs, "id", t->req[k].id);

		cr_assert_not_null(r, "%s: request %s of server %d not in the "
				   "report", mix, t->req[k].id, i);
		sh[n] = (struct gs_share){ t->req[k].id, e2e_num(r, "gpu_ns"),
					   t->req[k].compute_ns };
		iv[n] = (struct e2e_iv){ sh[n].got,
					 e2e_num_or(r, "gpu_ns_lo", -1),
					 e2e_num_or(r, "gpu_ns_hi", -1), 0 };
		int kind = strstr(t->req[k].tenant, "decode") != NULL;

		ten_got[kind] += sh[n].got;
		ten_want[kind] += sh[n].want;
		sum_got += sh[n].got;
		sum_want += sh[n++].want;
	}
	for (int k = 0; k < n; k++)
		iv[k].truth = sh[k].want;
	snprintf(name, sizeof(name), "%s server %d", mix, i);
	e2e_intervals(iv, n, name, 0.7);
	for (int k = 0; k < n; k++) {
		sh[k].got /= sum_got;
		sh[k].want /= sum_want;
		ok += fabs(sh[k].got / sh[k].want - 1) <= GS_SHARE_TOL;
	}
	qsort(sh, n, sizeof(*sh), by_err_desc);
	cr_log_info("%s server %d: %d of %d requests within %.0f%% of their "
		    "true share; worst %s %+.2f%%, median %+.2f%%", mix, i, ok,
		    n, 100 * GS_SHARE_TOL, sh[0].id,
		    100 * (sh[0].got / sh[0].want - 1),
		    100 * (sh[n / 2].got / sh[n / 2].want - 1));
	cr_expect_geq(ok, (int)ceil(GS_SHARE_FRAC * n),
		      "%s server %d: only %d of %d requests within %.0f%% of "
		      "their true share; worst %s %+.1f%%", mix, i, ok, n,
		      100 * GS_SHARE_TOL, sh[0].id,
		      100 * (sh[0].got / sh[0].want - 1));
	for (int k = 0; k < 2; k++) {
		double got = ten_got[k] / sum_got, want = ten_want[k] / sum_want;

		cr_log_info("%s server %d tenant %s: share %.4f, truth %.4f "
			    "(%+.2f%%)", mix, i, k ? "decode" : "prompt", got,
			    want, 100 * (got / want - 1));
		cr_expect(fabs(got / want - 1) <= GS_TENANT_TOL, "%s server "
			  "%d tenant %s: share %.4f, truth %.4f", mix, i,
			  k ? "decode" : "prompt", got, want);
	}
	return sum_got;
}

/* Each server's GPUs priced by their own model name: the report read back
 * with a price per name charges each device, and its requests, its own. */
static void check_prices(const struct gs_server *s, int nsrv)
{
	static char trace[128], out[128], prices[256];
	char *argv[] = { "build/tokentrace", "report", trace, "--format",
			 "json", "--price", prices, "-o", out, NULL };
	cJSON *o;

	e2e_path(trace, sizeof(trace), "trace.tt");
	e2e_path(out, sizeof(out), "priced.json");
	snprintf(prices, sizeof(prices), "%s=%g,%s=%g", s[0].gpu_name,
		 s[0].usd_per_hour, s[1].gpu_name, s[1].usd_per_hour);
	cr_assert_eq(e2e_run(argv, "priced.log", NULL, 60000), 0,
		     "tokentrace report --price failed: %s",
		     e2e_tail("priced.log", 1000));
	o = e2e_load_json("priced.json", "priced.log");
	for (int i = 0; i < nsrv; i++) {
		for (int k = 0; k < s[i].gpus; k++) {
			const cJSON *d = report_dev(o, &s[i], k);

			cr_assert_not_null(d);
			cr_expect_str_eq(e2e_str(d, "name"), s[i].gpu_name);
			cr_expect_eq(e2e_num(d, "usd_per_hour"),
				     s[i].usd_per_hour, "server %d device %d",
				     i, k);
		}
		/* a request of server i costs its GPU time at i's price */
		const cJSON *r = find_id(cJSON_GetObjectItem(o, "requests"),
					 "id", truth[i].req[0].id);

		cr_assert_not_null(r);
		double want = e2e_num(r, "gpu_ns") / 3.6e12 * s[i].usd_per_hour;

		cr_expect(fabs(e2e_num(r, "cost_usd") - want) <= 1e-9 * want +
			  1e-12, "server %d request %s: cost %.9g USD, its GPU "
			  "time at %g USD/h is %.9g", i, e2e_str(r, "id"),
			  e2e_num(r, "cost_usd"), s[i].usd_per_hour, want);
	}
	cJSON_Delete(o);
}

/* The report read back from the trace file gives the same numbers. */
static void check_read_back(const cJSON *live)
{
	static char trace[128], out[128];
	char *argv[] = { "build/tokentrace", "report", trace, "--format",
			 "json", "-o", out, NULL };
	const cJSON *r;
	cJSON *back;

	e2e_path(trace, sizeof(trace), "trace.tt");
	e2e_path(out, sizeof(out), "report.json");
	cr_assert_eq(e2e_run(argv, "report.log", NULL, 60000), 0,
		     "tokentrace report failed: %s",
		     e2e_tail("report.log", 1000));
	back = e2e_load_json("report.json", "report.log");
	cr_expect_eq(e2e_num(back, "busy_ns"), e2e_num(live, "busy_ns"));
	cr_expect_eq(e2e_num(back, "unattributed_ns"),
		     e2e_num(live, "unattributed_ns"));
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(live, "requests")) {
		const cJSON *q = find_id(cJSON_GetObjectItem(back, "requests"),
					 "id", e2e_str(r, "id"));

		cr_expect_not_null(q, "request %s not read back",
				   e2e_str(r, "id"));
		if (q)
			cr_expect_eq(e2e_num(q, "gpu_ns"), e2e_num(r, "gpu_ns"),
				     "request %s", e2e_str(r, "id"));
	}
	cJSON_Delete(back);
}

static void check_total(const cJSON *o)
{
	const cJSON *r;
	double sum = 0;

	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests"))
		sum += e2e_num(r, "gpu_ns");
	cr_expect_eq(sum + e2e_num(o, "unattributed_ns"), e2e_num(o, "busy_ns"),
		     "requests %.0f + unattributed %.0f != busy %.0f ns", sum,
		     e2e_num(o, "unattributed_ns"), e2e_num(o, "busy_ns"));
	cr_expect_eq(e2e_num(cJSON_GetObjectItem(cJSON_GetObjectItem(o,
		     "losses"), "cupti"), "events"), 0,
		     "device records were lost");
}

/* Comm share of server i's busy time, from the truth. */
static double truth_comm_share(int i)
{
	double busy = 0, comm = 0;

	for (int k = 0; k < truth[i].ndev; k++) {
		busy += truth[i].busy_ns[k];
		comm += truth[i].comm_ns[k];
	}
	return busy > 0 ? comm / busy : 0;
}

static void run_mix(const char *mix, const struct gs_server *s, int nsrv)
{
	pid_t lg[2 * GS_MAX_SERVERS], tt;
	int port[GS_MAX_SERVERS];
	cJSON *o;

	e2e_need_sim();
	tt = start_run(s, nsrv, port);
	for (int i = 0; i < nsrv; i++)
		start_load(lg, i, port[i], &s[i]);
	for (int i = 0; i < 2 * nsrv; i++)
		cr_assert_eq(e2e_exit_of(e2e_reap(lg[i], 120000)), 0,
			     "%s: loadgen %d failed: %s", mix, i,
			     e2e_tail("run.log", 2000));
	kill(tt, SIGTERM);
	cr_assert_eq(e2e_exit_of(e2e_reap(tt, 30000)), 0, "run: %s",
		     e2e_tail("run.log", 2000));
	o = e2e_load_json("summary.json", "run.log");
	check_total(o);
	for (int i = 0; i < nsrv; i++) {
		load_truth(i);
		double dev = check_devices(o, i, &s[i]);
		double req = check_shares(o, i, mix);

		/* a server's requests hold exactly its devices' time */
		cr_expect_eq(req, dev, "%s server %d: requests %.0f ns, its "
			     "devices attributed %.0f ns", mix, i, req, dev);
		double cs = truth_comm_share(i);

		cr_log_info("%s server %d: %d steps, all-reduce %.1f%% of "
			    "busy", mix, i, truth[i].steps, 100 * cs);
		if (cs >= 0.11)
			cr_expect(has_finding(o, "communication_share"),
				  "%s: all-reduce is %.0f%% of busy time and "
				  "no communication_share finding", mix,
				  100 * cs);
		if (cs == 0)
			cr_expect(!has_finding(o, "communication_share"),
				  "%s: a finding on communication with none",
				  mix);
	}
	if (nsrv > 1)
		cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o,
			     "servers")), nsrv, "%s: servers apart", mix);
	check_read_back(o);
	if (nsrv > 1 && s[0].usd_per_hour > 0)
		check_prices(s, nsrv);
	cJSON_Delete(o);
}

/* ---- the mixes ------------------------------------------------------------ */

Test(gpusim, one_device_plain_launches_batch_16)
{
	const struct gs_server s = { .gpus = 1, .max_batch = 16,
				     .requests = 60, .concurrency = 8 };

	run_mix("tp1", &s, 1);
}

Test(gpusim, two_devices_cuda_graphs_batch_4)
{
	const struct gs_server s = { .gpus = 2, .max_batch = 4, .graphs = true,
				     .requests = 50, .concurrency = 3 };

	run_mix("tp2-graphs", &s, 1);
}

Test(gpusim, eight_devices_cuda_graphs_batch_32)
{
	const struct gs_server s = { .gpus = 8, .max_batch = 32,
				     .graphs = true, .requests = 80,
				     .concurrency = 16 };

	run_mix("tp8-graphs", &s, 1);
}

/* Prompts of 300-1200 tokens prefilled 256 a step: the first chunks give
 * no token, and the first steps hold nothing but first chunks; the report
 * infers the chunk size from how many steps the longer prompts wait for
 * their first token, and places the chunks in the steps before it. */
Test(gpusim, one_device_chunked_prefill_of_256)
{
	const struct gs_server s = { .gpus = 1, .max_batch = 16,
				     .requests = 60, .concurrency = 8,
				     .prefill_chunk = 256 };

	run_mix("tp1-chunked", &s, 1);
}

Test(gpusim, two_servers_on_devices_of_their_own_models_and_prices)
{
	const struct gs_server s[2] = {
		{ .gpus = 2, .gpu_index = 0, .max_batch = 8, .graphs = true,
		  .requests = 40, .concurrency = 4,
		  .gpu_name = "Simulated A100 (refserver --device sim)",
		  .usd_per_hour = 1.75 },
		{ .gpus = 2, .gpu_index = 2, .max_batch = 12,
		  .requests = 40, .concurrency = 5,
		  .gpu_name = "Simulated H100 (refserver --device sim)",
		  .usd_per_hour = 4.25 },
	};

	run_mix("dp2x2", s, 2);
}
