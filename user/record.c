/*
 * record.c - `tokentrace record`: attach to running servers, print one JSON
 * line per finished request.
 *
 * In:  command-line options (see usage()); the target processes' socket
 *      traffic through user/socktrace.c.
 * Out: request records (user/requests.h, tt_request_write_json) on stdout
 *      or in a file created 0600, one flushed line each; at the end a
 *      summary per tenant and model (user/summary.c) and the byte and loss
 *      counters on stderr. "tokentrace: tracing N process(es)" on stderr once attached.
 * Assumes: a single thread; SIGINT/SIGTERM or --duration end the run, after
 *      which what is left in the ring buffer is read and open requests are
 *      flushed (end "open").
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "commands.h"
#include "requests.h"
#include "socktrace.h"
#include "summary.h"
#include "target.h"

struct record_ctx {
	FILE *out;
	bool all;
	uint64_t written, skipped;
	struct summary *sum;
};

struct record_args {
	pid_t pid;
	int port;
	const char *comm, *cgroup, *out_path, *tenant_key;
	double duration_s;
	unsigned ringbuf_kb, capture_cap;
	bool verbose, all, no_tls;
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
"                         [-o FILE] [--duration S] [--tenant-key KEY]\n"
"                         [--ringbuf-kb N] [--capture-cap BYTES] [--all]\n"
"                         [--no-tls] [--verbose]\n"
"\n"
"Traces the sockets of running servers (and their children) and prints one\n"
"JSON line per finished inference request.\n"
"\n"
"  --pid P            trace process P\n"
"  --port N           trace the process listening on TCP port N\n"
"  --comm NAME        trace processes whose command name is NAME\n"
"  --cgroup PATH      trace the processes of a cgroup v2 group\n"
"  -o, --output FILE  write the JSON lines to FILE (created 0600), not stdout\n"
"  --duration S       stop after S seconds (default: at SIGINT/SIGTERM)\n"
"  --tenant-key KEY   header:NAME | user | api-key | client-addr\n"
"                     (default: header X-Tenant-Id, then the JSON user)\n"
"  --ringbuf-kb N     ring buffer size in KiB (default 4096)\n"
"  --capture-cap B    payload bytes kept per syscall (default %d, max %d)\n"
"  --all              also print requests of no inference API\n"
"  --no-tls           do not probe libssl\n"
"  --verbose          libbpf messages\n",
		16384, 65536);
}

static int parse_uint(const char *s, const char *what, unsigned long max,
		      unsigned long *v)
{
	char *end;

	errno = 0;
	*v = strtoul(s, &end, 10);
	if (errno || *end || end == s || *v > max) {
		fprintf(stderr, "tokentrace record: %s '%s' is not a number "
			"from 1 to %lu\n", what, s, max);
		return -1;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct record_args *a)
{
	static const struct option longopts[] = {
		{ "pid", required_argument, 0, 'p' },
		{ "port", required_argument, 0, 'P' },
		{ "comm", required_argument, 0, 'c' },
		{ "cgroup", required_argument, 0, 'g' },
		{ "output", required_argument, 0, 'o' },
		{ "duration", required_argument, 0, 'd' },
		{ "tenant-key", required_argument, 0, 't' },
		{ "ringbuf-kb", required_argument, 0, 'r' },
		{ "capture-cap", required_argument, 0, 'C' },
		{ "all", no_argument, 0, 'a' },
		{ "no-tls", no_argument, 0, 'n' },
		{ "verbose", no_argument, 0, 'v' },
		{ "help", no_argument, 0, 'h' },
		{ 0 }
	};
	unsigned long v;
	int opt, ntargets = 0;
	char *end;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "o:hv", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (parse_uint(optarg, "--pid", 1u << 30, &v))
				return -1;
			a->pid = v;
			ntargets++;
			break;
		case 'P':
			if (parse_uint(optarg, "--port", 65535, &v) || !v)
				return -1;
			a->port = v;
			ntargets++;
			break;
		case 'c': a->comm = optarg; ntargets++; break;
		case 'g': a->cgroup = optarg; ntargets++; break;
		case 'o': a->out_path = optarg; break;
		case 'd':
			a->duration_s = strtod(optarg, &end);
			if (*end || a->duration_s <= 0) {
				fprintf(stderr, "tokentrace record: --duration "
					"'%s' is not a positive number of "
					"seconds\n", optarg);
				return -1;
			}
			break;
		case 't': a->tenant_key = optarg; break;
		case 'r':
			if (parse_uint(optarg, "--ringbuf-kb", 1u << 20, &v) ||
			    !v)
				return -1;
			a->ringbuf_kb = v;
			break;
		case 'C':
			if (parse_uint(optarg, "--capture-cap", 65536, &v) ||
			    !v)
				return -1;
			a->capture_cap = v;
			break;
		case 'a': a->all = true; break;
		case 'n': a->no_tls = true; break;
		case 'v': a->verbose = true; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	if (ntargets != 1 || optind != argc) {
		fprintf(stderr, "tokentrace record: give exactly one of --pid, "
			"--port, --comm, --cgroup\n");
		usage(stderr);
		return -1;
	}
	return 0;
}

static int parse_tenant(const char *key, struct reqtrack_opts *ro)
{
	if (!key)
		ro->tenant_kind = TT_TENANT_DEFAULT;
	else if (!strncmp(key, "header:", 7) && key[7] &&
		 strlen(key + 7) < sizeof(ro->tenant_header)) {
		ro->tenant_kind = TT_TENANT_HEADER;
		strcpy(ro->tenant_header, key + 7);
	} else if (!strcmp(key, "user")) {
		ro->tenant_kind = TT_TENANT_USER;
	} else if (!strcmp(key, "api-key")) {
		ro->tenant_kind = TT_TENANT_API_KEY;
	} else if (!strcmp(key, "client-addr")) {
		ro->tenant_kind = TT_TENANT_CLIENT_ADDR;
	} else {
		fprintf(stderr, "tokentrace record: --tenant-key '%s': use "
			"header:NAME, user, api-key or client-addr\n", key);
		return -1;
	}
	if (getrandom(ro->hash_key, sizeof(ro->hash_key), 0) !=
	    (ssize_t)sizeof(ro->hash_key))
		return -1;
	return 0;
}

/* ---- output -------------------------------------------------------------- */

