/*
 * gentrace.c - writes a large synthetic trace file for the collector's
 * replay benchmark (tools/bench.sh, section collector).
 *
 * In:  gentrace OUT [REQUESTS [TOKENS [BATCH]]] (defaults 100000, 32, 16),
 *      or gentrace --sizes (the in-memory sizes of the collector's public
 *      records, printed).
 * Out: OUT, a trace file (user/tracefile.h) of one GPU serving REQUESTS
 *      streamed requests of TOKENS tokens each with continuous batching,
 *      BATCH at a time; on stdout one line "gentrace: R requests, T token
 *      times, I intervals, E events, B bytes" (events = R + T + I).
 * Assumes: nothing; the numbers are made up but shaped like an engine:
 *      every 10 ms step runs four 2 ms kernels and ends with an 8-byte
 *      device-to-host copy (the sampled token ids), and gives one token to
 *      each request in the batch; a finished request's slot is taken by
 *      the next at the following step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/collect.h"
#include "../../user/tracefile.h"

#define GT_MS		1000000ull
#define GT_T0		(1000ull * 1000 * GT_MS)
#define GT_STEP_NS	(10 * GT_MS)
#define GT_KERNELS	4

struct gt_slot {
	long req;		/* request index, -1: free */
	uint64_t arrival_ns;
	uint32_t ntok;
	uint64_t *tok;
};

struct gt {
	struct tracefile_writer *w;
	long requests, next;
	uint32_t tokens;
	int batch;
	uint64_t ntok, nivs, nreqs;
};

static int gt_put_step(struct gt *g, uint64_t t)
{
	struct tt_interval iv = { .device = 1, .pid = 100, .tid = 100,
				  .stream = 7, .kind = TT_IV_KERNEL };
	int err = 0;

	for (int k = 0; k < GT_KERNELS && !err; k++) {
		iv.start_ns = t + k * 2 * GT_MS;
		iv.end_ns = iv.start_ns + 2 * GT_MS;
		iv.name_id = k + 1;
		iv.correlation = (uint32_t)g->nivs;
		err = tracefile_put_interval(g->w, &iv);
		g->nivs++;
	}
	iv.start_ns = t + GT_KERNELS * 2 * GT_MS;
	iv.end_ns = iv.start_ns + 20000;
	iv.kind = TT_IV_MEMCPY;
	iv.copy_kind = TT_COPY_DTOH;
	iv.bytes = 8;
	iv.name_id = 0;
	g->nivs++;
	return err ? err : tracefile_put_interval(g->w, &iv);
}

static int gt_put_request(struct gt *g, const struct gt_slot *s)
{
	struct tt_request q = { .pid = 100, .conn_id = (uint64_t)s->req + 1,
		.stream = true, .http_status = 200, .max_tokens = g->tokens,
		.arrival_ns = s->arrival_ns, .first_token_ns = s->tok[0],
		.end_ns = s->tok[s->ntok - 1] + 100000,
		.token_events = s->ntok, .token_ns = s->tok,
		.token_ns_len = s->ntok, .prompt_tokens = 128,
		.completion_tokens = s->ntok,
		.tokens_source = TT_TOKENS_USAGE, .itl_p50_ms = 10,
		.itl_p99_ms = 10, .itl_max_ms = 10, .bytes_in = 700,
		.bytes_out = 180ull * s->ntok };

	q.ttft_ms = (double)(q.first_token_ns - q.arrival_ns) / 1e6;
	snprintf(q.id, sizeof(q.id), "cmpl-%ld", s->req);
	snprintf(q.tenant, sizeof(q.tenant), "tenant-%ld", s->req % 8);
	snprintf(q.model, sizeof(q.model), "bench-model");
	snprintf(q.api, sizeof(q.api), "completions");
	snprintf(q.path, sizeof(q.path), "/v1/completions");
	g->nreqs++;
	g->ntok += s->ntok;
	return tracefile_put_request(g->w, &q);
}

/* One step at t: every busy slot gets a token; finished ones are written
 * and their slots taken by the next requests (arriving at t). */
static int gt_step(struct gt *g, struct gt_slot *slots, uint64_t t)
{
	uint64_t tok_ns = t + GT_STEP_NS;
	int err = gt_put_step(g, t);

	for (int i = 0; i < g->batch && !err; i++) {
		struct gt_slot *s = &slots[i];

		if (s->req < 0 && g->next < g->requests) {
			s->req = g->next++;
			s->arrival_ns = t > 3 * GT_MS ? t - 3 * GT_MS : t;
			s->ntok = 0;
		}
		if (s->req < 0)
			continue;
		s->tok[s->ntok++] = tok_ns;
		if (s->ntok < g->tokens)
			continue;
		err = gt_put_request(g, s);
		s->req = -1;
	}
	return err;
}

