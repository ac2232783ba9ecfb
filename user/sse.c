/*
 * sse.c - incremental Server-Sent Events parsing (the WHATWG event-stream
 * rules that inference servers use).
 *
 * In:  decoded response body pieces with their times.
 * Out: one callback per event: its data lines joined by '\n', and the time
 *      of the piece whose bytes completed it (the blank line).
 *
 * Lines end in LF, CRLF or CR, and a CRLF split across two pieces counts
 * once. `data:` takes its value with or without one leading space; several
 * data lines join with '\n'; lines starting with ':' are comments; other
 * fields (event, id, retry) are read and dropped. An event without data is
 * not dispatched. An event still open when the stream ends is dropped, as
 * the standard says.
 *
 * Memory: one line buffer and one data buffer per stream, each at most
 * SSE_EVENT_MAX; a longer event is dropped and counted in `oversized`.
 * After a hole the parser cannot know where it is, so it drops everything
 * up to the next blank line (counted in `skipped`), unless the first bytes
 * after the hole begin a data line: servers write whole events per write
 * call, so that is where an event starts.
 */
#include <stdlib.h>
#include <string.h>

#include "sse.h"

void sse_init(struct sse_parser *s, sse_event_cb cb, void *ctx)
{
	memset(s, 0, sizeof(*s));
	s->on_event = cb;
	s->ctx = ctx;
}

void sse_free(struct sse_parser *s)
{
	free(s->line);
	free(s->data);
	s->line = s->data = NULL;
	s->llen = s->lcap = s->dlen = s->dcap = 0;
}

/* Append; -1 if it would pass SSE_EVENT_MAX or memory ran out. */
static int buf_add(char **b, size_t *len, size_t *cap, const char *p,
		   size_t n)
{
	if (!n)
		return 0;
	if (*len + n > SSE_EVENT_MAX)
		return -1;
	if (*len + n > *cap) {
		size_t c = *cap ? *cap : 256;
		char *nb;

		while (c < *len + n)
			c *= 2;
		nb = realloc(*b, c);
		if (!nb)
			return -1;
		*b = nb;
		*cap = c;
	}
	memcpy(*b + *len, p, n);
	*len += n;
	return 0;
}

static void reset_event(struct sse_parser *s)
{
	s->dlen = 0;
	s->has_data = false;
}

static void dispatch(struct sse_parser *s, uint64_t ts)
{
	if (s->has_data) {
		s->events++;
		if (s->on_event)
			s->on_event(s->ctx, s->data ? s->data : "", s->dlen,
				    ts);
	}
	reset_event(s);
}

static void data_line(struct sse_parser *s, const char *v, size_t n)
{
	int err = 0;

	if (s->has_data)
		err = buf_add(&s->data, &s->dlen, &s->dcap, "\n", 1);
	if (!err)
		err = buf_add(&s->data, &s->dlen, &s->dcap, v, n);
	s->has_data = true;
	if (err) {		/* too big: drop this event */
		s->oversized++;
		s->skipping = true;
		reset_event(s);
	}
}

static void end_line(struct sse_parser *s, uint64_t ts)
{
	const char *l = s->line, *colon;
	size_t n = s->llen;

	s->llen = 0;
	if (s->skipping) {
		if (n == 0 && !s->line_cut)
			s->skipping = false;
		s->line_cut = false;
		reset_event(s);
		return;
	}
	if (s->line_cut) {
		s->line_cut = false;
		s->oversized++;
		reset_event(s);
		s->skipping = n != 0;
		return;
	}
	if (n == 0) {
		dispatch(s, ts);
		return;
	}
	if (l[0] == ':')
		return;
	if (n == 4 && !memcmp(l, "data", 4)) {	/* a field with no value */
		data_line(s, "", 0);
		return;
	}
	colon = memchr(l, ':', n);
	if (!colon || colon - l != 4 || memcmp(l, "data", 4))
		return;
	colon++;
	if (colon < l + n && *colon == ' ')
		colon++;
	data_line(s, colon, n - (colon - l));
}

static void line_add(struct sse_parser *s, const char *p, size_t n)
{
	if (!n || s->line_cut)
		return;
	if (buf_add(&s->line, &s->llen, &s->lcap, p, n) < 0)
		s->line_cut = true;
}

void sse_feed(struct sse_parser *s, const char *p, size_t n, uint64_t ts)
{
	size_t i = 0;

	if (s->resume_check && n) {
		/* after a hole, a piece that starts a data line starts an
		 * event: servers write whole events per write */
		s->resume_check = false;
		if (n >= 5 && !memcmp(p, "data:", 5))
			s->skipping = false;
	}

	while (i < n) {
		size_t j = i;

		if (s->last_cr) {
			s->last_cr = false;
			if (p[i] == '\n') {
				i++;
				continue;
			}
		}
		while (j < n && p[j] != '\n' && p[j] != '\r')
			j++;
		line_add(s, p + i, j - i);
		if (j == n)
			break;
		s->last_cr = p[j] == '\r';
		end_line(s, ts);
		i = j + 1;
	}
}

void sse_hole(struct sse_parser *s)
{
	s->llen = 0;
	s->line_cut = false;
	s->last_cr = false;
	s->skipping = true;
	s->resume_check = true;
	s->skipped++;
	reset_event(s);
}
