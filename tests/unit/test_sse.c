/*
 * The incremental SSE parser: splits at every byte, separators, fields,
 * comments, event times, holes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../../user/sse.h"

struct evlog {
	char text[4096];
	size_t len;
	int n;
	uint64_t ts[16];
};

static void on_ev(void *ctx, const char *d, size_t n, uint64_t ts)
{
	struct evlog *l = ctx;

	l->len += snprintf(l->text + l->len, sizeof(l->text) - l->len,
			   "<%.*s>", (int)n, d);
	if (l->n < 16)
		l->ts[l->n] = ts;
	l->n++;
}

/* Feed s cut at `at` (0: whole); the piece after the cut has time 2. */
static void run(struct evlog *l, const char *s, size_t at, size_t step)
{
	struct sse_parser p;
	size_t len = strlen(s), off = 0;

	memset(l, 0, sizeof(*l));
	sse_init(&p, on_ev, l);
	if (at) {
		sse_feed(&p, s, at, 1);
		off = at;
	}
	while (step && off < len) {
		size_t n = len - off < step ? len - off : step;

		sse_feed(&p, s + off, n, 2);
		off += n;
	}
	sse_feed(&p, s + off, len - off, 2);
	sse_free(&p);
}

static const char *stream =
	": ping comment\n"
	"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
	"data:{\"no\":\"space\"}\r\n\r\n"
	"event: message\nid: 7\nretry: 100\ndata: line1\ndata:  line2\n\n"
	"data\n\n"			/* a data field with no value */
	"id: only\n\n"			/* no data: not dispatched */
	"data: cr only\r\r"
	"data: [DONE]\n\n"
	"data: unfinished";		/* dropped: no blank line */

Test(sse, same_events_split_at_every_byte_and_byte_by_byte)
{
	struct evlog whole, part;
	const char *want = "<{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}>"
			   "<{\"no\":\"space\"}><line1\n line2><><cr only><[DONE]>";

	run(&whole, stream, 0, 0);
	cr_assert_str_eq(whole.text, want);
	cr_assert_eq(whole.n, 6);
	for (size_t at = 1; at < strlen(stream); at++) {
		run(&part, stream, at, 0);
		cr_assert_str_eq(part.text, want, "cut at %zu", at);
	}
	run(&part, stream, 0, 1);
	cr_assert_str_eq(part.text, want);
}

Test(sse, event_split_across_two_reads_gets_the_time_of_the_second)
{
	struct evlog l;
	const char *s = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n";

	run(&l, s, 20, 0);	/* cut inside the second event */
	cr_assert_eq(l.n, 2);
	cr_assert_eq(l.ts[0], 1);
	cr_assert_eq(l.ts[1], 2);
	run(&l, s, strlen("data: {\"a\":1}\n"), 0);	/* cut between LFs */
	cr_assert_eq(l.ts[0], 2);
}

Test(sse, crlf_split_across_reads_counts_once)
{
	struct evlog l;
	const char *s = "data: x\r\n\r\ndata: y\r\n\r\n";

	for (size_t at = 1; at < strlen(s); at++) {
		run(&l, s, at, 0);
		cr_assert_str_eq(l.text, "<x><y>", "cut at %zu", at);
	}
}

Test(sse, hole_drops_the_cut_event_and_resumes)
{
	struct evlog l = { 0 };
	struct sse_parser p;
	const char *a = "data: {\"a\":1}\n\ndata: {\"b\"";
	const char *mid = ":2}\n\ndata: {\"c\":3}\n\n";
	const char *next = "data: {\"d\":4}\n\n";

	sse_init(&p, on_ev, &l);
	sse_feed(&p, a, strlen(a), 1);
	sse_hole(&p);
	sse_feed(&p, mid, strlen(mid), 2);	/* rest of b: skipped */
	sse_feed(&p, next, strlen(next), 3);
	cr_assert_str_eq(l.text, "<{\"a\":1}><{\"c\":3}><{\"d\":4}>");
	cr_assert_eq(l.ts[1], 2);
	sse_hole(&p);
	sse_feed(&p, next, strlen(next), 4);	/* a whole event after a hole */
	cr_assert_eq(l.n, 4);
	cr_assert_eq(l.ts[3], 4);
	cr_assert_eq(p.skipped, 2);
	sse_free(&p);
}

Test(sse, oversized_event_is_dropped_and_counted)
{
	struct evlog l = { 0 };
	struct sse_parser p;
	static char big[SSE_EVENT_MAX + 100];

	memset(big, 'x', sizeof(big));
	memcpy(big, "data: ", 6);
	sse_init(&p, on_ev, &l);
	sse_feed(&p, big, sizeof(big), 1);
	sse_feed(&p, "\n\ndata: ok\n\n", 12, 2);
	cr_assert_str_eq(l.text, "<ok>");
	cr_assert_eq(p.oversized, 1);
	cr_assert_leq(p.lcap, SSE_EVENT_MAX);
	sse_free(&p);
}
