/*
 * attach.h - tracing servers that already run: what `tokentrace record`
 * and `tokentrace top` share.
 *
 * In:  the target (--pid, --port, --comm or --cgroup) and the tracing
 *      options both commands take (parsed by attach_parse_opt); the
 *      targets' socket traffic (user/socktrace.c) and, with --compute cpu,
 *      their on-CPU time (user/cpusource.c).
 * Out: every finished request offered to the caller's callback, then (if
 *      it keeps it) to the Prometheus metrics (--metrics) and to a struct
 *      collect, which holds the traced interval for report_build and, with
 *      a writer attached, appends it to a trace file.
 * Assumes: root (or CAP_BPF + CAP_PERFMON); one thread; the caller calls
 *      attach_poll in a loop, then attach_stop, then attach_close.
 */
#ifndef TT_ATTACH_H
#define TT_ATTACH_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "collect.h"
#include "compute.h"
#include "hooks.h"
#include "report.h"
#include "requests.h"
#include "stepprobe.h"
#include "target.h"

struct socktrace;
struct reqtrack;
struct cpusource;
struct metrics;

/* A finished request; return false to leave it out of store and metrics. */
typedef bool (*attach_request_cb)(void *ctx, const struct tt_request *q);

struct attach_opts {
	const char *cmd;		/* "record", "top": for messages */
	pid_t pid;
	int port;
	const char *comm, *cgroup;
	int ntargets;			/* how many of the four were given */
	const char *tenant_key;		/* NULL: header X-Tenant-Id, then user */
	const char *hash_key_path;	/* NULL: TENANT_KEY_PATH */
	const char *metrics;		/* --metrics ADDR:PORT, or NULL */
	bool compute_cpu;		/* --compute cpu */
	unsigned ringbuf_kb, capture_cap;
	bool verbose, no_tls;
	enum tt_hooks hooks;		/* --hooks (default: hooks_default()) */
	struct stepprobe_site step;	/* --step-probe; path "": found */
	bool no_step_probe;
	attach_request_cb on_request;
	void *ctx;
};

/* The options attach_parse_opt handles, for a getopt_long table. */
enum {
	ATTACH_OPT_PID = 0x100, ATTACH_OPT_PORT, ATTACH_OPT_COMM,
	ATTACH_OPT_CGROUP, ATTACH_OPT_TENANT_KEY, ATTACH_OPT_HASH_KEY,
	ATTACH_OPT_METRICS, ATTACH_OPT_COMPUTE, ATTACH_OPT_RINGBUF,
	ATTACH_OPT_CAPTURE_CAP, ATTACH_OPT_NO_TLS, ATTACH_OPT_VERBOSE,
	ATTACH_OPT_HOOKS, ATTACH_OPT_STEP_PROBE, ATTACH_OPT_NO_STEP_PROBE,
};

#define ATTACH_LONGOPTS \
	{ "pid", required_argument, 0, ATTACH_OPT_PID }, \
	{ "port", required_argument, 0, ATTACH_OPT_PORT }, \
	{ "comm", required_argument, 0, ATTACH_OPT_COMM }, \
	{ "cgroup", required_argument, 0, ATTACH_OPT_CGROUP }, \
	{ "tenant-key", required_argument, 0, ATTACH_OPT_TENANT_KEY }, \
	{ "hash-key", required_argument, 0, ATTACH_OPT_HASH_KEY }, \
	{ "metrics", required_argument, 0, ATTACH_OPT_METRICS }, \
	{ "compute", required_argument, 0, ATTACH_OPT_COMPUTE }, \
	{ "ringbuf-kb", required_argument, 0, ATTACH_OPT_RINGBUF }, \
	{ "capture-cap", required_argument, 0, ATTACH_OPT_CAPTURE_CAP }, \
	{ "no-tls", no_argument, 0, ATTACH_OPT_NO_TLS }, \
	{ "verbose", no_argument, 0, ATTACH_OPT_VERBOSE }, \
	{ "hooks", required_argument, 0, ATTACH_OPT_HOOKS }, \
	{ "step-probe", required_argument, 0, ATTACH_OPT_STEP_PROBE }, \
	{ "no-step-probe", no_argument, 0, ATTACH_OPT_NO_STEP_PROBE }

