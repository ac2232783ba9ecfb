/*
 * export.h - a traced interval in the formats other tools read: Chrome
 * trace-event JSON (ui.perfetto.dev, chrome://tracing), OTLP/JSON traces
 * (an OpenTelemetry Collector, Jaeger, Tempo) and JSON lines.
 *
 * In:  a built struct report (per-request attribution, steps of the
 *      attributed devices) and the struct collect it was built from (the
 *      raw intervals, kernel names, devices, window, host).
 * Out: text streamed on a FILE, one event at a time, so that a trace with
 *      millions of kernels needs no more memory than the structs given.
 * Assumes: one clock, CLOCK_MONOTONIC ns, for requests and intervals.
 */
#ifndef TT_EXPORT_H
#define TT_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "collect.h"
#include "report.h"

/* Process ids the Perfetto export gives its tracks (devices are 1..n). */
#define EXPORT_PID_REQUESTS	100000
#define EXPORT_PID_STEPS	100001

/*
 * Chrome trace-event JSON ("traceEvents"): a process per device with a
 * track per stream (per thread for the CPU device), a process "requests"
 * with a track per request (prefill and decode slices, token instants),
 * a process "steps" with a track per attributed device, and counters for
 * batch size and busy fraction. Times in microseconds from the window
 * start, three decimals (ns precision). 0, or -EIO when f fails.
 */
int export_perfetto(const struct report *r, const struct collect *c,
		    FILE *f);

/*
 * OTLP/JSON traces: one span per request with the OpenTelemetry GenAI
 * attributes and tokentrace's own, an event at the first token. Monotonic
 * times become Unix times by adding wall_minus_mono_ns (see
 * export_wall_minus_mono_now). 0, or -EIO when f fails.
 */
int export_otlp(const struct report *r, const struct collect *c,
		int64_t wall_minus_mono_ns, FILE *f);

/*
 * CLOCK_REALTIME minus CLOCK_MONOTONIC now. Right for a trace recorded
 * since the last boot of this host; a trace from another host or boot
 * carries its own monotonic clock, and its wall times are then off by the
 * difference between the two boots.
 */
int64_t export_wall_minus_mono_now(void);

/* One request per line: the report's request objects. 0 or -EIO/-ENOMEM. */
int export_jsonl(const struct report *r, FILE *f);

/*
 * The same formats for a trace reported a time range at a time
 * (user/shard.h), written as the ranges are done: begin once the trace's
 * window is known (the heads), each request when done, each range's
 * report and collect (its kernels, copies, busy fractions and steps; an
 * interval that starts before `from` was written with an earlier range,
 * unless `first`), then end (the tails). Memory is that of one range and
 * the set of tracks named. Requests come in the order they are done, not
 * of arrival. NULL FILEs are formats not asked for. Functions give 0, or
 * -ENOMEM / -EIO.
 */
struct export_stream;

struct export_stream *export_stream_new(FILE *perfetto, FILE *otlp,
					FILE *jsonl);
bool export_stream_begun(const struct export_stream *s);
int export_stream_begin(struct export_stream *s, const struct collect *base,
			int64_t wall_minus_mono_ns);
int export_stream_request(struct export_stream *s,
			  const struct report_request *q);
int export_stream_part(struct export_stream *s, bool first, uint64_t from,
		       const struct report *r, const struct collect *c);
int export_stream_end(struct export_stream *s);
void export_stream_free(struct export_stream *s);

/*
 * Busy fraction of `device` in nbuckets equal buckets of [start, end):
 * frac[i] in [0, 1] from the union of its intervals. 0 or -ENOMEM.
 */
int export_busy_buckets(const struct tt_interval *ivs, size_t nivs,
			uint32_t device, uint64_t start_ns, uint64_t end_ns,
			double *frac, size_t nbuckets);

/* s as a JSON string, quotes included. */
void export_json_str(FILE *f, const char *s);

#endif
