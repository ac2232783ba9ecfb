/*
 * export.c - a traced interval in the formats other tools read.
 *
 * In:  a struct report (requests with their attribution, the steps of the
 *      attributed devices) and the struct collect behind it (devices, raw
 *      kernel/copy/CPU intervals, kernel names, window, host).
 * Out: Chrome trace-event JSON, OTLP/JSON traces or JSON lines on a FILE.
 * Assumes: one clock (CLOCK_MONOTONIC ns); the report was built from that
 *      collect (device ids agree).
 *
 * Everything is streamed with fprintf, one event per line, so a trace with
 * millions of kernels costs no memory beyond two small indexes (kernel
 * names sorted for lookup, and the distinct tracks to name them). Times
 * are printed from integers (microseconds with three decimals), never
 * through a double, so no nanosecond is lost far from the window start.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>

#include "export.h"
#include "steps.h"

/* ---- shared helpers ------------------------------------------------------ */

/* Bytes in the UTF-8 sequence that starts at p, 0 if it is not valid. */
static int utf8_len(const unsigned char *p)
{
	int n = *p >= 0xf5 ? 0 : *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3
		: *p >= 0xc2 ? 2 : 0;

	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

void export_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)(s ? s : "");
	     *p; p++) {
		int n;

		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else if (*p < 0x80)
			fputc(*p, f);
		else if ((n = utf8_len(p))) {
			fwrite(p, 1, (size_t)n, f);
			p += n - 1;
		} else {
			fputs("\\ufffd", f);	/* not UTF-8: replaced */
		}
	}
	fputc('"', f);
}

/* A signed nanosecond offset as microseconds with three decimals. */
static void put_us(FILE *f, int64_t ns)
{
	uint64_t a = ns < 0 ? (uint64_t)(-(ns + 1)) + 1 : (uint64_t)ns;

	fprintf(f, "%s%" PRIu64 ".%03" PRIu64, ns < 0 ? "-" : "", a / 1000,
		a % 1000);
}

static int64_t rel(uint64_t t, uint64_t t0)
{
	return (int64_t)(t - t0);
}

int export_busy_buckets(const struct tt_interval *ivs, size_t nivs,
			uint32_t device, uint64_t start_ns, uint64_t end_ns,
			double *frac, size_t nbuckets)
{
	struct steps_span *sp = NULL;
	size_t nsp = 0;
	uint64_t busy, w = end_ns > start_ns ? end_ns - start_ns : 0;

	for (size_t i = 0; i < nbuckets; i++)
		frac[i] = 0;
	if (!w || !nbuckets)
		return 0;
	if (steps_union(ivs, nivs, device, start_ns, end_ns, &sp, &nsp, &busy))
		return -ENOMEM;
	/* Each span adds its overlap to the buckets it crosses. */
	for (size_t i = 0; i < nsp; i++) {
		uint64_t a = sp[i].start_ns - start_ns, b = sp[i].end_ns - start_ns;
		size_t k = (size_t)((double)a / w * nbuckets);

		for (; k < nbuckets; k++) {
			uint64_t lo = (uint64_t)((double)w * k / nbuckets);
			uint64_t hi = (uint64_t)((double)w * (k + 1) / nbuckets);
			uint64_t s = a > lo ? a : lo, e = b < hi ? b : hi;

			if (lo >= b)
				break;
			if (e > s && hi > lo)
				frac[k] += (double)(e - s) / (double)(hi - lo);
		}
	}
	for (size_t i = 0; i < nbuckets; i++)
		frac[i] = frac[i] > 1 ? 1 : frac[i];
	free(sp);
	return 0;
}

/* ---- Perfetto: names and tracks ------------------------------------------ */

struct pf {
	FILE *f;
	uint64_t t0;
	bool first;
	const struct collect *c;
	const struct collect_name **names;	/* sorted by pid, name_id */
	size_t nnames;
};

