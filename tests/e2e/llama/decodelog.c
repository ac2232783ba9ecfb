/*
 * decodelog.c - an LD_PRELOAD library that logs every llama_decode call
 * of llama.cpp: the truth the step probe is checked against.
 *
 * In:  TT_DECODE_LOG: the file to append to (unset: log nothing).
 * Out: one line per call, "START_NS END_NS N_TOKENS RET" on
 *      CLOCK_MONOTONIC (the clock tokentrace uses), written with one
 *      write(2) each, so that a server killed mid-run leaves whole lines.
 * Assumes: the llama_batch layout of llama.h (passed by value); the
 *      server calls llama_decode through libllama.so's dynamic symbol.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"


typedef int32_t (*decode_fn)(void *ctx, struct llama_batch batch);

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int32_t llama_decode(void *ctx, struct llama_batch batch)
{
	static decode_fn real;
	static int fd = -2;
	char line[96];
	uint64_t t0, t1;
	int32_t ret;
	int n;

	if (!real)
		real = (decode_fn)dlsym(RTLD_NEXT, "llama_decode");
	if (fd == -2) {
		const char *p = getenv("TT_DECODE_LOG");

		fd = p ? open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			      0600) : -1;
	}
	if (!real)
		abort();
	t0 = now_ns();
	ret = real(ctx, batch);
	t1 = now_ns();
	n = snprintf(line, sizeof(line), "%llu %llu %d %d\n",
		     (unsigned long long)t0, (unsigned long long)t1,
		     batch.n_tokens, ret);
	if (fd >= 0 && write(fd, line, (size_t)n) != n)
		fd = -1;
	return ret;
}
