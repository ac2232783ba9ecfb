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
#include "report.h"

/* Number of time buckets in the busy and batch charts. */
#define HTML_BUCKETS	60
/* Bins of the TTFT and ITL histograms. */
#define HTML_BINS	24

/* The report as HTML on f; c may be NULL. 0, -ENOMEM or -EIO. */
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