static int name_cmp(const void *a, const void *b)
{
	const struct collect_name *x = *(const struct collect_name *const *)a;
	const struct collect_name *y = *(const struct collect_name *const *)b;

	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->name_id < y->name_id ? -1 : x->name_id > y->name_id;
}

static int index_names(struct pf *p)
{
	const struct collect *c = p->c;

	p->nnames = 0;
	if (!c->nnames)
		return 0;
	p->names = malloc(c->nnames * sizeof(*p->names));
	if (!p->names)
		return -ENOMEM;
	for (size_t i = 0; i < c->nnames; i++)
		if (c->names[i].name)
			p->names[p->nnames++] = &c->names[i];
	qsort(p->names, p->nnames, sizeof(*p->names), name_cmp);
	return 0;
}

static const char *name_of(const struct pf *p, uint32_t pid, uint32_t id)
{
	struct collect_name key = { .pid = pid, .name_id = id };
	const struct collect_name *kp = &key, *const *hit;

	if (!id || !p->nnames)
		return NULL;
	hit = bsearch(&kp, p->names, p->nnames, sizeof(*p->names), name_cmp);
	return hit ? (*hit)->name : NULL;
}

static const char *copy_name(uint8_t kind)
{
	switch (kind) {
	case TT_COPY_HTOD: return "memcpy HtoD";
	case TT_COPY_DTOH: return "memcpy DtoH";
	case TT_COPY_DTOD: return "memcpy DtoD";
	default: return "memcpy";
	}
}

static const char *iv_name(const struct pf *p, const struct tt_interval *iv)
{
	const char *n = name_of(p, iv->pid, iv->name_id);

	if (n)
		return n;
	switch (iv->kind) {
	case TT_IV_MEMCPY: return copy_name(iv->copy_kind);
	case TT_IV_MEMSET: return "memset";
	case TT_IV_CPU: return "on-CPU";
	case TT_IV_GRAPH: return "graph";
	case TT_IV_STEP: return "step function";
	case TT_IV_SEQ: return "sequence";
	default: return "kernel";
	}
}

/* Process id of a device: its index in the collect plus one. */
static uint32_t dev_pid(const struct collect *c, uint32_t id)
{
	if (id == TT_STEP_DEVICE)	/* beside the steps cut */
		return EXPORT_PID_STEPS;
	for (size_t i = 0; i < c->ndevs; i++)
		if (c->devs[i].id == id)
			return (uint32_t)i + 1;
	return 50000 + id;
}

static const struct tt_device *dev_by_id(const struct collect *c, uint32_t id)
{
	for (size_t i = 0; i < c->ndevs; i++)
		if (c->devs[i].id == id)
			return &c->devs[i];
	return NULL;
}

static bool dev_is_cpu(const struct collect *c, const struct tt_interval *iv)
{
	const struct tt_device *d = dev_by_id(c, iv->device);

	return d ? d->kind == TT_DEV_CPU : iv->kind == TT_IV_CPU;
}

/* Track of an interval: the stream on a GPU, the thread on the CPU. */
static uint32_t iv_tid(const struct collect *c, const struct tt_interval *iv)
{
	return dev_is_cpu(c, iv) || iv->kind == TT_IV_STEP ? iv->tid :
	       iv->stream;
}

/* Start an event: the separator, then the opening brace. */
static void ev(struct pf *p)
{
	fputs(p->first ? "\n{" : ",\n{", p->f);
	p->first = false;
}

static void meta(struct pf *p, const char *what, uint32_t pid, uint32_t tid,
		 const char *name)
{
	ev(p);
	fprintf(p->f, "\"ph\":\"M\",\"pid\":%u,\"tid\":%u,\"name\":\"%s\","
		"\"args\":{\"name\":", pid, tid, what);
	export_json_str(p->f, name);
	fputs("}}", p->f);
}

static void sort_index(struct pf *p, uint32_t pid, int64_t idx)
{
	ev(p);
	fprintf(p->f, "\"ph\":\"M\",\"pid\":%u,\"name\":\"process_sort_index\","
		"\"args\":{\"sort_index\":%" PRId64 "}}", pid, idx);
}

