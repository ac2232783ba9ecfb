/*
 * top.c - `tokentrace top`: a live view of running servers, per tenant and
 * per model, refreshed every interval.
 *
 * In:  command-line options (see usage()); the targets' requests (and,
 *      with --compute cpu, their on-CPU time) through user/attach.c, the
 *      same machinery as `tokentrace record`; keys on stdin (q quits).
 * Out: on a terminal, a screen redrawn each interval with plain ANSI
 *      (clear and home: works over ssh, no curses); otherwise one plain
 *      text frame per interval, so a pipe or a file can read it. Each
 *      frame: per tenant and model req/s and tok/s (prompt, completion)
 *      over the last interval, TTFT p50/p99 and ITL p50 over the window,
 *      share of the device time and $ per 1M tokens (busy cost), device
 *      busy %, events lost. --metrics serves Prometheus metrics as well.
 * Assumes: one thread. The terminal (when stdin is one) goes to
 *      non-canonical, no-echo mode for single keys and is restored on
 *      every way out: q, Ctrl-C (SIGINT), SIGTERM, SIGHUP, --duration, or
 *      a failure.
 *
 * The window slides: each frame first forgets the requests and intervals
 * that ended more than --window seconds ago (collect_forget_before), so
 * memory and the work per frame are bounded by what one window holds, and
 * top can watch a server for days. Rates come from the difference of the
 * report's group totals between two frames (struct top_prev), with what
 * was forgotten taken off the previous totals as well, so a rate counts
 * exactly the requests that finished since the last frame; latencies
 * come from a summary of the window's requests made for each frame.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "attach.h"
#include "commands.h"
#include "top.h"

#define TOP_POLL_MS	100
#define TOP_TEXT_CAP	65536
#define TOP_WINDOW_S	300.0

struct top_args {
	struct attach_opts ao;
	double interval_s, duration_s;
	double window_s;		/* 0: everything since the start */
};

struct top_state {
	struct top_args a;
	struct attach at;
	struct top_prev prev;
	uint64_t start_ns;		/* when the view started */
	bool tty;			/* stdout is a terminal */
	bool raw;			/* stdin's termios changed */
	struct termios saved;
	char *text;
	uint64_t last_frame_ns;
};

static volatile sig_atomic_t top_stop;

static void on_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

/* ---- frames (pure) ------------------------------------------------------- */

static const struct report_group *find_group(const struct report_group *g,
					     size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(g[i].name, name))
			return &g[i];
	return NULL;
}

static double rate(uint64_t now, uint64_t before, double dt)
{
	return dt > 0 && now >= before ? (now - before) / dt : 0.0;
}

static void fill_row(struct top_row *row, const struct report_group *g,
		     const struct report_group *p, double dt,
		     const struct report *r)
{
	uint64_t tokens = g->prompt_tokens + g->completion_tokens;

	snprintf(row->name, sizeof(row->name), "%s", g->name);
	row->req_s = rate(g->requests, p ? p->requests : 0, dt);
	row->prompt_tok_s = rate(g->prompt_tokens,
				 p ? p->prompt_tokens : 0, dt);
	row->completion_tok_s = rate(g->completion_tokens,
				     p ? p->completion_tokens : 0, dt);
	row->share = r->busy_ns ? (double)g->gpu_ns / r->busy_ns : -1.0;
	row->usd_per_1m = r->busy_ns && tokens ?
			  g->cost_usd / tokens * 1e6 : -1.0;
	row->ttft_p50_ms = row->ttft_p99_ms = row->itl_p50_ms = -1.0;
}

static void fill_latency(struct top_row *row, const struct summary *s,
			 const char *scope)
{
	struct summary_row sr;

	if (!s || summary_get(s, scope, row->name, &sr))
		return;
	row->ttft_p50_ms = sr.ttft_p50_ms;
	row->ttft_p99_ms = sr.ttft_p99_ms;
	row->itl_p50_ms = sr.itl_p50_ms;
}

static struct top_row *build_rows(const struct report_group *g, size_t n,
				  const struct report_group *pg, size_t pn,
				  double dt, const struct report *r,
				  const struct summary *s, const char *scope)
{
	struct top_row *rows = calloc(n ? n : 1, sizeof(*rows));

	for (size_t i = 0; rows && i < n; i++) {
		fill_row(&rows[i], &g[i], find_group(pg, pn, g[i].name), dt,
			 r);
		fill_latency(&rows[i], s, scope);
	}
	return rows;
}

