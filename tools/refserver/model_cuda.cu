/*
 * model_cuda.cu - the reference model on a GPU: the same weights, the same
 * arithmetic as model.c, as CUDA kernels (built only with make CUDA=1).
 *
 * In:  struct rs_model (host weights, uploaded once into one device
 *      arena with the same layout); per step, entries queued in plan order.
 * Out: sampled ids, copied to the host once per step; device time of the
 *      step and of each entry, from CUDA events.
 * Assumes: one engine thread, one stream. A token is a chain of small
 *      kernels (embedding, per block: RMSnorm, q/k/v/o matrix-vector
 *      products, attention over the request's device KV cache, MLP), and
 *      sampling runs on the device so only the ids come back.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_cuda.h"

#define WARP 32
#define BLOCK 128

struct dev_kv {
	int cap;
	float *k, *v;		/* [layers][cap][dim] */
	float *x, *xb, *q, *tmp, *hb, *att, *logits;
};

struct dev_model {
	struct rs_model_cfg cfg;
	const struct rs_model *host;
	float *arena;		/* device copy of host->arena */
	cudaStream_t stream;
	cudaEvent_t start, stop;
	cudaEvent_t *ev;	/* two per entry */
	int nev;
	int *ids;		/* device: sampled ids per slot */
	int ids_cap;
	unsigned char *stage;	/* pinned host: this step's input tokens */
	unsigned char *dstage;	/* device copy */
	size_t stage_cap, stage_len;
	int entry;		/* entries queued in this step */
	int nentries;
};

static struct dev_model g;

/* The device address of a host weight pointer. */
static const float *dw(const float *host_ptr)
{
	return g.arena + (host_ptr - g.host->arena);
}

/* ---- kernels ------------------------------------------------------------ */

static __global__ void k_embed(float *x, const float *embed, const unsigned char *tok,
			int d)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i < d)
		x[i] = embed[(size_t)(*tok) * d + i];
}

static __device__ float block_sum(float v, float *sh)
{
	int t = threadIdx.x;

	sh[t] = v;
	__syncthreads();
	for (int s = blockDim.x / 2; s > 0; s >>= 1) {
		if (t < s)
			sh[t] += sh[t + s];
		__syncthreads();
	}
	v = sh[0];
	__syncthreads();
	return v;
}

static __device__ float block_max(float v, float *sh)
{
	int t = threadIdx.x;

	sh[t] = v;
	__syncthreads();
	for (int s = blockDim.x / 2; s > 0; s >>= 1) {
		if (t < s)
			sh[t] = fmaxf(sh[t], sh[t + s]);
		__syncthreads();
	}
	v = sh[0];
	__syncthreads();
	return v;
}

static __global__ void k_rmsnorm(float *y, const float *x, const float *gain, int n)
{
	__shared__ float sh[BLOCK];
	float ss = 0;

	for (int i = threadIdx.x; i < n; i += blockDim.x)
		ss += x[i] * x[i];
	ss = block_sum(ss, sh);
	float r = rsqrtf(ss / n + 1e-5f);
	for (int i = threadIdx.x; i < n; i += blockDim.x)
		y[i] = x[i] * r * gain[i];
}

/* One warp per output row: y[o] = W[o][:] . x, times scale. */
static __global__ void k_matvec(float *y, const float *w, const float *x, int out,
			 int in, float scale)
{
	int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
	int lane = threadIdx.x % WARP;
	float s = 0;

	if (row >= out)
		return;
	for (int i = lane; i < in; i += WARP)
		s += w[(size_t)row * in + i] * x[i];
	for (int off = WARP / 2; off > 0; off >>= 1)
		s += __shfl_down_sync(0xffffffff, s, off);
	if (lane == 0)
		y[row] = s * scale;
}

static __global__ void k_add(float *x, const float *y, int n)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i < n)
		x[i] += y[i];
}

static __global__ void k_silu(float *h, int n)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i < n)
		h[i] = h[i] / (1.0f + expf(-h[i]));
}

