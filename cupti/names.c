/*
 * names.c - kernel name interning for the injected library.
 *
 * In: kernel names as CUPTI gives them (C strings, often long C++
 *     mangled names, the same few hundred repeated millions of times).
 * Out: a small id per distinct name, from 1, and whether that name's
 *     record has gone out yet, so each name crosses the wire once.
 * Assumes: one caller at a time (inject.c holds its conversion lock).
 *
 * An open-addressing hash table keyed by the FNV-1a hash of the string,
 * holding copies of the names (CUPTI's pointers are only valid during the
 * buffer callback). The table doubles at 50% load; ids index a side array
 * so marking "sent" is O(1).
 */
#include <stdlib.h>
#include <string.h>

#include "ttc.h"

#define TTC_NAMES_MAX (1u << 20)	/* distinct names kept, then 0 */

struct ttc_name {
	char *str;
	uint32_t hash;
	uint8_t sent;
};

struct ttc_names {
	uint32_t *slots;	/* 0 empty, else id */
	uint32_t nslots;	/* power of two */
	struct ttc_name *byid;	/* index id - 1 */
	uint32_t count;
	uint32_t cap;
};

static uint32_t fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s) {
		h ^= (uint8_t)*s++;
		h *= 16777619u;
	}
	return h;
}

struct ttc_names *ttc_names_new(void)
{
	struct ttc_names *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->nslots = 1024;
	n->slots = calloc(n->nslots, sizeof(*n->slots));
	if (!n->slots) {
		free(n);
		return NULL;
	}
	return n;
}

void ttc_names_free(struct ttc_names *n)
{
	if (!n)
		return;
	for (uint32_t i = 0; i < n->count; i++)
		free(n->byid[i].str);
	free(n->byid);
	free(n->slots);
	free(n);
}

static void slot_put(uint32_t *slots, uint32_t nslots, uint32_t hash,
		     uint32_t id)
{
	uint32_t i = hash & (nslots - 1);

	while (slots[i])
		i = (i + 1) & (nslots - 1);
	slots[i] = id;
}

static int grow_slots(struct ttc_names *n)
{
	uint32_t ns = n->nslots * 2;
	uint32_t *s = calloc(ns, sizeof(*s));

	if (!s)
		return -1;
	for (uint32_t id = 1; id <= n->count; id++)
		slot_put(s, ns, n->byid[id - 1].hash, id);
	free(n->slots);
	n->slots = s;
	n->nslots = ns;
	return 0;
}

static uint32_t add_name(struct ttc_names *n, const char *name, uint32_t h)
{
	if (n->count >= TTC_NAMES_MAX)
		return 0;
	if ((n->count + 1) * 2 > n->nslots && grow_slots(n))
		return 0;
	if (n->count == n->cap) {
		uint32_t cap = n->cap ? n->cap * 2 : 256;
		struct ttc_name *b = realloc(n->byid, cap * sizeof(*b));

		if (!b)
			return 0;
		n->byid = b;
		n->cap = cap;
	}
	char *copy = strdup(name);

	if (!copy)
		return 0;
	n->byid[n->count] = (struct ttc_name){ .str = copy, .hash = h };
	n->count++;
	slot_put(n->slots, n->nslots, h, n->count);
	return n->count;
}

uint32_t ttc_names_intern(struct ttc_names *n, const char *name, int *sent)
{
	uint32_t h = fnv1a(name);
	uint32_t i = h & (n->nslots - 1);

	for (; n->slots[i]; i = (i + 1) & (n->nslots - 1)) {
		struct ttc_name *e = &n->byid[n->slots[i] - 1];

		if (e->hash == h && strcmp(e->str, name) == 0) {
			*sent = e->sent;
			return n->slots[i];
		}
	}
	*sent = 0;
	return add_name(n, name, h);
}

void ttc_names_mark_sent(struct ttc_names *n, uint32_t id)
{
	if (id >= 1 && id <= n->count)
		n->byid[id - 1].sent = 1;
}

uint32_t ttc_names_count(const struct ttc_names *n)
{
	return n->count;
}
