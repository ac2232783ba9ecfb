/*
 * Several GPUs per server (tensor parallel) and several servers per host
 * (data parallel): a rank without copies of its own is cut at its rank
 * 0's, each server's GPUs take its own requests only, collective kernels
 * are counted as communication, and the findings about a server's GPUs
 * hold or stay silent as they should.
 *
 * The traces come from the synthetic engine of steps_synth.h: its one GPU
 * is a server's rank 0 (a copy to the device at step start, kernels, the
 * small copy of token ids at the end); the other ranks get the same
 * kernels a little later and a little longer, and every gap between two
 * kernels of a step (a layer boundary) an all-reduce on every rank.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../user/collect.h"
#include "../../user/report.h"
#include "../../user/steps.h"
#include "steps_synth.h"

#define MG_MAXDEV	5		/* the CPU and four GPUs */
#define MG_GEMM_ID	3
#define MG_AR_ID	9
#define MG_AR_NAME	"ncclDevKernel_AllReduce_Sum_bf16_RING_LL"
#define MG_TAIL_NS	200000000ull
#define MG_PID_A	4242
#define MG_PID_B	5151

/* One server: which devices, its process, and the shape of its ranks. */
struct mg_server {
	uint32_t pid;
	uint32_t first_dev, ndev;	/* rank 0 is first_dev */
	uint64_t comm_ns;		/* each all-reduce; 0: none */
	double last_scale;		/* the last rank's kernel lengths */
	double fixed_ns;		/* the engine's fixed step cost */
	uint64_t offset_ns;		/* its requests come this much later */
};

struct mg {
	struct sy_engine *g[2];		/* one engine per server */
	uint32_t nserv;
	struct tt_request reqs[2 * SY_MAXR];
	uint32_t nreqs;
	struct tt_interval *ivs;
	size_t nivs, cap;
	struct tt_device devs[MG_MAXDEV];
	uint32_t ndevs;
	uint64_t comm_ns[MG_MAXDEV];	/* all-reduce time laid per device */
	struct report_name names[4];
	uint64_t start_ns, end_ns;
};

static void mg_add(struct mg *m, struct tt_interval iv)
{
	if (m->nivs == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 4096;
		m->ivs = realloc(m->ivs, m->cap * sizeof(*m->ivs));
		cr_assert_not_null(m->ivs);
	}
	m->ivs[m->nivs++] = iv;
}

/* An all-reduce of s->comm_ns on dev from t. */
static void mg_comm(struct mg *m, const struct mg_server *s, uint32_t dev,
		    uint64_t t)
{
	mg_add(m, (struct tt_interval){ .start_ns = t,
		.end_ns = t + s->comm_ns, .device = dev, .pid = s->pid,
		.tid = s->pid, .stream = 7, .name_id = MG_AR_ID,
		.kind = TT_IV_KERNEL });
	m->comm_ns[dev] += s->comm_ns;
}

/* Rank r (0: the engine's own GPU) of one of the engine's intervals; the
 * kernel i is followed by another of its step when next_kernel. */
static void mg_rank(struct mg *m, const struct mg_server *s,
		    const struct tt_interval *src, uint32_t r,
		    bool next_kernel)
{
	struct tt_interval iv = *src;
	uint32_t dev = s->first_dev + r;
	double scale = r && r == s->ndev - 1 ? s->last_scale : 1;

	iv.device = dev;
	iv.pid = iv.tid = s->pid;
	if (iv.kind == TT_IV_KERNEL) {
		iv.name_id = MG_GEMM_ID;
		if (r) {
			/* a little later and a little longer: its own clock */
			uint64_t len = (uint64_t)((src->end_ns -
						   src->start_ns) * scale);
			iv.start_ns = src->start_ns + 300 * r;
			iv.end_ns = iv.start_ns + len + 100 * r;
		}
	} else if (r) {
		return;		/* copies are rank 0's alone */
	}
	mg_add(m, iv);
	if (iv.kind == TT_IV_KERNEL && next_kernel && s->comm_ns)
		mg_comm(m, s, dev, src->end_ns + 5000 + 300 * r);
}

