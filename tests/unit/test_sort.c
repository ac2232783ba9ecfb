/*
 * sort.c against qsort: the same order on random keys of every width
 * (narrow spans, full 64-bit ones, many ties), stability on records, and
 * selection equal to the sorted array's element.
 */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/sort.h"

static uint64_t rng = 88172645463325252ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct rec {
	uint64_t pad;
	uint64_t key;
	uint32_t seq, more;
};

static int cmp_rec(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* keys of `bits` bits (0: full width) above a base */
static uint64_t key(int bits)
{
	uint64_t base = 1000000000000ull;

	return bits ? base + (next() & ((1ull << bits) - 1)) : next();
}

Test(sort, u64_matches_qsort_at_every_width)
{
	static const int widths[] = { 1, 4, 11, 12, 22, 33, 41, 55, 63, 0 };
	size_t n = 100003;
	uint64_t *a = malloc(n * sizeof(*a)), *b = malloc(n * sizeof(*b));

	for (size_t w = 0; w < sizeof(widths) / sizeof(*widths); w++) {
		for (size_t i = 0; i < n; i++)
			a[i] = b[i] = key(widths[w]);
		cr_assert_eq(sort_u64(a, n), 0);
		qsort(b, n, sizeof(*b), cmp_u64);
		cr_assert_eq(memcmp(a, b, n * sizeof(*a)), 0, "%d bits",
			     widths[w]);
	}
	/* edge sizes */
	cr_assert_eq(sort_u64(a, 0), 0);
	a[0] = 5;
	cr_assert_eq(sort_u64(a, 1), 0);
	cr_expect_eq(a[0], 5);
	free(a);
	free(b);
}

Test(sort, records_are_sorted_stably)
{
	size_t n = 50000;
	struct rec *a = malloc(n * sizeof(*a)), *b = malloc(n * sizeof(*b));

	for (size_t i = 0; i < n; i++)
		a[i] = b[i] = (struct rec){ .key = key(6), .seq = (uint32_t)i,
					    .more = (uint32_t)next() };
	cr_assert_eq(sort_by_u64(a, n, sizeof(*a), offsetof(struct rec, key)),
		     0);
	qsort(b, n, sizeof(*b), cmp_rec);
	cr_assert_eq(memcmp(a, b, n * sizeof(*a)), 0,
		     "ties out of their first order");
	free(a);
	free(b);
}

Test(sort, select_is_the_sorted_element)
{
	size_t n = 20011;
	uint64_t *a = malloc(n * sizeof(*a)), *b = malloc(n * sizeof(*b));

	for (int round = 0; round < 6; round++) {
		size_t k = round == 0 ? 0 : round == 1 ? n - 1 :
			   next() % n;

		for (size_t i = 0; i < n; i++)
			a[i] = b[i] = round == 2 ? 7 : key(round * 5);
		qsort(b, n, sizeof(*b), cmp_u64);
		cr_expect_eq(select_u64(a, n, k), b[k], "k %zu", k);
	}
	a[0] = 3;
	cr_expect_eq(select_u64(a, 1, 0), 3);
	free(a);
	free(b);
}
