/*
 * top.h - the frames of `tokentrace top`: per tenant and per model, what
 * the last interval served and what the traced window cost.
 *
 * In:  a report over the window so far (user/report.h), the latency
 *      summary (user/summary.h), and the previous frame's totals.
 * Out: a struct top_frame of plain numbers (top_frame_build), and its text
 *      in a buffer (top_render): ANSI clear-and-home first for a
 *      terminal, plain lines otherwise.
 * Assumes: nothing about terminals or time; both functions are pure over
 *      their arguments (top_frame_build updates the previous totals).
 */
#ifndef TT_TOP_H
#define TT_TOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "report.h"
#include "summary.h"

#define TOP_MAX_DEVS	8

/* One tenant or model. A negative number means "no value" ("-"). */
struct top_row {
	char name[TT_NAME_MAX];
	double req_s, prompt_tok_s, completion_tok_s;	/* last interval */
	double ttft_p50_ms, ttft_p99_ms, itl_p50_ms;	/* the window */
	double share;		/* of attributed device time, 0..1 */
	double usd_per_1m;	/* busy cost per 1M tokens (prompt + compl) */
};

struct top_device {
	char name[TT_NAME_MAX];
	double busy_pct;	/* of the window */
};

struct top_frame {
	char target[64];		/* what is traced, e.g. "port 8000" */
	double window_s, interval_s;
	char share_label[8];		/* "GPU" or "CPU" */
	struct top_device devs[TOP_MAX_DEVS];
	size_t ndevs;
	uint64_t events_lost, bytes_lost;
	struct top_row *tenants, *models;
	size_t ntenants, nmodels;
};

/* Group totals of the previous frame, for the rates of the next. */
struct top_prev {
	struct report_group *tenants, *models;
	size_t ntenants, nmodels;
};

/*
 * The frame for report r (s: latencies, may be NULL), rates over the
 * interval_s since prev's totals (a group prev lacks counts from zero);
 * prev then holds r's totals. f's rows are allocated: top_frame_free.
 * 0 or -ENOMEM.
 */
int top_frame_build(const struct report *r, const struct summary *s,
		    struct top_prev *prev, double interval_s,
		    struct top_frame *f);

void top_frame_free(struct top_frame *f);
void top_prev_free(struct top_prev *p);
/* q left the window (it was in prev's totals): take it off them, so that
 * the next frame's rates count only requests that finished since. */
void top_prev_forget(struct top_prev *p, const struct tt_request *q);

/*
 * f as text into buf (NUL-terminated when cap > 0); ansi: clear the
 * screen and home the cursor first. Returns the length the whole text
 * needs, without the NUL, as snprintf does.
 */
size_t top_render(const struct top_frame *f, bool ansi, char *buf,
		  size_t cap);

#endif