/* Run server s's engine and lay its ranks out. */
static void mg_server(struct mg *m, const struct mg_server *s)
{
	struct sy_engine *g = calloc(1, sizeof(*g));
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	uint32_t n = sy_three(r);

	cr_assert_not_null(g);
	c.kernels = 4;
	c.h2d_ns = 20000;
	c.kernel_gap_ns = s->comm_ns + 10000;
	if (s->fixed_ns)
		c.fixed_ns = s->fixed_ns;
	for (uint32_t i = 0; i < n; i++)
		r[i].arrival_ns += s->offset_ns;
	sy_run(g, &c, r, n);
	m->g[m->nserv++] = g;
	for (size_t i = 0; i < g->nivs; i++) {
		bool next = i + 1 < g->nivs &&
			    g->ivs[i + 1].kind == TT_IV_KERNEL;
		for (uint32_t k = 0; k < s->ndev; k++)
			mg_rank(m, s, &g->ivs[i], k, next);
	}
	for (uint32_t i = 0; i < g->nreqs; i++) {
		m->reqs[m->nreqs] = g->reqs[i];
		m->reqs[m->nreqs++].pid = s->pid;
	}
	for (uint32_t k = 0; k < s->ndev; k++) {
		struct tt_device *d = &m->devs[s->first_dev + k];
		*d = (struct tt_device){ .id = s->first_dev + k,
			.kind = TT_DEV_GPU, .pid = s->pid, .ordinal = k,
			.name = "NVIDIA H100" };
		snprintf(d->uuid, sizeof(d->uuid),
			 "00000000-0000-0000-0000-%012u", d->id);
	}
	if (s->first_dev + s->ndev > m->ndevs)
		m->ndevs = s->first_dev + s->ndev;
	if (!m->start_ns || g->start_ns < m->start_ns)
		m->start_ns = g->start_ns;
	if (g->end_ns + MG_TAIL_NS > m->end_ns)
		m->end_ns = g->end_ns + MG_TAIL_NS;
}

/* The servers' trace, with the CPU device and the kernels' names. */
static struct mg *mg_new(const struct mg_server *s, uint32_t n)
{
	struct mg *m = calloc(1, sizeof(*m));

	cr_assert_not_null(m);
	m->devs[0] = (struct tt_device){ .id = 0, .kind = TT_DEV_CPU,
					 .name = "cpu" };
	m->ndevs = 1;
	for (uint32_t i = 0; i < n; i++)
		mg_server(m, &s[i]);
	for (uint32_t i = 0; i < n; i++) {
		m->names[2 * i] = (struct report_name){ s[i].pid, MG_AR_ID,
							MG_AR_NAME };
		m->names[2 * i + 1] = (struct report_name){ s[i].pid,
			MG_GEMM_ID, "sm90_xmma_gemm_bf16bf16_bf16f32" };
	}
	return m;
}

static void mg_free(struct mg *m)
{
	for (uint32_t i = 0; i < m->nserv; i++) {
		sy_free(m->g[i]);
		free(m->g[i]);
	}
	free(m->ivs);
	free(m);
}

static struct report_input mg_input(const struct mg *m, bool names)
{
	return (struct report_input){
		.start_ns = m->start_ns, .end_ns = m->end_ns,
		.reqs = m->reqs, .nreqs = m->nreqs,
		.devs = m->devs, .ndevs = m->ndevs,
		.ivs = m->ivs, .nivs = m->nivs,
		.names = names ? m->names : NULL,
		.nnames = names ? 2 * m->nserv : 0,
		.default_usd_per_hour = 2.0, .compute = "cupti",
	};
}

/* A tensor-parallel server of four GPUs; comm: each all-reduce's ns. */
static struct mg *tp4(uint64_t comm, double last_scale)
{
	struct mg_server s = { .pid = MG_PID_A, .first_dev = 1, .ndev = 4,
			       .comm_ns = comm, .last_scale = last_scale };

