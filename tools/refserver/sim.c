/*
 * sim.c - simulated CUDA devices: a step's device work laid out kernel by
 * kernel on N devices, sent to the collector as CUPTI records.
 *
 * A step on a real engine is a sequence of batched kernels: an embedding
 * lookup, then per layer a norm, the QKV projection, attention, the output
 * projection, (under tensor parallelism) an all-reduce, a norm, the MLP's
 * two projections around an activation, an all-reduce; then the output
 * head, sampling, and a small copy of the sampled ids back to the host.
 * Each kernel here costs
 *
 *     (base + sum over entries of its work) * (1 + noise)
 *
 * where an entry's work is per token processed, per unit of prefill
 * attention (n * (pos + (n + 1) / 2) for a chunk of n tokens starting at
 * pos), per token of context a decode attends, and per sampled token; the
 * work of projections and attention is divided among the tensor-parallel
 * ranks, norms are not, and an all-reduce costs per token on every rank.
 * That is the hidden cost model: the collector never sees it.
 *
 * The truth of who used a kernel's time is exact by construction: entry e
 * of a kernel of duration D gets D * (base / n + w_e) / (base + W), its
 * part of the kernel's cost, and what a device waited inside an all-reduce
 * for its slowest peer is shared the same way. Copies are split the same
 * way over their bytes. Summed over kernels and devices that gives each
 * entry's true device time, and the entries of a step sum to the step's
 * busy time (to rounding, under a nanosecond per kernel).
 *
 * Timing: the host launches kernels one by one (launch_ns each; a decode
 * step under CUDA graphs is one launch) and a kernel starts when it has
 * been launched and its predecessor on the stream has ended (plus a small
 * gap); an all-reduce ends on every rank together, after the last rank
 * reached it. Device 0 alone copies the inputs in at the start and the
 * sampled ids out at the end. A second stream copies while the MLP runs
 * (contained in its kernel, so busy time is the union, not the sum). The
 * engine thread sleeps until the copy of the sampled ids has ended, so the
 * tokens reach the wire when a real server's would.
 *
 * Records are built as the CUDA 13 CUPTI structs, converted by
 * cupti/convert.c and sent by cupti/transport.c to the socket that
 * `tokentrace run --compute cupti` announces in TOKENTRACE_CUPTI_SOCKET
 * (or the file in TOKENTRACE_CUPTI_FILE), from a pump thread, exactly as
 * the injected library sends them.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

void rs_sim_cfg_default(struct rs_sim_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->gpus = 1;
	cfg->noise = 0.05;
	cfg->profile = "small";
	cfg->max_batch = 16;
	cfg->seed = 1;
}

#ifndef REFSERVER_SIM

struct rs_sim *rs_sim_new(const struct rs_sim_cfg *cfg, FILE *truth,
			  char *err, size_t errlen)
{
	(void)cfg;
	(void)truth;
	snprintf(err, errlen, "--device sim: this refserver was built without "
		 "the CUDA toolkit's CUPTI headers (looked in CUDA_HOME, "
		 "default /usr/local/cuda); install the toolkit and rebuild");
	return NULL;
}

void rs_sim_run(struct rs_sim *s, const struct rs_sim_work *w, int n,
		uint64_t *entry_ns, struct rs_sim_step *out)
{
	(void)s, (void)w, (void)n, (void)entry_ns;
	memset(out, 0, sizeof(*out));
}

void rs_sim_free(struct rs_sim *s)
{
	(void)s;
}

#else

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../cupti/ttc.h"

/* ---- the hidden cost model ----------------------------------------------- */

enum {
	SK_SPLIT = 1 << 0,	/* work divided among tensor-parallel ranks */
	SK_COMM = 1 << 1,	/* all-reduce: only with more than one rank */
	SK_DEV0 = 1 << 2,	/* device 0 only */
	SK_H2D = 1 << 3,	/* a copy in (bytes: 8 per token) */
	SK_D2H = 1 << 4,	/* a copy out (bytes: 4 per sampled token) */
	SK_OVERLAP = 1 << 5,	/* a copy on the second stream runs inside */
};

