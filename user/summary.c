/*
 * summary.c - aggregates of finished requests: overall, per tenant, per
 * model.
 *
 * In:  struct tt_request, one at a time.
 * Out: struct summary_row per group, a text table, a cJSON object.
 *
 * A group counts requests (ok = complete with a status below 400, failed =
 * the rest), prompt and completion tokens (where known), bytes, and keeps
 * two histograms: TTFT per request and every inter-token gap. Histograms
 * are log-linear over microseconds: values below 32 have a bucket each,
 * above that each power of two is cut into 32 buckets, so a percentile read
 * back (the middle of its bucket) is within 1/32 of the true sample, with
 * fixed memory (HIST_BUCKETS counters) whatever the traffic.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "summary.h"

#define SUB_BITS	5
#define SUB		(1u << SUB_BITS)
#define HIST_BUCKETS	(SUB + (64 - SUB_BITS) * SUB)

struct hist {
	uint64_t count;
	uint32_t b[HIST_BUCKETS];
};

struct group {
	char name[TT_NAME_MAX];
	uint64_t requests, ok;
	uint64_t prompt_tokens, completion_tokens, bytes_in, bytes_out;
	struct hist ttft, itl;
};

struct groups {
	struct group **g;	/* each group allocated once: they are big */
	size_t n;
};

struct summary {
	struct group all;
	struct groups tenants, models;
};

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < SUB)
		return v;
	e = 63 - __builtin_clzll(v);	/* >= SUB_BITS */
	return SUB + (e - SUB_BITS) * SUB + ((v >> (e - SUB_BITS)) & (SUB - 1));
}

static double hist_value(unsigned i)
{
	unsigned e, sub;
	uint64_t lo, w;

	if (i < SUB)
		return i;
	e = (i - SUB) / SUB + SUB_BITS;
	sub = (i - SUB) % SUB;
	w = 1ull << (e - SUB_BITS);
	lo = (uint64_t)(SUB + sub) * w;
	return lo + (w - 1) / 2.0;
}

static void hist_add_ms(struct hist *h, double ms)
{
	uint64_t us = ms <= 0 ? 0 : (uint64_t)(ms * 1000 + 0.5);
	unsigned i = hist_index(us);

	if (h->b[i] != UINT32_MAX) {
		h->b[i]++;
		h->count++;
	}
}

/* Nearest-rank percentile in ms, -1 if empty. */
static double hist_pct_ms(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return -1;
	rank = (uint64_t)(p * h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank)
			return hist_value(i) / 1000.0;
	}
	return -1;
}

struct summary *summary_new(void)
{
	struct summary *s = calloc(1, sizeof(*s));

	if (s)
		strcpy(s->all.name, "*");
	return s;
}

static void groups_free(struct groups *gs)
{
	for (size_t i = 0; i < gs->n; i++)
		free(gs->g[i]);
	free(gs->g);
}

void summary_free(struct summary *s)
{
	if (!s)
		return;
	groups_free(&s->tenants);
	groups_free(&s->models);
	free(s);
}

static struct group *group_find(const struct groups *gs, const char *name)
{
	for (size_t i = 0; i < gs->n; i++)
		if (!strcmp(gs->g[i]->name, name))
			return gs->g[i];
	return NULL;
}

static struct group *group_get(struct groups *gs, const char *name)
{
	struct group *g = group_find(gs, name), **ng;

	if (g)
		return g;
	if (gs->n >= SUMMARY_GROUPS_MAX)
		name = "(other)";
	if ((g = group_find(gs, name)))
		return g;
	ng = realloc(gs->g, (gs->n + 1) * sizeof(*ng));
	if (!ng)
		return NULL;
	gs->g = ng;
	g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	gs->g[gs->n++] = g;
	snprintf(g->name, sizeof(g->name), "%s", name);
	return g;
}

static void group_add(struct group *g, const struct tt_request *r)
{
	if (!g)
		return;
	g->requests++;
	if (r->end == TT_END_COMPLETE && r->http_status < 400)
		g->ok++;
	if (r->prompt_tokens > 0)
		g->prompt_tokens += r->prompt_tokens;
	if (r->completion_tokens > 0)
		g->completion_tokens += r->completion_tokens;
	g->bytes_in += r->bytes_in;
	g->bytes_out += r->bytes_out;
	if (r->ttft_ms >= 0)
		hist_add_ms(&g->ttft, r->ttft_ms);
	for (uint32_t i = 1; r->token_ns && i < r->token_ns_len; i++)
		if (r->token_ns[i] >= r->token_ns[i - 1])
			hist_add_ms(&g->itl,
				    (r->token_ns[i] - r->token_ns[i - 1]) / 1e6);
}

void summary_add(struct summary *s, const struct tt_request *r)
{
	group_add(&s->all, r);
	group_add(group_get(&s->tenants, r->tenant[0] ? r->tenant : "-"), r);
	group_add(group_get(&s->models, r->model[0] ? r->model : "-"), r);
}