static void on_request(void *ctx, const struct tt_request *r)
{
	struct record_ctx *rc = ctx;

	if (!rc->all && !strcmp(r->api, "other")) {
		rc->skipped++;
		return;
	}
	tt_request_write_json(r, rc->out);
	fflush(rc->out);
	rc->written++;
	summary_add(rc->sum, r);
}

static void print_summary(const struct record_ctx *rc,
			  const struct socktrace_stats *s)
{
	fprintf(stderr, "tokentrace: %llu request(s) recorded",
		(unsigned long long)rc->written);
	if (rc->skipped)
		fprintf(stderr, " (%llu other HTTP exchange(s) not shown; "
			"--all shows them)", (unsigned long long)rc->skipped);
	fprintf(stderr, "\n");
	summary_print(rc->sum, stderr);
	fprintf(stderr, "tokentrace: bytes seen %llu (tls %llu, on "
		"connections the target opened %llu), beyond capture cap %llu; "
		"events %llu; lost events %llu, lost bytes %llu, records after "
		"a loss %llu\n",
		(unsigned long long)s->bytes, (unsigned long long)s->tls_bytes,
		(unsigned long long)s->client_bytes,
		(unsigned long long)s->bytes_missing,
		(unsigned long long)s->events,
		(unsigned long long)s->lost_events,
		(unsigned long long)s->lost_bytes,
		(unsigned long long)s->lost_marks);
}

/* ---- running ------------------------------------------------------------- */

static int find_targets(const struct record_args *a, struct target_list *tl)
{
	if (a->pid)
		return target_add_pid(tl, a->pid);
	if (a->port)
		return target_add_port(tl, a->port);
	if (a->comm)
		return target_add_comm(tl, a->comm);
	return target_add_cgroup(tl, a->cgroup);
}

static int exit_code(int err)
{
	switch (err) {
	case -EPERM:
	case -EACCES:
		return TT_EXIT_PRIV;
	case -ENOENT:
	case -ENODEV:
	case -EOPNOTSUPP:
		return TT_EXIT_KERNEL;
	case -EINVAL:
		return TT_EXIT_USAGE;
	default:
		return TT_EXIT_FAIL;
	}
}

