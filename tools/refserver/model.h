/*
 * model.h - the reference server's model: a small decoder-only transformer
 * with seeded random weights, evaluated one token at a time on the CPU.
 *
 * In:  a configuration (sizes and seed); token ids 0..255 (a byte-level
 *      vocabulary: a prompt's bytes are its tokens) at given positions.
 * Out: logits over the 256 tokens; a sampled token id.
 * Assumes: one request's tokens are fed in order, position 0 first, into
 *      that request's own KV cache; nothing here is shared between threads
 *      except the read-only weights.
 *
 * The weights are public (struct rs_model) so the CUDA backend can upload
 * the very same numbers.
 */
#ifndef RS_MODEL_H
#define RS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RS_VOCAB 256

struct rs_model_cfg {
	int dim;		/* model width */
	int layers;		/* transformer blocks */
	int heads;		/* attention heads; dim % heads == 0 */
	int ffn;		/* MLP hidden width */
	int ctx;		/* max positions per request */
	uint64_t seed;		/* weight seed */
};

/* One block's weights, all row-major [out][in]. */
struct rs_layer {
	float *attn_norm;	/* [dim] */
	float *wq, *wk, *wv;	/* [dim][dim] */
	float *wo;		/* [dim][dim] */
	float *mlp_norm;	/* [dim] */
	float *w1;		/* [ffn][dim] */
	float *w2;		/* [dim][ffn] */
};

struct rs_model {
	struct rs_model_cfg cfg;
	float *embed;		/* [vocab][dim], also the output projection */
	float *final_norm;	/* [dim] */
	struct rs_layer *layer;	/* [layers] */
	float *arena;		/* every float above lives here */
	size_t arena_len;
};

/* A request's key/value cache and scratch space. */
struct rs_kv {
	int cap;		/* positions it can hold */
	float *k, *v;		/* [layers][cap][dim] */
	float *x, *xb, *q, *att, *hb, *tmp;	/* scratch */
};

/* Defaults: dim 128, layers 2, heads 4, ffn 512, ctx 1024, seed 1. */
void rs_model_cfg_default(struct rs_model_cfg *cfg);
/* Checks sizes; on error fills err and returns -EINVAL. */
int rs_model_cfg_check(const struct rs_model_cfg *cfg, char *err, size_t errlen);
struct rs_model *rs_model_new(const struct rs_model_cfg *cfg, char *err,
			      size_t errlen);
void rs_model_free(struct rs_model *m);

struct rs_kv *rs_kv_new(const struct rs_model *m, int cap);
void rs_kv_free(struct rs_kv *kv);

/*
 * Runs token at position pos (0 <= pos < kv->cap) through every block,
 * appending its keys and values to kv. Writes RS_VOCAB logits when logits
 * is not NULL (the output projection is skipped otherwise).
 */
void rs_model_forward(const struct rs_model *m, struct rs_kv *kv, int token,
		      int pos, float *logits);

/* temperature <= 0: argmax; else softmax sampling driven by *rng. */
int rs_sample(const float *logits, float temperature, uint64_t *rng);
/* A uniform double in [0, 1) from a splitmix64 state. */
double rs_rand_unit(uint64_t *rng);

#ifdef __cplusplus
}
#endif
#endif
