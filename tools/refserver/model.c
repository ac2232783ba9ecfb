/*
 * model.c - a decoder-only transformer in plain C, one token at a time.
 *
 * In:  struct rs_model_cfg; token ids and positions, per request.
 * Out: logits, sampled tokens; keys and values appended to the request's
 *      struct rs_kv.
 * Assumes: single-threaded use of a given rs_kv; weights are read-only
 *      once built, so any number of threads may share one rs_model.
 *
 * The point is honest, predictable cost, not quality: weights are seeded
 * random numbers, but every multiply is really done. A token costs one
 * pass of every weight matrix (matrix-vector products over contiguous
 * rows, so memory is read in order) plus attention over every earlier
 * position of its request, so prefill of n tokens costs about n decode
 * tokens and attention grows with context length. Block: RMSnorm,
 * multi-head causal attention, residual, RMSnorm, MLP (SiLU), residual;
 * then a final RMSnorm and logits against the tied embedding.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

void rs_model_cfg_default(struct rs_model_cfg *cfg)
{
	cfg->dim = 128;
	cfg->layers = 2;
	cfg->heads = 4;
	cfg->ffn = 512;
	cfg->ctx = 1024;
	cfg->seed = 1;
}

int rs_model_cfg_check(const struct rs_model_cfg *cfg, char *err, size_t errlen)
{
	if (cfg->dim < 4 || cfg->dim > 8192)
		snprintf(err, errlen, "--dim %d: must be 4..8192", cfg->dim);
	else if (cfg->layers < 1 || cfg->layers > 256)
		snprintf(err, errlen, "--layers %d: must be 1..256", cfg->layers);
	else if (cfg->heads < 1 || cfg->dim % cfg->heads)
		snprintf(err, errlen,
			 "--heads %d: must be >= 1 and divide --dim %d",
			 cfg->heads, cfg->dim);
	else if (cfg->ffn < 1 || cfg->ffn > 65536)
		snprintf(err, errlen, "--ffn %d: must be 1..65536", cfg->ffn);
	else if (cfg->ctx < 2 || cfg->ctx > 1 << 20)
		snprintf(err, errlen, "--ctx %d: must be 2..1048576", cfg->ctx);
	else
		return 0;
	return -EINVAL;
}

double rs_rand_unit(uint64_t *rng)
{
	uint64_t z = (*rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (double)(z >> 11) / (double)(1ULL << 53);
}

/* Uniform in [-scale, scale]. */
static void fill_random(float *w, size_t n, float scale, uint64_t *rng)
{
	for (size_t i = 0; i < n; i++)
		w[i] = (float)((rs_rand_unit(rng) * 2.0 - 1.0) * scale);
}

static void fill_ones(float *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] = 1.0f;
}

static size_t model_floats(const struct rs_model_cfg *c)
{
	size_t d = c->dim, f = c->ffn;
	size_t per_layer = 2 * d + 4 * d * d + 2 * d * f;

	return RS_VOCAB * d + d + c->layers * per_layer;
}

static float *take(float **cursor, size_t n)
{
	float *p = *cursor;

	*cursor += n;
	return p;
}

static void model_init_weights(struct rs_model *m)
{
	const struct rs_model_cfg *c = &m->cfg;
	size_t d = c->dim, f = c->ffn;
	float *cur = m->arena;
	uint64_t rng = c->seed;
	float sd = 1.0f / sqrtf((float)d), sf = 1.0f / sqrtf((float)f);

	m->embed = take(&cur, RS_VOCAB * d);
	fill_random(m->embed, RS_VOCAB * d, 1.0f, &rng);
	m->final_norm = take(&cur, d);
	fill_ones(m->final_norm, d);
	for (int l = 0; l < c->layers; l++) {
		struct rs_layer *L = &m->layer[l];

		L->attn_norm = take(&cur, d);
		L->wq = take(&cur, d * d);
		L->wk = take(&cur, d * d);
		L->wv = take(&cur, d * d);
		L->wo = take(&cur, d * d);
		L->mlp_norm = take(&cur, d);
		L->w1 = take(&cur, f * d);
		L->w2 = take(&cur, d * f);
		fill_ones(L->attn_norm, d);
		fill_ones(L->mlp_norm, d);
		fill_random(L->wq, 4 * d * d, sd, &rng);	/* wq..wo */
		fill_random(L->w1, f * d, sd, &rng);
		fill_random(L->w2, d * f, sf, &rng);
	}
}

