/*
 * tinygguf.c - writes a tiny llama-architecture model in GGUF (version 3)
 * with seeded random weights, for running llama.cpp's llama-server under
 * tokentrace with no model download.
 *
 * In:  argv[1]: the output path; argv[2] (optional): layers (default 4);
 *      argv[3] (optional): embedding width (default 128).
 * Out: the file: general.*, llama.* and tokenizer.ggml.* keys, F32
 *      tensors. The vocabulary is <unk>, <s>, </s>, the newline byte, the
 *      SentencePiece space and the printable ASCII characters, one token
 *      each: a prompt of ASCII text is one token a character, and any
 *      generated text is ASCII (with <unk> and <s> kept out by
 *      llama-server's --logit-bias and </s> by --ignore-eos).
 * Assumes: a little-endian host (GGUF's byte order).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { G_U32 = 4, G_I32 = 5, G_F32 = 6, G_STR = 8, G_ARR = 9 };
#define ALIGN 32u

static FILE *out;
static uint64_t rng = 0x2545f4914f6cdd1dull;

static void put(const void *p, size_t n)
{
	if (fwrite(p, 1, n, out) != n) {
		perror("tinygguf: write");
		exit(1);
	}
}

static void u32(uint32_t v) { put(&v, 4); }
static void u64(uint64_t v) { put(&v, 8); }

static void str(const char *s)
{
	u64(strlen(s));
	put(s, strlen(s));
}

static void kv_u32(const char *k, uint32_t v) { str(k); u32(G_U32); u32(v); }
static void kv_f32(const char *k, float v) { str(k); u32(G_F32); put(&v, 4); }
static void kv_str(const char *k, const char *v) { str(k); u32(G_STR); str(v); }

static float uniform(float scale)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return scale * (2.0f * (float)(rng >> 40) / (float)(1u << 24) - 1.0f);
}

struct tensor {
	char name[64];
	uint64_t ne[2];
	uint32_t nd;
	float scale;		/* 0: all ones (a norm's weight) */
};

int main(int argc, char **argv)
{
	uint32_t layers = argc > 2 ? (uint32_t)atoi(argv[2]) : 4;
	uint32_t embd = argc > 3 ? (uint32_t)atoi(argv[3]) : 128;
	uint32_t ff = 2 * embd, heads = 4;
	char tok[128][8];
	uint32_t nvocab = 0;
	struct tensor t[4 + 9 * 64];
	uint32_t nt = 0;

	if (argc < 2 || layers < 1 || layers > 64 || embd < 16 || embd % heads) {
		fprintf(stderr, "usage: tinygguf OUT.gguf [LAYERS [WIDTH]]\n");
		return 2;
	}
	strcpy(tok[nvocab++], "<unk>");
	strcpy(tok[nvocab++], "<s>");
	strcpy(tok[nvocab++], "</s>");
	strcpy(tok[nvocab++], "<0x0A>");
	strcpy(tok[nvocab++], "\xe2\x96\x81");	/* U+2581, SentencePiece's space */
	for (int c = 0x21; c < 0x7f; c++) {
		tok[nvocab][0] = (char)c;
		tok[nvocab++][1] = 0;
	}

#define T2(nm, a, b, s) do { snprintf(t[nt].name, 64, "%s", nm);	\
		t[nt].ne[0] = a; t[nt].ne[1] = b; t[nt].nd = 2;	\
		t[nt++].scale = s; } while (0)
#define T1(nm, a) do { snprintf(t[nt].name, 64, "%s", nm);		\
		t[nt].ne[0] = a; t[nt].ne[1] = 1; t[nt].nd = 1;		\
		t[nt++].scale = 0; } while (0)
	T2("token_embd.weight", embd, nvocab, 1.0f);
	T1("output_norm.weight", embd);
	T2("output.weight", embd, nvocab, 0.5f);
	for (uint32_t l = 0; l < layers; l++) {
		char n[64];
		float s = 1.0f / (float)embd;

#define BLK(x) (snprintf(n, sizeof(n), "blk.%u." x, l), n)
		T1(BLK("attn_norm.weight"), embd);
		T2(BLK("attn_q.weight"), embd, embd, 4 * s);
		T2(BLK("attn_k.weight"), embd, embd, 4 * s);
		T2(BLK("attn_v.weight"), embd, embd, 4 * s);
		T2(BLK("attn_output.weight"), embd, embd, 4 * s);
		T1(BLK("ffn_norm.weight"), embd);
		T2(BLK("ffn_gate.weight"), embd, ff, 4 * s);
		T2(BLK("ffn_up.weight"), embd, ff, 4 * s);
		T2(BLK("ffn_down.weight"), ff, embd, 4 * s);
	}

	out = fopen(argv[1], "wb");
	if (!out) {
		perror(argv[1]);
		return 1;
	}
	u32(0x46554747);		/* "GGUF" */
	u32(3);
	u64(nt);
	u64(18);			/* the keys below */
	kv_str("general.architecture", "llama");
	kv_str("general.name", "tokentrace-tiny");
	kv_u32("general.alignment", ALIGN);
	kv_u32("llama.context_length", 8192);
	kv_u32("llama.embedding_length", embd);
	kv_u32("llama.block_count", layers);
	kv_u32("llama.feed_forward_length", ff);
	kv_u32("llama.attention.head_count", heads);
	kv_u32("llama.attention.head_count_kv", heads);
	kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
	kv_u32("llama.rope.dimension_count", embd / heads);
	kv_str("tokenizer.ggml.model", "llama");
	str("tokenizer.ggml.tokens");
	u32(G_ARR); u32(G_STR); u64(nvocab);
	for (uint32_t i = 0; i < nvocab; i++)
		str(tok[i]);
	str("tokenizer.ggml.scores");
	u32(G_ARR); u32(G_F32); u64(nvocab);
	for (uint32_t i = 0; i < nvocab; i++) {
		float v = -(float)i;

		put(&v, 4);
	}
	str("tokenizer.ggml.token_type");
	u32(G_ARR); u32(G_I32); u64(nvocab);
	for (uint32_t i = 0; i < nvocab; i++)	/* unknown, control, byte, normal */
		u32(i == 0 ? 2 : i < 3 ? 3 : i == 3 ? 6 : 1);
	kv_u32("tokenizer.ggml.bos_token_id", 1);
	kv_u32("tokenizer.ggml.eos_token_id", 2);
	kv_u32("tokenizer.ggml.unknown_token_id", 0);

	uint64_t off = 0;

	for (uint32_t i = 0; i < nt; i++) {
		str(t[i].name);
		u32(t[i].nd);
		for (uint32_t d = 0; d < t[i].nd; d++)
			u64(t[i].ne[d]);
		u32(0);			/* GGML_TYPE_F32 */
		u64(off);
		off += (t[i].ne[0] * t[i].ne[1] * 4 + ALIGN - 1) / ALIGN * ALIGN;
	}
	static const char zero[ALIGN];
	long pos = ftell(out);

	put(zero, (ALIGN - (uint64_t)pos % ALIGN) % ALIGN);
	for (uint32_t i = 0; i < nt; i++) {
		uint64_t n = t[i].ne[0] * t[i].ne[1];

		for (uint64_t k = 0; k < n; k++) {
			float v = t[i].scale ? uniform(t[i].scale) : 1.0f;

			put(&v, 4);
		}
		put(zero, (ALIGN - n * 4 % ALIGN) % ALIGN);
	}
	if (fclose(out)) {
		perror(argv[1]);
		return 1;
	}
	return 0;
}