	return mg_new(&s, 1);
}

static const struct report_device *dev_of(const struct report *r,
					  uint32_t id)
{
	for (size_t i = 0; i < r->ndevs; i++)
		if (r->devs[i].dev.id == id)
			return &r->devs[i];
	cr_assert_fail("no device %u in the report", id);
	return NULL;
}

static cJSON *json_dev(const cJSON *o, uint32_t id)
{
	const cJSON *d;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		if (cJSON_GetObjectItem(d, "id")->valuedouble == id)
			return (cJSON *)d;
	cr_assert_fail("no device %u in the JSON", id);
	return NULL;
}

static double jnum(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsNumber(v), "field %s missing or not a number", k);
	return v->valuedouble;
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsString(v), "field %s missing or not a string", k);
	return v->valuestring;
}

/* Per device and over all of them, requests + unattributed == busy. */
static void expect_conservation(const struct report *r)
{
	uint64_t sum = 0, busy = 0;

	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];

		if (!d->attributed)
			continue;
		cr_expect_eq(d->attributed_ns + d->unattributed_ns, d->busy_ns,
			     "device %u: %llu + %llu != %llu", d->dev.id,
			     (unsigned long long)d->attributed_ns,
			     (unsigned long long)d->unattributed_ns,
			     (unsigned long long)d->busy_ns);
		busy += d->busy_ns;
	}
	for (size_t i = 0; i < r->nreqs; i++)
		sum += r->reqs[i].gpu_ns;
	cr_expect_eq(r->busy_ns, busy);
	cr_expect_eq(sum + r->unattributed_ns, r->busy_ns);
}

Test(multigpu, tp_ranks_take_the_steps_of_rank0s_copies)
{
	struct mg *m = tp4(20000, 1);
	struct report_input in = mg_input(m, true);
	struct report r;

	cr_assert_eq(report_build(&in, &r), 0);
	const struct report_device *l = dev_of(&r, 1);
	cr_assert_eq(l->steps.source, STEPS_FROM_COPIES);
	cr_expect_eq(l->steps_dev, 0);
	cr_expect_eq(l->steps.nsteps, m->g[0]->nsteps);
	for (uint32_t id = 2; id <= 4; id++) {
		const struct report_device *d = dev_of(&r, id);

		cr_expect(d->attributed);
		cr_expect_eq(d->pid, MG_PID_A);
		cr_expect_eq(d->steps.source, STEPS_FROM_COPIES, "device %u",
			     id);
		cr_expect_eq(d->steps_dev, 1, "device %u", id);
		cr_assert_eq(d->steps.nsteps, l->steps.nsteps, "device %u",
			     id);
		for (uint32_t k = 0; k < d->steps.nsteps; k++) {
			cr_expect_eq(d->steps.steps[k].end_ns,
				     l->steps.steps[k].end_ns);
			cr_expect_eq(d->steps.steps[k].n, l->steps.steps[k].n);
		}
	}
	cJSON *o = report_json(&r);
	cr_assert_not_null(o);
	cr_expect_str_eq(jstr(json_dev(o, 1), "steps_source"), "copies");
	cr_expect_null(cJSON_GetObjectItem(json_dev(o, 1),
					   "steps_from_device"));
	cr_expect_str_eq(jstr(json_dev(o, 1), "uuid"),
			 "00000000-0000-0000-0000-000000000001");
	for (uint32_t id = 2; id <= 4; id++) {
		const cJSON *d = json_dev(o, id);

		cr_expect_str_eq(jstr(d, "steps_source"), "copies");
		cr_expect_str_eq(jstr(d, "steps_from"), "copies");
		cr_expect_str_eq(jstr(d, "steps_from_device"), "NVIDIA H100");
		cr_expect_eq(jnum(d, "steps_from_device_id"), 1);
		cr_expect_eq(jnum(d, "pid"), MG_PID_A);
	}
	cJSON_Delete(o);
	report_free(&r);
	mg_free(m);
}

