/*
 * compute.h - the collector's view of compute: devices and the intervals of
 * work done on them, whatever the source.
 *
 * Sources: the CUPTI library injected into the server (kernels, copies and
 * memsets on a GPU, exact device time), and the CPU source (on-CPU
 * intervals of the server's threads from sched_switch, device kind "cpu").
 * Both produce struct tt_interval on one clock, CLOCK_MONOTONIC ns, and
 * hand it to a sink; the timeline stage downstream merges them.
 */
#ifndef TT_COMPUTE_H
#define TT_COMPUTE_H

#include <stdint.h>

enum tt_device_kind {
	TT_DEV_GPU = 0,
	TT_DEV_CPU = 1,
};

enum tt_interval_kind {
	TT_IV_KERNEL = 0,	/* a GPU kernel */
	TT_IV_MEMCPY = 1,	/* a copy; copy_kind and bytes are set */
	TT_IV_MEMSET = 2,
	TT_IV_CPU = 3,		/* a thread on a CPU */
	TT_IV_GRAPH = 4,	/* a whole CUDA graph launch as one record */
	TT_IV_STEP = 5,		/* an engine's step function ran (the step
				   probe): a window, not work; always on
				   TT_STEP_DEVICE. bytes: the tokens of
				   its batch when it was read (0: not) */
	TT_IV_SEQ = 6,		/* one sequence's run of tokens in a step
				   whose batch was read (llama_decode): the
				   step's window on TT_STEP_DEVICE; stream:
				   the sequence id, correlation: the
				   position of its first token, bytes: its
				   tokens, name_id: of them, those whose
				   logits were asked (outputs) */
};

/* The device id of step windows: no device's work, so that nothing that
 * sums a device's intervals counts them. */
#define TT_STEP_DEVICE	0xfffffffeu

/* Copy directions, as CUPTI names them. */
enum tt_copy_kind {
	TT_COPY_UNKNOWN = 0,
	TT_COPY_HTOD = 1,
	TT_COPY_DTOH = 2,
	TT_COPY_DTOD = 8,
	TT_COPY_OTHER = 255,
};

struct tt_device {
	uint32_t id;		/* collector-wide: 0 is the CPU device, GPUs
				   from 1, one id per GPU UUID however many
				   processes use it */
	enum tt_device_kind kind;
	uint32_t pid;		/* process that reported it (0: host-wide) */
	uint32_t ordinal;	/* CUDA device ordinal, or 0 for the CPU */
	char name[64];		/* "NVIDIA H100 80GB HBM3", "cpu" */
	char uuid[40];
	uint32_t sm_count;
	uint64_t memory_bytes;
	uint32_t host;		/* several hosts read as one: its host's index
				   (user/chain.h); 0 otherwise (not stored) */
};

struct tt_interval {
	uint64_t start_ns;
	uint64_t end_ns;
	uint32_t device;	/* struct tt_device.id */
	uint32_t pid;
	uint32_t tid;		/* launching / running thread, 0 if unknown */
	uint32_t stream;	/* CUDA stream id, or CPU number for TT_IV_CPU */
	uint32_t name_id;	/* kernel name, 0 if none */
	uint32_t correlation;
	uint64_t bytes;		/* copies and memsets */
	uint8_t kind;		/* enum tt_interval_kind */
	uint8_t copy_kind;	/* enum tt_copy_kind */
	uint16_t reserved;
};

/* Drops and losses a compute source reports. */
struct tt_compute_losses {
	uint64_t cupti_dropped;		/* CUPTI's own dropped records */
	uint64_t lib_dropped;		/* records the injected library dropped */
	uint64_t zero_timestamps;	/* records with start or end zero */
	uint64_t cpu_events_lost;	/* CPU source ring buffer losses */
};

/* Where a source delivers what it sees. Any callback may be NULL. */
struct tt_compute_sink {
	void (*device)(void *ctx, const struct tt_device *dev);
	void (*interval)(void *ctx, const struct tt_interval *iv);
	void (*name)(void *ctx, uint32_t pid, uint32_t name_id, const char *name);
	void (*losses)(void *ctx, uint32_t pid, const struct tt_compute_losses *l);
	void *ctx;
};

#endif