struct sim_kernel {
	const char *name;
	double base_ns;		/* per launch */
	double tok_ns;		/* per token processed (copies: per byte) */
	double attn_ns;		/* per unit of prefill attention */
	double ctx_ns;		/* per token of context a decode attends */
	double samp_ns;		/* per sampled token (copies: per byte) */
	unsigned flags;
};

struct sim_profile {
	const char *name;
	const char *device_name;	/* says it is simulated */
	int layers;
	const struct sim_kernel *pre, *layer, *post;
	int npre, nlayer, npost;
	double launch_ns;	/* host time per plain launch */
	double graph_launch_ns;	/* host time to launch a whole graph */
	double gap_ns;		/* between dependent kernels on a stream */
	uint32_t sm_count;
	uint64_t memory_bytes;
	int cc_major, cc_minor;
};

#define NCCL_AR "ncclDevKernel_AllReduce_Sum_bf16_RING_LL"

/* A small model on a slow device: steps of a few ms, so tests on a small
 * host see a few hundred steps a second. */
static const struct sim_kernel small_pre[] = {
	{ "memcpy_inputs_htod", 4000, 0.02, 0, 0, 0, SK_H2D | SK_DEV0 },
	{ "embedding_lookup_kernel", 8000, 4, 0, 0, 0, 0 },
};
static const struct sim_kernel small_layer[] = {
	{ "rms_norm_kernel", 6000, 3, 0, 0, 0, 0 },
	{ "sm90_xmma_gemm_bf16_qkv_proj", 30000, 500, 0, 0, 0, SK_SPLIT },
	{ "flash_fwd_kernel", 15000, 0, 1.6, 60, 0, SK_SPLIT },
	{ "sm90_xmma_gemm_bf16_o_proj", 15000, 250, 0, 0, 0, SK_SPLIT },
	{ NCCL_AR, 12000, 30, 0, 0, 0, SK_COMM },
	{ "rms_norm_kernel", 6000, 3, 0, 0, 0, 0 },
	{ "sm90_xmma_gemm_bf16_gate_up_proj", 40000, 1000, 0, 0, 0,
	  SK_SPLIT | SK_OVERLAP },
	{ "act_and_mul_kernel", 6000, 40, 0, 0, 0, SK_SPLIT },
	{ "sm90_xmma_gemm_bf16_down_proj", 25000, 500, 0, 0, 0, SK_SPLIT },
	{ NCCL_AR, 12000, 30, 0, 0, 0, SK_COMM },
};
static const struct sim_kernel small_post[] = {
	{ "rms_norm_kernel", 6000, 3, 0, 0, 0, 0 },
	{ "sm90_xmma_gemm_bf16_lm_head", 20000, 0, 0, 0, 2000, SK_SPLIT },
	{ "ncclDevKernel_AllGather_RING_LL", 10000, 0, 0, 0, 200, SK_COMM },
	{ "sampling_top_p_kernel", 10000, 0, 0, 0, 300, SK_DEV0 },
	{ "memcpy_sampled_dtoh", 3000, 0, 0, 0, 0.05, SK_D2H | SK_DEV0 },
};

/* Shaped like Llama-70B in bf16 on 8 GPUs of the H100 class: a decode
 * step's fixed cost is mostly reading the weights (about 4.5 ms), tokens
 * cost the projections' FLOPs, context the KV cache reads. */
