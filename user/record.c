/*
 * record.c - `tokentrace record`: attach to running servers and keep what
 * they do: request records, a trace file, the report at the end.
 *
 * In:  command-line options (see usage()); the target processes' socket
 *      traffic and, with --compute cpu, their on-CPU time, through
 *      user/attach.c.
 * Out: with -o FILE a trace file for `tokentrace report` (user/tracefile.h),
 *      or request records as JSON lines when FILE ends in .jsonl (created
 *      0600, one flushed line each); without -o the JSON lines on stdout.
 *      With --rotate and -o DIR, a chain of trace files DIR/trace-N.tt, a
 *      new one at each rotation (collect_rotate), read as one trace by
 *      user/chain.h.
 *      --summary FILE: the report as JSON (as `tokentrace report --format
 *      json` gives it); --metrics ADDR:PORT: Prometheus metrics while it
 *      runs. On stderr: "tokentrace: tracing N process(es)" once attached;
 *      at the end the summary per tenant and model (user/summary.c), the
 *      byte and loss counters, and the report's text (user/report.c).
 * Assumes: a single thread; SIGINT/SIGTERM or --duration end the run, after
 *      which what is left in the ring buffer is read and open requests are
 *      flushed (end "open"). Without --compute cpu there is no compute
 *      source: the report has requests, tenants and models, no devices.
 *
 * Memory stays bounded however long it runs: with a trace file, requests
 * and intervals go to the file as they arrive and are not kept; the
 * report at the end is read back from the file (so it is what `tokentrace
 * report FILE` gives). Without one, at most --max-requests requests and
 * --max-intervals intervals are kept for the report; what comes beyond is
 * counted and the report says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attach.h"
#include "commands.h"
#include "requests.h"
#include "rotate.h"
#include "shard.h"
#include "socktrace.h"
#include "summary.h"
#include "tracefile.h"

#define RECORD_ZSTD_LEVEL	1
#define RECORD_TICK_MS		100

struct record_args {
	struct attach_opts ao;
	const char *out_path, *summary;
	double duration_s;
	bool all;
	size_t max_reqs, max_ivs;
	struct rotate rot;			/* -o FILE|DIR, --rotate */
};

struct record_ctx {
	struct record_args a;
	struct attach at;
	FILE *out;			/* JSON lines, or NULL (trace file) */
	uint64_t written, skipped;
	struct summary *sum;
};

static volatile sig_atomic_t record_stop;

static void on_signal(int sig)
{
	(void)sig;
	record_stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace record [--pid P | --port N | --comm NAME | --cgroup PATH]\n"
"                         [-o FILE] [--summary FILE] [--metrics ADDR:PORT]\n"
"                         [--duration S] [--compute cpu] [--tenant-key KEY]\n"
"                         [--hash-key FILE] [--ringbuf-kb N]\n"
"                         [--capture-cap BYTES] [--all] [--no-tls]\n"
"                         [--max-requests N] [--max-intervals N] [--verbose]\n"
"                         [--rotate DURATION|SIZE]\n"
"\n"
"Traces the sockets of running servers (and their children): every\n"
"finished inference request, its tenant, model, tokens and latencies.\n"
"At the end the report (per tenant and model) is printed on stderr.\n"
"\n"
ATTACH_HELP
"  -o, --output FILE  a trace file for `tokentrace report`, or request\n"
"                     records as JSON lines if FILE ends in .jsonl (both\n"
"                     0600); without -o the JSON lines go to stdout\n"
"  --summary FILE     write the report (tokentrace report --format json)\n"
"                     to FILE at the end, mode 0600\n"
"  --duration S       stop after S seconds (default: at SIGINT/SIGTERM)\n"
ROTATE_HELP
"  --all              also keep requests of no inference API\n"
"  --max-requests N   without a trace file: requests kept for the report\n"
"                     (default 1000000; later ones are counted as losses)\n"
"  --max-intervals N  the same for compute intervals (default 10000000)\n");
}


static bool is_jsonl(const char *path)
{
	size_t n = strlen(path);

	return n >= 6 && !strcmp(path + n - 6, ".jsonl");
}

