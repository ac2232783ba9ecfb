/*
 * truth.c - formatting and writing ground-truth lines.
 *
 * In:  struct rs_truth_step / rs_truth_request, process times.
 * Out: JSON lines ending in '\n' (see truth.h); fwrite + fflush per call.
 * Assumes: the caller serialises writes (the engine thread writes them).
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "truth.h"

static int put_str(struct rs_buf *b, const char *key, const char *v)
{
	int rc = rs_buf_printf(b, ",\"%s\":", key);

	return rc ? rc : rs_buf_json_str(b, v, strlen(v));
}

static int fmt_entry(struct rs_buf *b, const struct rs_truth_entry *e)
{
	int rc = rs_buf_puts(b, "{\"id\":");

	if (!rc)
		rc = rs_buf_json_str(b, e->id, strlen(e->id));
	if (!rc)
		rc = rs_buf_printf(b, ",\"phase\":\"%s\",\"tokens\":%d,"
				   "\"context\":%d,", e->phase == RS_PHASE_PREFILL
				   ? "prefill" : "decode", e->tokens,
				   e->context);
	if (!rc && e->phase == RS_PHASE_PREFILL)
		rc = rs_buf_printf(b, "\"cached\":%d,", e->cached);
	if (!rc)
		rc = rs_buf_printf(b, "\"ns\":%" PRIu64 "}", e->ns);
	return rc;
}

int rs_truth_fmt_step(struct rs_buf *b, const struct rs_truth_step *s)
{
	int rc = rs_buf_printf(b, "{\"type\":\"step\",\"step\":%" PRIu64
			       ",\"start_ns\":%" PRIu64 ",\"end_ns\":%" PRIu64
			       ",\"cpu_ns\":%" PRIu64 ",\"gpu_ns\":%" PRIu64
			       ",\"entries\":[", s->step, s->start_ns,
			       s->end_ns, s->cpu_ns, s->gpu_ns);

	for (int i = 0; i < s->n && !rc; i++) {
		if (i)
			rc = rs_buf_puts(b, ",");
		if (!rc)
			rc = fmt_entry(b, &s->entry[i]);
	}
	if (!rc)
		rc = rs_buf_puts(b, "]");
	if (!rc && s->dev_busy_ns && s->ndev > 0)
		rc = rs_buf_puts(b, ",\"devices\":[");
	for (int d = 0; !rc && s->dev_busy_ns && d < s->ndev; d++)
		rc = rs_buf_printf(b, "%s{\"device\":%d,\"busy_ns\":%" PRIu64
				   ",\"comm_ns\":%" PRIu64 "}", d ? "," : "",
				   d, s->dev_busy_ns[d],
				   s->dev_comm_ns ? s->dev_comm_ns[d] : 0);
	if (!rc && s->dev_busy_ns && s->ndev > 0)
		rc = rs_buf_puts(b, "]");
	return rc ? rc : rs_buf_puts(b, "}\n");
}

int rs_truth_fmt_request(struct rs_buf *b, const struct rs_truth_request *r)
{
	int rc = rs_buf_puts(b, "{\"type\":\"request\"");

	if (!rc)
		rc = put_str(b, "id", r->id);
	if (!rc)
		rc = put_str(b, "tenant", r->tenant);
	if (!rc)
		rc = put_str(b, "model", r->model);
	if (!rc)
		rc = rs_buf_printf(b, ",\"arrival_ns\":%" PRIu64
				   ",\"first_token_ns\":%" PRIu64
				   ",\"end_ns\":%" PRIu64
				   ",\"prompt_tokens\":%d"
				   ",\"completion_tokens\":%d"
				   ",\"cached_tokens\":%d"
				   ",\"compute_ns\":%" PRIu64, r->arrival_ns,
				   r->first_token_ns, r->end_ns,
				   r->prompt_tokens, r->completion_tokens,
				   r->cached_tokens, r->compute_ns);
	if (!rc)
		rc = put_str(b, "status", r->status);
	return rc ? rc : rs_buf_puts(b, "}\n");
}

int rs_truth_fmt_process(struct rs_buf *b, int pid, uint64_t utime_ns,
			 uint64_t stime_ns)
{
	return rs_buf_printf(b, "{\"type\":\"process\",\"pid\":%d,"
			     "\"utime_ns\":%" PRIu64 ",\"stime_ns\":%" PRIu64
			     "}\n", pid, utime_ns, stime_ns);
}

int rs_truth_write(FILE *f, const struct rs_buf *b)
{
	if (!f || !b->len)
		return 0;
	if (fwrite(b->p, 1, b->len, f) != b->len || fflush(f))
		return -errno;
	return 0;
}
