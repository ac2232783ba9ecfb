/*
 * sim.h - simulated CUDA devices for the reference server (--device sim):
 * each step's device work is simulated, not computed, and its records go
 * to the collector the way the injected CUPTI library sends them.
 *
 * In:  the entries of one engine step (prefill chunks and decodes).
 * Out: CUPTI activity records (kernels, copies, devices) built from the
 *      CUDA 13 structs and passed through cupti/convert.c and
 *      cupti/transport.c to TOKENTRACE_CUPTI_SOCKET (or _FILE); per entry
 *      its true device time summed over devices; per device its busy time.
 * Assumes: one caller (the engine thread); the step returns only when the
 *      simulated devices are done with it (real elapsed time), so what the
 *      network shows is what a real server's timing would be.
 */
#ifndef RS_SIM_H
#define RS_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define RS_SIM_GPUS_MAX 8

struct rs_sim_cfg {
	int gpus;		/* tensor parallel over 1..RS_SIM_GPUS_MAX */
	int gpu_index;		/* host index of the first device (its UUID
				   and name), so that two servers on one host
				   have devices apart */
	int layers;		/* 0: the profile's */
	double noise;		/* relative sd of each kernel's time */
	bool graphs;		/* decode-only steps launched as CUDA graphs */
	const char *profile;	/* "small" (default) or "llama70b" */
	const char *gpu_name;	/* the devices' name; NULL: the profile's */
	int max_batch;		/* graphs are captured for batches up to it */
	uint64_t seed;
};

/* One entry of a step, as the scheduler planned it. */
struct rs_sim_work {
	bool prefill;
	int pos;		/* position of its first token */
	int tokens;		/* tokens it processes */
	bool samples;		/* a token is sampled at its end */
};

struct rs_sim_step {
	uint64_t busy_ns[RS_SIM_GPUS_MAX];	/* per device */
	uint64_t comm_ns[RS_SIM_GPUS_MAX];	/* of it, in all-reduces */
	uint64_t total_ns;			/* summed over devices */
	int ndev;
};

struct rs_sim;

/* Opens the transport, announces the devices, runs the warm-up and graph
 * capture (written to truth as one "warmup" line when truth is set).
 * NULL with err filled on a bad configuration or a build without CUPTI
 * headers. */
struct rs_sim *rs_sim_new(const struct rs_sim_cfg *cfg, FILE *truth,
			  char *err, size_t errlen);
/* Simulates one step of n entries: entry_ns[i] gets entry i's true device
 * time summed over devices, *out the devices' busy time. Returns when the
 * step's last device work (the copy of the sampled ids) has ended. */
void rs_sim_run(struct rs_sim *s, const struct rs_sim_work *w, int n,
		uint64_t *entry_ns, struct rs_sim_step *out);
/* Sends what is queued (up to a few seconds) and frees. */
void rs_sim_free(struct rs_sim *s);
/* The checked configuration's defaults. */
void rs_sim_cfg_default(struct rs_sim_cfg *cfg);

#endif