struct rs_model *rs_model_new(const struct rs_model_cfg *cfg, char *err,
			      size_t errlen)
{
	struct rs_model *m;

	if (rs_model_cfg_check(cfg, err, errlen))
		return NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		goto nomem;
	m->cfg = *cfg;
	m->arena_len = model_floats(cfg);
	m->arena = malloc(m->arena_len * sizeof(float));
	m->layer = calloc(cfg->layers, sizeof(*m->layer));
	if (!m->arena || !m->layer)
		goto nomem;
	model_init_weights(m);
	return m;
nomem:
	snprintf(err, errlen, "model: out of memory for dim %d layers %d ffn %d",
		 cfg->dim, cfg->layers, cfg->ffn);
	rs_model_free(m);
	return NULL;
}

void rs_model_free(struct rs_model *m)
{
	if (!m)
		return;
	free(m->arena);
	free(m->layer);
	free(m);
}

struct rs_kv *rs_kv_new(const struct rs_model *m, int cap)
{
	const struct rs_model_cfg *c = &m->cfg;
	struct rs_kv *kv = calloc(1, sizeof(*kv));
	size_t kvn = (size_t)c->layers * cap * c->dim;
	int big = c->ffn > c->dim ? c->ffn : c->dim;

	if (!kv)
		return NULL;
	kv->cap = cap;
	kv->k = malloc(kvn * sizeof(float));
	kv->v = malloc(kvn * sizeof(float));
	kv->x = malloc(c->dim * sizeof(float));
	kv->xb = malloc(c->dim * sizeof(float));
	kv->q = malloc(c->dim * sizeof(float));
	kv->tmp = malloc(c->dim * sizeof(float));
	kv->att = malloc(cap * sizeof(float));
	kv->hb = malloc(big * sizeof(float));
	if (!kv->k || !kv->v || !kv->x || !kv->xb || !kv->q || !kv->tmp ||
	    !kv->att || !kv->hb) {
		rs_kv_free(kv);
		return NULL;
	}
	return kv;
}

void rs_kv_free(struct rs_kv *kv)
{
	if (!kv)
		return;
	free(kv->k);
	free(kv->v);
	free(kv->x);
	free(kv->xb);
	free(kv->q);
	free(kv->tmp);
	free(kv->att);
	free(kv->hb);
	free(kv);
}

/* Four independent sums so the adds pipeline without -ffast-math. */
static float dot(const float *a, const float *b, int n)
{
	float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	int i = 0;

	for (; i + 4 <= n; i += 4) {
		s0 += a[i] * b[i];
		s1 += a[i + 1] * b[i + 1];
		s2 += a[i + 2] * b[i + 2];
		s3 += a[i + 3] * b[i + 3];
	}
	for (; i < n; i++)
		s0 += a[i] * b[i];
	return (s0 + s1) + (s2 + s3);
}

/* y[out] = W[out][in] x[in] */
static void matvec(float *y, const float *w, const float *x, int out, int in)
{
	for (int o = 0; o < out; o++)
		y[o] = dot(w + (size_t)o * in, x, in);
}

static void rmsnorm(float *y, const float *x, const float *g, int n)
{
	float ss = dot(x, x, n) / n + 1e-5f;
	float r = 1.0f / sqrtf(ss);

	for (int i = 0; i < n; i++)
		y[i] = x[i] * r * g[i];
}