static void device_meta(struct pf *p)
{
	const struct collect *c = p->c;
	char buf[96];

	for (size_t i = 0; i < c->ndevs; i++) {
		const struct tt_device *d = &c->devs[i];

		snprintf(buf, sizeof(buf), "%s %u: %s",
			 d->kind == TT_DEV_CPU ? "cpu" : "gpu", d->id, d->name);
		meta(p, "process_name", (uint32_t)i + 1, 0, buf);
		sort_index(p, (uint32_t)i + 1, (int64_t)i + 1);
	}
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Track key of an interval: its device over its stream or thread. */
static uint64_t track_key(const struct collect *c, const struct tt_interval *iv)
{
	return (uint64_t)iv->device << 32 | iv_tid(c, iv);
}

/* Whether key is in the sorted v[0..n). */
static bool key_in(const uint64_t *v, size_t n, uint64_t key)
{
	return n && bsearch(&key, v, n, sizeof(*v), u64_cmp);
}

/*
 * Name each distinct (device, stream or thread) track of the intervals of
 * ivs[0..nivs) that start at or after `from` once, leaving out those in
 * the sorted seen[0..*nseen) and, with seen given, adding the new ones to
 * it (kept sorted): a trace exported a time range at a time names each
 * track the first time it shows.
 */
static int name_tracks(struct pf *p, const struct tt_interval *ivs,
		       size_t nivs, uint64_t from, uint64_t **seen,
		       size_t *nseen)
{
	const struct collect *c = p->c;
	size_t had = seen ? *nseen : 0, k = 0, n = 0;
	uint64_t *keys;
	char buf[48];

	if (!nivs)
		return 0;
	keys = malloc((had + nivs) * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < nivs; i++)
		if (ivs[i].start_ns >= from)
			keys[n++] = track_key(c, &ivs[i]);
	qsort(keys, n, sizeof(*keys), u64_cmp);
	for (size_t i = 0; i < n; i++) {
		uint32_t dev = keys[i] >> 32, tid = (uint32_t)keys[i];
		const struct tt_device *d = dev_by_id(c, dev);

		if ((k && keys[i] == keys[k - 1]) ||
		    key_in(seen ? *seen : NULL, had, keys[i]))
			continue;
		keys[k++] = keys[i];
		snprintf(buf, sizeof(buf), "%s %u", dev == TT_STEP_DEVICE ?
			 "step function, thread" : d && d->kind == TT_DEV_CPU ?
			 "thread" : "stream", tid);
		meta(p, "thread_name", dev_pid(c, dev), tid, buf);
	}
	if (!seen || !k) {
		free(keys);
		return 0;
	}
	/* the new keys after the old, sorted again: tracks are few */
	memmove(keys + had, keys, k * sizeof(*keys));
	if (had)
		memcpy(keys, *seen, had * sizeof(*keys));
	qsort(keys, had + k, sizeof(*keys), u64_cmp);
	free(*seen);
	*seen = keys;
	*nseen = had + k;
	return 0;
}

/* ---- Perfetto: events ---------------------------------------------------- */

static void slice(struct pf *p, uint32_t pid, uint32_t tid, const char *cat,
		  const char *name, uint64_t start, uint64_t end)
{
	ev(p);
	fprintf(p->f, "\"ph\":\"X\",\"pid\":%u,\"tid\":%u,\"cat\":\"%s\","
		"\"name\":", pid, tid, cat);
	export_json_str(p->f, name);
	fputs(",\"ts\":", p->f);
	put_us(p->f, rel(start, p->t0));
	fputs(",\"dur\":", p->f);
	put_us(p->f, end > start ? (int64_t)(end - start) : 0);
}

static const char *iv_cat(uint8_t kind)
{
	static const char *const cats[] = {
		[TT_IV_KERNEL] = "kernel", [TT_IV_MEMCPY] = "memcpy",
		[TT_IV_MEMSET] = "memset", [TT_IV_CPU] = "cpu",
		[TT_IV_GRAPH] = "graph", [TT_IV_STEP] = "step",
		[TT_IV_SEQ] = "sequence",
	};

	return kind < sizeof(cats) / sizeof(cats[0]) ? cats[kind] : "other";
}

static void interval_event(struct pf *p, const struct tt_interval *iv)
{
	const struct collect *c = p->c;

	slice(p, dev_pid(c, iv->device), iv_tid(c, iv), iv_cat(iv->kind),
	      iv_name(p, iv), iv->start_ns, iv->end_ns);
	fprintf(p->f, ",\"args\":{\"pid\":%u,\"tid\":%u,\"stream\":%u,"
		"\"correlation\":%u", iv->pid, iv->tid, iv->stream,
		iv->correlation);
	if (iv->kind == TT_IV_MEMCPY || iv->kind == TT_IV_MEMSET)
		fprintf(p->f, ",\"bytes\":%" PRIu64, iv->bytes);
	if (iv->kind == TT_IV_MEMCPY)
		fprintf(p->f, ",\"copy_kind\":%u", iv->copy_kind);
	fputs("}}", p->f);
}

static void counter(struct pf *p, uint32_t pid, const char *name,
		    const char *key, uint64_t t, double v)
{
	ev(p);
	fprintf(p->f, "\"ph\":\"C\",\"pid\":%u,\"name\":\"%s\",\"ts\":", pid,
		name);
	put_us(p->f, rel(t, p->t0));
	fprintf(p->f, ",\"args\":{\"%s\":%.4g}}", key, v);
}

#define PF_BUSY_BUCKETS 200

/* Busy fraction of each device over the window of c, in PF_BUSY_BUCKETS. */
static int busy_counters(struct pf *p, const struct collect *c)
{
	double frac[PF_BUSY_BUCKETS];
	uint64_t w = c->end_ns > c->start_ns ? c->end_ns - c->start_ns : 0;

	for (size_t i = 0; w && i < c->ndevs; i++) {
		if (export_busy_buckets(c->ivs, c->nivs, c->devs[i].id,
					c->start_ns, c->end_ns, frac,
					PF_BUSY_BUCKETS))
			return -ENOMEM;
		for (size_t k = 0; k < PF_BUSY_BUCKETS; k++)
			counter(p, (uint32_t)i + 1, "busy fraction", "busy",
				c->start_ns + (uint64_t)((double)w * k /
							 PF_BUSY_BUCKETS),
				frac[k]);
	}
	return 0;
}

static void request_args(FILE *f, const struct report_request *q)
{
	const struct tt_request *t = &q->req;

	fputs(",\"args\":{\"id\":", f);
	export_json_str(f, t->id);
	fputs(",\"tenant\":", f);
	export_json_str(f, t->tenant);
	fputs(",\"model\":", f);
	export_json_str(f, t->model);
	fprintf(f, ",\"status\":\"%s\",\"prompt_tokens\":%" PRId64
		",\"completion_tokens\":%" PRId64 ",\"token_events\":%u"
		",\"gpu_ns\":%" PRIu64 ",\"prefill_gpu_ns\":%" PRIu64
		",\"decode_gpu_ns\":%" PRIu64 ",\"cost_usd\":%.9g"
		",\"cost_loaded_usd\":%.9g}}", tt_req_end_name(t->end),
		t->prompt_tokens, t->completion_tokens, t->token_events,
		q->gpu_ns, q->prefill_ns, q->decode_ns, q->cost_usd,
		q->cost_loaded_usd);
}

static void request_events(struct pf *p, const struct report_request *q,
			   uint32_t tid, uint64_t wend)
{
	const struct tt_request *t = &q->req;
	const uint32_t pid = EXPORT_PID_REQUESTS;
	uint64_t end = t->end_ns ? t->end_ns : wend;
	char buf[TT_ID_MAX + TT_NAME_MAX + 8];

	if (end < t->arrival_ns)
		end = t->arrival_ns;
	snprintf(buf, sizeof(buf), "%s %s", t->tenant,
		 t->id[0] ? t->id : "(no id)");
	meta(p, "thread_name", pid, tid, buf);
	slice(p, pid, tid, "request", t->model[0] ? t->model : "request",
	      t->arrival_ns, end);
	request_args(p->f, q);
	if (!t->first_token_ns || t->first_token_ns < t->arrival_ns)
		return;
	slice(p, pid, tid, "phase", "prefill", t->arrival_ns,
	      t->first_token_ns);
	fputs("}", p->f);
	slice(p, pid, tid, "phase", "decode", t->first_token_ns, end);
	fputs("}", p->f);
	for (uint32_t k = 0; t->token_ns && k < t->token_ns_len; k++) {
		ev(p);
		fprintf(p->f, "\"ph\":\"i\",\"s\":\"t\",\"pid\":%u,\"tid\":%u,"
			"\"name\":\"token\",\"ts\":", pid, tid);
		put_us(p->f, rel(t->token_ns[k], p->t0));
		fprintf(p->f, ",\"args\":{\"n\":%u}}", k + 1);
	}
}

static void step_events(struct pf *p, const struct report_device *d)
{
	const struct steps_result *s = &d->steps;
	uint32_t dpid = dev_pid(p->c, d->dev.id);

	meta(p, "thread_name", EXPORT_PID_STEPS, dpid, d->dev.name);
	for (uint32_t i = 0; i < s->nsteps; i++) {
		const struct steps_step *st = &s->steps[i];

		slice(p, EXPORT_PID_STEPS, dpid, "step", "step", st->start_ns,
		      st->end_ns);
		fprintf(p->f, ",\"args\":{\"batch\":%u,\"prefill_tokens\":%u,"
			"\"decode_tokens\":%u,\"waiting\":%u,\"busy_ns\":%"
			PRIu64 "}}", st->n, st->prefill_tokens,
			st->decode_tokens, st->waiting, st->busy_ns);
		counter(p, dpid, "batch size", "batch", st->start_ns, st->n);
		if (i + 1 == s->nsteps || s->steps[i + 1].start_ns > st->end_ns)
			counter(p, dpid, "batch size", "batch", st->end_ns, 0);
	}
}

static void pf_head(struct pf *p)
{
	fprintf(p->f, "{\"displayTimeUnit\":\"ns\",\"otherData\":{"
		"\"tool\":\"tokentrace\",\"window_start_ns\":%" PRIu64
		",\"window_ns\":%" PRIu64 ",\"host\":", p->c->start_ns,
		p->c->end_ns - p->c->start_ns);
	export_json_str(p->f, p->c->host.hostname);
	fputs(",\"compute\":", p->f);
	export_json_str(p->f, p->c->compute);
	fputs("},\"traceEvents\":[", p->f);
}

/* The head and the processes' names: everything before the events. */
static int pf_begin(struct pf *p)
{
	if (index_names(p))
		return -ENOMEM;
	pf_head(p);
	device_meta(p);
	meta(p, "process_name", EXPORT_PID_REQUESTS, 0, "requests");
	sort_index(p, EXPORT_PID_REQUESTS, 1000);
	meta(p, "process_name", EXPORT_PID_STEPS, 0, "steps");
	sort_index(p, EXPORT_PID_STEPS, 999);
	return 0;
}

static int pf_end(struct pf *p)
{
	fputs("\n]}\n", p->f);
	free(p->names);
	p->names = NULL;
	return ferror(p->f) ? -EIO : 0;
}

int export_perfetto(const struct report *r, const struct collect *c, FILE *f)
{
	struct pf p = { .f = f, .t0 = c->start_ns, .first = true, .c = c };
	int err = pf_begin(&p), end;

	if (err)
		return err;
	err = name_tracks(&p, c->ivs, c->nivs, 0, NULL, NULL);
	for (size_t i = 0; !err && i < c->nivs; i++)
		interval_event(&p, &c->ivs[i]);
	if (!err)
		err = busy_counters(&p, c);
	for (size_t i = 0; !err && r && i < r->nreqs; i++)
		request_events(&p, &r->reqs[i], (uint32_t)i + 1, c->end_ns);
	for (size_t i = 0; !err && r && i < r->ndevs; i++)
		if (r->devs[i].attributed)
			step_events(&p, &r->devs[i]);
	end = pf_end(&p);
	return err ? err : end;
}

/* ---- OTLP/JSON ----------------------------------------------------------- */

int64_t export_wall_minus_mono_now(void)
{
	struct timespec w, m;

	clock_gettime(CLOCK_REALTIME, &w);
	clock_gettime(CLOCK_MONOTONIC, &m);
	return ((int64_t)w.tv_sec - m.tv_sec) * 1000000000LL +
	       (w.tv_nsec - m.tv_nsec);
}

/* Attributes with their separators. */
struct attrs {
	FILE *f;
	bool first;
};

static void attr_key(struct attrs *a, const char *k)
{
	fprintf(a->f, "%s{\"key\":\"%s\",\"value\":{", a->first ? "" : ",", k);
	a->first = false;
}

static void attr_str(struct attrs *a, const char *k, const char *v)
{
	if (!v || !*v)
		return;
	attr_key(a, k);
	fputs("\"stringValue\":", a->f);
	export_json_str(a->f, v);
	fputs("}}", a->f);
}

/* OTLP/JSON carries 64-bit integers as strings. */
static void attr_int(struct attrs *a, const char *k, int64_t v)
{
	attr_key(a, k);
	fprintf(a->f, "\"intValue\":\"%" PRId64 "\"}}", v);
}

static void attr_dbl(struct attrs *a, const char *k, double v)
{
	if (!isfinite(v))
		return;
	attr_key(a, k);
	fprintf(a->f, "\"doubleValue\":%.9g}}", v);
}

static void attr_bool(struct attrs *a, const char *k, bool v)
{
	attr_key(a, k);
	fprintf(a->f, "\"boolValue\":%s}}", v ? "true" : "false");
}

static const char *operation_of(const char *api)
{
	if (!strcmp(api, "chat"))
		return "chat";
	if (!strcmp(api, "embeddings"))
		return "embeddings";
	return "text_completion";
}

/* Trace and span ids: SHA-256 of what makes the request unique. */
static void span_ids(const struct tt_request *t, char trace[33], char span[17])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char key[TT_ID_MAX + 80];
	int n = snprintf(key, sizeof(key), "%u/%" PRIu64 "/%" PRIu64 "/%s",
			 t->pid, t->conn_id, t->arrival_ns, t->id);

	SHA256((const unsigned char *)key, (size_t)n, md);
	for (int i = 0; i < 16; i++)
		sprintf(trace + 2 * i, "%02x", md[i]);
	for (int i = 0; i < 8; i++)
		sprintf(span + 2 * i, "%02x", md[16 + i]);
}