Test(multigpu, tp_conservation_holds_per_rank_and_in_total)
{
	struct mg *m = tp4(300000, 1);
	struct report_input in = mg_input(m, true);
	struct report r;

	cr_assert_eq(report_build(&in, &r), 0);
	expect_conservation(&r);
	for (uint32_t id = 1; id <= 4; id++)
		cr_expect_gt(dev_of(&r, id)->attributed_ns, 0, "device %u",
			     id);
	report_free(&r);
	mg_free(m);
}

/* A request's GPU time is what every rank gave it: rank 0's share is the
 * one it gets from rank 0 alone, and the other ranks add about as much
 * each. */
Test(multigpu, tp_request_time_adds_up_over_the_ranks)
{
	struct mg *m = tp4(20000, 1);
	struct report_input in = mg_input(m, true);
	struct report tp, solo;
	size_t n = 0;

	cr_assert_eq(report_build(&in, &tp), 0);
	for (size_t i = 0; i < m->nivs; i++)
		if (m->ivs[i].device == 1)
			m->ivs[n++] = m->ivs[i];
	in.nivs = n;
	cr_assert_eq(report_build(&in, &solo), 0);
	uint64_t added = 0, ranks = 0;
	for (uint32_t id = 2; id <= 4; id++)
		ranks += dev_of(&tp, id)->attributed_ns;
	for (size_t i = 0; i < tp.nreqs; i++) {
		uint64_t t = tp.reqs[i].gpu_ns, s = solo.reqs[i].gpu_ns;

		cr_assert_geq(t, s, "request %zu", i);
		added += t - s;
		cr_expect(t > 3.6 * s && t < 4.4 * s,
			  "request %zu: %llu ns on four ranks, %llu on one",
			  i, (unsigned long long)t, (unsigned long long)s);
	}
	cr_expect_eq(added, ranks);
	cr_expect_eq(dev_of(&tp, 1)->attributed_ns,
		     dev_of(&solo, 1)->attributed_ns);
	report_free(&tp);
	report_free(&solo);
	mg_free(m);
}

Test(multigpu, comm_ns_is_the_all_reduce_kernels)
{
	struct mg *m = tp4(1000000, 1);
	struct report_input in = mg_input(m, true);
	struct report r;
	uint64_t comm = 0, busy = 0;

	cr_assert_eq(report_build(&in, &r), 0);
	cJSON *o = report_json(&r);
	cr_assert_not_null(o);
	for (uint32_t id = 1; id <= 4; id++) {
		const struct report_device *d = dev_of(&r, id);
		const cJSON *j = json_dev(o, id);

		cr_expect_gt(m->comm_ns[id], 0);
		cr_expect_eq(d->comm_ns, m->comm_ns[id], "device %u", id);
		cr_expect_eq(jnum(j, "comm_ns"), (double)m->comm_ns[id]);
		cr_expect_float_eq(jnum(j, "comm_share"),
				   (double)d->comm_ns / d->busy_ns, 1e-12);
		comm += d->comm_ns;
		busy += d->busy_ns;
	}
	cr_expect_eq(cJSON_GetObjectItem(json_dev(o, 0), "comm_ns"), NULL,
		     "the CPU has no collectives");
	const struct finding *f = findings_get(&r.findings,
					       "communication_share");
	double share = (double)comm / busy;
	cr_assert_not_null(f, "communication at %.1f%% is not reported",
			   100 * share);
	cr_expect_geq(share, 0.25);
	cr_expect_eq(f->severity, FINDINGS_WARNING);
	cr_expect_float_eq(cJSON_GetObjectItem(f->evidence,
					       "share")->valuedouble, share,
			   1e-12);
	cr_expect_eq(cJSON_GetObjectItem(f->evidence, "pid")->valuedouble,
		     MG_PID_A);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(f->evidence,
							    "devices")), 4);
	char pct[16];
	snprintf(pct, sizeof(pct), "%.1f%%", 100 * share);
	cr_expect(strstr(f->summary, pct), "%s (want %s)", f->summary, pct);
	cr_expect(strstr(f->action, "tensor-parallel"), "%s", f->action);
	cJSON_Delete(o);
	report_free(&r);
	mg_free(m);
}

