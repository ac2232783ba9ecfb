/*
 * report.h - the attribution report: what each request, tenant and model
 * used of the devices, what it cost, and what the trace says (findings).
 *
 * In:  struct report_input: requests (with token times), devices, compute
 *      intervals and their kernel names, a window, prices per device-hour,
 *      the compute source.
 * Out: struct report (owning copies of everything it needs), written as
 *      DESIGN.md's `tokentrace report --format json` object or as a table.
 * Assumes: one clock (CLOCK_MONOTONIC ns) for requests and intervals.
 */
#ifndef TT_REPORT_H
#define TT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "compute.h"
#include "costmodel.h"
#include "findings.h"
#include "requests.h"
#include "steps.h"

/* Price of one device model, matched on struct tt_device.name. */
struct report_price {
	const char *device_name;
	double usd_per_hour;
};

/* A kernel's name, as a CUPTI library reported it for its process. */
struct report_name {
	uint32_t pid, name_id;		/* struct tt_interval's */
	const char *name;
};

/* What was lost, by source. */
struct report_losses {
	uint64_t cpu_events;		/* CPU source records dropped */
	uint64_t sock_events;		/* socket tracer events dropped */
	uint64_t sock_bytes;		/* payload bytes not captured */
	uint64_t cupti_records;		/* CUPTI's and the library's drops */
};

struct report_input {
	uint64_t start_ns, end_ns;		/* window */
	const struct tt_request *reqs;		/* token_ns read, and copied */
	size_t nreqs;
	const struct tt_device *devs;
	size_t ndevs;
	const struct tt_interval *ivs;
	size_t nivs;
	const struct report_name *names;	/* may be NULL: no names */
	size_t nnames;
	const struct report_price *prices;
	size_t nprices;
	double default_usd_per_hour;		/* devices with no price */
	const char *compute;	/* "cpu", "cupti", or "auto"/NULL: GPUs with
				   work in the window, else the CPU */
	uint32_t max_batch;	/* engine's batch limit if known, else 0 */
	/* the window is a time range of a longer trace, with ranges before
	   or after it (user/shard.c) */
	bool cut_before, cut_after;
	const char *hooks;	/* socket hooks in use; NULL or "": unknown */
	struct report_losses losses;
	/* several hosts: their names; host k's pids are shown plus k times
	   REPORT_HOST_PID_STRIDE, its devices have dev.host k */
	const char (*hosts)[64];
	size_t nhosts;
	/* a time range of a long trace (user/shard.c): each request's busy
	   ns on each of the first loaded_ndevs devices (the trace's own, in
	   the same order in every range) kept in its dev_ns, their idle
	   time left to share once the whole trace is read (0: shared here,
	   among this window's requests) */
	size_t loaded_ndevs;
};

#define REPORT_HOST_PID_STRIDE	(1u << 22)

struct report_request {
	struct tt_request req;		/* token_ns points at an owned copy */
	uint64_t gpu_ns, prefill_ns, decode_ns;
	/* 90% interval on gpu_ns (REPORT_INTERVAL in report.c); with
	 * interval false none is known (time split by tokens, no model) */
	uint64_t gpu_ns_lo, gpu_ns_hi;
	double gpu_var;			/* its variance, ns^2 */
	bool interval;
	double cost_usd;		/* busy cost */
	double cost_loaded_usd;		/* busy cost + share of idle */
	double prompt_cost_usd;		/* busy cost split by prefill ns */
	double completion_cost_usd;	/* ... and by decode ns */
	/* with cached prompt tokens: the part of the prompt's cost that is
	 * attending over them, and what prefilling them would have cost */
	double cached_cost_usd;
	uint64_t cache_saved_ns;
	double cache_saved_usd;
	/* a long trace's: busy ns on each of the report's loaded_ndevs
	 * devices (NULL: none kept; owned like token_ns), their share of
	 * idle time not yet in cost_loaded_usd; and where it is written
	 * before the whole trace is read, the index of its loaded cost's
	 * mark (struct report_marks; 0: none, the figure is written) */
	const uint64_t *dev_ns;
	uint64_t loaded_mark;
};

