/*
 * prefix.h - the reference server's prefix cache: the keys and values of
 * prompt prefixes kept in blocks of RS_PREFIX_BLOCK tokens, so a prompt
 * that begins as one seen before skips that part of its prefill.
 *
 * In:  a request's prompt tokens and its KV cache (struct rs_kv).
 * Out: how many leading prompt tokens were found (their rows copied into
 *      the request's KV cache); the counters of hits and evictions.
 * Assumes: the engine thread alone calls these; the CPU model's KV layout
 *      ([layers][cap][dim] for keys and for values).
 *
 * Like vLLM's automatic prefix caching: a block is named by a hash chained
 * over its parent block's name and its own tokens, so block i matches only
 * when the whole prefix up to its end matches (each block also keeps its
 * tokens and its parent's name, and a match compares both: no two
 * different prefixes ever share a block). The pool is bounded; the least
 * recently used block is evicted first. Blocks hold copies: a request
 * copies the rows of its matched blocks into its own KV cache when it is
 * submitted, and the full blocks of its prompt out of it once its prefill
 * is done, so a running request never shares memory with the pool. At
 * least one prompt token is always computed, since the first completion
 * token is sampled from the last prompt token's logits.
 */
#ifndef RS_PREFIX_H
#define RS_PREFIX_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

#define RS_PREFIX_BLOCK 16

struct rs_prefix_block {
	uint64_t name;		/* chain hash through this block */
	uint64_t parent;	/* the name of the block before it; 0: first */
	unsigned char tok[RS_PREFIX_BLOCK];
	int hnext;		/* next in its hash bucket; -1 ends */
	int older, newer;	/* LRU list; -1 ends */
	bool used;
	float *k, *v;		/* [layers][RS_PREFIX_BLOCK][dim] */
};

struct rs_prefix {
	int nblocks, layers, dim;
	struct rs_prefix_block *b;
	int *bucket;		/* [nbuckets] block index or -1 */
	int nbuckets;		/* a power of two */
	int oldest, newest;	/* LRU ends; -1 when empty */
	int nfree;		/* blocks [0, nfree) were never used */
	float *arena;
	uint64_t lookups, hit_tokens, inserted, evicted;
};

/* A pool of nblocks blocks for model m; NULL when out of memory. */
struct rs_prefix *rs_prefix_new(const struct rs_model *m, int nblocks);
void rs_prefix_free(struct rs_prefix *p);

/*
 * The longest run of cached blocks that begins prompt (n tokens), at most
 * n - 1 tokens long: copies their rows into kv (positions 0 onwards),
 * marks them recently used, and returns how many tokens they hold (a
 * multiple of RS_PREFIX_BLOCK; 0 when none).
 */
int rs_prefix_match(struct rs_prefix *p, const unsigned char *prompt, int n,
		    struct rs_kv *kv);

/*
 * Keeps the full blocks of prompt (n tokens, every one of them already in
 * kv) in the pool: those present become recently used, the others are
 * copied in, evicting the least recently used blocks when the pool is full.
 */
void rs_prefix_insert(struct rs_prefix *p, const unsigned char *prompt, int n,
		      const struct rs_kv *kv);

#endif