static const struct sim_kernel l70_pre[] = {
	{ "memcpy_inputs_htod", 3000, 0.01, 0, 0, 0, SK_H2D | SK_DEV0 },
	{ "embedding_lookup_kernel", 3000, 0.5, 0, 0, 0, 0 },
};
static const struct sim_kernel l70_layer[] = {
	{ "rms_norm_kernel", 2000, 0.5, 0, 0, 0, 0 },
	{ "sm90_xmma_gemm_bf16_qkv_proj", 7000, 45, 0, 0, 0, SK_SPLIT },
	{ "flash_fwd_kernel", 3000, 0, 0.05, 2, 0, SK_SPLIT },
	{ "sm90_xmma_gemm_bf16_o_proj", 7000, 35, 0, 0, 0, SK_SPLIT },
	{ NCCL_AR, 6000, 4, 0, 0, 0, SK_COMM },
	{ "rms_norm_kernel", 2000, 0.5, 0, 0, 0, 0 },
	{ "sm90_xmma_gemm_bf16_gate_up_proj", 14000, 250, 0, 0, 0,
	  SK_SPLIT | SK_OVERLAP },
	{ "act_and_mul_kernel", 2000, 4, 0, 0, 0, SK_SPLIT },
	{ "sm90_xmma_gemm_bf16_down_proj", 7000, 125, 0, 0, 0, SK_SPLIT },
	{ NCCL_AR, 6000, 4, 0, 0, 0, SK_COMM },
};
static const struct sim_kernel l70_post[] = {
	{ "rms_norm_kernel", 2000, 0.5, 0, 0, 0, 0 },
	{ "sm90_xmma_gemm_bf16_lm_head", 15000, 0, 0, 0, 150, SK_SPLIT },
	{ "ncclDevKernel_AllGather_RING_LL", 8000, 0, 0, 0, 20, SK_COMM },
	{ "sampling_top_p_kernel", 6000, 0, 0, 0, 30, SK_DEV0 },
	{ "memcpy_sampled_dtoh", 3000, 0, 0, 0, 0.02, SK_D2H | SK_DEV0 },
};

#define N_(a) (int)(sizeof(a) / sizeof((a)[0]))

static const struct sim_profile profiles[] = {
	{ "small", "Simulated GPU (refserver --device sim)", 8,
	  small_pre, small_layer, small_post,
	  N_(small_pre), N_(small_layer), N_(small_post),
	  4000, 8000, 1500, 132, 80ull << 30, 9, 0 },
	{ "llama70b", "Simulated H100 (refserver --device sim llama70b)", 80,
	  l70_pre, l70_layer, l70_post,
	  N_(l70_pre), N_(l70_layer), N_(l70_post),
	  2500, 8000, 800, 132, 80ull << 30, 9, 0 },
};

/* ---- state --------------------------------------------------------------- */

#define SIM_STREAM_COMPUTE	7
#define SIM_STREAM_COPY		13
#define SIM_OVERLAP_BYTES	(2u << 20)
#define SIM_GRAPHS_MAX		16	/* batch buckets 1, 2, 4, ... */
#define SIM_BACKLOG_MAX		(256u << 20)
#define SIM_RECONNECT_NS	(100ull * 1000000ull)
#define SIM_DRAIN_MS		5000
#define SIM_PUMP_MS		2

struct rs_sim {
	struct rs_sim_cfg cfg;
	struct sim_profile prof;		/* the profile, --layers applied */
	const struct sim_profile *p;		/* &prof */
	struct ttc_tx *tx;
	struct ttc_names *names;
	uint64_t rng;
	uint32_t corr;
	uint32_t tid;
	uint64_t dev_free[RS_SIM_GPUS_MAX];	/* when each device is idle */
	double *part;				/* [max entries] */
	int cap;
	pthread_t pump;
	bool pump_started;
	atomic_int stop;
};