/* 0 ok, 1 help shown, -1 usage error. */
static int parse_args(int argc, char **argv, struct record_args *a)
{
	static const struct option longopts[] = {
		ATTACH_LONGOPTS,
		{ "output", required_argument, 0, 'o' },
		{ "summary", required_argument, 0, 's' },
		{ "duration", required_argument, 0, 'd' },
		{ "all", no_argument, 0, 'a' },
		{ "max-requests", required_argument, 0, 'R' },
		{ "max-intervals", required_argument, 0, 'I' },
		{ "rotate", required_argument, 0, 'r' },
		{ "help", no_argument, 0, 'h' },
		{ 0 }
	};
	char *end;
	int opt, r;

	optind = 1;
	a->ao.cmd = "record";
	a->ao.hooks = hooks_default();
	a->max_reqs = COLLECT_MAX_REQS_DEFAULT;
	a->max_ivs = COLLECT_MAX_IVS_DEFAULT;
	while ((opt = getopt_long(argc, argv, "o:hv", longopts, NULL)) != -1) {
		r = attach_parse_opt(&a->ao, opt == 'v' ? ATTACH_OPT_VERBOSE :
				     opt, optarg);
		if (r < 0)
			return -1;
		if (!r)
			continue;
		switch (opt) {
		case 'o': a->out_path = optarg; break;
		case 's': a->summary = optarg; break;
		case 'd':
			a->duration_s = strtod(optarg, &end);
			if (*end || end == optarg || a->duration_s <= 0) {
				fprintf(stderr, "tokentrace record: --duration "
					"'%s' is not a positive number of "
					"seconds\n", optarg);
				return -1;
			}
			break;
		case 'a': a->all = true; break;
		case 'r':
			if (rotate_parse("record", optarg, &a->rot))
				return -1;
			break;
		case 'R': case 'I':
			if (collect_parse_limit("record", opt == 'R' ?
						"--max-requests" :
						"--max-intervals", optarg,
						opt == 'R' ? &a->max_reqs :
						&a->max_ivs))
				return -1;
			break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	if (rotate_check("record", &a->rot, a->out_path,
			 a->out_path && is_jsonl(a->out_path), RECORD_ZSTD_LEVEL))
		return -1;
	if (attach_check_opts(&a->ao) || optind != argc) {
		if (optind != argc)
			fprintf(stderr, "tokentrace record: unexpected '%s'\n",
				argv[optind]);
		usage(stderr);
		return -1;
	}
	return 0;
}

/* ---- output -------------------------------------------------------------- */

static bool on_request(void *ctx, const struct tt_request *r)
{
	struct record_ctx *rc = ctx;

	if (!rc->a.all && !strcmp(r->api, "other")) {
		rc->skipped++;
		return false;
	}
	if (rc->out) {
		tt_request_write_json(r, rc->out);
		fflush(rc->out);
	}
	rc->written++;
	summary_add(rc->sum, r);
	return true;
}

static FILE *open_jsonl(const char *path)
{
	FILE *f;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) || !(f = fdopen(fd, "w"))) {
		fprintf(stderr, "tokentrace record: cannot create %s: %s\n",
			path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	return f;
}

/* -o: JSON lines (stdout without -o), a trace file, or with --rotate a
 * folder for a chain of them. 0 or -1. */
static int open_output(struct record_ctx *rc)
{
	const char *path = rc->a.out_path;

	if (!path) {
		rc->out = stdout;
		return 0;
	}
	if (is_jsonl(path)) {
		rc->out = open_jsonl(path);
		return rc->out ? 0 : -1;
	}
	return rotate_open(&rc->a.rot, &rc->at.c, attach_now_ns());
}


static void print_counts(const struct record_ctx *rc)
{
	struct socktrace_stats s;

	socktrace_stats(rc->at.st, &s);
	fprintf(stderr, "tokentrace: %llu request(s) recorded",
		(unsigned long long)rc->written);
	if (rc->skipped)
		fprintf(stderr, " (%llu other HTTP exchange(s) not shown; "
			"--all shows them)", (unsigned long long)rc->skipped);
	fprintf(stderr, "\n");
	summary_print(rc->sum, stderr);
	if (s.step_procs)
		fprintf(stderr, "tokentrace: step probe: %llu steps in %u "
			"process(es)\n", (unsigned long long)s.steps,
			s.step_procs);
	fprintf(stderr, "tokentrace: bytes seen %llu (tls %llu, on "
		"connections the target opened %llu), beyond capture cap %llu; "
		"events %llu; lost events %llu, lost bytes %llu, records after "
		"a loss %llu\n",
		(unsigned long long)s.bytes, (unsigned long long)s.tls_bytes,
		(unsigned long long)s.client_bytes,
		(unsigned long long)s.bytes_missing,
		(unsigned long long)s.events,
		(unsigned long long)s.lost_events,
		(unsigned long long)s.lost_bytes,
		(unsigned long long)s.lost_marks);
	if (rc->at.c.reqs_dropped || rc->at.c.ivs_dropped)
		fprintf(stderr, "tokentrace: memory limit: %llu request(s) and "
			"%llu interval(s) not kept for the report (raise "
			"--max-requests/--max-intervals, or record to a trace "
			"file with -o FILE)\n",
			(unsigned long long)rc->at.c.reqs_dropped,
			(unsigned long long)rc->at.c.ivs_dropped);
}

/* Close the trace, build the report, write --summary, print the text.
 * TT_EXIT_OK, or TT_EXIT_FAIL when the trace or the summary failed. */
static int finish(struct record_ctx *rc)
{
	const char *path = rc->a.out_path;
	bool trace = path && !rc->out;
	struct report r;
	int err, ret = TT_EXIT_OK;

	if (collect_close(&rc->at.c, rc->at.stop_ns) && trace) {
		fprintf(stderr, "tokentrace record: the trace file %s is "
			"incomplete: %s\n", path,
			strerror(-rc->at.c.write_error));
		ret = TT_EXIT_FAIL;
	}
	if (trace && ret == TT_EXIT_OK) {
		/* a long recording is reported a time range at a time */
		err = shard_end_of_run(path, rc->a.summary, stderr, "record");
		if (err <= 0) {
			print_counts(rc);
			if (!err && rc->a.summary)
				fprintf(stderr, "tokentrace: summary in %s\n",
					rc->a.summary);
			if (!err)
				fprintf(stderr, "tokentrace: trace in %s "
					"(tokentrace report %s)\n", path, path);
			return err ? TT_EXIT_FAIL : ret;
		}
	}
	if (trace && rotate_reload(&rc->a.rot, &rc->at.c, stderr))
		ret = TT_EXIT_FAIL;
	print_counts(rc);
	err = attach_report(&rc->at, &r);
	if (!err)
		report_write_text(&r, stderr);
	if (rc->a.summary && (err || attach_write_summary(&rc->at, &r,
							  rc->a.summary)))
		ret = TT_EXIT_FAIL;
	else if (rc->a.summary)
		fprintf(stderr, "tokentrace: summary in %s\n", rc->a.summary);
	if (trace && ret == TT_EXIT_OK)
		fprintf(stderr, "tokentrace: trace in %s (tokentrace report "
			"%s)\n", path, path);
	report_free(&r);
	return ret;
}

/* ---- running ------------------------------------------------------------- */

static void trace_loop(struct record_ctx *rc)
{
	uint64_t start = attach_now_ns();
	uint64_t end = rc->a.duration_s > 0 ?
		       start + (uint64_t)(rc->a.duration_s * 1e9) : 0;

	while (!record_stop) {
		if (attach_poll(&rc->at, RECORD_TICK_MS) < 0)
			break;
		rotate_tick(&rc->a.rot, &rc->at.c, attach_now_ns());
		if (end && attach_now_ns() >= end)
			break;
	}
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int run(struct record_ctx *rc)
{
	int ret;

	rc->a.ao.on_request = on_request;
	rc->a.ao.ctx = rc;
	attach_init(&rc->at, &rc->a.ao);
	collect_set_limits(&rc->at.c, rc->a.max_reqs, rc->a.max_ivs);
	ret = attach_open(&rc->at);
	if (!ret && open_output(rc))
		ret = TT_EXIT_FAIL;
	if (!ret) {
		install_signals();
		trace_loop(rc);
		attach_stop(&rc->at);
		ret = finish(rc);
	}
	attach_close(&rc->at);
	return ret;
}

int cmd_record(int argc, char **argv)
{
	struct record_ctx *rc;
	int err;

	rc = calloc(1, sizeof(*rc));
	if (!rc)
		return TT_EXIT_FAIL;
	err = parse_args(argc, argv, &rc->a);
	if (err) {
		free(rc);
		return err > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	}
	rc->sum = summary_new();
	err = rc->sum ? run(rc) : TT_EXIT_FAIL;
	if (rc->out && rc->out != stdout)
		fclose(rc->out);
	summary_free(rc->sum);
	free(rc);
	return err;
}