/* One block per head: causal attention of q at pos over 0..pos. */
static __global__ void k_attention(float *out, const float *q, const float *kl,
			    const float *vl, float *att, int pos, int d,
			    int hd, int cap)
{
	__shared__ float sh[BLOCK];
	int h = blockIdx.x;
	float *a = att + (size_t)h * cap;
	float scale = rsqrtf((float)hd), mx = -INFINITY, sum = 0;

	for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
		const float *k = kl + (size_t)t * d + h * hd;
		float s = 0;

		for (int i = 0; i < hd; i++)
			s += q[h * hd + i] * k[i];
		a[t] = s * scale;
		mx = fmaxf(mx, a[t]);
	}
	mx = block_max(mx, sh);
	for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
		a[t] = expf(a[t] - mx);
		sum += a[t];
	}
	sum = block_sum(sum, sh);
	for (int i = threadIdx.x; i < hd; i += blockDim.x) {
		float o = 0;

		for (int t = 0; t <= pos; t++)
			o += a[t] * vl[(size_t)t * d + h * hd + i];
		out[h * hd + i] = o / sum;
	}
}

/* One block: argmax, or softmax sampling with the uniform draw u. */
static __global__ void k_sample(int *id, const float *logits, int n, float temp,
			 float u)
{
	__shared__ float sh[BLOCK];
	__shared__ int best;

	if (threadIdx.x == 0) {
		best = 0;
		for (int i = 1; i < n; i++)
			if (logits[i] > logits[best])
				best = i;
	}
	__syncthreads();
	if (temp <= 0) {
		if (threadIdx.x == 0)
			*id = best;
		return;
	}
	float mx = logits[best] / temp, sum = 0;

	for (int i = threadIdx.x; i < n; i += blockDim.x)
		sum += expf(logits[i] / temp - mx);
	sum = block_sum(sum, sh);
	if (threadIdx.x == 0) {
		float acc = 0;
		int pick = best;

		for (int i = 0; i < n; i++) {
			acc += expf(logits[i] / temp - mx) / sum;
			if (u < acc) {
				pick = i;
				break;
			}
		}
		*id = pick;
	}
}

/* ---- host side ---------------------------------------------------------- */

static int blocks(int n)
{
	return (n + BLOCK - 1) / BLOCK;
}

static void matvec(float *y, const float *w, const float *x, int out, int in,
		   float scale)
{
	int threads = out * WARP;

	k_matvec<<<(threads + BLOCK - 1) / BLOCK, BLOCK, 0, g.stream>>>(
		y, w, x, out, in, scale);
}

static void block_forward(struct dev_kv *kv, int l, int pos)
{
	const struct rs_layer *L = &g.host->layer[l];
	int d = g.cfg.dim, f = g.cfg.ffn, hd = d / g.cfg.heads;
	float *kl = kv->k + (size_t)l * kv->cap * d;
	float *vl = kv->v + (size_t)l * kv->cap * d;

	k_rmsnorm<<<1, BLOCK, 0, g.stream>>>(kv->xb, kv->x, dw(L->attn_norm), d);
	matvec(kv->q, dw(L->wq), kv->xb, d, d, 1.0f);
	matvec(kl + (size_t)pos * d, dw(L->wk), kv->xb, d, d, 1.0f);
	matvec(vl + (size_t)pos * d, dw(L->wv), kv->xb, d, d, 1.0f);
	k_attention<<<g.cfg.heads, BLOCK, 0, g.stream>>>(
		kv->tmp, kv->q, kl, vl, kv->att, pos, d, hd, kv->cap);
	matvec(kv->xb, dw(L->wo), kv->tmp, d, d, 1.0f);
	k_add<<<blocks(d), BLOCK, 0, g.stream>>>(kv->x, kv->xb, d);
	k_rmsnorm<<<1, BLOCK, 0, g.stream>>>(kv->xb, kv->x, dw(L->mlp_norm), d);
	matvec(kv->hb, dw(L->w1), kv->xb, f, d, 1.0f);
	k_silu<<<blocks(f), BLOCK, 0, g.stream>>>(kv->hb, f);
	matvec(kv->xb, dw(L->w2), kv->hb, d, f, 1.0f);
	k_add<<<blocks(d), BLOCK, 0, g.stream>>>(kv->x, kv->xb, d);
}

