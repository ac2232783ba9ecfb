/*
 * cmd_export.c - `tokentrace export TRACE --perfetto OUT | --otlp OUT |
 * --jsonl OUT`: a trace file in the formats other tools open.
 *
 * In:  trace files (user/tracefile.h) read with chain_read; prices
 *      from --price / --price-file as `tokentrace report` takes them.
 * Out: each format asked for, in its own file (mode 0600), "-" for stdout:
 *      Chrome trace-event JSON for ui.perfetto.dev, OTLP/JSON traces, JSON
 *      lines (user/export.h).
 *      A trace longer than --shard-events is read by ranges (user/shard.h)
 *      and written as they are done (export_stream_*), in the memory of
 *      one range.
 * Assumes: no root, BTF or GPU. OTLP's Unix times come from the trace
 *      header's pair of clock readings taken at the same moment (wall and
 *      monotonic); a header without them (both zero) falls back to this
 *      host's clocks now, right only for a trace of the current boot.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain.h"
#include "collect.h"
#include "commands.h"
#include "export.h"
#include "prices.h"
#include "report.h"
#include "progress.h"
#include "shard.h"
#include "tracefile.h"

enum ex_fmt { EX_PERFETTO, EX_OTLP, EX_JSONL, EX_NFMT };

struct ex_args {
	const char *trace, *out[EX_NFMT];
	char **traces;		/* files or folders: one trace */
	int ntraces;
	struct chain_time from, to;
	struct prices prices;
	uint64_t shard_events;	/* 0: SHARD_EVENTS_DEFAULT */
	int jobs;
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace export TRACE... [--perfetto OUT] [--otlp OUT]\n"
"                        [--jsonl OUT] [--from T] [--to T]\n"
"                        [--price USD_PER_HOUR | --price NAME=USD,...]\n"
"                        [--price-file F] [--jobs N] [--shard-events N]\n"
"\n"
"Writes a trace file (from record -o or run -o) in other tools' formats;\n"
"at least one format. OUT '-' is stdout. Files are created mode 0600.\n"
"Several files or folders are read as one trace, as `report` reads them;\n"
"--from and --to pick a range as there. A trace of more than\n"
"--shard-events events (default %llu; 0: never) is read as `report` reads\n"
"it, a time range at a time in memory bounded by one range (--jobs N\n"
"ranges at once), and written as each range is done: requests in the\n"
"order they end, each with its device time summed over the ranges it\n"
"spans (its fully loaded cost with its ranges' idle time), and steps cut\n"
"by each range's own cost model.\n"
"\n"
"  --perfetto OUT  Chrome trace-event JSON: open in ui.perfetto.dev or\n"
"                  chrome://tracing (devices and streams with kernels and\n"
"                  copies, a track per request, steps, batch and busy\n"
"                  counters)\n"
"  --otlp OUT      OTLP/JSON traces, one span per request with the\n"
"                  OpenTelemetry GenAI attributes and tokentrace.* ones\n"
"  --jsonl OUT     one request per line, as `report --format json` has them\n"
"  --price X       USD per device-hour for every device (the cost fields)\n"
"  --price L       NAME=USD,... per device name; gpu=USD and cpu=USD set\n"
"                  the defaults by kind\n"
"  --price-file F  lines 'DEVICE NAME = USD' ('#' starts a comment)\n"
"  --jobs N        ranges of a long trace built at once (default 1)\n"
"  --shard-events N  events in a range of a long trace\n",
		(unsigned long long)SHARD_EVENTS_DEFAULT);
}

/* ---- arguments ----------------------------------------------------------- */