static int copy_groups(struct report_group **dst, size_t *ndst,
		       const struct report_group *src, size_t n)
{
	struct report_group *c = malloc((n ? n : 1) * sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (n)
		memcpy(c, src, n * sizeof(*c));
	free(*dst);
	*dst = c;
	*ndst = n;
	return 0;
}

static void fill_devices(struct top_frame *f, const struct report *r)
{
	f->ndevs = 0;
	for (size_t i = 0; i < r->ndevs && f->ndevs < TOP_MAX_DEVS; i++) {
		struct top_device *d = &f->devs[f->ndevs++];

		snprintf(d->name, sizeof(d->name), "%s", r->devs[i].dev.name);
		d->busy_pct = r->window_ns ?
			      100.0 * r->devs[i].busy_ns / r->window_ns : 0.0;
	}
}

int top_frame_build(const struct report *r, const struct summary *s,
		    struct top_prev *prev, double interval_s,
		    struct top_frame *f)
{
	const struct report_losses *l = &r->losses;

	f->window_s = r->window_ns / 1e9;
	f->interval_s = interval_s;
	snprintf(f->share_label, sizeof(f->share_label), "%s",
		 !strcmp(r->compute, "cupti") ? "GPU" : "CPU");
	fill_devices(f, r);
	f->events_lost = l->sock_events + l->cpu_events + l->cupti_records;
	f->bytes_lost = l->sock_bytes;
	f->tenants = build_rows(r->tenants, r->ntenants, prev->tenants,
				prev->ntenants, interval_s, r, s, "tenant");
	f->models = build_rows(r->models, r->nmodels, prev->models,
			       prev->nmodels, interval_s, r, s, "model");
	f->ntenants = r->ntenants;
	f->nmodels = r->nmodels;
	if (!f->tenants || !f->models ||
	    copy_groups(&prev->tenants, &prev->ntenants, r->tenants,
			r->ntenants) ||
	    copy_groups(&prev->models, &prev->nmodels, r->models, r->nmodels))
		return -ENOMEM;
	return 0;
}

void top_frame_free(struct top_frame *f)
{
	free(f->tenants);
	free(f->models);
	f->tenants = f->models = NULL;
	f->ntenants = f->nmodels = 0;
}

/* *v -= d where d > 0 (as group_add counts only positive token counts),
 * never below 0. */
static void take(uint64_t *v, int64_t d)
{
	if (d > 0)
		*v = *v > (uint64_t)d ? *v - (uint64_t)d : 0;
}

/* Take q's counts off group `name` of g (n groups), as group_add gave
 * them; a group g lacks has nothing to take off. */
static void group_take(struct report_group *g, size_t n, const char *name,
		       const struct tt_request *q)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(g[i].name, name)) {
			take(&g[i].requests, 1);
			take(&g[i].prompt_tokens, q->prompt_tokens);
			take(&g[i].completion_tokens, q->completion_tokens);
			return;
		}
}

void top_prev_forget(struct top_prev *p, const struct tt_request *q)
{
	group_take(p->tenants, p->ntenants, report_tenant_of(q), q);
	group_take(p->models, p->nmodels, report_model_of(q), q);
}

void top_prev_free(struct top_prev *p)
{
	free(p->tenants);
	free(p->models);
	memset(p, 0, sizeof(*p));
}

/* ---- rendering (pure) ---------------------------------------------------- */

struct top_buf {
	char *p;
	size_t cap, len;
};

