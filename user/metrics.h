/*
 * metrics.h - live counters and histograms in the Prometheus text
 * exposition format, served over HTTP (`--metrics ADDR:PORT`).
 *
 * In:  what the collector sees as it happens: devices, compute intervals,
 *      finished requests, attributed GPU time when it is known, losses.
 * Out: the exposition text (metrics_render, a pure formatter into a
 *      buffer), and an HTTP endpoint at /metrics that serves it
 *      (libmicrohttpd, its own thread).
 * Assumes: one clock (CLOCK_MONOTONIC ns). Intervals of one device arrive
 *      roughly in start order (one CUPTI buffer or CPU ring at a time);
 *      one that arrives after later work was counted adds only its part
 *      past what is already busy. Every update is thread-safe.
 *
 * Label cardinality is capped: past METRICS_MAX_TENANTS tenants (and
 * METRICS_MAX_MODELS models) new names are counted under "other".
 */
#ifndef TT_METRICS_H
#define TT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "compute.h"
#include "report.h"
#include "requests.h"

#define METRICS_MAX_TENANTS	256
#define METRICS_MAX_MODELS	64
#define METRICS_MAX_DEVICES	64

struct metrics;

/* Empty counters, no server. NULL on allocation failure. */
struct metrics *metrics_new(void);

/* Stops the server if one runs, then frees. NULL is fine. */
void metrics_free(struct metrics *m);

/*
 * Serve m at http://ADDR:PORT/metrics. addr NULL or "" means 127.0.0.1;
 * port 0 picks a free port, written to *bound (may be NULL). 0, -EINVAL
 * (addr not an IPv4/IPv6 literal), -EBUSY (already serving) or -EADDRINUSE
 * (could not listen: taken, or not an address of this host).
 */
int metrics_serve(struct metrics *m, const char *addr, uint16_t port,
		  uint16_t *bound);

/* metrics_new and metrics_serve in one; *out NULL on error. */
int metrics_start(const char *addr, uint16_t port, uint16_t *bound,
		  struct metrics **out);

/* Stop the server and free everything (metrics_free). */
void metrics_stop(struct metrics *m);

/*
 * Split "ADDR:PORT", ":PORT", "PORT" or "[V6ADDR]:PORT" into addr (""
 * when not given: the default 127.0.0.1) and port. 0 or -EINVAL.
 */
int metrics_parse_addr(const char *spec, char *addr, size_t cap,
		       uint16_t *port);

/*
 * "--metrics SPEC" (metrics_parse_addr's forms) parsed and served; says
 * on stderr where it serves, or what failed and what to do. 0 or the
 * error; *out NULL on error.
 */
int metrics_start_spec(const char *spec, struct metrics **out);

/*
 * Put m in front of sink: devices, intervals and losses go to m, then on
 * to what sink held before (kept in m, so m must outlive the sink).
 */
void metrics_wrap_sink(struct metrics *m, struct tt_compute_sink *sink);

/* A device (name and kind for its labels). */
void metrics_device(struct metrics *m, const struct tt_device *dev);

/* A compute interval: device busy and idle seconds. */
void metrics_interval(struct metrics *m, const struct tt_interval *iv);

/* A finished request: counts, tokens, TTFT and inter-token gaps. */
void metrics_request(struct metrics *m, const struct tt_request *req);

/* GPU time and cost attributed to a request of tenant/model on device. */
void metrics_attributed(struct metrics *m, uint32_t device,
			const char *tenant, const char *model,
			uint64_t prefill_ns, uint64_t decode_ns,
			double cost_usd);

/* Losses so far (totals, not increments). */
void metrics_losses(struct metrics *m, const struct report_losses *l);

/*
 * The exposition text into buf (NUL-terminated when cap > 0). Returns the
 * length the whole text needs, without the NUL, as snprintf does: call
 * again with a bigger buffer when it is >= cap.
 */
size_t metrics_render(struct metrics *m, char *buf, size_t cap);

#endif