Test(multigpu, little_communication_gives_no_finding)
{
	struct mg *m = tp4(20000, 1);
	struct report_input in = mg_input(m, true);
	struct report r;

	cr_assert_eq(report_build(&in, &r), 0);
	cr_expect_eq(dev_of(&r, 2)->comm_ns, m->comm_ns[2]);
	cr_expect_gt(dev_of(&r, 2)->comm_ns, 0);
	cr_expect_lt((double)dev_of(&r, 2)->comm_ns / dev_of(&r, 2)->busy_ns,
		     0.10);
	cr_expect_null(findings_get(&r.findings, "communication_share"));
	report_free(&r);
	mg_free(m);
}

Test(multigpu, without_names_there_is_no_communication_but_all_else_holds)
{
	struct mg *m = tp4(1000000, 1);
	struct report_input in = mg_input(m, false);
	struct report r;

	cr_assert_eq(report_build(&in, &r), 0);
	for (uint32_t id = 1; id <= 4; id++) {
		cr_expect_eq(dev_of(&r, id)->comm_ns, 0);
		cr_expect_eq(dev_of(&r, id)->steps.source, STEPS_FROM_COPIES);
	}
	cr_expect_null(findings_get(&r.findings, "communication_share"));
	expect_conservation(&r);
	cJSON *o = report_json(&r);
	cr_assert_not_null(o);
	cr_expect_eq(jnum(json_dev(o, 3), "comm_ns"), 0);
	cr_expect_eq(jnum(json_dev(o, 3), "comm_share"), 0);
	cJSON_Delete(o);
	report_free(&r);
	mg_free(m);
}

Test(multigpu, an_unevenly_loaded_rank_is_reported)
{
	struct mg *m = tp4(20000, 0.5);
	struct report_input in = mg_input(m, true);
	struct report r;

	cr_assert_eq(report_build(&in, &r), 0);
	const struct finding *f = findings_get(&r.findings,
					       "device_imbalance");
	cr_assert_not_null(f, "a rank at half the work is not reported");
	const struct report_device *lo = dev_of(&r, 4);
	uint64_t most = 0;
	uint32_t busiest = 0;
	for (uint32_t id = 1; id <= 4; id++)
		if (dev_of(&r, id)->busy_ns > most) {
			most = dev_of(&r, id)->busy_ns;
			busiest = id;
		}
	double spread = (double)(most - lo->busy_ns) / most;
	cr_expect_geq(spread, 0.25);
	cr_expect_eq(f->severity, FINDINGS_WARNING);
	cr_expect_eq(cJSON_GetObjectItem(f->evidence,
					 "least_busy_id")->valuedouble, 4);
	cr_expect_eq(cJSON_GetObjectItem(f->evidence,
					 "busiest_id")->valuedouble, busiest);
	cr_expect_float_eq(cJSON_GetObjectItem(f->evidence,
					       "spread")->valuedouble, spread,
			   1e-12);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(f->evidence,
							    "devices")), 4);
	char want[32];
	snprintf(want, sizeof(want), "(device %u)", busiest);
	cr_expect(strstr(f->summary, want), "%s", f->summary);
	cr_expect(strstr(f->summary, "(device 4)"), "%s", f->summary);
	snprintf(want, sizeof(want), "%.1f%%", 100 * spread);
	cr_expect(strstr(f->summary, want), "%s (want %s)", f->summary, want);
	expect_conservation(&r);
	report_free(&r);
	mg_free(m);
}

