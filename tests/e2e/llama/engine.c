/*
 * engine.c - a program shaped like llama-server for the step probe: it
 * links libllama.so, which the dynamic loader maps after the exec; or,
 * with --dlopen, it loads the library itself half a second later, so
 * that tokentrace finds its llama_decode only by looking at the
 * process's mappings again. It waits until a uprobe is on llama_decode
 * (the function's first instruction changes: a breakpoint is written
 * there), lets the second probe (on its return) follow, calls
 * llama_decode N times with the batches of batch.h, and exits.
 *
 * Usage: llama-engine N [--dlopen] (built with ENGINE_LINKED it links
 * libllama.so; without, only --dlopen has one)
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"

typedef int decode_fn(void *ctx, struct llama_batch batch);

#ifdef ENGINE_LINKED
int llama_decode(void *ctx, struct llama_batch batch);	/* in libllama.so */
#endif

/* Call i's batch (batch.h's STANDIN_*), in the arrays given. */
static struct llama_batch batch_of(int i, int32_t *tok, int32_t *pos,
				   int32_t *nseq, int32_t *seq, int32_t **seqp,
				   int8_t *out)
{
	int c = STANDIN_CHUNK(i), n = c + 1;

	for (int k = 0; k < n; k++) {
		tok[k] = 5 + k;
		pos[k] = k < c ? 100 * i + k : i;
		seq[k] = k < c ? STANDIN_SEQ(i) : STANDIN_DECODE_SEQ;
		nseq[k] = 1;
		seqp[k] = &seq[k];
		out[k] = k == c - 1 || k == c;
	}
	return (struct llama_batch){ .n_tokens = n, .token = tok, .pos = pos,
				     .n_seq_id = nseq, .seq_id = seqp,
				     .logits = out };
}

/* libllama.so from the folder of this program, opened late. */
static decode_fn *open_late(const char *self)
{
	char path[4096];
	const char *slash = strrchr(self, '/');
	void *h;

	usleep(500000);
	snprintf(path, sizeof(path), "%.*s/libllama.so",
		 slash ? (int)(slash - self) : 1, slash ? self : ".");
	h = dlopen(path, RTLD_NOW);
	return h ? (decode_fn *)dlsym(h, "llama_decode") : NULL;
}

int main(int argc, char **argv)
{
	unsigned char was[4];
	const unsigned char *f;
	decode_fn *decode;
	int n, waited = 0;

	if (argc < 2 || argc > 3 || (n = atoi(argv[1])) <= 0 ||
	    (argc == 3 && strcmp(argv[2], "--dlopen"))) {
		fprintf(stderr, "usage: llama-engine N [--dlopen]\n");
		return 2;
	}
#ifdef ENGINE_LINKED
	decode = argc == 3 ? open_late(argv[0]) : llama_decode;
	/* the function's own code (the address taken above may be a stub) */
	f = argc == 3 ? (const unsigned char *)decode :
			dlsym(RTLD_DEFAULT, "llama_decode");
#else
	decode = argc == 3 ? open_late(argv[0]) : NULL;
	f = (const unsigned char *)decode;
#endif
	if (!f) {
		fprintf(stderr, "llama-engine: no llama_decode\n");
		return 1;
	}
	memcpy(was, f, sizeof(was));
	while (!memcmp(was, f, sizeof(was))) {
		if (++waited > 3000) {
			fprintf(stderr, "llama-engine: no probe on llama_decode "
				"after 30 s\n");
			return 1;
		}
		usleep(10000);
	}
	usleep(300000);
	for (int i = 0; i < n; i++) {
		int32_t tok[8], pos[8], nseq[8], seq[8], *seqp[8];
		int8_t out[8];

		if (decode(NULL, batch_of(i, tok, pos, nseq, seq, seqp, out)))
			return 1;
	}
	printf("llama-engine: %d calls\n", n);
	return 0;
}