static int gt_run(struct gt *g, uint64_t *end_ns)
{
	struct gt_slot *slots = calloc(g->batch, sizeof(*slots));
	uint64_t t = GT_T0;
	int err = slots ? 0 : -ENOMEM;

	for (int i = 0; !err && i < g->batch; i++) {
		slots[i].req = -1;
		slots[i].tok = calloc(g->tokens, sizeof(uint64_t));
		if (!slots[i].tok)
			err = -ENOMEM;
	}
	while (!err && (g->next < g->requests || g->nreqs < (uint64_t)g->next)) {
		err = gt_step(g, slots, t);
		t += GT_STEP_NS;
	}
	*end_ns = t;
	for (int i = 0; slots && i < g->batch; i++)
		free(slots[i].tok);
	free(slots);
	return err;
}

static int gt_header(struct gt *g)
{
	static const char *const names[GT_KERNELS] = { "gemm_qkv",
		"flash_attention_decode", "gemm_mlp", "sample_tokens" };
	struct tt_device gpu = { .id = 1, .kind = TT_DEV_GPU, .pid = 100,
				 .sm_count = 132,
				 .memory_bytes = 80ull << 30 };
	int err;

	snprintf(gpu.name, sizeof(gpu.name), "bench GPU");
	snprintf(gpu.uuid, sizeof(gpu.uuid), "GPU-bench");
	err = tracefile_put_compute(g->w, "cupti", (uint32_t)g->batch);
	if (!err)
		err = tracefile_put_window(g->w, GT_T0, GT_T0, false);
	if (!err)
		err = tracefile_put_device(g->w, &gpu);
	for (int k = 0; k < GT_KERNELS && !err; k++)
		err = tracefile_put_name(g->w, 100, k + 1, names[k]);
	return err;
}

static long gt_arg(int argc, char **argv, int i, long dflt, long max)
{
	char *end;
	long v;

	if (argc <= i)
		return dflt;
	v = strtol(argv[i], &end, 10);
	return *end || v < 1 || v > max ? -1 : v;
}

int main(int argc, char **argv)
{
	struct tt_hostinfo host = { .cpus = 1 };
	struct report_losses los = { 0 };
	struct gt g = { 0 };
	uint64_t end_ns = 0;
	int err;

	if (argc == 2 && !strcmp(argv[1], "--sizes")) {
		printf("struct sizes: tt_request %zu bytes (+ 8 per token time "
		       "kept), tt_interval %zu, tt_conn_meta %zu\n",
		       sizeof(struct tt_request), sizeof(struct tt_interval),
		       sizeof(struct tt_conn_meta));
		return 0;
	}
	g.requests = gt_arg(argc, argv, 2, 100000, 100000000);
	g.tokens = gt_arg(argc, argv, 3, 32, 65536) > 0 ?
		   (uint32_t)gt_arg(argc, argv, 3, 32, 65536) : 0;
	g.batch = (int)gt_arg(argc, argv, 4, 16, 4096);
	if (argc < 2 || g.requests < 0 || g.tokens == 0 || g.batch < 0) {
		fprintf(stderr, "usage: gentrace OUT [REQUESTS [TOKENS "
			"[BATCH]]]  (positive numbers)\n");
		return 2;
	}
	snprintf(host.hostname, sizeof(host.hostname), "bench");
	if (tracefile_create(argv[1], &host, 1, true, &g.w))
		return 1;	/* it said why */
	err = gt_header(&g);
	if (!err)
		err = gt_run(&g, &end_ns);
	if (!err)
		err = tracefile_put_losses(g.w, &los);
	if (!err)
		err = tracefile_put_window(g.w, GT_T0, end_ns, true);
	printf("gentrace: %llu requests, %llu token times, %llu intervals, "
	       "%llu events, %llu bytes\n", (unsigned long long)g.nreqs,
	       (unsigned long long)g.ntok, (unsigned long long)g.nivs,
	       (unsigned long long)(g.nreqs + g.ntok + g.nivs),
	       (unsigned long long)tracefile_bytes(g.w));
	err = tracefile_close(g.w) ? -EIO : err;
	if (err) {
		fprintf(stderr, "gentrace: writing %s failed: %s\n", argv[1],
			strerror(-err));
		return 1;
	}
	return 0;
}