static void token_forward(struct dev_kv *kv, const unsigned char *dtok,
			  int pos, bool logits)
{
	int d = g.cfg.dim;

	k_embed<<<blocks(d), BLOCK, 0, g.stream>>>(kv->x, dw(g.host->embed),
						   dtok, d);
	for (int l = 0; l < g.cfg.layers; l++)
		block_forward(kv, l, pos);
	if (!logits)
		return;
	k_rmsnorm<<<1, BLOCK, 0, g.stream>>>(kv->xb, kv->x,
					     dw(g.host->final_norm), d);
	matvec(kv->logits, dw(g.host->embed), kv->xb, RS_VOCAB, d,
	       4.0f / sqrtf((float)d));
}

static int cuda_fail(char *err, size_t errlen, const char *what,
		     cudaError_t e)
{
	snprintf(err, errlen, "CUDA: %s: %s (is a GPU visible? check "
		 "nvidia-smi and CUDA_VISIBLE_DEVICES)", what,
		 cudaGetErrorString(e));
	return -1;
}

extern "C" int rs_cuda_init(const struct rs_model *m, char *err,
			    size_t errlen)
{
	size_t bytes = m->arena_len * sizeof(float);
	cudaError_t e;

	memset(&g, 0, sizeof(g));
	g.cfg = m->cfg;
	g.host = m;
	if ((e = cudaSetDevice(0)) != cudaSuccess)
		return cuda_fail(err, errlen, "cudaSetDevice(0)", e);
	if ((e = cudaStreamCreate(&g.stream)) != cudaSuccess)
		return cuda_fail(err, errlen, "cudaStreamCreate", e);
	if ((e = cudaMalloc(&g.arena, bytes)) != cudaSuccess)
		return cuda_fail(err, errlen, "cudaMalloc(weights)", e);
	if ((e = cudaMemcpy(g.arena, m->arena, bytes,
			    cudaMemcpyHostToDevice)) != cudaSuccess)
		return cuda_fail(err, errlen, "cudaMemcpy(weights)", e);
	if ((e = cudaEventCreate(&g.start)) != cudaSuccess ||
	    (e = cudaEventCreate(&g.stop)) != cudaSuccess)
		return cuda_fail(err, errlen, "cudaEventCreate", e);
	return 0;
}

extern "C" void rs_cuda_fini(void)
{
	for (int i = 0; i < g.nev; i++)
		cudaEventDestroy(g.ev[i]);
	free(g.ev);
	if (g.start)
		cudaEventDestroy(g.start);
	if (g.stop)
		cudaEventDestroy(g.stop);
	cudaFree(g.ids);
	cudaFree(g.dstage);
	cudaFreeHost(g.stage);
	cudaFree(g.arena);
	if (g.stream)
		cudaStreamDestroy(g.stream);
	memset(&g, 0, sizeof(g));
}

extern "C" void *rs_cuda_kv_new(int cap)
{
	struct dev_kv *kv = (struct dev_kv *)calloc(1, sizeof(*kv));
	size_t d = g.cfg.dim, kvn = (size_t)g.cfg.layers * cap * d;
	size_t big = g.cfg.ffn > g.cfg.dim ? g.cfg.ffn : g.cfg.dim;

	if (!kv)
		return NULL;
	kv->cap = cap;
	if (cudaMalloc(&kv->k, kvn * sizeof(float)) ||
	    cudaMalloc(&kv->v, kvn * sizeof(float)) ||
	    cudaMalloc(&kv->x, d * sizeof(float)) ||
	    cudaMalloc(&kv->xb, d * sizeof(float)) ||
	    cudaMalloc(&kv->q, d * sizeof(float)) ||
	    cudaMalloc(&kv->tmp, d * sizeof(float)) ||
	    cudaMalloc(&kv->hb, big * sizeof(float)) ||
	    cudaMalloc(&kv->att, (size_t)g.cfg.heads * cap * sizeof(float)) ||
	    cudaMalloc(&kv->logits, RS_VOCAB * sizeof(float))) {
		rs_cuda_kv_free(kv);
		return NULL;
	}
	return kv;
}

extern "C" void rs_cuda_kv_free(void *p)
{
	struct dev_kv *kv = (struct dev_kv *)p;

	if (!kv)
		return;
	/* Kernels of an earlier step may still read it. */
	cudaStreamSynchronize(g.stream);
	cudaFree(kv->k);
	cudaFree(kv->v);
	cudaFree(kv->x);
	cudaFree(kv->xb);
	cudaFree(kv->q);
	cudaFree(kv->tmp);
	cudaFree(kv->hb);
	cudaFree(kv->att);
	cudaFree(kv->logits);
	free(kv);
}