static void genai_attrs(struct attrs *a, const struct tt_request *t)
{
	attr_str(a, "gen_ai.operation.name", operation_of(t->api));
	attr_str(a, "gen_ai.request.model", t->model);
	attr_str(a, "gen_ai.response.model", t->model);
	attr_str(a, "gen_ai.response.id", t->id);
	if (t->prompt_tokens >= 0)
		attr_int(a, "gen_ai.usage.input_tokens", t->prompt_tokens);
	if (t->completion_tokens >= 0)
		attr_int(a, "gen_ai.usage.output_tokens",
			 t->completion_tokens);
	if (t->max_tokens >= 0)
		attr_int(a, "gen_ai.request.max_tokens", t->max_tokens);
	if (t->ttft_ms >= 0)
		attr_dbl(a, "gen_ai.server.time_to_first_token",
			 t->ttft_ms / 1e3);
	if (t->http_status > 0)
		attr_int(a, "http.response.status_code", t->http_status);
	attr_str(a, "url.path", t->path);
}

static void own_attrs(struct attrs *a, const struct report_request *q)
{
	const struct tt_request *t = &q->req;

	attr_str(a, "tokentrace.tenant", t->tenant);
	attr_str(a, "tokentrace.api", t->api);
	attr_bool(a, "tokentrace.stream", t->stream);
	attr_str(a, "tokentrace.end", tt_req_end_name(t->end));
	attr_int(a, "tokentrace.pid", t->pid);
	attr_int(a, "tokentrace.gpu_ns", (int64_t)q->gpu_ns);
	attr_int(a, "tokentrace.prefill_gpu_ns", (int64_t)q->prefill_ns);
	attr_int(a, "tokentrace.decode_gpu_ns", (int64_t)q->decode_ns);
	attr_dbl(a, "tokentrace.cost_usd", q->cost_usd);
	attr_dbl(a, "tokentrace.cost_loaded_usd", q->cost_loaded_usd);
	if (t->tokens_source != TT_TOKENS_NONE)
		attr_str(a, "tokentrace.tokens_source",
			 tt_tokens_source_name(t->tokens_source));
	attr_int(a, "tokentrace.token_events", t->token_events);
	if (t->ttft_ms >= 0)
		attr_dbl(a, "tokentrace.ttft_ms", t->ttft_ms);
	if (t->itl_p50_ms >= 0)
		attr_dbl(a, "tokentrace.itl_p50_ms", t->itl_p50_ms);
	if (t->itl_p99_ms >= 0)
		attr_dbl(a, "tokentrace.itl_p99_ms", t->itl_p99_ms);
	if (t->flags)
		attr_int(a, "tokentrace.flags", t->flags);
}

