/*
 * metrics.c - live counters and histograms in the Prometheus text format.
 *
 * In:  devices, intervals, finished requests, attributed GPU time and
 *      losses, from the collector's threads, in any order.
 * Out: the text exposition (format 0.0.4) in a buffer, and over HTTP at
 *      /metrics from libmicrohttpd's own thread.
 * Assumes: one clock (CLOCK_MONOTONIC ns); intervals of a device arrive
 *      roughly in start order (see the busy union below).
 *
 * The state is a few small tables behind one mutex: per (tenant, model)
 * request counts by how they ended, tokens, and two histograms (TTFT and
 * inter-token gaps); per (device, tenant) attributed GPU time by phase;
 * per device busy and idle time. Tenant and model names are capped (see
 * metrics.h) so a client that invents a tenant per request cannot grow the
 * tables or a Prometheus server's series without bound.
 *
 * Device busy time is a running union: each device keeps the end of the
 * latest busy stretch; an interval adds what lies past it, and a gap before
 * it counts as idle. Intervals that arrive late (after later work) add only
 * their part past that end, so busy time is a lower bound then, never more
 * than the wall time.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "metrics.h"

/* ---- the state ----------------------------------------------------------- */

#define TTFT_NB	12
#define ITL_NB	11
#define NEND	(TT_END_OPEN + 1)

static const double ttft_bounds[TTFT_NB] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};
static const double itl_bounds[ITL_NB] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
};

struct hist {
	uint64_t le[TTFT_NB > ITL_NB ? TTFT_NB : ITL_NB];	/* not cumulative */
	uint64_t count;
	double sum;
};

struct mgroup {
	char tenant[TT_NAME_MAX], model[TT_NAME_MAX];
	uint64_t requests[NEND];
	uint64_t prompt_tokens, completion_tokens;
	struct hist ttft, itl;
	double cost_usd;
};

struct mattr {
	uint32_t device;
	char tenant[TT_NAME_MAX];
	uint64_t prefill_ns, decode_ns;
};

struct mdev {
	uint32_t id;
	bool cpu, named;
	char name[64];
	uint64_t busy_ns, idle_ns, last_end;
};

struct names {
	char (*v)[TT_NAME_MAX];
	size_t n;
};

struct metrics {
	pthread_mutex_t lock;
	struct mgroup *groups;
	size_t ngroups, capgroups;
	struct mattr *attr;
	size_t nattr, capattr;
	struct mdev devs[METRICS_MAX_DEVICES];
	size_t ndevs;
	struct names tenants, models;
	struct report_losses losses;
	struct tt_compute_sink inner;	/* metrics_wrap_sink's next sink */
	struct MHD_Daemon *daemon;
};

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->tenants.v = calloc(METRICS_MAX_TENANTS, TT_NAME_MAX);
	m->models.v = calloc(METRICS_MAX_MODELS, TT_NAME_MAX);
	if (!m->tenants.v || !m->models.v) {
		free(m->tenants.v);
		free(m->models.v);
		free(m);
		return NULL;
	}
	pthread_mutex_init(&m->lock, NULL);
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	if (m->daemon)
		MHD_stop_daemon(m->daemon);
	pthread_mutex_destroy(&m->lock);
	free(m->groups);
	free(m->attr);
	free(m->tenants.v);
	free(m->models.v);
	free(m);
}

void metrics_stop(struct metrics *m)
{
	metrics_free(m);
}

/* The name as counted: itself while there is room, else "other". */
static const char *capped(struct names *t, size_t max, const char *name)
{
	if (!name || !*name)
		name = "unknown";
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->v[i], name))
			return t->v[i];
	if (t->n + 1 >= max)	/* the last slot is kept for "other" */
		name = "other";
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->v[i], name))
			return t->v[i];
	snprintf(t->v[t->n], TT_NAME_MAX, "%s", name);
	return t->v[t->n++];
}

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap ? *cap * 2 : 16;
	void *q;

	if (need <= *cap)
		return p;
	q = realloc(p, c * size);
	if (q)
		*cap = c;
	return q;
}

