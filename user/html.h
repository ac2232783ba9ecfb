/*
 * html.h - the report as one self-contained HTML file with inline SVG
 * charts (`tokentrace report --format html`).
 *
 * In:  a built struct report and, when there is one, the struct collect it
 *      came from (its raw intervals give busy/idle over time for devices
 *      that were not attributed).
 * Out: HTML on a FILE: no network, no external scripts, styles or fonts.
 *      Charts, each an <svg> with an id and a <title>: "chart-busy-N" (one
 *      per device, busy/idle per time bucket), "chart-batch" (batch size
 *      per time bucket from the steps), "chart-tenant-cost" (busy and
 *      loaded cost per tenant), "chart-ttft" and "chart-itl" (histograms).
 *      Tables: devices, tenants, models, cost model, findings, losses.
 * Assumes: every string from the trace (tenant, model, kernel, device
 *      names, evidence) is untrusted and is escaped.
 */
#ifndef TT_HTML_H
#define TT_HTML_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "collect.h"
#include "quantile.h"
#include "report.h"

/* Number of time buckets in the busy and batch charts. */
#define HTML_BUCKETS	60
/* Bins of the TTFT and ITL histograms. */
#define HTML_BINS	24

/*
 * What the charts draw over time and the latency histograms, gathered
 * from a whole report or from a long trace's time ranges one at a time,
 * in memory that does not grow with the trace: busy ns and steps per
 * bucket of the window, per device; TTFT and token gaps in histograms
 * (user/quantile.h: a value within a 2048th of a bin's edge may be
 * counted in the next bin).
 */
struct html_latency {
	struct quantile q;
	uint64_t max_ns;
	unsigned __int128 sum_ns;
};

struct html_dev_series {
	uint32_t id;
	double busy_ns[HTML_BUCKETS];
	double batch_sum[HTML_BUCKETS], batch_n[HTML_BUCKETS];
	uint32_t batch_max;
	uint64_t nsteps, entries;
};

struct html_series {
	uint64_t start_ns, window_ns;	/* what the buckets cut */
	struct html_dev_series *devs;
	size_t ndevs;
	struct html_latency ttft, itl;
};

/* Buckets over [start_ns, end_ns). */
void html_series_init(struct html_series *s, uint64_t start_ns,
		      uint64_t end_ns);
/* One range's report (or the whole) and the collect it was built from
 * (NULL: none), for its devices' busy time and steps. 0 or -ENOMEM. */
int html_series_part(struct html_series *s, const struct report *r,
		     const struct collect *c);
/* One request's TTFT and token gaps. 0 or -ENOMEM. */
int html_series_request(struct html_series *s, const struct tt_request *q);
void html_series_free(struct html_series *s);

/* The report as HTML on f, its charts from s; c (the trace's host) may
 * be NULL. 0, -ENOMEM or -EIO. */
int html_write(const struct report *r, const struct html_series *s,
	       const struct collect *c, FILE *f);

/* html_write of a whole report and the collect it came from (NULL:
 * none). */
int html_write_report(const struct report *r, const struct collect *c,
		      FILE *f);

/* A plan (`tokentrace plan --format html`) from its JSON: the charts
 * "chart-plan-latency" (TTFT p50/p99 and ITL p99 against the load, with
 * the limits, today's load and the prediction) and "chart-plan-throughput",
 * the curve's table and the assumptions. 0, -EINVAL (no curve) or -EIO. */
int html_write_plan(const cJSON *plan, FILE *f);

/* s with &, <, >, " and ' escaped. */
void html_escape(FILE *f, const char *s);

#endif
