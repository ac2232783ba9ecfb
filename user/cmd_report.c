/*
 * cmd_report.c - `tokentrace report FILE` and `tokentrace diff A B`: the
 * offline side of a trace file.
 *
 * In:  trace files (user/tracefile.h): one, several or a folder read as
 *      one trace by chain_read (user/chain.h), --from/--to a part; prices
 *      from --price / --price-file (defaults: COLLECT_GPU_USD_PER_HOUR per
 *      GPU-hour, COLLECT_CPU_USD_PER_HOUR per hour of the CPU device).
 * Out: report: the report of report_build as text (default) or JSON, on
 *      stdout or -o OUT (mode 0600). diff: the host facts that differ
 *      between the two headers, then per-token cost, latency, idle and
 *      cost-model figures of both with absolute and relative change.
 * Assumes: no root, BTF or GPU: reading a trace only reads a file. A
 *      trace with bad blocks is reported from its valid blocks; what was
 *      skipped is said on stderr and counted under losses.trace.
 *      Reading shows progress on stderr when it is a terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chain.h"
#include "collect.h"
#include "commands.h"
#include "hostinfo.h"
#include "html.h"
#include "prices.h"
#include "progress.h"
#include "quantile.h"
#include "report.h"
#include "shard.h"
#include "tracefile.h"

enum rc_format { RC_TEXT, RC_JSON, RC_HTML };

struct rc_args {
	enum rc_format format;
	const char *out;
	char **files;		/* report: one trace of them all; diff: two */
	int nfiles;
	struct chain_time from, to;
	struct prices prices;
	uint64_t shard_events;	/* 0: SHARD_EVENTS_DEFAULT */
	int jobs;
	bool shard_all_blocks;	/* the check of the block selection */
};

/* One loaded trace and its report. */
struct rc_trace {
	struct collect c;
	struct tracefile_header hdr;
	struct report r;
	bool built;
	size_t nfiles;		/* trace files read */
	/* reported by shards (user/shard.h): the requests as written, and
	   the per-device counts of the shards */
	FILE *requests;
	size_t nrequests;
	struct shard_trace st;
	bool sharded;
	/* diff of a trace reported by shards: the latencies of the
	   requests as they were done (ns) */
	bool latencies;
	struct quantile ttft, itl;
	/* --format html: the charts, gathered as the trace is read */
	struct html_series *html;
};

static void report_usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace report TRACE... [--format text|json|html] [-o OUT]\n"
"                        [--from T] [--to T]\n"
"                        [--price USD_PER_HOUR | --price NAME=USD,...]\n"
"                        [--price-file F]\n"
"\n"
"Reads a trace file written by `tokentrace run -o` or `record -o` and\n"
"prints the same report the live run gave: devices busy and idle, each\n"
"request's, tenant's and model's device time and cost, the step cost\n"
"model and the findings. Needs no root, BTF or GPU. A damaged trace is\n"
"reported from its valid blocks; what was skipped is said on stderr.\n"
"Several files, or folders of them (the chain `record --rotate` writes),\n"
"are read as one trace in the order they began; traces of several hosts\n"
"give one report with the host as a dimension.\n"
"\n"
"  --format F     text (default), json (DESIGN.md's report object, plus\n"
"                 \"trace\", \"host\" and \"prices\"), or html (one\n"
"                 self-contained file with charts)\n"
"  --price X      USD per device-hour for every device\n"
"  --price L      NAME=USD,... per device model name, as the report shows\n"
"                 it (\"NVIDIA H100 80GB HBM3=4.10\"); the names gpu and\n"
"                 cpu set the price of any GPU / the CPU device\n"
"  --price-file F lines 'DEVICE NAME = USD' ('#' starts a comment)\n"
"  -o OUT         write to OUT (mode 0600) instead of stdout\n"
"  --jobs N       shards of a long trace reported at once (default 1)\n"
"  --shard-events N  a trace of more events than N (default %llu) is\n"
"                 read twice and reported a time range of at most N\n"
"                 events at a time, in memory bounded by one range; each\n"
"                 range has its own steps and cost model, and a request\n"
"                 that spans ranges sums its parts; 0: never\n"
"  --from T       only what overlaps the range from T (default: the\n"
"  --to T         start) to T (default: the end); T is a time into the\n"
"                 trace (90, 90s, 15m, 2h) or a UTC date and time\n"
"                 (2026-12-03T10:00:00); a request that spans an edge\n"
"                 is counted with its device time inside the range\n"
"\n"
"Without a price a GPU costs %.2f USD/hour and the CPU device %.2f\n"
"USD/hour; the text report marks such prices \"(default)\".\n",
		(unsigned long long)SHARD_EVENTS_DEFAULT,
		COLLECT_GPU_USD_PER_HOUR, COLLECT_CPU_USD_PER_HOUR);
}