static struct mgroup *group_of(struct metrics *m, const char *tenant,
			       const char *model)
{
	const char *t = capped(&m->tenants, METRICS_MAX_TENANTS, tenant);
	const char *mo = capped(&m->models, METRICS_MAX_MODELS, model);
	struct mgroup *g;

	for (size_t i = 0; i < m->ngroups; i++)
		if (!strcmp(m->groups[i].tenant, t) &&
		    !strcmp(m->groups[i].model, mo))
			return &m->groups[i];
	g = grow(m->groups, &m->capgroups, m->ngroups + 1, sizeof(*g));
	if (!g)
		return NULL;
	m->groups = g;
	g = &m->groups[m->ngroups++];
	memset(g, 0, sizeof(*g));
	snprintf(g->tenant, sizeof(g->tenant), "%s", t);
	snprintf(g->model, sizeof(g->model), "%s", mo);
	return g;
}

static struct mdev *dev_of(struct metrics *m, uint32_t id)
{
	for (size_t i = 0; i < m->ndevs; i++)
		if (m->devs[i].id == id)
			return &m->devs[i];
	if (m->ndevs == METRICS_MAX_DEVICES)
		return NULL;
	memset(&m->devs[m->ndevs], 0, sizeof(m->devs[0]));
	m->devs[m->ndevs].id = id;
	return &m->devs[m->ndevs++];
}

/* ---- updates ------------------------------------------------------------- */

void metrics_device(struct metrics *m, const struct tt_device *dev)
{
	struct mdev *d;

	pthread_mutex_lock(&m->lock);
	d = dev_of(m, dev->id);
	if (d) {
		d->cpu = dev->kind == TT_DEV_CPU;
		d->named = true;
		snprintf(d->name, sizeof(d->name), "%s", dev->name);
	}
	pthread_mutex_unlock(&m->lock);
}

void metrics_interval(struct metrics *m, const struct tt_interval *iv)
{
	struct mdev *d;

	if (iv->end_ns <= iv->start_ns)
		return;
	pthread_mutex_lock(&m->lock);
	d = dev_of(m, iv->device);
	if (d && !d->named)
		d->cpu = iv->kind == TT_IV_CPU;
	if (d && !d->last_end) {
		d->busy_ns += iv->end_ns - iv->start_ns;
		d->last_end = iv->end_ns;
	} else if (d && iv->start_ns >= d->last_end) {
		d->idle_ns += iv->start_ns - d->last_end;
		d->busy_ns += iv->end_ns - iv->start_ns;
		d->last_end = iv->end_ns;
	} else if (d && iv->end_ns > d->last_end) {
		d->busy_ns += iv->end_ns - d->last_end;
		d->last_end = iv->end_ns;
	}
	pthread_mutex_unlock(&m->lock);
}

static void hist_add(struct hist *h, const double *bounds, int nb, double v)
{
	int i = 0;

	while (i < nb && v > bounds[i])
		i++;
	if (i < nb)
		h->le[i]++;
	h->count++;
	h->sum += v;
}

static void request_hists(struct mgroup *g, const struct tt_request *q)
{
	if (q->first_token_ns && q->first_token_ns >= q->arrival_ns)
		hist_add(&g->ttft, ttft_bounds, TTFT_NB,
			 (q->first_token_ns - q->arrival_ns) / 1e9);
	for (uint32_t i = 1; q->token_ns && i < q->token_ns_len; i++)
		if (q->token_ns[i] >= q->token_ns[i - 1])
			hist_add(&g->itl, itl_bounds, ITL_NB,
				 (q->token_ns[i] - q->token_ns[i - 1]) / 1e9);
}

void metrics_request(struct metrics *m, const struct tt_request *q)
{
	struct mgroup *g;

	pthread_mutex_lock(&m->lock);
	g = group_of(m, q->tenant, q->model);
	if (g) {
		g->requests[(unsigned)q->end < NEND ? q->end : TT_END_OPEN]++;
		if (q->prompt_tokens > 0)
			g->prompt_tokens += (uint64_t)q->prompt_tokens;
		if (q->completion_tokens >= 0)
			g->completion_tokens += (uint64_t)q->completion_tokens;
		else
			g->completion_tokens += q->token_events;
		request_hists(g, q);
	}
	pthread_mutex_unlock(&m->lock);
}

