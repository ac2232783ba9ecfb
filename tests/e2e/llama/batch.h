/*
 * batch.h - struct llama_batch as llama.cpp's llama.h declares it (passed
 * by value to llama_decode), for the stand-ins and the truth library.
 */
#ifndef TT_TEST_LLAMA_BATCH_H
#define TT_TEST_LLAMA_BATCH_H

#include <stdint.h>

struct llama_batch {
	int32_t n_tokens;
	int32_t *token;
	float *embd;
	int32_t *pos;
	int32_t *n_seq_id;
	int32_t **seq_id;
	int8_t *logits;
};

/*
 * The batch the stand-in engine passes in call i (0-based): sequence
 * i % 3 prefills STANDIN_CHUNK(i) tokens from position 100 * i, the last
 * with an output; then sequence 7 decodes one token at position i.
 */
#define STANDIN_SEQ(i)		((i) % 3)
#define STANDIN_CHUNK(i)	((i) % 5 + 1)
#define STANDIN_DECODE_SEQ	7

#endif