static void otlp_span(FILE *f, const struct report_request *q, int64_t off,
		      uint64_t wend, bool first)
{
	const struct tt_request *t = &q->req;
	uint64_t end = t->end_ns >= t->arrival_ns && t->end_ns ? t->end_ns
							      : wend;
	struct attrs a = { .f = f, .first = true };
	char trace[33], span[17], name[TT_NAME_MAX + 24];
	bool err = t->end == TT_END_SERVER_ERROR;

	span_ids(t, trace, span);
	snprintf(name, sizeof(name), "%s %s", operation_of(t->api),
		 t->model[0] ? t->model : "unknown");
	fprintf(f, "%s\n{\"traceId\":\"%s\",\"spanId\":\"%s\",\"name\":",
		first ? "" : ",", trace, span);
	export_json_str(f, name);
	fprintf(f, ",\"kind\":2,\"startTimeUnixNano\":\"%" PRId64 "\","
		"\"endTimeUnixNano\":\"%" PRId64 "\",\"attributes\":[",
		(int64_t)t->arrival_ns + off, (int64_t)end + off);
	genai_attrs(&a, t);
	own_attrs(&a, q);
	fputs("],\"events\":[", f);
	if (t->first_token_ns)
		fprintf(f, "{\"timeUnixNano\":\"%" PRId64 "\",\"name\":"
			"\"gen_ai.first_token\"}",
			(int64_t)t->first_token_ns + off);
	fprintf(f, "],\"status\":{\"code\":%d%s}}", err ? 2 : 0,
		err ? ",\"message\":\"server error\"" : "");
}