static uint64_t now_ns(void)
{
	return ttc_now_ns();
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static double rng_unit(uint64_t *s)
{
	return ((rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

/* A relative kernel-time error: normal with sd noise, cut at 3 sd. */
static double noise_factor(struct rs_sim *s)
{
	double u = rng_unit(&s->rng), v = rng_unit(&s->rng);
	double z = sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);

	if (z > 3)
		z = 3;
	if (z < -3)
		z = -3;
	return 1.0 + s->cfg.noise * z;
}

/* ---- records ------------------------------------------------------------- */

static void send_record(struct rs_sim *s, const void *rec)
{
	/* a full backlog is counted by the transport as dropped records */
	(void)ttc_conv_record(s->names, s->tx, (const CUpti_Activity *)rec);
}

static uint32_t next_corr(struct rs_sim *s)
{
	uint32_t c = ++s->corr;

	ttc_corr_note(c, s->tid);
	return c;
}

static void send_kernel(struct rs_sim *s, const struct sim_kernel *k, int dev,
			uint64_t start, uint64_t end, uint32_t graph_id)
{
	CUpti_ActivityKernel10 r;

	memset(&r, 0, sizeof(r));
	r.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
	r.start = start;
	r.end = end;
	r.deviceId = (uint32_t)dev;
	r.contextId = (uint32_t)dev + 1;
	r.streamId = SIM_STREAM_COMPUTE;
	r.correlationId = next_corr(s);
	r.gridX = 132, r.gridY = 1, r.gridZ = 1;
	r.blockX = 256, r.blockY = 1, r.blockZ = 1;
	r.registersPerThread = 128;
	r.staticSharedMemory = 0;
	r.dynamicSharedMemory = 49152;
	r.graphId = graph_id;
	r.name = k->name;
	send_record(s, &r);
}

static void send_copy(struct rs_sim *s, int dev, uint32_t stream,
		      uint8_t kind, uint64_t bytes, uint64_t start,
		      uint64_t end)
{
	CUpti_ActivityMemcpy6 r;

	memset(&r, 0, sizeof(r));
	r.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
	r.copyKind = kind;
	r.srcKind = kind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOH ?
		CUPTI_ACTIVITY_MEMORY_KIND_DEVICE :
		CUPTI_ACTIVITY_MEMORY_KIND_PINNED;
	r.dstKind = kind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOH ?
		CUPTI_ACTIVITY_MEMORY_KIND_PINNED :
		CUPTI_ACTIVITY_MEMORY_KIND_DEVICE;
	r.bytes = bytes;
	r.start = start;
	r.end = end;
	r.deviceId = (uint32_t)dev;
	r.contextId = (uint32_t)dev + 1;
	r.streamId = stream;
	r.correlationId = next_corr(s);
	send_record(s, &r);
}

/* Host index of a device: its UUID begins "TTSIMGPU" and ends with it. */
static void send_device(struct rs_sim *s, int dev)
{
	CUpti_ActivityDevice5 r;
	int host = s->cfg.gpu_index + dev;
	char name[64];

	memset(&r, 0, sizeof(r));
	r.kind = CUPTI_ACTIVITY_KIND_DEVICE;
	r.id = (uint32_t)dev;
	r.numMultiprocessors = s->p->sm_count;
	r.globalMemorySize = s->p->memory_bytes;
	r.computeCapabilityMajor = (uint32_t)s->p->cc_major;
	r.computeCapabilityMinor = (uint32_t)s->p->cc_minor;
	memcpy(r.uuid.bytes, "TTSIMGPU", 8);
	for (int i = 0; i < 8; i++)
		r.uuid.bytes[8 + i] = (char)(i == 7 ? host : 0);
	snprintf(name, sizeof(name), "%s", s->cfg.gpu_name && *s->cfg.gpu_name ?
		 s->cfg.gpu_name : s->p->device_name);
	r.name = name;
	send_record(s, &r);
}

/* ---- one step ------------------------------------------------------------ */

/* What a kernel costs for entry w on one rank (its work, not the base). */
static double work_of(const struct rs_sim *s, const struct sim_kernel *k,
		      const struct rs_sim_work *w)
{
	double n = w->tokens, v = 0;

	if (k->flags & SK_H2D)
		return k->tok_ns * 8 * n;
	if (k->flags & SK_D2H)
		return w->samples ? k->samp_ns * 4 : 0;
	v = k->tok_ns * n + (w->samples ? k->samp_ns : 0);
	if (w->prefill)
		v += k->attn_ns * n * (w->pos + (n + 1) / 2);
	else
		v += k->ctx_ns * (w->pos + 1);
	if (k->flags & SK_SPLIT)
		v /= s->cfg.gpus;
	return v;
}

struct step_state {
	const struct rs_sim_work *w;
	int n;
	bool graph;
	uint32_t graph_id;
	uint64_t host[RS_SIM_GPUS_MAX];	/* each rank's launching thread */
	uint64_t dev[RS_SIM_GPUS_MAX];	/* each rank's stream: free at */
	double *part;			/* per entry, summed over devices */
	struct rs_sim_step *out;
};

static bool on_device(const struct rs_sim *s, const struct sim_kernel *k,
		      int d)
{
	if ((k->flags & SK_COMM) && s->cfg.gpus == 1)
		return false;
	return !(k->flags & (SK_DEV0 | SK_H2D | SK_D2H)) || d == 0;
}

/* When rank d can start its next kernel: launched, and the stream free. */
static uint64_t ready_at(const struct rs_sim *s, struct step_state *st, int d)
{
	uint64_t launched;

	if (!st->graph)
		st->host[d] += (uint64_t)s->p->launch_ns;
	launched = st->host[d];
	return launched > st->dev[d] + (uint64_t)s->p->gap_ns ?
		launched : st->dev[d] + (uint64_t)s->p->gap_ns;
}

/* Gives a kernel's duration dur to the entries by their part of its cost. */
static void share(struct step_state *st, const double *work, double base,
		  double total, uint64_t dur)
{
	for (int i = 0; i < st->n; i++)
		st->part[i] += (double)dur * (base / st->n + work[i]) / total;
}

static void emit(struct rs_sim *s, const struct sim_kernel *k, int d,
		 uint64_t start, uint64_t end, struct step_state *st)
{
	uint64_t dur = end - start;

	if (k->flags & (SK_H2D | SK_D2H)) {
		uint64_t bytes = 0;

		for (int i = 0; i < st->n; i++)
			bytes += k->flags & SK_H2D ? 8u * st->w[i].tokens :
				 st->w[i].samples ? 4u : 0;
		send_copy(s, d, SIM_STREAM_COMPUTE, k->flags & SK_H2D ?
			  CUPTI_ACTIVITY_MEMCPY_KIND_HTOD :
			  CUPTI_ACTIVITY_MEMCPY_KIND_DTOH,
			  bytes ? bytes : 4, start, end);
	} else {
		send_kernel(s, k, d, start, end, st->graph_id);
	}
	if ((k->flags & SK_OVERLAP) && dur > 10)
		send_copy(s, d, SIM_STREAM_COPY,
			  CUPTI_ACTIVITY_MEMCPY_KIND_DTOD, SIM_OVERLAP_BYTES,
			  start + dur / 10, end - dur / 10);
	st->out->busy_ns[d] += dur;
	if (k->flags & SK_COMM)
		st->out->comm_ns[d] += dur;
	st->dev[d] = end;
}

static void run_kernel(struct rs_sim *s, const struct sim_kernel *k,
		       struct step_state *st, double *work)
{
	double total = k->base_ns;
	uint64_t ready[RS_SIM_GPUS_MAX], last = 0;

	for (int i = 0; i < st->n; i++)
		total += work[i] = work_of(s, k, &st->w[i]);
	for (int d = 0; d < s->cfg.gpus; d++) {
		if (!on_device(s, k, d))
			continue;
		ready[d] = ready_at(s, st, d);
		if (ready[d] > last)
			last = ready[d];
	}
	for (int d = 0; d < s->cfg.gpus; d++) {
		if (!on_device(s, k, d))
			continue;
		uint64_t own = (uint64_t)llround(total * noise_factor(s));
		/* an all-reduce ends on every rank after the last arrived */
		uint64_t start = ready[d];
		uint64_t end = (k->flags & SK_COMM ? last : start) +
			       (own ? own : 1);

		share(st, work, k->base_ns, total, end - start);
		emit(s, k, d, start, end, st);
	}
}

static void run_list(struct rs_sim *s, const struct sim_kernel *list,
		     int n, struct step_state *st, double *work)
{
	for (int i = 0; i < n; i++)
		run_kernel(s, &list[i], st, work);
}

/* Which captured graph a decode batch of n replays (batches padded up to
 * a power of two, as engines capture them). */
static uint32_t graph_for(const struct rs_sim *s, int n)
{
	uint32_t id = 1;

	for (int b = 1; b < n && id < SIM_GRAPHS_MAX; b *= 2)
		id++;
	(void)s;
	return id;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = { (time_t)(t / 1000000000ull),
			       (long)(t % 1000000000ull) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

static int grow_part(struct rs_sim *s, int n)
{
	double *p;

	if (n <= s->cap)
		return 0;
	p = realloc(s->part, 2 * (size_t)n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->part = p;
	s->cap = n;
	return 0;
}

/* Lays out and sends one step; returns when it ends on every device. */
static void simulate(struct rs_sim *s, const struct rs_sim_work *w, int n,
		     bool graph_ok, struct rs_sim_step *out)
{
	struct step_state st = { .w = w, .n = n, .part = s->part, .out = out };
	uint64_t t0 = now_ns(), end = 0;
	double *work = s->part + n;

	memset(out, 0, sizeof(*out));
	out->ndev = s->cfg.gpus;
	st.graph = graph_ok && s->cfg.graphs;
	for (int i = 0; i < n && st.graph; i++)
		st.graph = !w[i].prefill;
	st.graph_id = st.graph ? graph_for(s, n) : 0;
	for (int d = 0; d < s->cfg.gpus; d++) {
		st.host[d] = t0 + (st.graph ? (uint64_t)s->p->graph_launch_ns
					    : 0);
		st.dev[d] = s->dev_free[d] > t0 ? s->dev_free[d] : t0;
	}
	memset(s->part, 0, (size_t)n * sizeof(*s->part));
	run_list(s, s->p->pre, s->p->npre, &st, work);
	for (int l = 0; l < s->p->layers; l++)
		run_list(s, s->p->layer, s->p->nlayer, &st, work);
	run_list(s, s->p->post, s->p->npost, &st, work);
	for (int d = 0; d < s->cfg.gpus; d++) {
		s->dev_free[d] = st.dev[d];
		out->total_ns += out->busy_ns[d];
		if (st.dev[d] > end)
			end = st.dev[d];
	}
	sleep_until(end);
}

void rs_sim_run(struct rs_sim *s, const struct rs_sim_work *w, int n,
		uint64_t *entry_ns, struct rs_sim_step *out)
{
	if (n <= 0 || grow_part(s, n)) {
		memset(out, 0, sizeof(*out));
		for (int i = 0; i < n; i++)
			entry_ns[i] = 0;
		return;
	}
	simulate(s, w, n, true, out);
	for (int i = 0; i < n; i++)
		entry_ns[i] = (uint64_t)llround(s->part[i]);
}

/* ---- warm-up, the pump, set-up ------------------------------------------ */

static void add_step(struct rs_sim_step *sum, const struct rs_sim_step *one)
{
	for (int d = 0; d < one->ndev; d++) {
		sum->busy_ns[d] += one->busy_ns[d];
		sum->comm_ns[d] += one->comm_ns[d];
	}
	sum->total_ns += one->total_ns;
}

/*
 * Before serving, an engine runs a profiling pass (a long prefill) and,
 * with CUDA graphs, captures and replays one decode graph per batch size.
 * That device time belongs to no request: the truth logs it as one
 * "warmup" line, and the collector must leave it unattributed.
 */
static void warm_up(struct rs_sim *s, FILE *truth)
{
	int most = s->cfg.max_batch > 1 ? s->cfg.max_batch : 1;
	struct rs_sim_work *w = calloc((size_t)most, sizeof(*w));
	struct rs_sim_step one, sum = { .ndev = s->cfg.gpus };
	int steps = 0;

	if (!w || grow_part(s, most)) {
		free(w);
		return;
	}
	w[0] = (struct rs_sim_work){ .prefill = true, .tokens = 512,
				     .samples = true };
	simulate(s, w, 1, false, &one);
	add_step(&sum, &one);
	steps++;
	for (int b = 1; s->cfg.graphs && b <= most; b *= 2) {
		for (int i = 0; i < b; i++)
			w[i] = (struct rs_sim_work){ .pos = 16, .tokens = 1,
						     .samples = true };
		simulate(s, w, b, true, &one);
		add_step(&sum, &one);
		steps++;
	}
	free(w);
	if (!truth)
		return;
	fprintf(truth, "{\"type\":\"warmup\",\"steps\":%d,\"gpu_ns\":%" PRIu64
		",\"devices\":[", steps, sum.total_ns);
	for (int d = 0; d < sum.ndev; d++)
		fprintf(truth, "%s{\"device\":%d,\"busy_ns\":%" PRIu64
			",\"comm_ns\":%" PRIu64 "}", d ? "," : "", d,
			sum.busy_ns[d], sum.comm_ns[d]);
	fprintf(truth, "]}\n");
	fflush(truth);
}

static void *pump_main(void *arg)
{
	struct rs_sim *s = arg;

	while (!atomic_load(&s->stop)) {
		size_t left = ttc_tx_pump(s->tx, now_ns());
		int fd = ttc_tx_fd(s->tx);
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };

		if (left && fd >= 0)
			poll(&pfd, 1, SIM_PUMP_MS);
		else
			poll(NULL, 0, SIM_PUMP_MS);
	}
	return NULL;
}

static const struct sim_profile *find_profile(const char *name)
{
	for (int i = 0; i < N_(profiles); i++)
		if (!strcmp(profiles[i].name, name ? name : "small"))
			return &profiles[i];
	return NULL;
}

static int check_cfg(const struct rs_sim_cfg *c, char *err, size_t errlen)
{
	if (c->gpus < 1 || c->gpus > RS_SIM_GPUS_MAX) {
		snprintf(err, errlen, "--gpus %d: expected 1..%d", c->gpus,
			 RS_SIM_GPUS_MAX);
		return -EINVAL;
	}
	if (c->gpu_index < 0 || c->gpu_index + c->gpus > 256) {
		snprintf(err, errlen, "--gpu-index %d: the devices' host "
			 "indexes must lie in 0..255", c->gpu_index);
		return -EINVAL;
	}
	if (!(c->noise >= 0 && c->noise <= 0.3)) {
		snprintf(err, errlen, "--kernel-noise %g: expected 0..0.3 "
			 "(a relative sd)", c->noise);
		return -EINVAL;
	}
	if (!find_profile(c->profile)) {
		snprintf(err, errlen, "--sim-profile %s: expected small or "
			 "llama70b", c->profile);
		return -EINVAL;
	}
	return 0;
}

struct rs_sim *rs_sim_new(const struct rs_sim_cfg *cfg, FILE *truth,
			  char *err, size_t errlen)
{
	const char *sock = getenv("TOKENTRACE_CUPTI_SOCKET");
	const char *file = getenv("TOKENTRACE_CUPTI_FILE");
	struct ttc_tx_config tc = {
		.socket_path = sock && *sock ? sock : NULL,
		.file_path = file && *file ? file : NULL,
		.backlog_max = SIM_BACKLOG_MAX,
		.reconnect_ns = SIM_RECONNECT_NS,
		.pid = (uint32_t)getpid(),
	};
	struct rs_sim *s;

	if (check_cfg(cfg, err, errlen))
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "--device sim: out of memory");
		return NULL;
	}
	s->cfg = *cfg;
	s->prof = *find_profile(cfg->profile);
	if (cfg->layers > 0)
		s->prof.layers = cfg->layers;
	s->p = &s->prof;
	s->rng = (cfg->seed ^ 0x9e3779b97f4a7c15ull) *
		 (uint64_t)(cfg->gpu_index + 1) | 1;
	s->tid = (uint32_t)syscall(SYS_gettid);
	s->tx = ttc_tx_new(&tc);
	s->names = ttc_names_new();
	if (!s->tx || !s->names) {
		snprintf(err, errlen, "--device sim: cannot open the record "
			 "transport (TOKENTRACE_CUPTI_FILE %s) or out of "
			 "memory", file ? file : "unset");
		rs_sim_free(s);
		return NULL;
	}
	if (!tc.socket_path && !tc.file_path)
		fprintf(stderr, "refserver: --device sim: neither "
			"TOKENTRACE_CUPTI_SOCKET nor TOKENTRACE_CUPTI_FILE is "
			"set: device records are counted and dropped (run "
			"under `tokentrace run --compute cupti`)\n");
	if (pthread_create(&s->pump, NULL, pump_main, s) == 0)
		s->pump_started = true;
	for (int d = 0; d < cfg->gpus; d++)
		send_device(s, d);
	warm_up(s, truth);
	return s;
}

void rs_sim_free(struct rs_sim *s)
{
	if (!s)
		return;
	if (s->pump_started) {
		atomic_store(&s->stop, 1);
		pthread_join(s->pump, NULL);
	}
	if (s->tx && ttc_tx_drain(s->tx, SIM_DRAIN_MS))
		fprintf(stderr, "refserver: --device sim: the collector did "
			"not take the last device records within %d ms\n",
			SIM_DRAIN_MS);
	if (s->tx) {
		struct ttc_tx_stats st;

		ttc_tx_stats(s->tx, &st);
		fprintf(stderr, "refserver: --device sim: %" PRIu64 " device "
			"records sent, %" PRIu64 " dropped (backlog full)\n",
			st.records_sent, st.lib_dropped);
	}
	ttc_tx_free(s->tx);
	ttc_names_free(s->names);
	free(s->part);
	free(s);
}

#endif