Test(multigpu, evenly_loaded_ranks_give_no_imbalance)
{
	struct mg *m = tp4(20000, 1);
	struct report_input in = mg_input(m, true);
	struct report r;

	cr_assert_eq(report_build(&in, &r), 0);
	cr_expect_null(findings_get(&r.findings, "device_imbalance"));
	report_free(&r);
	mg_free(m);
}

/* Two servers of two GPUs each; B's steps cost far more than A's and its
 * requests come 5 ms later, in the middle of A's. */
static struct mg *dp2(void)
{
	const struct mg_server s[2] = {
		{ .pid = MG_PID_A, .first_dev = 1, .ndev = 2,
		  .comm_ns = 20000, .last_scale = 1 },
		{ .pid = MG_PID_B, .first_dev = 3, .ndev = 2,
		  .comm_ns = 20000, .last_scale = 1, .fixed_ns = 20e6,
		  .offset_ns = 5000000 },
	};

	return mg_new(s, 2);
}

/* Sum of the requests' gpu_ns of server pid. */
static uint64_t reqs_of(const struct report *r, uint32_t pid)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < r->nreqs; i++)
		if (r->reqs[i].req.pid == pid)
			sum += r->reqs[i].gpu_ns;
	return sum;
}

Test(multigpu, dp_requests_get_time_on_their_own_servers_gpus_only)
{
	struct mg *m = dp2();
	struct report_input in = mg_input(m, true);
	struct report r, alone;

	cr_assert_eq(report_build(&in, &r), 0);
	expect_conservation(&r);
	cr_expect_eq(dev_of(&r, 1)->req_pid, MG_PID_A);
	cr_expect_eq(dev_of(&r, 3)->req_pid, MG_PID_B);
	cr_expect_eq(reqs_of(&r, MG_PID_A), dev_of(&r, 1)->attributed_ns +
					    dev_of(&r, 2)->attributed_ns);
	cr_expect_eq(reqs_of(&r, MG_PID_B), dev_of(&r, 3)->attributed_ns +
					    dev_of(&r, 4)->attributed_ns);
	/* A's requests get what A's GPUs alone give them, to the ns. */
	struct report_input a = in;
	size_t n = 0;
	struct tt_interval *ivs = malloc(m->nivs * sizeof(*ivs));
	cr_assert_not_null(ivs);
	for (size_t i = 0; i < m->nivs; i++)
		if (m->ivs[i].pid == MG_PID_A)
			ivs[n++] = m->ivs[i];
	a.ivs = ivs;
	a.nivs = n;
	a.nreqs = m->g[0]->nreqs;	/* A's come first */
	a.ndevs = 3;
	cr_assert_eq(report_build(&a, &alone), 0);
	for (size_t i = 0; i < alone.nreqs; i++)
		cr_expect_eq(r.reqs[i].gpu_ns, alone.reqs[i].gpu_ns,
			     "request %zu of A: %llu with B beside, %llu "
			     "alone", i, (unsigned long long)r.reqs[i].gpu_ns,
			     (unsigned long long)alone.reqs[i].gpu_ns);
	report_free(&alone);
	free(ivs);
	report_free(&r);
	mg_free(m);
}

/* Requests without the servers' pids cannot be told apart: every GPU
 * takes every request, and A's requests get some of B's time. */
Test(multigpu, dp_without_request_pids_every_gpu_takes_every_request)
{
	struct mg *m = dp2();
	struct report r;

	for (uint32_t i = 0; i < m->nreqs; i++)
		m->reqs[i].pid = 0;
	struct report_input in = mg_input(m, true);
	cr_assert_eq(report_build(&in, &r), 0);
	expect_conservation(&r);
	cr_expect_eq(dev_of(&r, 1)->req_pid, 0);
	uint64_t a = 0;
	for (uint32_t i = 0; i < m->g[0]->nreqs; i++)
		a += r.reqs[i].gpu_ns;
	cr_expect_neq(a, dev_of(&r, 1)->attributed_ns +
			 dev_of(&r, 2)->attributed_ns);
	report_free(&r);
	mg_free(m);
}