static void otlp_resource(FILE *f, const struct collect *c)
{
	struct attrs a = { .f = f, .first = true };

	fputs("{\"resourceSpans\":[{\"resource\":{\"attributes\":[", f);
	attr_str(&a, "service.name", "tokentrace");
	attr_str(&a, "host.name", c->host.hostname);
	attr_str(&a, "os.version", c->host.kernel);
	attr_str(&a, "host.cpu.model.name", c->host.cpu_model);
	attr_str(&a, "tokentrace.gpu_model", c->host.gpu_model);
	attr_str(&a, "tokentrace.compute", c->compute);
	fputs("]},\"scopeSpans\":[{\"scope\":{\"name\":\"tokentrace\"},"
	      "\"spans\":[", f);
}

static int otlp_end(FILE *f)
{
	fputs("\n]}]}]}\n", f);
	return ferror(f) ? -EIO : 0;
}

int export_otlp(const struct report *r, const struct collect *c,
		int64_t wall_minus_mono_ns, FILE *f)
{
	otlp_resource(f, c);
	for (size_t i = 0; r && i < r->nreqs; i++)
		otlp_span(f, &r->reqs[i], wall_minus_mono_ns, c->end_ns, !i);
	return otlp_end(f);
}

/* ---- JSON lines ---------------------------------------------------------- */

