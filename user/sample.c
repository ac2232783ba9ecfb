/*
 * sample.c - a bounded, evenly spread sample of a long trace (see
 * sample.h).
 *
 * The file's head and tail (a few MB each, read as trace files of their
 * own: the header, then whatever blocks the bytes hold; a block cut by
 * the first byte is skipped as a damaged one would be) give the span.
 * Then only the bytes around each region are read: as the records come
 * in rough time order, the offset where a time begins is found by
 * bisection, probing the time of the blocks at an offset; each region's
 * bytes, padded by a probe's length and by slack for records written late
 * (a request is written when it ends), are read once with the head's, and
 * the records outside the regions are dropped as they come. Devices and
 * names come from the head and from those bytes. Damage inside the bytes
 * read is skipped without a word (the plan wants statistics, and a whole
 * read says what is wrong); a trace whose probes find no time order is
 * read whole, still keeping the regions only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sample.h"

#define SAMPLE_EDGE_BYTES	(1u << 20)	/* head and tail read */
#define SAMPLE_PROBE_BYTES	(64u << 10)	/* a probe of the time at an
						   offset (a block or a few);
						   the regions' padding */
#define SAMPLE_MAX_RANGES	(SAMPLE_MAX_WINDOWS + 1)

void sample_opts_default(struct sample_opts *o)
{
	o->all_below_ns = 240ull * 1000000000;
	o->windows = 8;
	o->window_ns = 10ull * 1000000000;
	o->lead_ns = 1000000000;
}

/* ---- the span ------------------------------------------------------------- */

struct span {
	uint64_t lo, hi;
	uint64_t longest;	/* request, from arrival to end */
};

static void span_at(struct span *s, uint64_t t)
{
	if (!t)
		return;
	if (t < s->lo)
		s->lo = t;
	if (t > s->hi)
		s->hi = t;
}

static void sp_request(void *ctx, const struct tt_request *q)
{
	struct span *s = ctx;

	span_at(s, q->arrival_ns);
	span_at(s, q->end_ns);
	if (q->end_ns > q->arrival_ns && q->end_ns - q->arrival_ns > s->longest)
		s->longest = q->end_ns - q->arrival_ns;
}

static void sp_interval(void *ctx, const struct tt_interval *iv)
{
	span_at(ctx, iv->start_ns);
	span_at(ctx, iv->end_ns);
}

/* The span of the records in buf (a header, then blocks). */
static int span_of(const void *buf, size_t len, const char *name,
		   struct span *s, uint32_t *header_size)
{
	struct tracefile_handlers h = { .request = sp_request,
					.interval = sp_interval, .ctx = s };
	struct tracefile_header hdr;
	struct tracefile_stats st;
	int err = tracefile_read_mem(buf, len, name, &h, &hdr, &st);

	if (!err && header_size)
		*header_size = hdr.header_size;
	return err;
}

static int read_at(FILE *f, long off, void *buf, size_t len)
{
	if (fseek(f, off, SEEK_SET) || fread(buf, 1, len, f) != len)
		return ferror(f) ? -EIO : -EBADMSG;
	return 0;
}

/* The trace's span from its head and its tail (a small file: all of it),
 * and the longest request of its head; 0 with s->hi == 0 when they hold
 * no records (then nothing is sampled). */
static int trace_span(const char *path, struct span *s)
{
	FILE *f = fopen(path, "rbe");
	struct stat sb;
	uint32_t hsize = 0;
	uint64_t size;
	char *buf = NULL;
	int err;

	s->lo = UINT64_MAX;
	s->hi = 0;
	s->longest = 0;
	if (!f)
		return -errno;
	if (fstat(fileno(f), &sb)) {
		err = -errno;
		goto out;
	}
	size = (uint64_t)sb.st_size;
	if (size <= 2ull * SAMPLE_EDGE_BYTES) {
		buf = malloc(size + 1);
		err = buf ? read_at(f, 0, buf, size) : -ENOMEM;
		if (!err)
			err = span_of(buf, size, path, s, NULL);
		goto out;
	}
	buf = malloc(2 * (size_t)SAMPLE_EDGE_BYTES);
	err = buf ? read_at(f, 0, buf, SAMPLE_EDGE_BYTES) : -ENOMEM;
	if (!err)
		err = span_of(buf, SAMPLE_EDGE_BYTES, path, s, &hsize);
	if (!err && (hsize > SAMPLE_EDGE_BYTES || !hsize))
		err = -EBADMSG;
	/* the header again, then the tail */
	if (!err)
		err = read_at(f, (long)(size - SAMPLE_EDGE_BYTES), buf + hsize,
			      SAMPLE_EDGE_BYTES);
	if (!err)
		err = span_of(buf, hsize + (size_t)SAMPLE_EDGE_BYTES, path, s,
			      NULL);
out:
	free(buf);
	fclose(f);
	return err;
}

