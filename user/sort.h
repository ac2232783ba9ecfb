/*
 * sort.h - the sorts the report spends its time in, without comparison
 * callbacks: radix sorts by a 64-bit key and a selection of the k-th
 * smallest value.
 *
 * In:  arrays of uint64_t, or of records with a uint64_t key at an offset.
 * Out: the same arrays ordered. sort_by_u64 is stable: records of equal
 *      keys keep their order, so a sort by key of records already ordered
 *      by a second field is a sort by (key, that field).
 * Assumes: nothing about the values; the passes cover only the bits in
 *      which the keys differ (the span of one trace's times: 5-6 passes
 *      of 8 bits, against 20+ rounds of comparisons for a few million).
 */
#ifndef TT_SORT_H
#define TT_SORT_H

#include <stddef.h>
#include <stdint.h>

/* v[0..n) ascending. 0, or -ENOMEM (then v is left as it was, sorted by
 * qsort instead: the result is the same). */
int sort_u64(uint64_t *v, size_t n);

/* Records of size bytes, each with a uint64_t key at byte off, ascending
 * by key, stable. 0, or -ENOMEM (then sorted by a stable merge of the
 * same order). */
int sort_by_u64(void *base, size_t n, size_t size, size_t off);

/* The k-th smallest of v[0..n) (k < n), as v sorted would hold at k; v is
 * reordered. */
uint64_t select_u64(uint64_t *v, size_t n, size_t k);

#endif