/* 0 ok, 1 help shown, -1 usage error. */
static int parse_args(int argc, char **argv, struct ex_args *a)
{
	static const struct option longopts[] = {
		{ "perfetto", required_argument, 0, 'P' },
		{ "otlp", required_argument, 0, 'O' },
		{ "jsonl", required_argument, 0, 'J' },
		{ "price", required_argument, 0, 'p' },
		{ "price-file", required_argument, 0, 'F' },
		{ "from", required_argument, 0, 'f' },
		{ "to", required_argument, 0, 't' },
		{ "jobs", required_argument, 0, 'j' },
		{ "shard-events", required_argument, 0, 'S' },
		{ "help", no_argument, 0, 'h' },
		{ 0 }
	};
	int opt;

	prices_init(&a->prices);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'P': a->out[EX_PERFETTO] = optarg; break;
		case 'O': a->out[EX_OTLP] = optarg; break;
		case 'J': a->out[EX_JSONL] = optarg; break;
		case 'p':
			if (prices_parse(&a->prices, optarg))
				return -1;
			break;
		case 'F':
			if (prices_read_file(&a->prices, optarg))
				return -1;
			break;
		case 'f':
		case 't':
			if (chain_parse_time(optarg, opt == 'f' ? &a->from :
					     &a->to)) {
				fprintf(stderr, "tokentrace export: --%s '%s': "
					"give seconds into the trace (90, 15m, "
					"2h) or a UTC time (2026-12-03T10:00:00)"
					"\n", opt == 'f' ? "from" : "to",
					optarg);
				return -1;
			}
			break;
		case 'j':
			if (shard_parse_jobs(optarg, &a->jobs))
				return -1;
			break;
		case 'S':
			if (shard_parse_events(optarg, &a->shard_events))
				return -1;
			break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "tokentrace export: expected a trace file (or "
			"several, or a folder)\n");
		usage(stderr);
		return -1;
	}
	a->trace = argv[optind];
	a->traces = argv + optind;
	a->ntraces = argc - optind;
	if (!a->out[EX_PERFETTO] && !a->out[EX_OTLP] && !a->out[EX_JSONL]) {
		fprintf(stderr, "tokentrace export: say which format: "
			"--perfetto OUT, --otlp OUT or --jsonl OUT\n");
		return -1;
	}
	int to_stdout = 0;

	for (int i = 0; i < EX_NFMT; i++)
		to_stdout += a->out[i] && !strcmp(a->out[i], "-");
	if (to_stdout > 1) {
		fprintf(stderr, "tokentrace export: only one format can go to "
			"stdout ('-'); give the others a file\n");
		return -1;
	}
	return 0;
}

/* ---- writing ------------------------------------------------------------- */