/* ---- the sample ----------------------------------------------------------- */

struct sampler {
	struct collect *c, *mix;
	struct tt_compute_sink sink;
	struct sample_info *info;
};

/* The region (window and its lead) t falls in; -1: none. */
static int region_of(const struct sample_info *in, uint64_t t)
{
	for (uint32_t k = 0; k < in->windows; k++)
		if (t + in->lead_ns >= in->start_ns[k] &&
		    t < in->start_ns[k] + in->window_ns)
			return (int)k;
	return -1;
}

static void sa_request(void *ctx, const struct tt_request *q)
{
	struct sampler *s = ctx;
	struct sample_info *in = s->info;
	int k = region_of(in, q->arrival_ns);

	if (k < 0)
		return;
	if (q->arrival_ns >= in->start_ns[k]) {
		struct tt_request m = *q;

		/* the mix needs its lengths, not its token times */
		m.token_ns = NULL;
		m.token_ns_len = 0;
		in->own_requests++;
		if (s->mix)
			collect_add_request(s->mix, &m);
	}
	if (q->end_ns >= q->arrival_ns &&
	    q->end_ns < in->start_ns[k] + in->window_ns) {
		if (q->end_ns - q->arrival_ns > in->longest_ns)
			in->longest_ns = q->end_ns - q->arrival_ns;
		collect_add_request(s->c, q);
	}
}

static void sa_interval(void *ctx, const struct tt_interval *iv)
{
	struct sampler *s = ctx;

	if (region_of(s->info, iv->start_ns) >= 0)
		s->sink.interval(s->sink.ctx, iv);
}

static void sa_device(void *ctx, const struct tt_device *d)
{
	struct sampler *s = ctx;

	s->sink.device(s->sink.ctx, d);
}

static void sa_name(void *ctx, uint32_t pid, uint32_t id, const char *n)
{
	struct sampler *s = ctx;

	s->sink.name(s->sink.ctx, pid, id, n);
}

static void sa_losses(void *ctx, const struct report_losses *l)
{
	((struct sampler *)ctx)->c->losses = *l;
}

static void sa_compute(void *ctx, const char *src, uint32_t max_batch)
{
	collect_set_compute(((struct sampler *)ctx)->c, src, max_batch);
}

static void sa_hooks(void *ctx, const char *hooks)
{
	collect_set_hooks(((struct sampler *)ctx)->c, hooks);
}

/* ---- reading only the regions' bytes -------------------------------------- */

struct ranges {
	FILE *f;
	uint64_t size;
	char *buf;		/* the header, then up to cap bytes */
	uint32_t hsize;
	size_t cap;
	uint64_t lo[SAMPLE_MAX_RANGES], hi[SAMPLE_MAX_RANGES];
	uint32_t n;
};

/* The bytes [off, off + len) of the file after the header in r->buf, read
 * as a trace: h's records. */
static int read_range(struct ranges *r, uint64_t off, size_t len,
		      const struct tracefile_handlers *h)
{
	struct tracefile_header hdr;
	struct tracefile_stats st;
	int err;

	if (off + len > r->size)
		len = (size_t)(r->size - off);
	if (len > r->cap) {
		char *p = realloc(r->buf, r->hsize + len);

		if (!p)
			return -ENOMEM;
		r->buf = p;
		r->cap = len;
	}
	err = read_at(r->f, (long)off, r->buf + r->hsize, len);
	return err ? err : tracefile_read_mem(r->buf, r->hsize + len, "sample",
					      h, &hdr, &st);
}