static struct mattr *attr_of(struct metrics *m, uint32_t device,
			     const char *tenant)
{
	struct mattr *a;

	for (size_t i = 0; i < m->nattr; i++)
		if (m->attr[i].device == device &&
		    !strcmp(m->attr[i].tenant, tenant))
			return &m->attr[i];
	a = grow(m->attr, &m->capattr, m->nattr + 1, sizeof(*a));
	if (!a)
		return NULL;
	m->attr = a;
	a = &m->attr[m->nattr++];
	memset(a, 0, sizeof(*a));
	a->device = device;
	snprintf(a->tenant, sizeof(a->tenant), "%s", tenant);
	return a;
}

void metrics_attributed(struct metrics *m, uint32_t device,
			const char *tenant, const char *model,
			uint64_t prefill_ns, uint64_t decode_ns,
			double cost_usd)
{
	struct mgroup *g;
	struct mattr *a;

	pthread_mutex_lock(&m->lock);
	g = group_of(m, tenant, model);
	if (g) {
		g->cost_usd += cost_usd;
		a = attr_of(m, device, g->tenant);
		if (a) {
			a->prefill_ns += prefill_ns;
			a->decode_ns += decode_ns;
		}
	}
	pthread_mutex_unlock(&m->lock);
}

void metrics_losses(struct metrics *m, const struct report_losses *l)
{
	pthread_mutex_lock(&m->lock);
	m->losses = *l;
	pthread_mutex_unlock(&m->lock);
}

/* ---- the text ------------------------------------------------------------ */

/* snprintf into a buffer that keeps counting past its end. */
struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	size_t room = o->len < o->cap ? o->cap - o->len : 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

/* A label value with \, " and newline escaped (at most 64 bytes in). */
static const char *esc(const char *s, char *b, size_t cap)
{
	size_t j = 0;

	for (; *s && j + 3 < cap; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n') {
			b[j++] = '\\';
			b[j++] = *s == '\n' ? 'n' : *s;
		} else {
			b[j++] = *s;
		}
	}
	b[j] = '\0';
	return b;
}