static int jsonl_line(FILE *f, const struct report_request *q)
{
	int err = report_request_write_json(q, f);

	if (!err && fputc('\n', f) < 0)
		err = -EIO;
	return err;
}

int export_jsonl(const struct report *r, FILE *f)
{
	int err = 0;

	for (size_t i = 0; !err && i < r->nreqs; i++)
		err = jsonl_line(f, &r->reqs[i]);
	if (err)
		return err;
	return ferror(f) ? -EIO : 0;
}

/* ---- a trace a time range at a time --------------------------------------- */

struct export_stream {
	FILE *out[3];			/* perfetto, otlp, jsonl; NULL: not */
	struct pf p;
	int64_t off;
	uint64_t wend;
	uint32_t tid;			/* requests' tracks given */
	size_t nspans;
	uint64_t *seen;			/* tracks named, sorted */
	size_t nseen;
	bool begun;
};

struct export_stream *export_stream_new(FILE *perfetto, FILE *otlp,
					FILE *jsonl)
{
	struct export_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->out[0] = perfetto;
	s->out[1] = otlp;
	s->out[2] = jsonl;
	return s;
}

bool export_stream_begun(const struct export_stream *s)
{
	return s->begun;
}

int export_stream_begin(struct export_stream *s, const struct collect *base,
			int64_t wall_minus_mono_ns)
{
	s->off = wall_minus_mono_ns;
	s->wend = base->end_ns;
	s->begun = true;
	if (s->out[1])
		otlp_resource(s->out[1], base);
	if (!s->out[0])
		return 0;
	s->p = (struct pf){ .f = s->out[0], .t0 = base->start_ns,
			    .first = true, .c = base };
	return pf_begin(&s->p);
}