/*
 * With --port, a server restarted or another process taking the port is
 * picked up. The process table is searched only when the set of listening
 * sockets on the port changed (a cheap read of /proc/net/tcp{,6}).
 */
static void refresh_targets(const struct record_args *a, struct socktrace *st,
			    struct target_list *tl)
{
	static unsigned long last[16];
	static int nlast = -1;
	unsigned long now[16];
	size_t before = tl->n;
	int n;

	if (!a->port)
		return;
	n = target_listen_inodes("/proc/net", a->port, now, 16);
	if (n == nlast && !memcmp(now, last, n * sizeof(now[0])))
		return;
	nlast = n;
	memcpy(last, now, n * sizeof(now[0]));
	if (n <= 0 || target_port_pids(tl, a->port) <= 0)
		return;
	for (size_t i = before; i < tl->n; i++)
		socktrace_add_pid(st, tl->pids[i]);
}

static void trace_loop(const struct record_args *a, struct socktrace *st,
		       struct target_list *tl)
{
	uint64_t start = socktrace_now_ns(), last_refresh = start;
	uint64_t end = a->duration_s > 0 ?
		       start + (uint64_t)(a->duration_s * 1e9) : 0;

	while (!record_stop) {
		uint64_t now;

		if (socktrace_poll(st, 100) < 0)
			break;
		now = socktrace_now_ns();
		if (end && now >= end)
			break;
		if (now - last_refresh > 2000000000ull) {
			last_refresh = now;
			refresh_targets(a, st, tl);
		}
	}
}

static FILE *open_output(const char *path)
{
	int fd;
	FILE *f;

	if (!path)
		return stdout;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		fprintf(stderr, "tokentrace record: cannot create %s: %s\n",
			path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	return f;
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int run(const struct record_args *a, struct record_ctx *rc)
{
	struct socktrace_opts so = { 0 };
	struct reqtrack_opts ro = { 0 };
	static struct target_list tl;
	struct socktrace_stats s;
	struct socktrace *st;
	struct reqtrack *rt;
	int err;

	if (parse_tenant(a->tenant_key, &ro))
		return TT_EXIT_USAGE;
	memset(&tl, 0, sizeof(tl));
	ro.on_request = on_request;
	ro.ctx = rc;
	rt = reqtrack_new(&ro);
	if (!rt)
		return TT_EXIT_FAIL;
	so.rt = rt;
	so.ringbuf_kb = a->ringbuf_kb;
	so.capture_cap = a->capture_cap;
	so.verbose = a->verbose;
	so.no_tls = a->no_tls;
	err = socktrace_open(&so, &st);
	if (err) {
		reqtrack_free(rt);
		return exit_code(err);
	}
	if (find_targets(a, &tl) <= 0) {
		socktrace_close(st);
		reqtrack_free(rt);
		return TT_EXIT_NOTARGET;
	}
	for (size_t i = 0; i < tl.n; i++)
		socktrace_add_pid(st, tl.pids[i]);
	socktrace_stats(st, &s);
	fprintf(stderr, "tokentrace: tracing %zu process(es)%s\n", tl.n,
		s.ssl_libs ? " (TLS probes attached)" : "");
	install_signals();
	trace_loop(a, st, &tl);
	socktrace_drain(st);
	reqtrack_flush(rt, socktrace_now_ns());
	socktrace_stats(st, &s);
	print_summary(rc, &s);
	socktrace_close(st);
	reqtrack_free(rt);
	return TT_EXIT_OK;
}

int cmd_record(int argc, char **argv)
{
	struct record_args a = { 0 };
	struct record_ctx *rc;
	int err;

	err = parse_args(argc, argv, &a);
	if (err)
		return err > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	rc = calloc(1, sizeof(*rc));
	if (!rc)
		return TT_EXIT_FAIL;
	rc->all = a.all;
	rc->sum = summary_new();
	rc->out = rc->sum ? open_output(a.out_path) : NULL;
	if (!rc->out) {
		summary_free(rc->sum);
		free(rc);
		return TT_EXIT_FAIL;
	}
	err = run(&a, rc);
	if (rc->out != stdout)
		fclose(rc->out);
	summary_free(rc->sum);
	free(rc);
	return err;
}