static void to_row(const struct group *g, struct summary_row *row)
{
	row->name = g->name;
	row->requests = g->requests;
	row->ok = g->ok;
	row->failed = g->requests - g->ok;
	row->prompt_tokens = g->prompt_tokens;
	row->completion_tokens = g->completion_tokens;
	row->bytes_in = g->bytes_in;
	row->bytes_out = g->bytes_out;
	row->ttft_p50_ms = hist_pct_ms(&g->ttft, 0.50);
	row->ttft_p99_ms = hist_pct_ms(&g->ttft, 0.99);
	row->itl_p50_ms = hist_pct_ms(&g->itl, 0.50);
	row->itl_p99_ms = hist_pct_ms(&g->itl, 0.99);
}

int summary_get(const struct summary *s, const char *scope, const char *name,
		struct summary_row *row)
{
	const struct group *g = NULL;

	if (!strcmp(scope, "all"))
		g = &s->all;
	else if (!strcmp(scope, "tenant"))
		g = group_find(&s->tenants, name);
	else if (!strcmp(scope, "model"))
		g = group_find(&s->models, name);
	if (!g)
		return -ENOENT;
	to_row(g, row);
	return 0;
}

static void print_ms(FILE *out, double v)
{
	if (v < 0)
		fprintf(out, " %9s", "-");
	else
		fprintf(out, " %9.1f", v);
}

static void print_row(FILE *out, const char *scope, const struct group *g)
{
	struct summary_row r;

	to_row(g, &r);
	fprintf(out, "%-7s %-20.20s %8llu %8llu %8llu %10llu %10llu", scope,
		r.name, (unsigned long long)r.requests,
		(unsigned long long)r.ok, (unsigned long long)r.failed,
		(unsigned long long)r.prompt_tokens,
		(unsigned long long)r.completion_tokens);
	print_ms(out, r.ttft_p50_ms);
	print_ms(out, r.ttft_p99_ms);
	print_ms(out, r.itl_p50_ms);
	print_ms(out, r.itl_p99_ms);
	fprintf(out, " %12llu %12llu\n", (unsigned long long)r.bytes_in,
		(unsigned long long)r.bytes_out);
}

void summary_print(const struct summary *s, FILE *out)
{
	fprintf(out, "%-7s %-20s %8s %8s %8s %10s %10s %9s %9s %9s %9s %12s %12s\n",
		"scope", "name", "requests", "ok", "failed", "prompt_tok",
		"compl_tok", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99",
		"bytes_in", "bytes_out");
	print_row(out, "all", &s->all);
	for (size_t i = 0; i < s->tenants.n; i++)
		print_row(out, "tenant", s->tenants.g[i]);
	for (size_t i = 0; i < s->models.n; i++)
		print_row(out, "model", s->models.g[i]);
	fprintf(out, "(times in ms; percentiles from log-linear histograms, within 3.2%%)\n");
}

static void add_ms(cJSON *o, const char *key, double v)
{
	if (v < 0)
		cJSON_AddNullToObject(o, key);
	else
		cJSON_AddNumberToObject(o, key, v);
}

static cJSON *group_json(const struct group *g)
{
	struct summary_row r;
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	to_row(g, &r);
	cJSON_AddStringToObject(o, "name", r.name);
	cJSON_AddNumberToObject(o, "requests", r.requests);
	cJSON_AddNumberToObject(o, "ok", r.ok);
	cJSON_AddNumberToObject(o, "failed", r.failed);
	cJSON_AddNumberToObject(o, "prompt_tokens", r.prompt_tokens);
	cJSON_AddNumberToObject(o, "completion_tokens", r.completion_tokens);
	add_ms(o, "ttft_p50_ms", r.ttft_p50_ms);
	add_ms(o, "ttft_p99_ms", r.ttft_p99_ms);
	add_ms(o, "itl_p50_ms", r.itl_p50_ms);
	add_ms(o, "itl_p99_ms", r.itl_p99_ms);
	cJSON_AddNumberToObject(o, "bytes_in", r.bytes_in);
	cJSON_AddNumberToObject(o, "bytes_out", r.bytes_out);
	return o;
}

static cJSON *groups_json(const struct groups *gs)
{
	cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; a && i < gs->n; i++)
		cJSON_AddItemToArray(a, group_json(gs->g[i]));
	return a;
}

cJSON *summary_to_json(const struct summary *s)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "percentiles",
				"log-linear histogram, 32 buckets per power of two of us");
	cJSON_AddItemToObject(o, "all", group_json(&s->all));
	cJSON_AddItemToObject(o, "tenants", groups_json(&s->tenants));
	cJSON_AddItemToObject(o, "models", groups_json(&s->models));
	return o;
}