static int ensure_events(int n)
{
	cudaEvent_t *p;

	if (2 * n <= g.nev)
		return 0;
	p = (cudaEvent_t *)realloc(g.ev, 2 * n * sizeof(*p));
	if (!p)
		return -1;
	g.ev = p;
	for (; g.nev < 2 * n; g.nev++)
		if (cudaEventCreate(&g.ev[g.nev]) != cudaSuccess)
			return -1;
	return 0;
}

static int ensure_ids(int n)
{
	if (n <= g.ids_cap)
		return 0;
	cudaFree(g.ids);
	g.ids_cap = 0;
	if (cudaMalloc(&g.ids, n * sizeof(int)) != cudaSuccess)
		return -1;
	g.ids_cap = n;
	return 0;
}

/* Host staging for input tokens: grows only between steps. */
static int ensure_stage(size_t n)
{
	if (n <= g.stage_cap)
		return 0;
	cudaStreamSynchronize(g.stream);
	cudaFreeHost(g.stage);
	cudaFree(g.dstage);
	g.stage = NULL;
	g.dstage = NULL;
	g.stage_cap = 0;
	if (cudaMallocHost(&g.stage, n) != cudaSuccess ||
	    cudaMalloc(&g.dstage, n) != cudaSuccess)
		return -1;
	g.stage_cap = n;
	return 0;
}

extern "C" int rs_cuda_step_begin(int nentries)
{
	size_t stage = (size_t)nentries * g.cfg.ctx;

	if (ensure_events(nentries) || ensure_ids(nentries) ||
	    ensure_stage(stage < 4096 ? 4096 : stage))
		return -1;
	g.entry = 0;
	g.nentries = nentries;
	g.stage_len = 0;
	cudaEventRecord(g.start, g.stream);
	return 0;
}

extern "C" int rs_cuda_entry(void *p, const unsigned char *tokens, int n,
			     int pos, int slot, float temperature, float u)
{
	struct dev_kv *kv = (struct dev_kv *)p;
	unsigned char *dtok;

	if (!kv || g.entry >= g.nentries || g.stage_len + n > g.stage_cap)
		return -1;
	memcpy(g.stage + g.stage_len, tokens, n);
	dtok = g.dstage + g.stage_len;
	g.stage_len += n;
	cudaEventRecord(g.ev[2 * g.entry], g.stream);
	cudaMemcpyAsync(dtok, g.stage + (dtok - g.dstage), n,
			cudaMemcpyHostToDevice, g.stream);
	for (int i = 0; i < n; i++)
		token_forward(kv, dtok + i, pos + i, slot >= 0 && i == n - 1);
	if (slot >= 0)
		k_sample<<<1, BLOCK, 0, g.stream>>>(g.ids + slot, kv->logits,
						    RS_VOCAB, temperature, u);
	cudaEventRecord(g.ev[2 * g.entry + 1], g.stream);
	g.entry++;
	return 0;
}

extern "C" int rs_cuda_step_end(int *ids, int nslots, uint64_t *gpu_ns,
				uint64_t *entry_ns)
{
	float ms = 0;
	cudaError_t e;

	cudaEventRecord(g.stop, g.stream);
	if (nslots > 0)
		cudaMemcpyAsync(ids, g.ids, nslots * sizeof(int),
				cudaMemcpyDeviceToHost, g.stream);
	e = cudaStreamSynchronize(g.stream);
	if (e != cudaSuccess) {
		fprintf(stderr, "refserver: CUDA step failed: %s\n",
			cudaGetErrorString(e));
		return -1;
	}
	cudaEventElapsedTime(&ms, g.start, g.stop);
	*gpu_ns = (uint64_t)(ms * 1e6);
	for (int i = 0; i < g.entry; i++) {
		cudaEventElapsedTime(&ms, g.ev[2 * i], g.ev[2 * i + 1]);
		entry_ns[i] = (uint64_t)(ms * 1e6);
	}
	return 0;
}
