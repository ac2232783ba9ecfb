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
	uint32_t pid;			/* its one server process; 0: several
					   or none */
	uint64_t comm_ns;		/* collective communication kernels */
};

struct findings_tenant {
	const char *name;
	uint64_t gpu_ns;
	uint64_t tokens;		/* prompt + completion */
};

struct findings_input {
	uint64_t start_ns, end_ns;
	const struct tt_request *reqs;
	size_t nreqs;
	const struct findings_device *devs;
	size_t ndevs;
	const struct findings_tenant *tenants;
	size_t ntenants;
	uint32_t max_batch;		/* configured; 0: the largest seen */
	/* prefix reuse: prompt tokens; of them those an earlier prompt began
	 * with (from the prompts' hashes); those served from a cache, where
	 * known (the server's count or an estimate) */
	uint64_t prompt_tokens, repeated_tokens, cached_tokens;
	bool cache_known, cache_estimated;
};

/* Compute every finding that holds. 0 or -ENOMEM (out is then partial;
 * free it anyway). */
int findings_compute(const struct findings_input *in,
		     struct findings_list *out);

void findings_free(struct findings_list *l);

/* The finding with this id, or NULL. */
const struct finding *findings_get(const struct findings_list *l,
				   const char *id);

const char *findings_severity_name(enum findings_severity s);

#endif