static void diff_usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace diff A B [--format text|json] [--price ...]\n"
"                           [--price-file F] [-o OUT] [--from T] [--to T]\n"
"                           [--jobs N] [--shard-events N]\n"
"\n"
"Two traces side by side, for the tuning session that changed one thing:\n"
"first the host facts that differ between their headers (kernel, command\n"
"line, governor, hugepages, GPU driver ...), then per-token cost overall\n"
"and per model, TTFT and ITL p50/p99, idle fractions, the fitted step\n"
"cost model, requests/s and tokens/s, each with its absolute and\n"
"relative change from A to B. Prices as for `tokentrace report`.\n"
"A trace of more than --shard-events events (default %llu) is read a\n"
"time range at a time, as `report` reads it (--jobs N ranges at once):\n"
"its TTFT and ITL percentiles then come from a histogram, within 0.05%%,\n"
"and its cost model is the busiest range's.\n",
		(unsigned long long)SHARD_EVENTS_DEFAULT);
}

static void free_args(struct rc_args *a)
{
	prices_free(&a->prices);
}

static int parse_time(const char *opt, const char *s, struct chain_time *t)
{
	if (!chain_parse_time(s, t))
		return 0;
	fprintf(stderr, "tokentrace: --%s '%s': give seconds into the trace "
		"(90, 90s, 15m, 2h) or a UTC time (2026-12-03T10:00:00)\n",
		opt, s);
	return -1;
}

/* ---- arguments ----------------------------------------------------------- */

/* 0 ok, 1 help shown, -1 usage error. */
static int parse_args(int argc, char **argv, struct rc_args *a, int nfiles,
		      void (*usage)(FILE *))
{
	static const struct option longopts[] = {
		{ "format", required_argument, 0, 'f' },
		{ "price", required_argument, 0, 'p' },
		{ "price-file", required_argument, 0, 'P' },
		{ "output", required_argument, 0, 'o' },
		{ "from", required_argument, 0, 'F' },
		{ "to", required_argument, 0, 'T' },
		{ "jobs", required_argument, 0, 'j' },
		{ "shard-events", required_argument, 0, 'S' },
		{ "shard-all-blocks", no_argument, 0, 'B' },
		{ "help", no_argument, 0, 'h' },
		{ 0 }
	};
	int opt;

	prices_init(&a->prices);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			if (!strcmp(optarg, "text"))
				a->format = RC_TEXT;
			else if (!strcmp(optarg, "json"))
				a->format = RC_JSON;
			else if (!strcmp(optarg, "html") && nfiles == 1)
				a->format = RC_HTML;
			else {
				fprintf(stderr, "tokentrace: --format '%s': "
					"use text or json%s\n", optarg,
					nfiles == 1 ? " or html" : "");
				return -1;
			}
			break;
		case 'p':
			if (prices_parse(&a->prices, optarg))
				return -1;
			break;
		case 'P':
			if (prices_read_file(&a->prices, optarg))
				return -1;
			break;
		case 'o': a->out = optarg; break;
		case 'F':
			if (parse_time("from", optarg, &a->from))
				return -1;
			break;
		case 'T':
			if (parse_time("to", optarg, &a->to))
				return -1;
			break;
		case 'j':
			if (shard_parse_jobs(optarg, &a->jobs))
				return -1;
			break;
		case 'S':
			if (shard_parse_events(optarg, &a->shard_events))
				return -1;
			break;
		case 'B': a->shard_all_blocks = true; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	a->files = argv + optind;
	a->nfiles = argc - optind;
	/* report: any number, one trace; diff: two, each a file or folder */
	if (nfiles > 1 ? a->nfiles != nfiles : a->nfiles < 1) {
		fprintf(stderr, "tokentrace: expected %s\n", nfiles > 1 ?
			"two traces (files or folders)" :
			"a trace file (or several, or a folder)");
		usage(stderr);
		return -1;
	}
	return 0;
}

