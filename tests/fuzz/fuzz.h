/*
 * fuzz.h - small helpers shared by the libFuzzer targets in tests/fuzz.
 *
 * In:  the fuzzer's input bytes.
 * Out: bytes and numbers read off the front of the input (zero once it is
 *      used up), exact-size heap copies of pieces (so that AddressSanitizer
 *      sees a read one byte past a piece), and an event log that two runs
 *      of a parser can be compared by.
 * Assumes: each target is its own binary, so everything here is static.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t lo = fuzz_u8(in);

	return lo | (uint16_t)fuzz_u8(in) << 8;
}

/* Up to n bytes off the front; *got says how many. */
static inline const uint8_t *fuzz_take(struct fuzz_in *in, size_t n,
				       size_t *got)
{
	const uint8_t *p = in->p;

	if (n > in->n)
		n = in->n;
	in->p += n;
	in->n -= n;
	*got = n;
	return p;
}

/* An exact-size heap copy: a read past its end is caught. */
static inline char *fuzz_dup(const void *p, size_t n)
{
	char *b = malloc(n ? n : 1);

	if (!b)
		abort();
	if (n)
		memcpy(b, p, n);
	return b;
}

/* Stop with a message: libFuzzer saves the input as a crash. */
#define fuzz_check(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "fuzz check failed: %s: ", #cond); \
			fprintf(stderr, __VA_ARGS__);			\
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

/* A NUL must lie inside a fixed-size string field. */
#define fuzz_check_str(field) \
	fuzz_check(memchr((field), '\0', sizeof(field)) != NULL, \
		   "string field %s not terminated", #field)

/*
 * An event log: records of one type byte and bytes; consecutive records of
 * a mergeable type (body bytes, however split) are joined into one.
 */
struct fuzz_log {
	char *p;
	size_t len, cap;
	char last;
	int frozen;	/* set: nothing more is logged */
};

static inline void fuzz_log_put(struct fuzz_log *l, char type, int merge,
				const void *d, size_t n)
{
	size_t need;

	if (l->frozen)
		return;
	need = l->len + n + 1 + sizeof(size_t);
	if (need > l->cap) {
		size_t cap = l->cap ? l->cap : 256;

		while (cap < need)
			cap *= 2;
		l->p = realloc(l->p, cap);
		if (!l->p)
			abort();
		l->cap = cap;
	}
	if (!(merge && l->last == type)) {
		l->p[l->len++] = type;
		/* a separator so that "AB"+"C" differs from "A"+"BC" */
		memcpy(l->p + l->len, &n, sizeof(n));
		l->len += sizeof(n);
		if (merge)	/* length unknown until the run ends */
			memset(l->p + l->len - sizeof(n), 0, sizeof(n));
	}
	if (n)
		memcpy(l->p + l->len, d, n);
	l->len += n;
	l->last = type;
}

static inline void fuzz_log_free(struct fuzz_log *l)
{
	free(l->p);
	memset(l, 0, sizeof(*l));
}

/* Both logs equal, or abort with where they first differ. */
static inline void fuzz_log_same(const struct fuzz_log *a,
				 const struct fuzz_log *b, const char *what)
{
	size_t i = 0;

	while (i < a->len && i < b->len && a->p[i] == b->p[i])
		i++;
	fuzz_check(a->len == b->len && i == a->len,
		   "%s: whole input and split input differ at log byte %zu "
		   "(lengths %zu, %zu)", what, i, a->len, b->len);
}

#endif