/* The earliest time of the records a probe at off holds; 0: none. */
static uint64_t probe(struct ranges *r, uint64_t off)
{
	struct span s = { UINT64_MAX, 0, 0 };
	struct tracefile_handlers h = { .request = sp_request,
					.interval = sp_interval, .ctx = &s };

	if (read_range(r, off, SAMPLE_PROBE_BYTES, &h) || !s.hi)
		return 0;
	return s.lo;
}

/* The first offset (a probe's length apart) whose probe is at t or
 * later, by bisection over [lo, hi); -1 when a probe finds nothing. */
static int64_t offset_of(struct ranges *r, uint64_t t, uint64_t lo,
			 uint64_t hi)
{
	while (hi - lo > SAMPLE_PROBE_BYTES) {
		uint64_t mid = lo + (hi - lo) / 2, at = probe(r, mid);

		if (!at)
			return -1;
		if (at < t)
			lo = mid;
		else
			hi = mid;
	}
	return (int64_t)lo;
}

static void add_range(struct ranges *r, uint64_t lo, uint64_t hi)
{
	uint32_t i = r->n;

	if (hi > r->size)
		hi = r->size;
	/* kept in order, merged with what they touch */
	while (i > 0 && r->lo[i - 1] > lo) {
		r->lo[i] = r->lo[i - 1];
		r->hi[i] = r->hi[i - 1];
		i--;
	}
	r->lo[i] = lo;
	r->hi[i] = hi;
	r->n++;
	uint32_t k = 0;

	for (uint32_t j = 1; j < r->n; j++) {
		if (r->lo[j] <= r->hi[k] + SAMPLE_PROBE_BYTES) {
			if (r->hi[j] > r->hi[k])
				r->hi[k] = r->hi[j];
		} else {
			k++;
			r->lo[k] = r->lo[j];
			r->hi[k] = r->hi[j];
		}
	}
	r->n = k + 1;
}

/* The regions' bytes through h; -EAGAIN when the file shows no time
 * order to seek by (then it is read whole). */
static int read_regions(const char *path, const struct sample_info *in,
			uint64_t slack_ns, const struct tracefile_handlers *h,
			struct tracefile_header *hdr)
{
	struct ranges r = { 0 };
	struct stat sb;
	struct span s = { UINT64_MAX, 0, 0 };
	struct tracefile_handlers sp = { .request = sp_request,
					 .interval = sp_interval, .ctx = &s };
	int err = 0;

	r.f = fopen(path, "rbe");
	if (!r.f)
		return -errno;
	if (fstat(fileno(r.f), &sb)) {
		err = -errno;
		goto out;
	}
	r.size = (uint64_t)sb.st_size;
	/* the header, from the head */
	size_t head = r.size < SAMPLE_EDGE_BYTES ? (size_t)r.size
						 : SAMPLE_EDGE_BYTES;

	r.buf = malloc(head + 1);
	if (!r.buf) {
		err = -ENOMEM;
		goto out;
	}
	err = read_at(r.f, 0, r.buf, head);
	if (!err) {
		struct tracefile_stats st;

		err = tracefile_read_mem(r.buf, head, path, &sp, hdr, &st);
		r.hsize = hdr->header_size;
		if (!err && (!r.hsize || r.hsize >= head))
			err = -EBADMSG;
	}
	if (err)
		goto out;
	r.cap = head - r.hsize;
	add_range(&r, r.hsize, head);
	for (uint32_t k = 0; k < in->windows; k++) {
		uint64_t from = in->start_ns[k] - in->lead_ns;
		uint64_t to = in->start_ns[k] + in->window_ns;
		int64_t a = offset_of(&r, from > slack_ns ? from - slack_ns : 0,
				      r.hsize, r.size);
		int64_t b = a < 0 ? -1 : offset_of(&r, to + slack_ns,
						   (uint64_t)a, r.size);

		if (a < 0 || b < 0) {
			err = -EAGAIN;
			goto out;
		}
		add_range(&r, (uint64_t)a > SAMPLE_PROBE_BYTES ?
			  (uint64_t)a - SAMPLE_PROBE_BYTES : r.hsize,
			  (uint64_t)b + 2 * SAMPLE_PROBE_BYTES);
	}
	for (uint32_t i = 0; i < r.n && !err; i++)
		err = read_range(&r, r.lo[i], (size_t)(r.hi[i] - r.lo[i]), h);
out:
	free(r.buf);
	fclose(r.f);
	return err;
}