static void put(struct top_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void put(struct top_buf *b, const char *fmt, ...)
{
	size_t room = b->len < b->cap ? b->cap - b->len : 0;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += n;
}

/* A number in a column of width w, or "-" when negative. */
static void put_num(struct top_buf *b, int w, int prec, double v,
		    const char *suffix)
{
	if (v < 0)
		put(b, " %*s", w, "-");
	else
		put(b, " %*.*f%s", w - (int)strlen(suffix), prec, v, suffix);
}

static void put_rows(struct top_buf *b, const char *title,
		     const struct top_row *rows, size_t n, const char *share)
{
	put(b, "\n%-20s %8s %10s %10s %9s %9s %8s %7s %10s\n", title,
	    "req/s", "prm tok/s", "cmp tok/s", "ttft p50", "ttft p99",
	    "itl p50", share, "$/1M tok");
	if (!n)
		put(b, "  (no finished request yet)\n");
	for (size_t i = 0; i < n; i++) {
		const struct top_row *r = &rows[i];

		put(b, "%-20.20s", r->name);
		put_num(b, 8, 2, r->req_s, "");
		put_num(b, 10, 1, r->prompt_tok_s, "");
		put_num(b, 10, 1, r->completion_tok_s, "");
		put_num(b, 9, 1, r->ttft_p50_ms, "");
		put_num(b, 9, 1, r->ttft_p99_ms, "");
		put_num(b, 8, 2, r->itl_p50_ms, "");
		put_num(b, 7, 1, r->share >= 0 ? 100.0 * r->share : -1, "%");
		put_num(b, 10, 4, r->usd_per_1m, "");
		put(b, "\n");
	}
}

static void put_header(struct top_buf *b, const struct top_frame *f)
{
	put(b, "tokentrace top - %s - window %.1f s, every %.1f s "
	    "(q or Ctrl-C quits)\n", f->target[0] ? f->target : "-",
	    f->window_s, f->interval_s);
	put(b, "devices:");
	if (!f->ndevs)
		put(b, " none traced (--compute cpu adds the CPU)");
	for (size_t i = 0; i < f->ndevs; i++)
		put(b, " %s busy %.1f%%", f->devs[i].name,
		    f->devs[i].busy_pct);
	put(b, "; lost: %llu events, %llu bytes\n",
	    (unsigned long long)f->events_lost,
	    (unsigned long long)f->bytes_lost);
}

size_t top_render(const struct top_frame *f, bool ansi, char *buf,
		  size_t cap)
{
	struct top_buf b = { buf, cap, 0 };
	char share[16];

	if (cap)
		buf[0] = 0;
	if (ansi)
		put(&b, "\033[H\033[2J");
	put_header(&b, f);
	snprintf(share, sizeof(share), "%s %%", f->share_label);
	put_rows(&b, "TENANT", f->tenants, f->ntenants, share);
	put_rows(&b, "MODEL", f->models, f->nmodels, share);
	if (!ansi)
		put(&b, "\n");
	return b.len;
}

/* ---- arguments ----------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace top [--pid P | --port N | --comm NAME | --cgroup PATH]\n"
"                      [--compute cpu] [--interval S] [--window S]\n"
"                      [--duration S] [--metrics ADDR:PORT]\n"
"                      [--tenant-key KEY] ...\n"
"\n"
"A live view of running servers, per tenant and per model: requests and\n"
"tokens per second over the last interval, TTFT and inter-token latency,\n"
"share of the device time and $ per 1M tokens (with --compute cpu),\n"
"device busy %%, events lost. On a terminal the screen is redrawn (q or\n"
"Ctrl-C quits); otherwise one plain text frame is printed per interval.\n"
"\n"
ATTACH_HELP
"  --interval S       seconds between frames (default 1)\n"
"  --duration S       stop after S seconds (default: at q, SIGINT, SIGTERM)\n");
}

static int parse_seconds(const char *s, const char *what, double *v)
{
	char *end;

	*v = strtod(s, &end);
	if (*end || end == s || *v <= 0) {
		fprintf(stderr, "tokentrace top: %s '%s' is not a positive "
			"number of seconds\n", what, s);
		return -1;
	}
	return 0;
}

/* 0 ok, 1 help shown, -1 usage error. */
static int parse_args(int argc, char **argv, struct top_args *a)
{
	static const struct option longopts[] = {
		ATTACH_LONGOPTS,
		{ "interval", required_argument, 0, 'i' },
		{ "duration", required_argument, 0, 'd' },
		{ "window", required_argument, 0, 'w' },
		{ "help", no_argument, 0, 'h' },
		{ 0 }
	};
	int opt, r;

	optind = 1;
	a->ao.cmd = "top";
	a->ao.hooks = hooks_default();
	a->interval_s = 1.0;
	a->window_s = TOP_WINDOW_S;
	while ((opt = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
		r = attach_parse_opt(&a->ao, opt == 'v' ? ATTACH_OPT_VERBOSE :
				     opt, optarg);
		if (r < 0)
			return -1;
		if (!r)
			continue;
		if (opt == 'i' && parse_seconds(optarg, "--interval",
						&a->interval_s))
			return -1;
		else if (opt == 'd' && parse_seconds(optarg, "--duration",
						     &a->duration_s))
			return -1;
		else if (opt == 'w' && strcmp(optarg, "0") &&
			 parse_seconds(optarg, "--window", &a->window_s))
			return -1;
		else if (opt == 'w' && !strcmp(optarg, "0"))
			a->window_s = 0;
		else if (opt == 'h') {
			usage(stdout);
			return 1;
		} else if (opt != 'i' && opt != 'd' && opt != 'w') {
			usage(stderr);
			return -1;
		}
	}
	if (attach_check_opts(&a->ao) || optind != argc) {
		usage(stderr);
		return -1;
	}
	if (a->window_s > 0 && a->window_s < 2 * a->interval_s) {
		fprintf(stderr, "tokentrace top: --window %g s must be at least "
			"two intervals (--interval %g s)\n", a->window_s,
			a->interval_s);
		return -1;
	}
	return 0;
}

/* ---- the terminal -------------------------------------------------------- */

/* Single keys without echo, when stdin is a terminal. */
static void term_raw(struct top_state *ts)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &ts->saved))
		return;
	t = ts->saved;
	t.c_lflag &= ~(ICANON | ECHO);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (!tcsetattr(STDIN_FILENO, TCSANOW, &t))
		ts->raw = true;
}

