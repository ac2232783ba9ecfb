/*
 * summary.h - totals and latency percentiles of finished requests, overall,
 * per tenant and per model.
 *
 * In:  finished requests (struct tt_request), one summary_add() each,
 *      called from the tracker's callback (token_ns is read there).
 * Out: a plain text table on a FILE*, or the same as a cJSON object.
 *
 * Assumes: one thread. Latencies are kept in log-linear histograms (32
 * buckets per power of two of microseconds: exact below 32 us, within
 * 3.2% above), so memory per group is fixed whatever the request count.
 * At most SUMMARY_GROUPS_MAX tenants and as many models; more share the
 * group "(other)".
 */
#ifndef TT_SUMMARY_H
#define TT_SUMMARY_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "requests.h"

#define SUMMARY_GROUPS_MAX	256

struct summary;

struct summary_row {
	const char *name;
	uint64_t requests, ok, failed;
	uint64_t prompt_tokens, completion_tokens;
	uint64_t bytes_in, bytes_out;
	double ttft_p50_ms, ttft_p99_ms;	/* -1 if no sample */
	double itl_p50_ms, itl_p99_ms;
};

struct summary *summary_new(void);
void summary_free(struct summary *s);
void summary_add(struct summary *s, const struct tt_request *r);

/* scope: "all" (name ignored), "tenant" or "model". 0, or -ENOENT. */
int summary_get(const struct summary *s, const char *scope, const char *name,
		struct summary_row *row);

void summary_print(const struct summary *s, FILE *out);
cJSON *summary_to_json(const struct summary *s);

#endif
