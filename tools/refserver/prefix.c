/*
 * prefix.c - the prefix cache's pool: a hash of block names, an LRU list,
 * and the rows of keys and values each block holds (see prefix.h).
 */
#include <stdlib.h>
#include <string.h>

#include "prefix.h"

/* FNV-1a over the parent's name and the block's tokens, then a finaliser
 * so that nearby prompts spread over the buckets; never 0. */
static uint64_t block_name(uint64_t parent, const unsigned char *tok)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (int i = 0; i < 8; i++) {
		h ^= (parent >> (8 * i)) & 0xff;
		h *= 0x100000001b3ull;
	}
	for (int i = 0; i < RS_PREFIX_BLOCK; i++) {
		h ^= tok[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h ? h : 1;
}

struct rs_prefix *rs_prefix_new(const struct rs_model *m, int nblocks)
{
	struct rs_prefix *p = calloc(1, sizeof(*p));
	size_t rows;

	if (!p || nblocks < 1)
		goto fail;
	p->nblocks = nblocks;
	p->layers = m->cfg.layers;
	p->dim = m->cfg.dim;
	p->nbuckets = 1;
	while (p->nbuckets < 2 * nblocks)
		p->nbuckets <<= 1;
	rows = (size_t)p->layers * RS_PREFIX_BLOCK * p->dim;
	p->b = calloc(nblocks, sizeof(*p->b));
	p->bucket = malloc(p->nbuckets * sizeof(*p->bucket));
	/* untouched pages cost nothing until a block is filled */
	p->arena = calloc((size_t)nblocks * 2 * rows, sizeof(float));
	if (!p->b || !p->bucket || !p->arena)
		goto fail;
	for (int i = 0; i < p->nbuckets; i++)
		p->bucket[i] = -1;
	for (int i = 0; i < nblocks; i++) {
		p->b[i].k = p->arena + (size_t)i * 2 * rows;
		p->b[i].v = p->b[i].k + rows;
		p->b[i].hnext = p->b[i].older = p->b[i].newer = -1;
	}
	p->oldest = p->newest = -1;
	return p;
fail:
	rs_prefix_free(p);
	return NULL;
}

void rs_prefix_free(struct rs_prefix *p)
{
	if (!p)
		return;
	free(p->b);
	free(p->bucket);
	free(p->arena);
	free(p);
}

/* ---- the LRU list and the hash ------------------------------------------ */

static void lru_unlink(struct rs_prefix *p, int i)
{
	struct rs_prefix_block *b = &p->b[i];

	if (b->older >= 0)
		p->b[b->older].newer = b->newer;
	else
		p->oldest = b->newer;
	if (b->newer >= 0)
		p->b[b->newer].older = b->older;
	else
		p->newest = b->older;
	b->older = b->newer = -1;
}

static void lru_push_newest(struct rs_prefix *p, int i)
{
	struct rs_prefix_block *b = &p->b[i];

	b->older = p->newest;
	b->newer = -1;
	if (p->newest >= 0)
		p->b[p->newest].newer = i;
	else
		p->oldest = i;
	p->newest = i;
}

static void touch(struct rs_prefix *p, int i)
{
	lru_unlink(p, i);
	lru_push_newest(p, i);
}

static int *bucket_of(struct rs_prefix *p, uint64_t name)
{
	return &p->bucket[name & (uint64_t)(p->nbuckets - 1)];
}

static int find(struct rs_prefix *p, uint64_t name, uint64_t parent,
		const unsigned char *tok)
{
	for (int i = *bucket_of(p, name); i >= 0; i = p->b[i].hnext) {
		const struct rs_prefix_block *b = &p->b[i];

		if (b->name == name && b->parent == parent &&
		    !memcmp(b->tok, tok, RS_PREFIX_BLOCK))
			return i;
	}
	return -1;
}

static void unhash(struct rs_prefix *p, int i)
{
	int *pp = bucket_of(p, p->b[i].name);

	while (*pp >= 0 && *pp != i)
		pp = &p->b[*pp].hnext;
	if (*pp == i)
		*pp = p->b[i].hnext;
	p->b[i].hnext = -1;
}

/* A block to fill: a never used one, else the least recently used. */
static int take_block(struct rs_prefix *p)
{
	int i;

	if (p->nfree < p->nblocks)
		return p->nfree++;
	i = p->oldest;
	lru_unlink(p, i);
	unhash(p, i);
	p->b[i].used = false;
	p->evicted++;
	return i;
}

/* ---- rows ---------------------------------------------------------------- */

/* The rows of layer l at position pos of kv: keys in *k, values in *v. */
static void kv_rows(const struct rs_prefix *p, const struct rs_kv *kv, int l,
		    int pos, float **k, float **v)
{
	size_t at = ((size_t)l * kv->cap + pos) * p->dim;

	*k = kv->k + at;
	*v = kv->v + at;
}

static size_t block_layer(const struct rs_prefix *p, int l)
{
	return (size_t)l * RS_PREFIX_BLOCK * p->dim;
}

static void block_to_kv(const struct rs_prefix *p,
			const struct rs_prefix_block *b, struct rs_kv *kv,
			int pos)
{
	size_t n = RS_PREFIX_BLOCK * p->dim * sizeof(float);
	float *k, *v;

	for (int l = 0; l < p->layers; l++) {
		kv_rows(p, kv, l, pos, &k, &v);
		memcpy(k, b->k + block_layer(p, l), n);
		memcpy(v, b->v + block_layer(p, l), n);
	}
}

static void kv_to_block(const struct rs_prefix *p, const struct rs_kv *kv,
			int pos, struct rs_prefix_block *b)
{
	size_t n = RS_PREFIX_BLOCK * p->dim * sizeof(float);
	float *k, *v;

	for (int l = 0; l < p->layers; l++) {
		kv_rows(p, kv, l, pos, &k, &v);
		memcpy(b->k + block_layer(p, l), k, n);
		memcpy(b->v + block_layer(p, l), v, n);
	}
}

int rs_prefix_match(struct rs_prefix *p, const unsigned char *prompt, int n,
		    struct rs_kv *kv)
{
	uint64_t parent = 0;
	int got = 0;

	p->lookups++;
	while (got + RS_PREFIX_BLOCK <= n - 1 &&
	       got + RS_PREFIX_BLOCK <= kv->cap) {
		uint64_t name = block_name(parent, prompt + got);
		int i = find(p, name, parent, prompt + got);

		if (i < 0)
			break;
		block_to_kv(p, &p->b[i], kv, got);
		touch(p, i);
		parent = name;
		got += RS_PREFIX_BLOCK;
	}
	p->hit_tokens += got;
	return got;
}

void rs_prefix_insert(struct rs_prefix *p, const unsigned char *prompt, int n,
		      const struct rs_kv *kv)
{
	uint64_t parent = 0;

	for (int pos = 0; pos + RS_PREFIX_BLOCK <= n &&
			  pos + RS_PREFIX_BLOCK <= kv->cap;
	     pos += RS_PREFIX_BLOCK) {
		uint64_t name = block_name(parent, prompt + pos);
		int i = find(p, name, parent, prompt + pos);

		if (i >= 0) {
			touch(p, i);
		} else {
			struct rs_prefix_block *b;

			i = take_block(p);
			b = &p->b[i];
			b->name = name;
			b->parent = parent;
			memcpy(b->tok, prompt + pos, RS_PREFIX_BLOCK);
			b->used = true;
			kv_to_block(p, kv, pos, b);
			b->hnext = *bucket_of(p, name);
			*bucket_of(p, name) = i;
			lru_push_newest(p, i);
			p->inserted++;
		}
		parent = name;
	}
}
