/*
 * libllama.c - a stand-in for llama.cpp's libllama.so, for the step
 * probe's end-to-end test: a shared library named like llama.cpp's that
 * exports llama_decode, which does one "step" of work (longer for more
 * tokens in its batch) and returns.
 */
#include <time.h>

#include "batch.h"

static double burn(long ns)
{
	struct timespec a, b;
	volatile double x = 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	do {
		for (int i = 0; i < 1000; i++)
			x += i * 0.5;
		clock_gettime(CLOCK_MONOTONIC, &b);
	} while ((b.tv_sec - a.tv_sec) * 1000000000L + b.tv_nsec - a.tv_nsec <
		 ns);
	return x;
}

__attribute__((visibility("default"), noinline))
int llama_decode(void *ctx, struct llama_batch batch)
{
	(void)ctx;
	burn(200000L + 1000L * batch.n_tokens);
	return 0;
}
