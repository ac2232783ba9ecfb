/*
 * truth.h - the reference server's ground-truth log, JSON lines.
 *
 * In:  plain structs describing a step, a finished request, the process.
 * Out: one JSON object per line ("type": "step" | "request" | "process"),
 *      written and flushed at once so a reader (or a crash) never sees
 *      half a line.
 * Assumes: every time is CLOCK_MONOTONIC ns; ids, tenants and models may
 *      hold any bytes and are escaped.
 */
#ifndef RS_TRUTH_H
#define RS_TRUTH_H

#include <stdint.h>
#include <stdio.h>

#include "http.h"
#include "sched.h"

struct rs_truth_entry {
	const char *id;
	enum rs_phase phase;
	int tokens;
	int context;
	uint64_t ns;
	int cached;		/* prefill: prompt tokens before it taken from
				 * the prefix cache (on its first chunk) */
};

struct rs_truth_step {
	uint64_t step;
	uint64_t start_ns, end_ns;
	uint64_t cpu_ns, gpu_ns;
	const struct rs_truth_entry *entry;
	int n;
	const uint64_t *dev_busy_ns;	/* per device, or NULL */
	const uint64_t *dev_comm_ns;	/* of it, in all-reduces */
	int ndev;
};

struct rs_truth_request {
	const char *id, *tenant, *model;
	uint64_t arrival_ns, first_token_ns, end_ns;
	int prompt_tokens, completion_tokens;
	int cached_tokens;	/* of prompt_tokens, from the prefix cache */
	uint64_t compute_ns;
	const char *status;	/* "ok" | "cancelled" | "error" */
};

int rs_truth_fmt_step(struct rs_buf *b, const struct rs_truth_step *s);
int rs_truth_fmt_request(struct rs_buf *b, const struct rs_truth_request *r);
int rs_truth_fmt_process(struct rs_buf *b, int pid, uint64_t utime_ns,
			 uint64_t stime_ns);
/* Writes b (one or more whole lines) and flushes; 0 or -errno. */
int rs_truth_write(FILE *f, const struct rs_buf *b);

#endif