struct report_device {
	struct tt_device dev;
	uint64_t busy_ns, idle_ns;
	bool attributed;		/* its time went to requests */
	uint32_t cache_candidates;	/* prefills that began as an earlier
					   prompt did, and of them those
					   inferred to have hit a prefix cache
					   (0, 0: none inferred) */
	uint32_t cache_hits;
	double usd_per_hour;
	uint64_t attributed_ns, unattributed_ns;
	uint32_t pid;			/* the one process whose work it ran
					   in the window; 0: several, none */
	uint32_t req_pid;		/* requests that took part: this
					   server's; 0: all */
	uint32_t steps_dev;		/* the device whose copies cut its
					   steps, its server's rank 0, when
					   it has none of its own; 0: itself */
	uint64_t comm_ns;		/* union of its collective
					   communication kernels (GPUs) */
	struct steps_result steps;	/* attributed devices only */
	struct costmodel model;
	int basis;			/* enum attr_basis */
	uint64_t shard_busy;		/* merged: busy in the shard whose
					   model is shown */
};

/* One server process and its attributed GPUs; several servers: data
 * parallel. */
struct report_server {
	uint32_t pid;
	uint64_t requests;		/* requests it answered */
	uint64_t gpu_ns;		/* attributed on its GPUs: its requests'
					   time there */
	uint64_t busy_ns, unattributed_ns, comm_ns;	/* of its GPUs */
};

/* Sums per tenant or per model. */
struct report_group {
	char name[TT_NAME_MAX];
	uint64_t requests, prompt_tokens, completion_tokens;
	uint64_t gpu_ns, prefill_ns, decode_ns;
	uint64_t gpu_ns_lo, gpu_ns_hi;	/* 90% interval, as the requests' */
	double gpu_var;
	bool interval;			/* every request has one */
	double cost_usd, cost_loaded_usd;
	double prompt_cost_usd, completion_cost_usd;
	double usd_per_1m_prompt, usd_per_1m_completion;	/* -1: no tokens */
	/* the same with idle time shared in (loaded cost), and device ms
	 * per token (prefill ns per prompt token, decode ns per completion
	 * token); -1: no tokens */
	double loaded_usd_per_1m_prompt, loaded_usd_per_1m_completion;
	double ms_per_prompt_token, ms_per_completion_token;
	/* prefix caching: prompt tokens served from a cache (of requests
	 * whose cached count is known), the GPU time and money that saved,
	 * the prompt's cost split into cached and computed tokens (-1: no
	 * such tokens), and whether any count was estimated */
	uint64_t cached_prompt_tokens, cache_known_prompt_tokens;
	uint64_t cache_saved_ns;
	double cache_saved_usd, cached_cost_usd;
	double usd_per_1m_cached_prompt, usd_per_1m_uncached_prompt;
	bool cache_known, cache_estimated;
	uint64_t *loaded_ns;		/* merged: busy ns per device of
					   report.loaded_ndevs, owned */
};

struct report {
	uint64_t start_ns, end_ns, window_ns;
	char compute[16];		/* source that fed the attribution */
	char hooks[24];			/* socket hooks, "" unknown */
	struct report_device *devs;
	size_t ndevs;
	struct report_request *reqs;
	size_t nreqs;
	struct report_group *tenants, *models;
	size_t ntenants, nmodels;
	struct report_group *hosts;	/* by host, with several (else 0) */
	size_t nhosts;
	struct report_server *servers;	/* by pid, in device order */
	size_t nservers;
	uint64_t busy_ns;		/* of the attributed devices */
	uint64_t unattributed_ns;
	size_t model_dev;		/* device whose cost model is shown,
					   SIZE_MAX if none */
	struct findings_list findings;
	/* what they are judged on: the window's counts, its requests'
	   prompts and the engine's batch limit */
	struct findings_tally *tally;
	struct findings_prompts prompts;
	uint32_t max_batch;
	struct report_losses losses;
	uint64_t *token_store;		/* the copied token times */
	size_t prompts_estimated;	/* requests flagged prompt_estimated */
	struct tt_request *est_reqs;	/* the input's requests with those
					   estimates, which the steps and
					   findings read; NULL if none */
	/* a report merged from shards of one trace (report_merge): their
	   number, and the requests, which were written out as they were
	   done instead of kept */
	uint32_t shards;
	uint64_t streamed_requests, streamed_gpu_ns;
	/* requests' busy ns per device kept (report_input.loaded_ndevs):
	   the store their dev_ns point into (a range's), and once merged
	   the loaded cost of a busy ns on each of those devices: its price
	   times the window over the device's attributed time */
	size_t loaded_ndevs;
	uint64_t *dev_ns_store;
	double *loaded_usd_per_ns;
};

/* Steps the cost model's fit sums into one observation: two where they
 * were cut from the token writes, else one (see report.c). */