static void head(struct out *o, const char *name, const char *type,
		 const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void dev_label(const struct mdev *d, char *b, size_t cap)
{
	snprintf(b, cap, "%s%u", d->cpu ? "cpu" : "gpu", d->id);
}

static void render_requests(struct metrics *m, struct out *o)
{
	char t[2 * TT_NAME_MAX], mo[2 * TT_NAME_MAX];

	head(o, "tokentrace_requests_total", "counter",
	     "Inference requests finished, by how they ended.");
	for (size_t i = 0; i < m->ngroups; i++)
		for (int e = 0; e < NEND; e++)
			if (m->groups[i].requests[e])
				put(o, "tokentrace_requests_total{tenant=\"%s\","
				    "model=\"%s\",status=\"%s\"} %" PRIu64 "\n",
				    esc(m->groups[i].tenant, t, sizeof(t)),
				    esc(m->groups[i].model, mo, sizeof(mo)),
				    tt_req_end_name(e), m->groups[i].requests[e]);
	head(o, "tokentrace_tokens_total", "counter",
	     "Tokens of finished requests: prompt, and completion.");
	for (size_t i = 0; i < m->ngroups; i++) {
		const struct mgroup *g = &m->groups[i];

		esc(g->tenant, t, sizeof(t));
		esc(g->model, mo, sizeof(mo));
		put(o, "tokentrace_tokens_total{tenant=\"%s\",model=\"%s\","
		    "kind=\"prompt\"} %" PRIu64 "\n", t, mo, g->prompt_tokens);
		put(o, "tokentrace_tokens_total{tenant=\"%s\",model=\"%s\","
		    "kind=\"completion\"} %" PRIu64 "\n", t, mo,
		    g->completion_tokens);
	}
}

static void render_hist(struct out *o, const char *name,
			const struct mgroup *g, const struct hist *h,
			const double *bounds, int nb)
{
	char t[2 * TT_NAME_MAX], mo[2 * TT_NAME_MAX];
	uint64_t cum = 0;

	esc(g->tenant, t, sizeof(t));
	esc(g->model, mo, sizeof(mo));
	for (int i = 0; i < nb; i++) {
		cum += h->le[i];
		put(o, "%s_bucket{tenant=\"%s\",model=\"%s\",le=\"%g\"} %"
		    PRIu64 "\n", name, t, mo, bounds[i], cum);
	}
	put(o, "%s_bucket{tenant=\"%s\",model=\"%s\",le=\"+Inf\"} %" PRIu64
	    "\n", name, t, mo, h->count);
	put(o, "%s_sum{tenant=\"%s\",model=\"%s\"} %.9f\n", name, t, mo,
	    h->sum);
	put(o, "%s_count{tenant=\"%s\",model=\"%s\"} %" PRIu64 "\n", name, t,
	    mo, h->count);
}

static void render_latency(struct metrics *m, struct out *o)
{
	head(o, "tokentrace_ttft_seconds", "histogram",
	     "Time to first token: request read to first token written.");
	for (size_t i = 0; i < m->ngroups; i++)
		if (m->groups[i].ttft.count)
			render_hist(o, "tokentrace_ttft_seconds",
				    &m->groups[i], &m->groups[i].ttft,
				    ttft_bounds, TTFT_NB);
	head(o, "tokentrace_itl_seconds", "histogram",
	     "Inter-token latency: gaps between token writes.");
	for (size_t i = 0; i < m->ngroups; i++)
		if (m->groups[i].itl.count)
			render_hist(o, "tokentrace_itl_seconds",
				    &m->groups[i], &m->groups[i].itl,
				    itl_bounds, ITL_NB);
}

static const struct mdev *find_dev(const struct metrics *m, uint32_t id)
{
	for (size_t i = 0; i < m->ndevs; i++)
		if (m->devs[i].id == id)
			return &m->devs[i];
	return NULL;
}

static void render_gpu(struct metrics *m, struct out *o)
{
	char t[2 * TT_NAME_MAX], mo[2 * TT_NAME_MAX], dl[24];

	head(o, "tokentrace_gpu_seconds_total", "counter",
	     "Device time attributed to requests, by tenant and phase.");
	for (size_t i = 0; i < m->nattr; i++) {
		const struct mattr *a = &m->attr[i];
		const struct mdev *d = find_dev(m, a->device);

		if (d)
			dev_label(d, dl, sizeof(dl));
		else
			snprintf(dl, sizeof(dl), "dev%u", a->device);
		esc(a->tenant, t, sizeof(t));
		put(o, "tokentrace_gpu_seconds_total{device=\"%s\",tenant=\"%s\","
		    "phase=\"prefill\"} %.9f\n", dl, t, a->prefill_ns / 1e9);
		put(o, "tokentrace_gpu_seconds_total{device=\"%s\",tenant=\"%s\","
		    "phase=\"decode\"} %.9f\n", dl, t, a->decode_ns / 1e9);
	}
	head(o, "tokentrace_cost_usd_total", "counter",
	     "Busy cost of the device time attributed to requests, in USD.");
	for (size_t i = 0; i < m->ngroups; i++)
		if (m->groups[i].cost_usd > 0)
			put(o, "tokentrace_cost_usd_total{tenant=\"%s\","
			    "model=\"%s\"} %.9g\n",
			    esc(m->groups[i].tenant, t, sizeof(t)),
			    esc(m->groups[i].model, mo, sizeof(mo)),
			    m->groups[i].cost_usd);
}

static void render_devices(struct metrics *m, struct out *o)
{
	char dl[24], n[128];

	head(o, "tokentrace_device_info", "gauge",
	     "Devices seen: the device label and the device's name.");
	for (size_t i = 0; i < m->ndevs; i++) {
		dev_label(&m->devs[i], dl, sizeof(dl));
		put(o, "tokentrace_device_info{device=\"%s\",name=\"%s\"} 1\n",
		    dl, esc(m->devs[i].name, n, sizeof(n)));
	}
	head(o, "tokentrace_device_busy_seconds_total", "counter",
	     "Device busy time: the union of its kernels, copies or on-CPU "
	     "intervals.");
	for (size_t i = 0; i < m->ndevs; i++) {
		dev_label(&m->devs[i], dl, sizeof(dl));
		put(o, "tokentrace_device_busy_seconds_total{device=\"%s\"} "
		    "%.9f\n", dl, m->devs[i].busy_ns / 1e9);
	}
	head(o, "tokentrace_device_idle_seconds_total", "counter",
	     "Device idle time between its first and latest busy interval.");
	for (size_t i = 0; i < m->ndevs; i++) {
		dev_label(&m->devs[i], dl, sizeof(dl));
		put(o, "tokentrace_device_idle_seconds_total{device=\"%s\"} "
		    "%.9f\n", dl, m->devs[i].idle_ns / 1e9);
	}
}

static void render_losses(struct metrics *m, struct out *o)
{
	const struct report_losses *l = &m->losses;

	head(o, "tokentrace_events_lost_total", "counter",
	     "Events the tracer lost, by source.");
	put(o, "tokentrace_events_lost_total{source=\"cpu\"} %" PRIu64 "\n",
	    l->cpu_events);
	put(o, "tokentrace_events_lost_total{source=\"sockets\"} %" PRIu64
	    "\n", l->sock_events);
	put(o, "tokentrace_events_lost_total{source=\"cupti\"} %" PRIu64 "\n",
	    l->cupti_records);
	head(o, "tokentrace_bytes_lost_total", "counter",
	     "Socket payload bytes not captured.");
	put(o, "tokentrace_bytes_lost_total{source=\"sockets\"} %" PRIu64
	    "\n", l->sock_bytes);
}

size_t metrics_render(struct metrics *m, char *buf, size_t cap)
{
	struct out o = { .buf = buf, .cap = cap };

	if (cap)
		buf[0] = '\0';
	pthread_mutex_lock(&m->lock);
	render_requests(m, &o);
	render_latency(m, &o);
	render_gpu(m, &o);
	render_devices(m, &o);
	render_losses(m, &o);
	pthread_mutex_unlock(&m->lock);
	return o.len;
}

/* ---- HTTP ---------------------------------------------------------------- */

/* The whole text in a malloc'd buffer; NULL on allocation failure. */
static char *render_alloc(struct metrics *m, size_t *len)
{
	size_t cap = 16384;

	for (int tries = 0; tries < 4; tries++) {
		char *b = malloc(cap);
		size_t n;

		if (!b)
			return NULL;
		n = metrics_render(m, b, cap);
		if (n < cap) {
			*len = n;
			return b;
		}
		free(b);
		cap = n + 4096;		/* it may grow between the calls */
	}
	return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code,
			     char *body, size_t len, const char *type)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
		len, body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
			      const char *url, const char *method,
			      const char *version, const char *upload,
			      size_t *upload_size, void **state)
{
	struct metrics *m = cls;
	size_t len = 0;
	char *body;

	(void)version; (void)upload; (void)upload_size; (void)state;
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
			     strdup("only GET\n"), 9, "text/plain");
	if (strcmp(url, "/metrics")) {
		body = strdup("tokentrace: metrics at /metrics\n");
		return reply(conn, MHD_HTTP_NOT_FOUND, body,
			     body ? strlen(body) : 0, "text/plain");
	}
	body = render_alloc(m, &len);
	if (!body)
		return MHD_NO;
	return reply(conn, MHD_HTTP_OK, body, len,
		     "text/plain; version=0.0.4; charset=utf-8");
}