static FILE *open_out(const char *path)
{
	int fd;
	FILE *f;

	if (!strcmp(path, "-"))
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

static int64_t wall_offset(const struct tracefile_header *h)
{
	if (h->wall_ns || h->mono_ns)
		return (int64_t)(h->wall_ns - h->mono_ns);
	return export_wall_minus_mono_now();
}

static int write_one(enum ex_fmt fmt, const char *path,
		     const struct report *r, const struct collect *c,
		     const struct tracefile_header *h)
{
	FILE *f = open_out(path);
	int err, bad;

	if (!f)
		return -EIO;
	if (fmt == EX_PERFETTO)
		err = export_perfetto(r, c, f);
	else if (fmt == EX_OTLP)
		err = export_otlp(r, c, wall_offset(h), f);
	else
		err = export_jsonl(r, f);
	bad = f == stdout ? fflush(f) : fclose(f);
	if (err || bad) {
		fprintf(stderr, "tokentrace: writing %s failed: %s\n", path,
			strerror(err ? -err : EIO));
		return err ? err : -EIO;
	}
	return 0;
}

static int load(const struct ex_args *a, struct collect *c,
		struct tracefile_header *h, struct report *r)
{
	struct collect_prices p = prices_for_report(&a->prices);
	struct report_input in;
	int err = chain_read(c, a->traces, a->ntraces, &a->from, &a->to, h,
			     stderr, NULL);

	if (err) {
		fprintf(stderr, "tokentrace: %s: cannot export: %s\n",
			a->trace, err == -EBADMSG ? "the trace's header is "
			"unreadable" : strerror(-err));
		return err;
	}
	if (c->trace_blocks_skipped)
		fprintf(stderr, "tokentrace: %s: %llu blocks skipped; "
			"exporting what is valid\n", a->trace,
			(unsigned long long)c->trace_blocks_skipped);
	err = collect_report_input(c, &p, &in);
	if (!err)
		err = report_build(&in, r);
	if (err)
		fprintf(stderr, "tokentrace: %s: cannot build the report: %s"
			"\n", a->trace, strerror(-err));
	return err;
}

/* ---- a long trace, a time range at a time -------------------------------- */

struct ex_stream {
	struct export_stream *x;
	const struct shard_trace *t;
};

/* The heads, once the first reading has the window and the header. */
static int begin_once(struct ex_stream *e)
{
	if (export_stream_begun(e->x))
		return 0;
	return export_stream_begin(e->x, &e->t->c, wall_offset(&e->t->hdr));
}

static int on_request(void *ctx, const struct report_request *q)
{
	struct ex_stream *e = ctx;
	int err = begin_once(e);

	return err ? err : export_stream_request(e->x, q);
}

static int on_part(void *ctx, uint32_t index, uint64_t from,
		   const struct report *rep, const struct collect *c)
{
	struct ex_stream *e = ctx;
	int err = begin_once(e);

	return err ? err : export_stream_part(e->x, !index, from, rep, c);
}

static int close_out(FILE *f)
{
	if (!f)
		return 0;
	return (f == stdout ? fflush(f) : fclose(f)) ? -EIO : 0;
}

/*
 * The export of a trace longer than a range: 0, 1 when it is short and
 * is to be exported whole, or a negative errno (said). Each request is
 * written as it is done, before the whole trace's idle time is known: its
 * fully loaded cost shares its range's.
 */
static int export_by_ranges(const struct ex_args *a)
{
	struct collect_prices p = prices_for_report(&a->prices);
	struct shard_trace t = { 0 };
	struct report r = { 0 };
	struct ex_stream e = { .t = &t };
	FILE *f[EX_NFMT] = { 0 };
	struct shard_cfg cfg = {
		.paths = a->traces, .npaths = a->ntraces, .from = &a->from,
		.to = &a->to, .prices = &p, .max_events = a->shard_events,
		.jobs = a->jobs, .log = stderr, .request = on_request,
		.part = on_part, .ctx = &e, .loaded_by_range = true,
	};
	struct progress pr;
	int err = 0, bad = 0;

	progress_on_terminal(&pr, &cfg);
	if (a->shard_events == UINT64_MAX ||
	    shard_small(a->traces, a->ntraces, a->shard_events))
		return 1;
	for (int i = 0; !err && i < EX_NFMT; i++)
		if (a->out[i] && !(f[i] = open_out(a->out[i])))
			err = -EIO;
	e.x = err ? NULL : export_stream_new(f[EX_PERFETTO], f[EX_OTLP],
					     f[EX_JSONL]);
	if (!err && !e.x)
		err = -ENOMEM;
	if (!err)
		err = shard_report(&cfg, &t, &r);
	if (!err)
		err = export_stream_end(e.x);
	for (int i = 0; i < EX_NFMT; i++)
		if (close_out(f[i]) && !bad)
			bad = -EIO;
	if (!err && bad)
		err = bad;
	if (err < 0)
		fprintf(stderr, "tokentrace: %s: cannot export: %s\n",
			a->trace, strerror(-err));
	else if (!err)
		fprintf(stderr, "tokentrace: %s: %llu events exported a time "
			"range at a time (%u ranges, each with its own steps "
			"and cost model; --shard-events 0 reads it whole)\n",
			a->trace, (unsigned long long)t.events, t.nshards);
	if (!err && t.c.trace_blocks_skipped)
		fprintf(stderr, "tokentrace: %s: %llu blocks skipped; "
			"exported what is valid\n", a->trace,
			(unsigned long long)t.c.trace_blocks_skipped);
	export_stream_free(e.x);
	if (err != 1) {
		report_free(&r);
		shard_trace_free(&t);
	}
	return err;
}

int cmd_export(int argc, char **argv)
{
	struct ex_args a = { 0 };
	struct collect c;
	struct tracefile_header h = { 0 };
	struct report r = { 0 };
	int ret = parse_args(argc, argv, &a), err;

	if (ret) {
		prices_free(&a.prices);
		return ret > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	}
	err = export_by_ranges(&a);
	if (err <= 0) {
		prices_free(&a.prices);
		return err ? TT_EXIT_FAIL : TT_EXIT_OK;
	}
	collect_init(&c);
	err = load(&a, &c, &h, &r);
	for (int fmt = 0; !err && fmt < EX_NFMT; fmt++)
		if (a.out[fmt])
			err = write_one(fmt, a.out[fmt], &r, &c, &h);
	report_free(&r);
	collect_free(&c);
	prices_free(&a.prices);
	return err ? TT_EXIT_FAIL : TT_EXIT_OK;
}
