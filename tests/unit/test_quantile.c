/*
 * Percentiles from a histogram (user/quantile.c): exact under 2048 ns and
 * where the values are all one, within 0.05% of keeping every value
 * otherwise, for the nearest rank that the in-memory report uses.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../user/quantile.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* nearest rank over the sorted values, as cmd_report.c's pct() */
static uint64_t exact(const uint64_t *v, size_t n, double p)
{
	size_t k = (size_t)ceil(p / 100.0 * (double)n);

	return v[k ? k - 1 : 0];
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

Test(quantile, no_values_give_minus_one)
{
	struct quantile q = { 0 };

	cr_expect_eq(quantile_pct(&q, 50), -1);
	quantile_free(&q);
}

Test(quantile, small_values_are_exact)
{
	static uint64_t v[1000];
	struct quantile q = { 0 };
	uint64_t s = 7;

	for (size_t i = 0; i < 1000; i++) {
		v[i] = rnd(&s) % 2048;
		cr_assert_eq(quantile_add(&q, v[i]), 0);
	}
	qsort(v, 1000, sizeof(v[0]), cmp_u64);
	for (double p = 1; p <= 100; p += 1)
		cr_expect_eq(quantile_pct(&q, p), (double)exact(v, 1000, p),
			     "p%g", p);
	quantile_free(&q);
}

Test(quantile, one_repeated_value_is_exact)
{
	struct quantile q = { 0 };

	for (int i = 0; i < 5000; i++)
		quantile_add(&q, 27777777);	/* a fixed 27.78 ms pacing */
	cr_expect_eq(quantile_pct(&q, 50), 27777777.0);
	cr_expect_eq(quantile_pct(&q, 99), 27777777.0);
	cr_expect_eq(quantile_pct(&q, 100), 27777777.0);
	quantile_free(&q);
}

Test(quantile, wide_values_are_within_five_hundredths_of_a_percent)
{
	size_t n = 200000;
	uint64_t *v = malloc(n * sizeof(*v)), s = 0x9e3779b97f4a7c15ull;
	struct quantile q = { 0 };
	double worst = 0;

	cr_assert(v);
	for (size_t i = 0; i < n; i++) {
		/* from microseconds to minutes, log-spread */
		int e = 11 + (int)(rnd(&s) % 26);

		v[i] = (1ull << e) + rnd(&s) % (1ull << e);
		cr_assert_eq(quantile_add(&q, v[i]), 0);
	}
	qsort(v, n, sizeof(v[0]), cmp_u64);
	for (double p = 0.5; p <= 100; p += 0.5) {
		double x = (double)exact(v, n, p), got = quantile_pct(&q, p);
		double err = fabs(got - x) / x;

		worst = err > worst ? err : worst;
		cr_expect_leq(err, 0.0005, "p%g: %.0f against %.0f", p, got,
			      x);
	}
	cr_expect_eq(q.n, n);
	cr_log_info("quantile: worst relative error %.2e", worst);
	quantile_free(&q);
	free(v);
}

Test(quantile, the_largest_values_have_a_bucket)
{
	struct quantile q = { 0 };

	cr_assert_eq(quantile_add(&q, UINT64_MAX), 0);
	cr_assert_eq(quantile_add(&q, 1ull << 63), 0);
	cr_expect_eq(quantile_pct(&q, 50), (double)(1ull << 63));
	cr_expect_eq(quantile_pct(&q, 100), (double)UINT64_MAX);
	quantile_free(&q);
}

/* Linear bins from the histogram: every value in the bin that keeping it
 * would give, for values clear of the bins' edges. */
Test(quantile, linear_bins_count_each_value_once_in_its_bin)
{
	struct quantile q = { 0 };
	double cnt[24], want[24] = { 0 }, total = 0;
	uint64_t s = 0x9e3779b97f4a7c15ull, hi = 48000000;

	for (int i = 0; i < 20000; i++) {
		uint64_t bin = rnd(&s) % 24, off = 1000000 + rnd(&s) % 1000000;

		cr_assert_eq(quantile_add(&q, bin * 2000000 + off), 0);
		want[bin]++;
	}
	cr_assert_eq(quantile_add(&q, hi), 0);	/* the largest: last bin */
	want[23]++;
	quantile_bins(&q, (double)hi, cnt, 24);
	for (int k = 0; k < 24; k++) {
		cr_expect_eq(cnt[k], want[k], "bin %d: %g, want %g", k, cnt[k],
			     want[k]);
		total += cnt[k];
	}
	cr_expect_eq(total, 20001);
	quantile_free(&q);
}