/* The help lines of those options. */
#define ATTACH_HELP \
"  --pid P            trace process P\n" \
"  --port N           trace the process listening on TCP port N (a server\n" \
"                     restarted on N is picked up)\n" \
"  --comm NAME        trace processes whose command name is NAME\n" \
"  --cgroup PATH      trace the processes of a cgroup v2 group\n" \
"  --tenant-key KEY   header:NAME | user | api-key | client-addr\n" \
"                     (default: header X-Tenant-Id, then the JSON user)\n" \
"  --hash-key FILE    key for hashing API keys into tenant names, made on\n" \
"                     first use (default /var/lib/tokentrace/hash.key)\n" \
"  --compute cpu      also trace the targets' on-CPU time: the CPU device,\n" \
"                     its busy time and its cost per tenant and model\n" \
"  --metrics ADDR:PORT serve Prometheus metrics at /metrics (ADDR\n" \
"                     127.0.0.1 unless given; PORT 0 picks a free one)\n" \
"  --ringbuf-kb N     ring buffer size in KiB (default 4096)\n" \
"  --capture-cap B    payload bytes kept per syscall (default 16384,\n" \
"                     max 65536)\n" \
HOOKS_HELP \
STEPPROBE_HELP \
"  --no-step-probe    cut steps from the work and the tokens alone\n" \
"  --no-tls           do not probe libssl\n" \
"  --verbose          libbpf messages\n"

struct attach {
	struct attach_opts o;
	struct collect c;
	struct tt_compute_sink sink;
	struct socktrace *st;
	struct reqtrack *rt;
	struct cpusource *cs;
	struct metrics *metrics;
	struct target_list tl;
	uint64_t start_ns, stop_ns, last_refresh_ns;
	unsigned long listen_inodes[16];	/* --port: as last seen */
	int nlisten;
};

/*
 * One option of getopt_long (opt, arg) into o: 0 when taken, 1 when it
 * is not one of ATTACH_LONGOPTS, -1 on a bad value (said on stderr).
 */
int attach_parse_opt(struct attach_opts *o, int opt, const char *arg);

/* After parsing: exactly one target. 0, or -1 with a message. */
int attach_check_opts(const struct attach_opts *o);

/*
 * The tenant hash key at path (NULL: /var/lib/tokentrace/hash.key), made
 * on first use; where it cannot be, a random key with a warning naming
 * cmd. 0, or -EIO when no key could be had at all.
 */
int attach_hash_key(const char *path, const char *cmd, uint8_t key[32]);

/* a zeroed, its store initialised; call before anything else. */
void attach_init(struct attach *a, const struct attach_opts *o);

/*
 * Start metrics, load the probes, find the targets and trace them; says
 * "tokentrace: tracing N process(es)" on stderr. 0, or a tokentrace exit
 * code (commands.h) after saying what failed. attach_close either way.
 */
int attach_open(struct attach *a);

/* Read the sources (waiting up to timeout_ms), pick up a restarted
 * server, tick the store once a second. A negative errno if the socket
 * tracer failed. */
int attach_poll(struct attach *a, int timeout_ms);

/* End the window now: take what the sources still hold, flush open
 * requests (end "open"). */
void attach_stop(struct attach *a);

/*
 * report_build over the store, with the window up to now if still open.
 * 0 or the error (said on stderr); report_free(r) either way.
 */
int attach_report(struct attach *a, struct report *r);

/* The report as JSON (collect_report_json: what run --summary and
 * report --format json write) to path, created 0600. 0 or -errno (said). */
int attach_write_summary(struct attach *a, const struct report *r,
			 const char *path);

/* Close the sources, stop metrics, free the store. */
void attach_close(struct attach *a);

/* Monotonic ns now (the clock of every record). */
uint64_t attach_now_ns(void);

#endif
