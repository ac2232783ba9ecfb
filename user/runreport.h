/*
 * runreport.h - the JSON summary of a run or a recording (`--summary
 * FILE`), the object DESIGN.md specifies for `tokentrace report --format
 * json`, with what exists at this stage: window, devices, losses, the
 * requests and their sums per tenant and model; no attribution yet.
 *
 * In:  struct runreport: window, per-device timeline stats, requests (as
 *      the request tracker delivered them; token_ns is not read), losses.
 * Out: a cJSON object, or a file written with mode 0600.
 * Assumes: nothing about where the numbers came from.
 */
#ifndef TT_RUNREPORT_H
#define TT_RUNREPORT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "requests.h"
#include "timeline.h"

/* What was lost, by source. */
struct runreport_losses {
	uint64_t cpu_events;		/* CPU source records dropped */
	uint64_t sock_events;		/* socket tracer events dropped */
	uint64_t sock_bytes;		/* payload bytes not captured */
	uint64_t cupti_records;		/* CUPTI's and the library's drops */
};

struct runreport {
	uint64_t window_start_ns, window_end_ns;
	const struct timeline_dev_stats *devs;
	size_t ndevs;
	const struct tt_request *reqs;
	size_t nreqs;
	struct runreport_losses losses;
	const char *compute;		/* "cpu", "cupti", "auto"; may be NULL */
};

/* The summary object; NULL on allocation failure. Free with cJSON_Delete. */
cJSON *runreport_json(const struct runreport *r);

/* Write the summary to path (created or truncated, mode 0600). 0 or a
 * negative errno, with a message on stderr naming the file. */
int runreport_write(const struct runreport *r, const char *path);

#endif
