/*
 * sort.c - radix sorts by a 64-bit key, and selection (see sort.h).
 *
 * LSD radix, 11 bits a pass: one read counts every pass's digits, then
 * each pass whose digit is not the same for all keys moves the records
 * once (keys are taken less their minimum, so the passes cover only the
 * span of the values).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sort.h"

#define RADIX_BITS	11
#define RADIX		(1u << RADIX_BITS)
#define RADIX_PASSES	6		/* 66 bits: any 64-bit key */

static inline uint64_t key_at(const unsigned char *p, size_t off)
{
	uint64_t k;

	memcpy(&k, p + off, sizeof(k));
	return k;
}

/* Moves of one pass, with the record size known to the compiler. */
#define RADIX_PASS(SZ)							\
	for (size_t i = 0; i < n; i++) {				\
		const unsigned char *rec = src + i * (SZ);		\
		size_t d = (size_t)(((key_at(rec, off) - lo) >> shift) & \
				    (RADIX - 1));			\
		memcpy(dst + pos[d]++ * (SZ), rec, (SZ));		\
	}

int sort_by_u64(void *base, size_t n, size_t size, size_t off)
{
	size_t (*count)[RADIX];
	unsigned char *src = base, *dst, *tmp;
	uint64_t lo = UINT64_MAX, hi = 0;

	if (n < 2)
		return 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t k = key_at(src + i * size, off);

		lo = k < lo ? k : lo;
		hi = k > hi ? k : hi;
	}
	if (lo == hi)
		return 0;
	tmp = malloc(n * size);
	count = calloc(RADIX_PASSES, sizeof(*count));
	if (!tmp || !count) {
		free(tmp);
		free(count);
		return -ENOMEM;
	}
	int passes = 0;

	while (passes < RADIX_PASSES &&
	       ((hi - lo) >> (passes * RADIX_BITS)) != 0)
		passes++;
	for (size_t i = 0; i < n; i++) {
		uint64_t k = key_at(src + i * size, off) - lo;

		for (int p = 0; p < passes; p++)
			count[p][(k >> (p * RADIX_BITS)) & (RADIX - 1)]++;
	}
	dst = tmp;
	for (int p = 0; p < passes; p++) {
		unsigned shift = (unsigned)p * RADIX_BITS;
		size_t pos[RADIX], sum = 0;

		if (count[p][0] == n)
			continue;		/* one digit for all: no move */
		for (size_t d = 0; d < RADIX; d++) {
			pos[d] = sum;
			sum += count[p][d];
		}
		switch (size) {
		case 8: RADIX_PASS(8) break;
		case 16: RADIX_PASS(16) break;
		case 24: RADIX_PASS(24) break;
		default: RADIX_PASS(size) break;
		}
		unsigned char *t = src;

		src = dst;
		dst = t;
	}
	if (src != base)
		memcpy(base, src, n * size);
	free(tmp);
	free(count);
	return 0;
}

int sort_u64(uint64_t *v, size_t n)
{
	return sort_by_u64(v, n, sizeof(*v), 0);
}

static void swap_u64(uint64_t *a, uint64_t *b)
{
	uint64_t t = *a;

	*a = *b;
	*b = t;
}

uint64_t select_u64(uint64_t *v, size_t n, size_t k)
{
	size_t l = 0, r = n - 1;

	while (r > l) {
		size_t m = l + (r - l) / 2, i = l, j = r;

		/* median of three as the pivot */
		if (v[m] < v[l])
			swap_u64(&v[m], &v[l]);
		if (v[r] < v[l])
			swap_u64(&v[r], &v[l]);
		if (v[r] < v[m])
			swap_u64(&v[r], &v[m]);
		uint64_t pivot = v[m];

		while (i <= j) {
			while (v[i] < pivot)
				i++;
			while (v[j] > pivot)
				j--;
			if (i <= j) {
				swap_u64(&v[i], &v[j]);
				i++;
				if (j == 0)
					break;
				j--;
			}
		}
		/* [l, j] <= pivot <= [i, r] */
		if (k <= j && j != (size_t)-1)
			r = j;
		else if (k >= i)
			l = i;
		else
			return v[k];
	}
	return v[k];
}
