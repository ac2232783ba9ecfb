/*
 * findings.h - plain statements about a trace, each with a severity, the
 * numbers behind it and a suggested action: idle capacity with and without
 * demand, batch occupancy against the fitted step model, launch overhead,
 * prefill interference, tenant skew, copy overhead, prompt prefixes that
 * repeat but are not reused from a cache; per server with several GPUs,
 * collective communication's share and uneven load.
 *
 * In:  per attributed device its busy union, raw intervals, steps, process
 *      and communication time; the requests; the fitted step cost model;
 *      per tenant GPU time and tokens; the window and prices.
 * Out: a list of findings, evidence as cJSON objects.
 * Assumes: everything on one clock; steps from steps.h.
 */
#ifndef TT_FINDINGS_H
#define TT_FINDINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "compute.h"
#include "costmodel.h"
#include "requests.h"
#include "steps.h"

enum findings_severity {
	FINDINGS_INFO = 0,
	FINDINGS_WARNING,
	FINDINGS_CRITICAL,
};

struct finding {
	char id[32];
	enum findings_severity severity;
	char summary[320];	/* one sentence with the numbers */
	cJSON *evidence;	/* an object, owned by the finding */
	char action[320];
};

struct findings_list {
	struct finding *items;
	size_t n, cap;
};

/* One device whose time was attributed. */
struct findings_device {
	const char *name;		/* with its id where names repeat */
	enum tt_device_kind kind;
	const struct tt_interval *ivs;	/* all intervals; others skipped */
	size_t nivs;
	uint32_t id;
	const struct steps_result *steps;	/* its steps and busy union */
	const struct costmodel *model;		/* fitted on those steps */
	double usd_per_hour;
	uint64_t comm_ns;		/* collective communication kernels */
};

struct findings_tenant {
	const char *name;
	uint64_t gpu_ns;
	uint64_t tokens;		/* prompt + completion */
};

/* Prefix reuse: prompt tokens; of them those an earlier prompt began
 * with (from the prompts' hashes); those served from a cache, where known
 * (the server's count or an estimate). */
struct findings_prompts {
	uint64_t prompt_tokens, repeated_tokens, cached_tokens;
	bool cache_known, cache_estimated;
};

/* Adds request q's prompt to p. */
void findings_prompts_add(struct findings_prompts *p,
			  const struct tt_request *q);

struct findings_input {
	uint64_t start_ns, end_ns;
	/* the window is one time range of a longer one, with ranges before
	 * it (cut_before) or after it (cut_after): a kernel is counted in
	 * the range it starts in */
	bool cut_before, cut_after;
	const struct tt_request *reqs;
	size_t nreqs;
	const struct findings_device *devs;
	size_t ndevs;
	const struct findings_tenant *tenants;
	size_t ntenants;
	uint32_t max_batch;		/* configured; 0: the largest seen */
	struct findings_prompts prompts;
};

/*
 * What the findings are judged on, counted a time range at a time: per
 * device its idle gaps (split by demand, those at a range's edges kept
 * open to be joined with the next range's), kernel lengths (a histogram:
 * the median within 0.05%), copies, batches, token gaps by prefill,
 * communication and busy time, and its one process. Ranges counted apart
 * and joined in time order give what one count over their union gives,
 * on the same steps; tenants and prompts are the caller's sums.
 */
struct findings_tally;

/* A tally of in's window and devices (their steps, intervals and
 * demand): a new tally, or NULL (out of memory). */
struct findings_tally *findings_tally_of(const struct findings_input *in);

/* Adds b, the range that follows a's, to a (b is freed). 0 or -ENOMEM. */
int findings_tally_join(struct findings_tally *a, struct findings_tally *b);

void findings_tally_free(struct findings_tally *t);

/* Every finding that holds of tally t over in's window, in's devices (by
 * id: their names, kinds, models and prices), tenants and prompts. 0 or
 * -ENOMEM (out is then partial; free it anyway). */
int findings_judge(const struct findings_tally *t,
		   const struct findings_input *in, struct findings_list *out);

/* Compute every finding that holds: findings_judge of in's own tally. 0
 * or -ENOMEM (out is then partial; free it anyway). */
int findings_compute(const struct findings_input *in,
		     struct findings_list *out);

void findings_free(struct findings_list *l);

/* The finding with this id, or NULL. */
const struct finding *findings_get(const struct findings_list *l,
				   const char *id);

const char *findings_severity_name(enum findings_severity s);

#endif