Test(multigpu, dp_servers_are_shown_apart)
{
	struct mg *m = dp2();
	struct report_input in = mg_input(m, true);
	struct report r;
	const cJSON *s;
	int k = 0;

	cr_assert_eq(report_build(&in, &r), 0);
	cr_assert_eq(r.nservers, 2);
	cJSON *o = report_json(&r);
	cr_assert_not_null(o);
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "servers")), 2);
	cJSON_ArrayForEach(s, cJSON_GetObjectItem(o, "servers")) {
		uint32_t pid = k ? MG_PID_B : MG_PID_A, dev = k ? 3 : 1;
		const cJSON *ids = cJSON_GetObjectItem(s, "device_ids");
		const cJSON *names = cJSON_GetObjectItem(s, "devices");
		uint64_t busy = dev_of(&r, dev)->busy_ns +
				dev_of(&r, dev + 1)->busy_ns;

		cr_expect_eq(jnum(s, "pid"), pid);
		cr_assert_eq(cJSON_GetArraySize(ids), 2);
		cr_expect_eq(cJSON_GetArrayItem(ids, 0)->valuedouble, dev);
		cr_expect_eq(cJSON_GetArrayItem(ids, 1)->valuedouble, dev + 1);
		cr_assert_eq(cJSON_GetArraySize(names), 2);
		cr_expect_str_eq(cJSON_GetArrayItem(names, 0)->valuestring,
				 "NVIDIA H100");
		cr_expect_eq(jnum(s, "requests"), 3);
		cr_expect_eq(jnum(s, "busy_ns"), (double)busy);
		cr_expect_eq(jnum(s, "gpu_ns"), (double)reqs_of(&r, pid));
		cr_expect_eq(jnum(s, "gpu_ns") + jnum(s, "unattributed_ns"),
			     jnum(s, "busy_ns"));
		cr_expect_eq(jnum(s, "comm_ns"), (double)(m->comm_ns[dev] +
			     m->comm_ns[dev + 1]));
		k++;
	}
	cJSON_Delete(o);

	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert_eq(report_write_text(&r, f), 0);
	fclose(f);
	cr_expect(strstr(buf, "\nservers ("), "%s", buf);
	cr_expect(strstr(buf, "comm%"), "%s", buf);
	char want[64];
	snprintf(want, sizeof(want), "%u 3,4", MG_PID_B);
	cr_expect(strstr(buf, want), "no line for server B in %s", buf);
	free(buf);
	report_free(&r);
	mg_free(m);
}

Test(multigpu, text_says_a_rank_takes_rank0s_steps)
{
	struct mg *m = tp4(20000, 1);
	struct report_input in = mg_input(m, true);
	struct report r;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cr_assert_eq(report_build(&in, &r), 0);
	cr_assert_eq(report_write_text(&r, f), 0);
	fclose(f);
	cr_expect(strstr(buf, "from copies of device 1"), "%s", buf);
	cr_expect(strstr(buf, "comm%"), "%s", buf);
	cr_expect_null(strstr(buf, "\nservers ("), "one server: no section");
	free(buf);
	report_free(&r);
	mg_free(m);
}

/* The store hands its kernel names to the report: what a trace read back
 * or a recording reports has its communication counted. */