static void term_restore(struct top_state *ts)
{
	if (ts->raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &ts->saved);
	ts->raw = false;
	if (ts->tty) {
		fputs("\033[?25h\n", stdout);	/* cursor back */
		fflush(stdout);
	}
}

/* True when q (or Q) was typed. */
static bool key_quit(const struct top_state *ts)
{
	struct pollfd p = { STDIN_FILENO, POLLIN, 0 };
	char c;

	if (!ts->raw)
		return false;
	while (poll(&p, 1, 0) > 0 && read(STDIN_FILENO, &c, 1) == 1)
		if (c == 'q' || c == 'Q')
			return true;
	return false;
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* ---- running ------------------------------------------------------------- */

static void describe_target(const struct attach_opts *o, char *out,
			    size_t cap)
{
	if (o->pid)
		snprintf(out, cap, "pid %d", (int)o->pid);
	else if (o->port)
		snprintf(out, cap, "port %d", o->port);
	else if (o->comm)
		snprintf(out, cap, "comm %s", o->comm);
	else
		snprintf(out, cap, "cgroup %s", o->cgroup);
}

/* q leaves the window: take it off the previous frame's totals too, so
 * that the next rates count only what finished since (build_groups'
 * names and counts). */
static void forget_request(void *ctx, const struct tt_request *q)
{
	struct top_state *ts = ctx;

	top_prev_forget(&ts->prev, q);
}

/* The latencies of the window's requests. NULL on allocation failure. */
static struct summary *window_summary(const struct report *r)
{
	struct summary *s = summary_new();

	for (size_t i = 0; s && i < r->nreqs; i++)
		summary_add(s, &r->reqs[i].req);
	return s;
}

/* One frame to stdout. 0, or -1 when it cannot be shown (stop). */
static int show_frame(struct top_state *ts, uint64_t now, double dt)
{
	uint64_t w = (uint64_t)(ts->a.window_s * 1e9);
	struct top_frame f = { 0 };
	struct summary *s = NULL;
	struct report r;
	size_t n;
	int err;

	if (w && now - ts->start_ns > w)
		collect_forget_before(&ts->at.c, now - w, forget_request, ts);
	err = attach_report(&ts->at, &r);
	if (!err) {
		describe_target(&ts->a.ao, f.target, sizeof(f.target));
		s = window_summary(&r);
		err = s ? top_frame_build(&r, s, &ts->prev, dt, &f) : -ENOMEM;
	}
	if (!err) {
		n = top_render(&f, ts->tty, ts->text, TOP_TEXT_CAP);
		if (n >= TOP_TEXT_CAP)
			n = TOP_TEXT_CAP - 1;
		if (fwrite(ts->text, 1, n, stdout) != n || fflush(stdout))
			err = -EIO;
	}
	top_frame_free(&f);
	summary_free(s);
	report_free(&r);
	return err ? -1 : 0;
}

static void view_loop(struct top_state *ts)
{
	uint64_t start = attach_now_ns(), now;
	uint64_t every = (uint64_t)(ts->a.interval_s * 1e9);
	uint64_t end = ts->a.duration_s > 0 ?
		       start + (uint64_t)(ts->a.duration_s * 1e9) : 0;

	ts->last_frame_ns = ts->start_ns = start;
	while (!top_stop && !key_quit(ts)) {
		if (attach_poll(&ts->at, TOP_POLL_MS) < 0)
			break;
		now = attach_now_ns();
		if (now - ts->last_frame_ns >= every) {
			if (show_frame(ts, now,
				       (now - ts->last_frame_ns) / 1e9))
				break;
			ts->last_frame_ns = now;
		}
		if (end && now >= end)
			break;
	}
}

static int run(struct top_state *ts)
{
	int ret;

	attach_init(&ts->at, &ts->a.ao);
	ret = attach_open(&ts->at);
	if (!ret) {
		install_signals();
		ts->tty = isatty(STDOUT_FILENO);
		if (ts->tty) {
			term_raw(ts);
			fputs("\033[?25l", stdout);	/* hide the cursor */
		}
		view_loop(ts);
		term_restore(ts);
	}
	attach_close(&ts->at);
	return ret;
}

int cmd_top(int argc, char **argv)
{
	struct top_state *ts;
	int ret;

	ts = calloc(1, sizeof(*ts));
	if (!ts)
		return TT_EXIT_FAIL;
	ret = parse_args(argc, argv, &ts->a);
	if (ret) {
		free(ts);
		return ret > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	}
	ts->text = malloc(TOP_TEXT_CAP);
	ret = ts->text ? run(ts) : TT_EXIT_FAIL;
	top_prev_free(&ts->prev);
	free(ts->text);
	free(ts);
	return ret;
}