static void softmax(float *x, int n)
{
	float mx = x[0], sum = 0;

	for (int i = 1; i < n; i++)
		if (x[i] > mx)
			mx = x[i];
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - mx);
		sum += x[i];
	}
	for (int i = 0; i < n; i++)
		x[i] /= sum;
}

/* Causal attention of q (at pos) over positions 0..pos; result in out. */
static void attention(const struct rs_model_cfg *c, struct rs_kv *kv,
		      const float *kl, const float *vl, int pos, float *out)
{
	int d = c->dim, hd = c->dim / c->heads;
	float scale = 1.0f / sqrtf((float)hd);

	for (int h = 0; h < c->heads; h++) {
		const float *q = kv->q + h * hd;
		float *o = out + h * hd;

		for (int t = 0; t <= pos; t++)
			kv->att[t] = dot(q, kl + (size_t)t * d + h * hd, hd) * scale;
		softmax(kv->att, pos + 1);
		memset(o, 0, hd * sizeof(float));
		for (int t = 0; t <= pos; t++) {
			const float *v = vl + (size_t)t * d + h * hd;
			float a = kv->att[t];

			for (int i = 0; i < hd; i++)
				o[i] += a * v[i];
		}
	}
}

static void block(const struct rs_model *m, int l, struct rs_kv *kv, int pos)
{
	const struct rs_model_cfg *c = &m->cfg;
	const struct rs_layer *L = &m->layer[l];
	int d = c->dim;
	float *kl = kv->k + (size_t)l * kv->cap * d;
	float *vl = kv->v + (size_t)l * kv->cap * d;

	rmsnorm(kv->xb, kv->x, L->attn_norm, d);
	matvec(kv->q, L->wq, kv->xb, d, d);
	matvec(kl + (size_t)pos * d, L->wk, kv->xb, d, d);
	matvec(vl + (size_t)pos * d, L->wv, kv->xb, d, d);
	attention(c, kv, kl, vl, pos, kv->tmp);
	matvec(kv->xb, L->wo, kv->tmp, d, d);
	for (int i = 0; i < d; i++)
		kv->x[i] += kv->xb[i];

	rmsnorm(kv->xb, kv->x, L->mlp_norm, d);
	matvec(kv->hb, L->w1, kv->xb, c->ffn, d);
	for (int i = 0; i < c->ffn; i++)
		kv->hb[i] = kv->hb[i] / (1.0f + expf(-kv->hb[i]));
	matvec(kv->xb, L->w2, kv->hb, d, c->ffn);
	for (int i = 0; i < d; i++)
		kv->x[i] += kv->xb[i];
}

void rs_model_forward(const struct rs_model *m, struct rs_kv *kv, int token,
		      int pos, float *logits)
{
	const struct rs_model_cfg *c = &m->cfg;
	int d = c->dim;

	memcpy(kv->x, m->embed + (size_t)(token & 0xff) * d, d * sizeof(float));
	for (int l = 0; l < c->layers; l++)
		block(m, l, kv, pos);
	if (!logits)
		return;
	rmsnorm(kv->xb, kv->x, m->final_norm, d);
	matvec(logits, m->embed, kv->xb, RS_VOCAB, d);
	/* Random weights give logits of spread ~sqrt(dim): temper them. */
	for (int i = 0; i < RS_VOCAB; i++)
		logits[i] *= 4.0f / sqrtf((float)d);
}

int rs_sample(const float *logits, float temperature, uint64_t *rng)
{
	float p[RS_VOCAB];
	int best = 0;
	double u, acc = 0;

	for (int i = 1; i < RS_VOCAB; i++)
		if (logits[i] > logits[best])
			best = i;
	if (temperature <= 0)
		return best;
	for (int i = 0; i < RS_VOCAB; i++)
		p[i] = logits[i] / temperature;
	softmax(p, RS_VOCAB);
	u = rs_rand_unit(rng);
	for (int i = 0; i < RS_VOCAB; i++) {
		acc += p[i];
		if (u < acc)
			return i;
	}
	return best;
}