bool sample_clean(const struct sample_info *in, uint64_t start_ns,
		  uint64_t end_ns)
{
	if (!in->sampled)
		return true;
	for (uint32_t k = 0; k < in->windows; k++) {
		uint64_t lo = in->start_ns[k] - in->lead_ns + in->longest_ns;
		uint64_t hi = in->start_ns[k] + in->window_ns;

		if (hi > in->longest_ns && start_ns >= lo &&
		    end_ns <= hi - in->longest_ns)
			return true;
	}
	return false;
}

int sample_load(struct collect *c, struct collect *mix, const char *path,
		const struct sample_opts *o, FILE *log,
		struct tracefile_header *header, struct sample_info *info)
{
	struct sampler s = { .c = c, .mix = mix, .info = info };
	struct span sp;
	uint32_t n = o->windows < SAMPLE_MAX_WINDOWS ? o->windows
						     : SAMPLE_MAX_WINDOWS;
	int err = trace_span(path, &sp);
	/* a region's lead holds the requests running when its window opens,
	 * and its window is several of them long (what is clear of its
	 * edges is what the steps can use): from the longest request of the
	 * trace's head, at least the options' */
	uint64_t lead = sp.longest * 2 > o->lead_ns ? sp.longest * 2
						    : o->lead_ns;
	uint64_t win = lead * 4 > o->window_ns ? lead * 4 : o->window_ns;

	memset(info, 0, sizeof(*info));
	if (err == -ENOENT || err == -EACCES || err == -EISDIR)
		return collect_load(c, path, log, header);	/* says why */
	if (err || sp.hi <= sp.lo || !n || !win ||
	    sp.hi - sp.lo <= o->all_below_ns ||
	    sp.hi - sp.lo <= 2 * (uint64_t)n * (win + lead)) {
		/* short, or its edges unreadable: the whole of it (the full
		 * read says what is wrong with it, if anything) */
		err = collect_load(c, path, log, header);
		if (!err) {
			info->span_ns = c->end_ns - c->start_ns;
			info->own_requests = c->nreqs;
		}
		return err;
	}
	info->sampled = true;
	info->windows = n;
	info->window_ns = win;
	info->lead_ns = lead;
	info->span_ns = sp.hi - sp.lo;
	/* evenly spread; the first lead inside the trace */
	for (uint32_t k = 0; k < n; k++)
		info->start_ns[k] = sp.lo + lead + (uint64_t)((k + 0.5) *
			(double)(info->span_ns - lead) / n) - win / 2;
	collect_sink(c, &s.sink);

	struct tracefile_handlers h = {
		.request = sa_request, .device = sa_device,
		.interval = sa_interval, .name = sa_name,
		.losses = sa_losses, .compute = sa_compute,
		.hooks = sa_hooks, .ctx = &s, .log = log ? log : stderr,
	};
	struct tracefile_header hdr;
	struct tracefile_stats st = { 0 };

	/* records written late: a request when it ends, intervals when the
	 * library flushes (a few s) */
	h.log = NULL;
	err = read_regions(path, info, 2 * info->lead_ns + 10000000000ull, &h,
			   &hdr);
	h.log = log ? log : stderr;
	if (err == -EAGAIN) {
		collect_free(c);
		collect_init(c);
		if (mix) {
			collect_free(mix);
			collect_init(mix);
		}
		info->own_requests = 0;
		info->longest_ns = 0;
		collect_sink(c, &s.sink);
		err = tracefile_read(path, &h, &hdr, &st);
	}
	if (err)
		return err;
	c->host = hdr.host;
	if (header)
		*header = hdr;
	c->start_ns = info->start_ns[0] - lead;
	c->end_ns = info->start_ns[n - 1] + win;
	c->window_closed = true;
	collect_count_read(c, &st);	/* c was empty */
	return 0;
}