int metrics_parse_addr(const char *spec, char *addr, size_t cap,
		       uint16_t *port)
{
	const char *colon = strrchr(spec, ':'), *ps = colon ? colon + 1 : spec;
	size_t alen = colon ? (size_t)(colon - spec) : 0;
	char *end;
	unsigned long p = strtoul(ps, &end, 10);

	if (!*ps || *end || p > 65535 || alen >= cap)
		return -EINVAL;
	if (alen >= 2 && spec[0] == '[' && spec[alen - 1] == ']') {
		spec++;
		alen -= 2;
	}
	memcpy(addr, spec, alen);
	addr[alen] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int metrics_serve(struct metrics *m, const char *addr, uint16_t port,
		  uint16_t *bound)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
	const union MHD_DaemonInfo *info;
	sigset_t all, old;

	if (m->daemon)
		return -EBUSY;
	if (!addr || !*addr)
		addr = "127.0.0.1";
	if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
	} else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		flags |= MHD_USE_IPv6;
	} else {
		return -EINVAL;
	}
	/* The server's thread inherits a full signal mask, so that signals
	 * sent to the process reach the thread that handles them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	m->daemon = MHD_start_daemon(flags, port, NULL, NULL, handle, m,
				     MHD_OPTION_SOCK_ADDR, &ss,
				     MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				     MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!m->daemon)
		return -EADDRINUSE;
	info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (bound)
		*bound = info ? info->port : port;
	return 0;
}

int metrics_start(const char *addr, uint16_t port, uint16_t *bound,
		  struct metrics **out)
{
	struct metrics *m = metrics_new();
	int err;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	err = metrics_serve(m, addr, port, bound);
	if (err) {
		metrics_free(m);
		return err;
	}
	*out = m;
	return 0;
}

int metrics_start_spec(const char *spec, struct metrics **out)
{
	char addr[64];
	uint16_t port, bound = 0;
	int err;

	*out = NULL;
	if (metrics_parse_addr(spec, addr, sizeof(addr), &port)) {
		fprintf(stderr, "tokentrace: --metrics '%s': use ADDR:PORT, "
			":PORT or PORT (ADDR an IP address, 127.0.0.1 if not "
			"given; PORT 0 picks a free one)\n", spec);
		return -EINVAL;
	}
	err = metrics_start(addr, port, &bound, out);
	if (err == -EINVAL)
		fprintf(stderr, "tokentrace: --metrics '%s': '%s' is not an "
			"IPv4 or IPv6 address\n", spec, addr);
	else if (err)
		fprintf(stderr, "tokentrace: --metrics '%s': cannot listen "
			"there (%s): pick another port, or an address of this "
			"host\n", spec, strerror(-err));
	else
		fprintf(stderr, "tokentrace: metrics at http://%s%s%s:%u/"
			"metrics\n", strchr(addr[0] ? addr : "", ':') ? "[" : "",
			addr[0] ? addr : "127.0.0.1",
			strchr(addr, ':') ? "]" : "", bound);
	return err;
}

static void wrap_device(void *ctx, const struct tt_device *dev)
{
	struct metrics *m = ctx;

	metrics_device(m, dev);
	if (m->inner.device)
		m->inner.device(m->inner.ctx, dev);
}

static void wrap_interval(void *ctx, const struct tt_interval *iv)
{
	struct metrics *m = ctx;

	metrics_interval(m, iv);
	if (m->inner.interval)
		m->inner.interval(m->inner.ctx, iv);
}

static void wrap_name(void *ctx, uint32_t pid, uint32_t id, const char *n)
{
	struct metrics *m = ctx;

	if (m->inner.name)
		m->inner.name(m->inner.ctx, pid, id, n);
}

static void wrap_losses(void *ctx, uint32_t pid,
			const struct tt_compute_losses *l)
{
	struct metrics *m = ctx;

	if (m->inner.losses)
		m->inner.losses(m->inner.ctx, pid, l);
}

void metrics_wrap_sink(struct metrics *m, struct tt_compute_sink *sink)
{
	m->inner = *sink;
	*sink = (struct tt_compute_sink){
		.device = wrap_device, .interval = wrap_interval,
		.name = wrap_name, .losses = wrap_losses, .ctx = m,
	};
}