Test(multigpu, collect_gives_the_report_its_kernel_names)
{
	struct mg *m = tp4(1000000, 1);
	struct tt_compute_sink sink;
	struct report_input in;
	struct collect c;
	struct report r;

	collect_init(&c);
	collect_sink(&c, &sink);
	for (uint32_t i = 0; i < m->ndevs; i++)
		sink.device(sink.ctx, &m->devs[i]);
	for (size_t i = 0; i < m->nivs; i++)
		sink.interval(sink.ctx, &m->ivs[i]);
	for (uint32_t i = 0; i < 2; i++)
		sink.name(sink.ctx, m->names[i].pid, m->names[i].name_id,
			  m->names[i].name);
	for (uint32_t i = 0; i < m->nreqs; i++)
		cr_assert_eq(collect_add_request(&c, &m->reqs[i]), 0);
	collect_set_compute(&c, "cupti", 0);
	collect_set_start(&c, m->start_ns);
	collect_close(&c, m->end_ns);
	cr_assert_eq(collect_report_input(&c, NULL, &in), 0);
	cr_assert_eq(in.nnames, 2);
	cr_expect_str_eq(in.names[0].name, MG_AR_NAME);
	cr_expect_eq(in.names[0].name_id, MG_AR_ID);
	cr_expect_eq(in.names[0].pid, MG_PID_A);
	cr_assert_eq(report_build(&in, &r), 0);
	for (uint32_t id = 1; id <= 4; id++)
		cr_expect_eq(dev_of(&r, id)->comm_ns, m->comm_ns[id]);
	cr_expect_not_null(findings_get(&r.findings, "communication_share"));
	report_free(&r);
	collect_free(&c);
	mg_free(m);
}

/* ---- steps ---------------------------------------------------------- */

Test(multigpu, steps_of_one_server_leave_the_others_requests_out)
{
	struct mg *m = dp2();
	struct steps_input in = {
		.reqs = m->reqs, .nreqs = m->nreqs, .ivs = m->ivs,
		.nivs = m->nivs, .device = 1, .start_ns = m->start_ns,
		.end_ns = m->end_ns, .source = STEPS_AUTO,
	};
	struct steps_result all, own;
	uint32_t others = 0;

	cr_assert_eq(steps_find(&in, &all), 0);
	for (uint32_t i = 0; i < all.nentries; i++)
		others += m->reqs[all.entries[i].request].pid != MG_PID_A;
	cr_expect_gt(others, 0, "without a pid, B's tokens land in A's steps");
	in.pid = MG_PID_A;
	cr_assert_eq(steps_find(&in, &own), 0);
	cr_expect_gt(own.nentries, 0);
	for (uint32_t i = 0; i < own.nentries; i++)
		cr_expect_eq(m->reqs[own.entries[i].request].pid, MG_PID_A);
	cr_expect_eq(own.nsteps, m->g[0]->nsteps);
	steps_free(&all);
	steps_free(&own);
	mg_free(m);
}

Test(multigpu, steps_cut_at_another_devices_copies)
{
	struct mg *m = tp4(20000, 1);
	struct steps_input in = {
		.reqs = m->reqs, .nreqs = m->nreqs, .ivs = m->ivs,
		.nivs = m->nivs, .device = 1, .start_ns = m->start_ns,
		.end_ns = m->end_ns, .source = STEPS_AUTO,
	};
	struct steps_result r0, r3, own;

	cr_assert_eq(steps_find(&in, &r0), 0);
	in.device = 3;
	cr_assert_eq(steps_find(&in, &own), 0);
	cr_expect_eq(own.copies, 0);
	cr_expect_eq(own.source, STEPS_FROM_TOKENS);
	in.copy_device = 1;
	in.source = STEPS_FROM_COPIES;
	cr_assert_eq(steps_find(&in, &r3), 0);
	cr_expect_eq(r3.source, STEPS_FROM_COPIES);
	cr_assert_eq(r3.nsteps, r0.nsteps);
	for (uint32_t k = 0; k < r3.nsteps; k++) {
		cr_expect_eq(r3.steps[k].end_ns, r0.steps[k].end_ns);
		cr_expect_eq(r3.steps[k].busy_ns,
			     steps_busy_in(r3.busy, r3.nbusy,
					   r3.steps[k].start_ns,
					   r3.steps[k].end_ns));
	}
	cr_expect_neq(r3.busy_ns, r0.busy_ns, "device 3's own busy time");
	steps_free(&r0);
	steps_free(&r3);
	steps_free(&own);
	mg_free(m);
}
