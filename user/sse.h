/*
 * sse.h - an incremental Server-Sent Events parser.
 *
 * In:  a response body after transfer decoding, in pieces split anywhere,
 *      each with its time.
 * Out: one callback per event with the event's data (data lines joined by
 *      '\n') and the time of the piece that completed the event.
 *
 * Assumes: UTF-8 text/event-stream. Events bigger than SSE_EVENT_MAX are
 * cut to that size and counted in `oversized`.
 */
#ifndef TT_SSE_H
#define TT_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SSE_EVENT_MAX	(256 * 1024)

typedef void (*sse_event_cb)(void *ctx, const char *data, size_t len,
			     uint64_t ts);

struct sse_parser {
	sse_event_cb on_event;
	void *ctx;
	char *line;		/* the line being read */
	size_t llen, lcap;
	bool line_cut;		/* the line went past SSE_EVENT_MAX */
	char *data;		/* data of the event being read */
	size_t dlen, dcap;
	bool has_data;
	bool last_cr;		/* the previous byte ended a line with CR */
	bool skipping;		/* after a hole: drop up to the next blank line */
	bool resume_check;	/* next bytes are the first after a hole */
	uint64_t events, oversized, skipped;
};

void sse_init(struct sse_parser *s, sse_event_cb cb, void *ctx);
void sse_free(struct sse_parser *s);
void sse_feed(struct sse_parser *s, const char *p, size_t n, uint64_t ts);

/* Bytes of the body were not captured: drop the event they cut. */
void sse_hole(struct sse_parser *s);

#endif
