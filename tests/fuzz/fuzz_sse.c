/*
 * fuzz_sse.c - libFuzzer target for user/sse.c, the Server-Sent Events
 * parser that reads streamed responses.
 *
 * In:  byte 0: count of piece descriptors (mod 32), then 2 bytes each:
 *      piece length, op (bit 0: a hole after the piece, sse_hole, that
 *      skips op >> 1 stream bytes); the rest is the body. What the
 *      descriptors leave is one last piece.
 * Out: a crash on a memory error, an event over SSE_EVENT_MAX, or (when no
 *      descriptor has a hole) any difference between the events of the
 *      body fed whole and fed in pieces.
 * Assumes: nothing; every piece is an exact-size heap copy.
 */
#include <stdbool.h>
#include <stdint.h>

#include "../../user/sse.h"
#include "fuzz.h"

struct fuzz_ctx {
	struct fuzz_log log;
	uint64_t sum;
};

static void fuzz_on_event(void *ctx, const char *data, size_t len,
			  uint64_t ts)
{
	struct fuzz_ctx *c = ctx;

	(void)ts;
	fuzz_check(len <= SSE_EVENT_MAX, "event of %zu bytes", len);
	for (size_t i = 0; i < len; i++)
		c->sum += (unsigned char)data[i];
	fuzz_log_put(&c->log, 'V', 0, data, len);
}

struct fuzz_piece {
	uint8_t len, op;
};

static void fuzz_run(const struct fuzz_piece *pc, int npc, struct fuzz_in in,
		     struct fuzz_ctx *c)
{
	struct sse_parser s;
	uint64_t ts = 1000;
	char *b;

	sse_init(&s, fuzz_on_event, c);
	for (int i = 0; i < npc; i++) {
		size_t got, skipped;
		const uint8_t *d = fuzz_take(&in, pc[i].len, &got);

		b = fuzz_dup(d, got);
		sse_feed(&s, b, got, ts++);
		free(b);
		if (pc[i].op & 1) {
			fuzz_take(&in, pc[i].op >> 1, &skipped);
			sse_hole(&s);
		}
	}
	b = fuzz_dup(in.p, in.n);
	sse_feed(&s, b, in.n, ts);
	free(b);
	fuzz_check(s.events <= s.events + s.oversized, "counters wrapped");
	sse_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct fuzz_piece pc[32];
	struct fuzz_ctx whole = { 0 }, split = { 0 };
	int npc = fuzz_u8(&in) % 32;
	bool plain = true;

	for (int i = 0; i < npc; i++) {
		pc[i].len = fuzz_u8(&in);
		pc[i].op = fuzz_u8(&in);
		if (pc[i].op & 1)
			plain = false;
	}
	fuzz_run(pc, npc, in, &split);
	if (plain) {
		fuzz_run(NULL, 0, in, &whole);
		fuzz_log_same(&whole.log, &split.log, "sse");
	}
	fuzz_log_free(&whole.log);
	fuzz_log_free(&split.log);
	return 0;
}