int export_stream_request(struct export_stream *s,
			  const struct report_request *q)
{
	int err = 0;

	if (s->out[0])
		request_events(&s->p, q, ++s->tid, s->wend);
	if (s->out[1])
		otlp_span(s->out[1], q, s->off, s->wend, !s->nspans++);
	if (s->out[2])
		err = jsonl_line(s->out[2], q);
	return err;
}

int export_stream_part(struct export_stream *s, bool first, uint64_t from,
		       const struct report *r, const struct collect *c)
{
	int err;

	if (!s->out[0])
		return 0;
	/* an interval over the range's start went with the range before */
	if (first)
		from = 0;
	err = name_tracks(&s->p, c->ivs, c->nivs, from, &s->seen, &s->nseen);
	for (size_t i = 0; !err && i < c->nivs; i++)
		if (c->ivs[i].start_ns >= from)
			interval_event(&s->p, &c->ivs[i]);
	if (!err)
		err = busy_counters(&s->p, c);
	for (size_t i = 0; !err && i < r->ndevs; i++)
		if (r->devs[i].attributed)
			step_events(&s->p, &r->devs[i]);
	return err;
}

int export_stream_end(struct export_stream *s)
{
	int err = 0, e;

	if (s->out[0]) {
		e = s->begun ? pf_end(&s->p) : 0;
		err = err ? err : e;
	}
	if (s->out[1] && s->begun) {
		e = otlp_end(s->out[1]);
		err = err ? err : e;
	}
	if (s->out[2] && ferror(s->out[2]))
		err = err ? err : -EIO;
	return err;
}

void export_stream_free(struct export_stream *s)
{
	if (!s)
		return;
	free(s->p.names);
	free(s->seen);
	free(s);
}