uint32_t report_steps_per_obs(const struct steps_result *s);

/*
 * Build the report. 0, -EINVAL (reversed window, NULL arrays with counts),
 * -ENOMEM, or -EPROTO when the conservation check fails (the numbers are
 * printed on stderr). Free with report_free, even after an error.
 */
int report_build(const struct report_input *in, struct report *out);

void report_free(struct report *r);

/*
 * A report of a long trace from reports of its shards (consecutive time
 * ranges, user/shard.c), merged in time order. report_merge_init readies
 * acc (zeroed, model_dev SIZE_MAX): the trace's hosts (several: a group each) and the devices whose
 * busy ns each request keeps (report_input.loaded_ndevs); 0 or -ENOMEM.
 * report_merge adds a shard's devices, servers, busy and unattributed
 * time and what its findings are judged on to acc (the tally is moved
 * out of part); its requests are not taken: each is merged over the shards it
 * spans with report_request_merge, finished (report_request_finish: its
 * interval) and counted into the tenants, models, servers and prompts
 * with report_add_request; report_finish_merged closes the groups,
 * judges the findings on the whole and checks conservation over it
 * (-EPROTO).
 */
int report_merge_init(struct report *acc, const char (*hosts)[64],
		      size_t nhosts, size_t loaded_ndevs);
int report_merge(struct report *acc, struct report *part);
void report_request_merge(struct report_request *into,
			  const struct report_request *q);
void report_request_finish(struct report_request *q);
int report_add_request(struct report *r, const struct report_request *q);
int report_finish_merged(struct report *r);

/* The host index of a pid (0 with one host). */
#define REPORT_HOST_OF_PID(pid)	((pid) / REPORT_HOST_PID_STRIDE)

/* The tenant and model group a request counts in ("-" when unknown). */
const char *report_tenant_of(const struct tt_request *q);
const char *report_model_of(const struct tt_request *q);

/* DESIGN.md's report object; NULL on allocation failure. */
cJSON *report_json(const struct report *r);
/* The same with an empty "requests" array, for report_print_json. */
cJSON *report_json_shell(const struct report *r);

/* The JSON object on f, with a newline. 0 or -EIO / -ENOMEM. */
int report_write_json(const struct report *r, FILE *f);

/* One request's object of the report (no newline). 0 or -EIO. */
int report_request_write_json(const struct report_request *q, FILE *f);

/*
 * Any JSON object on f as one line; takes o (NULL: -ENOMEM) and frees it.
 * With r, o is a report_json_shell (added to freely) and r's requests are
 * written into its empty "requests" array. 0, -ENOMEM or -EIO.
 */
int report_print_json(cJSON *o, const struct report *r, FILE *f);

/*
 * A long trace's requests are written out as they are done, before the
 * idle time that their fully loaded cost shares is known: where the
 * figure goes report_request_write_json writes a mark (REPORT_LOADED_MARK, the request's
 * loaded_mark in decimal, REPORT_LOADED_MARK again; the byte never
 * appears in what the writers write, which escapes control bytes), and
 * report_mark_loaded keeps what the figure is made of in side, in the
 * order of the marks. Once the trace is read (usd_per_ns: the merged
 * report's loaded_usd_per_ns), report_copy_marked copies a writer's
 * file with each mark replaced by its figure (%.9g).
 */
#define REPORT_LOADED_MARK	'\x01'

struct report_marks {
	FILE *side;			/* NULL: no marks */
	size_t ndevs;
	uint64_t n;			/* marks given */
	const double *usd_per_ns;
};

/* Give q (its dev_ns over m->ndevs devices) the next mark: 0, -EIO. */
int report_mark_loaded(struct report_marks *m, struct report_request *q);

/* in (rewound) onto out, marks replaced (m NULL: copied as it is): 0,
 * -EIO, or -EPROTO on a mark that m does not hold. */
int report_copy_marked(const struct report_marks *m, FILE *in, FILE *out);

/* q's cost_loaded_usd on f: its mark, or the figure (%.9g). */
void report_put_loaded(FILE *f, const struct report_request *q);

/* report_print_json for a report whose requests were written out as
 * they were done (report_request_write_json, comma-separated) to the
 * file requests: its contents fill the array, marks replaced (m: NULL
 * if none). */
int report_print_json_from(cJSON *o, FILE *requests,
			   const struct report_marks *m, FILE *f);

/* A table for people. 0 or -EIO. */
int report_write_text(const struct report *r, FILE *f);

#endif