static FILE *open_out(const char *path)
{
	int fd;
	FILE *f;

	if (!path)
		return stdout;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) || !(f = fdopen(fd, "w"))) {
		fprintf(stderr, "tokentrace: cannot write %s: %s\n", path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	return f;
}

static int close_out(FILE *f, const char *path)
{
	int bad = ferror(f);

	if (f == stdout)
		return fflush(f) || bad ? -EIO : 0;
	if (fclose(f) || bad) {
		fprintf(stderr, "tokentrace: writing %s failed\n", path);
		return -EIO;
	}
	return 0;
}

/* ---- loading ------------------------------------------------------------- */

/* chain_read, with progress on a terminal. */
static int load_with_progress(struct rc_trace *t, char *const *paths, int n,
			      const struct rc_args *a)
{
	struct progress p;
	bool tty = isatty(STDERR_FILENO);
	int err;

	progress_init(&p);
	if (tty)
		tracefile_set_progress(progress_read, &p);
	err = chain_read(&t->c, paths, n, &a->from, &a->to, &t->hdr, stderr,
			 &t->nfiles);
	if (tty)
		tracefile_set_progress(NULL, NULL);
	return err;
}

static int load_trace(struct rc_trace *t, char *const *paths, int n,
		      const struct rc_args *a)
{
	const char *path = paths[0];
	struct collect_prices p = prices_for_report(&a->prices);
	struct report_input in;
	int err;

	collect_init(&t->c);
	err = load_with_progress(t, paths, n, a);
	if (err) {
		if (err == -EBADMSG)
			fprintf(stderr, "tokentrace: %s: cannot report: the "
				"trace's header is unreadable\n", path);
		return err;
	}
	if (t->c.trace_blocks_skipped)
		fprintf(stderr, "tokentrace: %s: %llu blocks read, %llu "
			"skipped (%llu bytes, %llu records)%s; reporting what "
			"is valid\n", path,
			(unsigned long long)t->c.trace_blocks_ok,
			(unsigned long long)t->c.trace_blocks_skipped,
			(unsigned long long)t->c.trace_bytes_skipped,
			(unsigned long long)t->c.trace_records_skipped,
			t->c.trace_cut ? ", the trace is cut short" : "");
	err = collect_report_input(&t->c, &p, &in);
	if (!err) {
		err = report_build(&in, &t->r);
		t->built = true;
	}
	if (err)
		fprintf(stderr, "tokentrace: %s: cannot build the report: %s"
			"\n", path, strerror(-err));
	return err;
}

static void free_trace(struct rc_trace *t)
{
	if (t->built)
		report_free(&t->r);
	collect_free(&t->c);
	if (t->sharded) {
		free(t->st.on_cpu_ns);
		free(t->st.intervals);
		if (t->st.marks.side)
			fclose(t->st.marks.side);
	}
	if (t->requests)
		fclose(t->requests);
	quantile_free(&t->ttft);
	quantile_free(&t->itl);
}

/* A streamed report's request, done: written out for the JSON report. */
static int put_request(void *ctx, const struct report_request *q)
{
	struct rc_trace *t = ctx;
	const struct tt_request *r = &q->req;

	if (t->latencies && r->ttft_ms >= 0 &&
	    quantile_add(&t->ttft, (uint64_t)llround(r->ttft_ms * 1e6)))
		return -ENOMEM;
	for (uint32_t k = 1; t->latencies && r->token_ns &&
	     k < r->token_ns_len; k++)
		if (quantile_add(&t->itl, r->token_ns[k] - r->token_ns[k - 1]))
			return -ENOMEM;
	if (t->html && html_series_request(t->html, r))
		return -ENOMEM;
	if (!t->requests)
		return 0;
	if (t->nrequests++ && fputc(',', t->requests) == EOF)
		return -EIO;
	return report_request_write_json(q, t->requests);
}

static int html_begin(void *ctx, uint64_t start_ns, uint64_t end_ns)
{
	struct rc_trace *t = ctx;

	html_series_init(t->html, start_ns, end_ns);
	return 0;
}

static int html_part(void *ctx, uint32_t index, uint64_t from,
		     const struct report *rep, const struct collect *c)
{
	struct rc_trace *t = ctx;

	(void)index;
	(void)from;
	return html_series_part(t->html, rep, c);
}

/*
 * A long trace, reported by shards: 0 (t filled), 1 (it fits in one:
 * load_trace it), or an error (said).
 */
static int shard_trace(struct rc_trace *t, char *const *paths, int n,
		       const struct rc_args *a, bool keep_requests)
{
	struct collect_prices p = prices_for_report(&a->prices);
	struct shard_cfg cfg = {
		.paths = paths, .npaths = n, .from = &a->from, .to = &a->to,
		.prices = &p, .max_events = a->shard_events,
		.jobs = a->jobs, .all_blocks = a->shard_all_blocks,
		.log = stderr, .request = put_request, .ctx = t,
		.marks = keep_requests,
		.begin = t->html ? html_begin : NULL,
		.part = t->html ? html_part : NULL,
	};
	struct progress pr;
	int err;

	progress_on_terminal(&pr, &cfg);

	if (a->shard_events == UINT64_MAX ||
	    shard_small(paths, n, a->shard_events))
		return 1;
	if (keep_requests && !(t->requests = tmpfile())) {
		fprintf(stderr, "tokentrace: report: no temporary file for the "
			"requests: %s\n", strerror(errno));
		return -errno;
	}
	err = shard_report(&cfg, &t->st, &t->r);
	if (err) {
		if (t->requests)
			fclose(t->requests);
		t->requests = NULL;
		t->nrequests = 0;
		if (err < 0)
			fprintf(stderr, "tokentrace: %s: cannot build the "
				"report: %s\n", paths[0], strerror(-err));
		return err;
	}
	t->c = t->st.c;
	memset(&t->st.c, 0, sizeof(t->st.c));
	t->hdr = t->st.hdr;
	t->nfiles = t->st.nfiles;
	t->built = t->sharded = true;
	return 0;
}

/* "2026-11-27 03:48:36 UTC" for the header's wall clock. */
static void fmt_date(uint64_t wall_ns, char *buf, size_t cap)
{
	time_t s = (time_t)(wall_ns / 1000000000ull);
	struct tm tm;

	if (!gmtime_r(&s, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC",
					    &tm))
		snprintf(buf, cap, "unknown");
}

/* Wall-clock date of a monotonic time of this trace. */
static uint64_t wall_of(const struct tracefile_header *h, uint64_t mono)
{
	return h->wall_ns + (mono - h->mono_ns);
}

/* ---- report -------------------------------------------------------------- */

static void add_trace_json(cJSON *root, const struct rc_trace *t,
			   const char *path)
{
	cJSON *o = cJSON_AddObjectToObject(root, "trace");
	cJSON *h = cJSON_AddObjectToObject(root, "host");
	cJSON *l = cJSON_GetObjectItem(root, "losses");
	struct hostinfo_field f[HOSTINFO_NFIELDS];
	char date[64];

	fmt_date(wall_of(&t->hdr, t->c.start_ns), date, sizeof(date));
	if (o) {
		cJSON_AddStringToObject(o, "file", path);
		cJSON_AddNumberToObject(o, "files", (double)t->nfiles);
		cJSON_AddNumberToObject(o, "format_version", t->hdr.version);
		cJSON_AddStringToObject(o, "started_at", date);
		cJSON_AddStringToObject(o, "boot_id", t->hdr.boot_id);
		cJSON_AddNumberToObject(o, "blocks_ok", t->c.trace_blocks_ok);
		cJSON_AddBoolToObject(o, "cut", t->c.trace_cut);
		cJSON_AddBoolToObject(o, "window_closed", t->c.window_closed);
	}
	hostinfo_fields(&t->hdr.host, f);
	for (int i = 0; h && i < HOSTINFO_NFIELDS; i++)
		cJSON_AddStringToObject(h, f[i].name, f[i].value);
	o = l ? cJSON_AddObjectToObject(l, "trace") : NULL;
	if (o) {
		cJSON_AddNumberToObject(o, "blocks", t->c.trace_blocks_skipped);
		cJSON_AddNumberToObject(o, "bytes", t->c.trace_bytes_skipped);
		cJSON_AddNumberToObject(o, "records",
					t->c.trace_records_skipped);
	}
}

static void add_prices_json(cJSON *root, const struct rc_trace *t)
{
	cJSON *arr = cJSON_AddArrayToObject(root, "prices");

	for (size_t i = 0; arr && i < t->r.ndevs; i++) {
		const struct report_device *d = &t->r.devs[i];
		cJSON *o = cJSON_CreateObject();

		if (!o)
			return;
		cJSON_AddStringToObject(o, "device", d->dev.name);
		cJSON_AddNumberToObject(o, "usd_per_hour", d->usd_per_hour);
		cJSON_AddBoolToObject(o, "default",
				      collect_price_is_default(&t->c,
							       d->dev.name));
		cJSON_AddItemToArray(arr, o);
	}
}

static int write_json(const struct rc_trace *t, const char *path, FILE *f)
{
	cJSON *root = t->sharded ?
		collect_report_json_shell_counted(&t->c, &t->r,
						  t->st.on_cpu_ns,
						  t->st.intervals) :
		collect_report_json_shell(&t->c, &t->r);

	if (!root)
		return -ENOMEM;
	add_trace_json(root, t, path);
	add_prices_json(root, t);
	if (t->sharded)
		return report_print_json_from(root, t->requests,
					      &t->st.marks, f);
	return report_print_json(root, &t->r, f);
}

/* Prices a user did not give are defaults: the text says so. */
static bool is_default(const struct rc_trace *t, const struct rc_args *a,
		       const struct report_device *d)
{
	if (!collect_price_is_default(&t->c, d->dev.name))
		return false;
	return d->dev.kind == TT_DEV_CPU ? a->prices.cpu < 0 :
	       a->prices.gpu < 0;
}

static int write_text(const struct rc_trace *t, const struct rc_args *a,
		      const char *path, FILE *f)
{
	char date[64];
	int err;

	fmt_date(wall_of(&t->hdr, t->c.start_ns), date, sizeof(date));
	fprintf(f, "trace %s", path);
	if (t->nfiles > 1)
		fprintf(f, " (%zu files read as one)", t->nfiles);
	fprintf(f, ": host %s, kernel %s, started %s, %llu blocks read",
		t->c.nhosts > 1 ? "(several)" : t->hdr.host.hostname,
		t->hdr.host.kernel, date,
		(unsigned long long)t->c.trace_blocks_ok);
	if (t->c.trace_blocks_skipped)
		fprintf(f, ", %llu skipped (%llu bytes)%s",
			(unsigned long long)t->c.trace_blocks_skipped,
			(unsigned long long)t->c.trace_bytes_skipped,
			t->c.trace_cut ? ", cut short" : "");
	if (!t->c.window_closed)
		fprintf(f, "; not closed: the window ends at the last block");
	if (t->sharded)
		fprintf(f, "; %llu events, reported in %u time ranges, each "
			"with its own steps and cost model (the model shown "
			"is the busiest range's)",
			(unsigned long long)t->st.events, t->r.shards);
	fprintf(f, "\n\n");
	err = report_write_text(&t->r, f);
	fprintf(f, "\nprices (USD per device-hour):");
	for (size_t i = 0; i < t->r.ndevs; i++)
		fprintf(f, "%s %s %.2f%s", i ? "," : "", t->r.devs[i].dev.name,
			t->r.devs[i].usd_per_hour,
			is_default(t, a, &t->r.devs[i]) ? " (default)" : "");
	fputc('\n', f);
	return err ? err : ferror(f) ? -EIO : 0;
}

int cmd_report(int argc, char **argv)
{
	struct rc_args a = { 0 };
	struct rc_trace t = { 0 };
	struct html_series html = { 0 };
	FILE *f = NULL;
	int ret = parse_args(argc, argv, &a, 1, report_usage), err;

	if (ret) {
		free_args(&a);
		return ret > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	}
	if (a.format == RC_HTML)
		t.html = &html;
	err = shard_trace(&t, a.files, a.nfiles, &a, a.format == RC_JSON);
	if (err > 0)
		err = load_trace(&t, a.files, a.nfiles, &a);
	if (!err && !(f = open_out(a.out)))
		err = -EIO;
	if (!err && a.format == RC_JSON)
		err = write_json(&t, a.files[0], f);
	else if (!err && a.format == RC_HTML && t.sharded)
		err = html_write(&t.r, &html, &t.c, f);
	else if (!err && a.format == RC_HTML)
		err = html_write_report(&t.r, &t.c, f);
	else if (!err)
		err = write_text(&t, &a, a.files[0], f);
	if (f && close_out(f, a.out ? a.out : "stdout") && !err)
		err = -EIO;
	free_trace(&t);
	html_series_free(&html);
	free_args(&a);
	return err ? TT_EXIT_FAIL : TT_EXIT_OK;
}

/* ---- diff ---------------------------------------------------------------- */

struct rc_row {
	char name[128];
	double a, b;		/* NAN: not in that trace */
};

struct rc_rows {
	struct rc_row *v;
	size_t n, cap;
};

static struct rc_row *row_find(struct rc_rows *rs, const char *name)
{
	for (size_t i = 0; i < rs->n; i++)
		if (!strcmp(rs->v[i].name, name))
			return &rs->v[i];
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 32;
		void *p = realloc(rs->v, cap * sizeof(*rs->v));

		if (!p)
			return NULL;
		rs->v = p;
		rs->cap = cap;
	}
	struct rc_row *r = &rs->v[rs->n++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->a = r->b = NAN;
	return r;
}

/* Set side (0: A, 1: B) of the row called name. */
static void row_set(struct rc_rows *rs, int side, double v,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void row_set(struct rc_rows *rs, int side, double v,
		    const char *fmt, ...)
{
	char name[128];
	struct rc_row *r;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	r = row_find(rs, name);
	if (!r)
		return;
	if (side)
		r->b = v;
	else
		r->a = v;
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

/* Nearest-rank percentile of v[0..n) (sorted here); NAN when n is 0. */
static double pct(double *v, size_t n, double p)
{
	size_t k;

	if (!n)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	k = (size_t)ceil(p / 100.0 * n);
	return v[k ? k - 1 : 0];
}

/* A trace reported by shards: its latencies from their histograms,
 * within 0.05% (user/quantile.h). */
static void latency_rows_of(struct rc_rows *rs, int side,
			    const struct rc_trace *t)
{
	static const struct { const char *name; double p; bool itl; } row[] = {
		{ "ttft_p50_ms", 50, false }, { "ttft_p99_ms", 99, false },
		{ "itl_p50_ms", 50, true }, { "itl_p99_ms", 99, true },
	};

	for (size_t i = 0; i < sizeof(row) / sizeof(row[0]); i++) {
		double v = quantile_pct(row[i].itl ? &t->itl : &t->ttft,
					row[i].p);

		row_set(rs, side, v < 0 ? NAN : v / 1e6, "%s", row[i].name);
	}
}

static void latency_rows(struct rc_rows *rs, int side, const struct report *r)
{
	size_t ntok = 0, nt = 0, ni = 0;
	double *ttft, *itl;

	for (size_t i = 0; i < r->nreqs; i++)
		ntok += r->reqs[i].req.token_ns_len;
	ttft = malloc((r->nreqs + 1) * sizeof(double));
	itl = malloc((ntok + 1) * sizeof(double));
	for (size_t i = 0; ttft && itl && i < r->nreqs; i++) {
		const struct tt_request *q = &r->reqs[i].req;

		if (q->ttft_ms >= 0)
			ttft[nt++] = q->ttft_ms;
		for (uint32_t k = 1; q->token_ns && k < q->token_ns_len; k++)
			itl[ni++] = (q->token_ns[k] - q->token_ns[k - 1]) / 1e6;
	}
	row_set(rs, side, pct(ttft, nt, 50), "ttft_p50_ms");
	row_set(rs, side, pct(ttft, nt, 99), "ttft_p99_ms");
	row_set(rs, side, pct(itl, ni, 50), "itl_p50_ms");
	row_set(rs, side, pct(itl, ni, 99), "itl_p99_ms");
	free(ttft);
	free(itl);
}

/* USD per 1M tokens of a cost and a count; NAN without tokens. */
static double per_1m(double usd, uint64_t tokens)
{
	return tokens ? usd * 1e6 / tokens : NAN;
}

static void cost_rows(struct rc_rows *rs, int side, const struct report *r)
{
	double pc = 0, cc = 0;
	uint64_t pt = 0, ct = 0;

	for (size_t i = 0; i < r->ntenants; i++) {
		pc += r->tenants[i].prompt_cost_usd;
		cc += r->tenants[i].completion_cost_usd;
		pt += r->tenants[i].prompt_tokens;
		ct += r->tenants[i].completion_tokens;
	}
	row_set(rs, side, per_1m(pc, pt), "usd_per_1m_prompt");
	row_set(rs, side, per_1m(cc, ct), "usd_per_1m_completion");
	for (size_t i = 0; i < r->nmodels; i++) {
		const struct report_group *g = &r->models[i];

		row_set(rs, side, per_1m(g->prompt_cost_usd, g->prompt_tokens),
			"usd_per_1m_prompt model=%s", g->name);
		row_set(rs, side, per_1m(g->completion_cost_usd,
					 g->completion_tokens),
			"usd_per_1m_completion model=%s", g->name);
		row_set(rs, side, g->ms_per_prompt_token < 0 ? NAN :
			g->ms_per_prompt_token,
			"gpu_ms_per_prompt_token model=%s", g->name);
		row_set(rs, side, g->ms_per_completion_token < 0 ? NAN :
			g->ms_per_completion_token,
			"gpu_ms_per_completion_token model=%s", g->name);
	}
	double win = r->window_ns / 1e9;
	size_t nreqs = r->shards ? r->streamed_requests : r->nreqs;
	row_set(rs, side, win > 0 ? nreqs / win : NAN, "requests_per_s");
	row_set(rs, side, win > 0 ? ct / win : NAN, "completion_tokens_per_s");
}

static void device_rows(struct rc_rows *rs, int side, const struct report *r)
{
	for (size_t i = 0; i < r->ndevs; i++)
		row_set(rs, side, r->window_ns ? (double)r->devs[i].idle_ns /
			r->window_ns : NAN, "idle_fraction device=%s",
			r->devs[i].dev.name);
	if (r->model_dev == SIZE_MAX || !r->devs[r->model_dev].model.fitted)
		return;
	const struct costmodel *m = &r->devs[r->model_dev].model;
	row_set(rs, side, m->coef[CM_FIXED] / 1e6, "cost_model fixed_ms");
	row_set(rs, side, m->coef[CM_PREFILL] / 1e6,
		"cost_model ms_per_prefill_token");
	row_set(rs, side, m->coef[CM_DECODE] / 1e6,
		"cost_model ms_per_decode_token");
	row_set(rs, side, m->coef[CM_CONTEXT] / 1e6,
		"cost_model ms_per_context_token");
	row_set(rs, side, m->coef[CM_PREFILL_SQ] / 1e6,
		"cost_model ms_per_prefill_attention_unit");
	row_set(rs, side, m->r2, "cost_model r2");
	row_set(rs, side, m->drift_min, "cost_model drift_min");
	row_set(rs, side, m->drift_max, "cost_model drift_max");
}

static void all_rows(struct rc_rows *rs, const struct rc_trace t[2])
{
	for (int s = 0; s < 2; s++)
		cost_rows(rs, s, &t[s].r);
	for (int s = 0; s < 2; s++)
		if (t[s].sharded)
			latency_rows_of(rs, s, &t[s]);
		else
			latency_rows(rs, s, &t[s].r);
	for (int s = 0; s < 2; s++)
		device_rows(rs, s, &t[s].r);
}

static double rel_change(const struct rc_row *r)
{
	if (isnan(r->a) || isnan(r->b) || r->a == 0)
		return NAN;
	return (r->b - r->a) / fabs(r->a);
}

static void num_or_null(cJSON *o, const char *k, double v)
{
	if (isnan(v))
		cJSON_AddNullToObject(o, k);
	else
		cJSON_AddNumberToObject(o, k, v);
}

static int diff_json(const struct rc_trace t[2], const struct rc_rows *rs,
		     const struct rc_args *a, FILE *f)
{
	struct hostinfo_field fa[HOSTINFO_NFIELDS], fb[HOSTINFO_NFIELDS];
	cJSON *root = cJSON_CreateObject(), *hc, *m;

	if (!root)
		return -ENOMEM;
	cJSON_AddStringToObject(root, "a", a->files[0]);
	cJSON_AddStringToObject(root, "b", a->files[1]);
	for (int s = 0; s < 2; s++)	/* 1: reported whole */
		cJSON_AddNumberToObject(root, s ? "b_time_ranges" :
					"a_time_ranges", t[s].sharded ?
					t[s].r.shards : 1);
	hc = cJSON_AddArrayToObject(root, "host_changes");
	hostinfo_fields(&t[0].hdr.host, fa);
	hostinfo_fields(&t[1].hdr.host, fb);
	for (int i = 0; hc && i < HOSTINFO_NFIELDS; i++) {
		cJSON *o;

		if (!strcmp(fa[i].value, fb[i].value) ||
		    !(o = cJSON_CreateObject()))
			continue;
		cJSON_AddStringToObject(o, "fact", fa[i].name);
		cJSON_AddStringToObject(o, "a", fa[i].value);
		cJSON_AddStringToObject(o, "b", fb[i].value);
		cJSON_AddItemToArray(hc, o);
	}
	m = cJSON_AddArrayToObject(root, "metrics");
	for (size_t i = 0; m && i < rs->n; i++) {
		const struct rc_row *r = &rs->v[i];
		cJSON *o = cJSON_CreateObject();

		if (!o)
			break;
		cJSON_AddStringToObject(o, "name", r->name);
		num_or_null(o, "a", r->a);
		num_or_null(o, "b", r->b);
		num_or_null(o, "change", r->b - r->a);
		num_or_null(o, "change_pct", 100 * rel_change(r));
		cJSON_AddItemToArray(m, o);
	}
	return report_print_json(root, NULL, f);
}

static void text_num(double v, FILE *f)
{
	if (isnan(v))
		fprintf(f, " %14s", "-");
	else
		fprintf(f, " %14.6g", v);
}

static int diff_text(const struct rc_trace t[2], const struct rc_rows *rs,
		     const struct rc_args *a, FILE *f)
{
	char changes[2048];
	int n = hostinfo_diff(&t[0].hdr.host, &t[1].hdr.host, changes,
			      sizeof(changes));

	fprintf(f, "A: %s\nB: %s\n", a->files[0], a->files[1]);
	for (int s = 0; s < 2; s++)
		if (t[s].sharded)
			fprintf(f, "%c: %llu events, reported in %u time ranges "
				"(the cost model shown is the busiest range's; "
				"latency percentiles within 0.05%%)\n",
				"AB"[s], (unsigned long long)t[s].st.events,
				t[s].r.shards);
	fputc('\n', f);
	if (n)
		fprintf(f, "these changed between the two traces: %s\n\n",
			changes);
	else
		fprintf(f, "the host facts in the two headers are the same\n\n");
	fprintf(f, "%-44s %14s %14s %14s %9s\n", "metric", "A", "B", "change",
		"change%");
	for (size_t i = 0; i < rs->n; i++) {
		const struct rc_row *r = &rs->v[i];
		double rel = rel_change(r);

		fprintf(f, "%-44.44s", r->name);
		text_num(r->a, f);
		text_num(r->b, f);
		text_num(r->b - r->a, f);
		if (isnan(rel))
			fprintf(f, " %9s\n", "-");
		else
			fprintf(f, " %+8.1f%%\n", 100 * rel);
	}
	return ferror(f) ? -EIO : 0;
}

int cmd_diff(int argc, char **argv)
{
	struct rc_args a = { 0 };
	struct rc_trace t[2] = { 0 };
	struct rc_rows rs = { 0 };
	FILE *f = NULL;
	int ret = parse_args(argc, argv, &a, 2, diff_usage), err = 0;

	if (ret) {
		free_args(&a);
		return ret > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	}
	for (int s = 0; !err && s < 2; s++) {
		t[s].latencies = true;
		err = shard_trace(&t[s], &a.files[s], 1, &a, false);
		if (err > 0)
			err = load_trace(&t[s], &a.files[s], 1, &a);
	}
	if (!err && !(f = open_out(a.out)))
		err = -EIO;
	if (!err) {
		all_rows(&rs, t);
		err = a.format == RC_JSON ? diff_json(t, &rs, &a, f) :
		      diff_text(t, &rs, &a, f);
	}
	if (f && close_out(f, a.out ? a.out : "stdout") && !err)
		err = -EIO;
	free(rs.v);
	free_trace(&t[0]);
	free_trace(&t[1]);
	free_args(&a);
	return err ? TT_EXIT_FAIL : TT_EXIT_OK;
}
