/*
 * attach.c - tracing servers that already run, for `tokentrace record` and
 * `tokentrace top` (see attach.h).
 *
 * In:  struct attach_opts (from attach_parse_opt); the kernel's events
 *      through user/socktrace.c and, with --compute cpu, user/cpusource.c.
 * Out: finished requests to the caller's callback, then to the metrics
 *      and the struct collect; devices and CPU intervals to the same two
 *      through a compute sink; the report over the store (attach_report).
 * Assumes: one thread; the tenant hash key at --hash-key (or the default
 *      path) is made on first use, so that hashed tenants stay the same
 *      from one run to the next. Where it cannot be read or made, a
 *      random key serves this run, with a warning.
 *
 * With --port the target set follows the port: a server restarted on it,
 * or another process taking it, is traced too. The process table is
 * searched only when the set of listening sockets on the port changed
 * (a cheap read of /proc/net/tcp{,6}), at most every two seconds.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attach.h"
#include "commands.h"
#include "cpusource.h"
#include "hostinfo.h"
#include "metrics.h"
#include "socktrace.h"
#include "tenant.h"

#define ATTACH_REFRESH_NS	2000000000ull
#define ATTACH_TICK_NS		1000000000ull

uint64_t attach_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---- options ------------------------------------------------------------- */

static int parse_uint(const struct attach_opts *o, const char *s,
		      const char *what, unsigned long max, unsigned long *v)
{
	char *end;

	errno = 0;
	*v = strtoul(s, &end, 10);
	if (errno || *end || end == s || *v > max || !*v) {
		fprintf(stderr, "tokentrace %s: %s '%s' is not a number "
			"from 1 to %lu\n", o->cmd, what, s, max);
		return -1;
	}
	return 0;
}

static int parse_target(struct attach_opts *o, int opt, const char *arg)
{
	unsigned long v;

	o->ntargets++;
	switch (opt) {
	case ATTACH_OPT_PID:
		if (parse_uint(o, arg, "--pid", 1u << 30, &v))
			return -1;
		o->pid = v;
		return 0;
	case ATTACH_OPT_PORT:
		if (parse_uint(o, arg, "--port", 65535, &v))
			return -1;
		o->port = v;
		return 0;
	case ATTACH_OPT_COMM:
		o->comm = arg;
		return 0;
	default:
		o->cgroup = arg;
		return 0;
	}
}

int attach_parse_opt(struct attach_opts *o, int opt, const char *arg)
{
	unsigned long v;

	switch (opt) {
	case ATTACH_OPT_PID: case ATTACH_OPT_PORT:
	case ATTACH_OPT_COMM: case ATTACH_OPT_CGROUP:
		return parse_target(o, opt, arg);
	case ATTACH_OPT_TENANT_KEY: o->tenant_key = arg; return 0;
	case ATTACH_OPT_HASH_KEY: o->hash_key_path = arg; return 0;
	case ATTACH_OPT_METRICS: o->metrics = arg; return 0;
	case ATTACH_OPT_NO_TLS: o->no_tls = true; return 0;
	case ATTACH_OPT_HOOKS:
		if (hooks_parse(arg, &o->hooks) == 0)
			return 0;
		fprintf(stderr, "tokentrace %s: --hooks takes auto, libc or "
			"syscalls, not '%s'\n", o->cmd, arg);
		return -1;
	case ATTACH_OPT_VERBOSE: o->verbose = true; return 0;
	case ATTACH_OPT_NO_STEP_PROBE: o->no_step_probe = true; return 0;
	case ATTACH_OPT_STEP_PROBE:
		if (stepprobe_parse(arg, &o->step) == 0)
			return 0;
		fprintf(stderr, "tokentrace %s: --step-probe takes "
			"PATH:SYMBOL, not '%s'\n", o->cmd, arg);
		return -1;
	case ATTACH_OPT_COMPUTE:
		if (strcmp(arg, "cpu")) {
			fprintf(stderr, "tokentrace %s: --compute '%s': only "
				"cpu can be traced in a running server (GPU "
				"work needs `tokentrace run`)\n", o->cmd, arg);
			return -1;
		}
		o->compute_cpu = true;
		return 0;
	case ATTACH_OPT_RINGBUF:
		if (parse_uint(o, arg, "--ringbuf-kb", 1u << 20, &v))
			return -1;
		o->ringbuf_kb = v;
		return 0;
	case ATTACH_OPT_CAPTURE_CAP:
		if (parse_uint(o, arg, "--capture-cap", 65536, &v))
			return -1;
		o->capture_cap = v;
		return 0;
	default:
		return 1;
	}
}

int attach_check_opts(const struct attach_opts *o)
{
	if (o->ntargets == 1)
		return 0;
	fprintf(stderr, "tokentrace %s: give exactly one of --pid, --port, "
		"--comm, --cgroup\n", o->cmd);
	return -1;
}

/* ---- requests ------------------------------------------------------------ */

static void on_request(void *ctx, const struct tt_request *q)
{
	struct attach *a = ctx;

	if (a->o.on_request && !a->o.on_request(a->o.ctx, q))
		return;
	if (a->metrics)
		metrics_request(a->metrics, q);
	if (collect_add_request(&a->c, q))
		fprintf(stderr, "tokentrace %s: out of memory: request %s "
			"not kept\n", a->o.cmd, q->id);
}

int attach_hash_key(const char *path, const char *cmd, uint8_t key[32])
{
	if (!tenant_load_hash_key(path, key))
		return 0;
	fprintf(stderr, "tokentrace %s: a random hash key serves this run: "
		"API-key tenants will not match other runs' (give --hash-key "
		"FILE)\n", cmd);
	if (getrandom(key, 32, 0) != 32)
		return -EIO;
	return 0;
}

/* The tenant policy and its hash key. 0, -EINVAL (said why) or -EIO. */
static int tenant_opts(struct attach *a, struct reqtrack_opts *ro)
{
	if (a->o.tenant_key && tenant_parse_spec(a->o.tenant_key, ro))
		return -EINVAL;
	return attach_hash_key(a->o.hash_key_path, a->o.cmd, ro->hash_key);
}

/* ---- opening ------------------------------------------------------------- */

void attach_init(struct attach *a, const struct attach_opts *o)
{
	memset(a, 0, sizeof(*a));
	a->o = *o;
	a->nlisten = -1;
	collect_init(&a->c);
	collect_set_limits(&a->c, COLLECT_MAX_REQS_DEFAULT,
			   COLLECT_MAX_IVS_DEFAULT);
}

static void on_step(void *ctx, uint32_t pid, uint32_t tid, uint64_t start_ns,
		    uint64_t end_ns, const struct tt_sock_step *batch)
{
	struct attach *a = ctx;

	collect_add_step(&a->c, pid, tid, start_ns, end_ns, batch);
}

static int open_socktrace(struct attach *a)
{
	struct socktrace_opts so = { 0 };
	struct reqtrack_opts ro = { 0 };
	int err;

	err = tenant_opts(a, &ro);
	if (err)
		return err == -EINVAL ? TT_EXIT_USAGE : TT_EXIT_FAIL;
	ro.on_request = on_request;
	ro.ctx = a;
	a->rt = reqtrack_new(&ro);
	if (!a->rt)
		return TT_EXIT_FAIL;
	so.rt = a->rt;
	so.ringbuf_kb = a->o.ringbuf_kb;
	so.capture_cap = a->o.capture_cap;
	so.verbose = a->o.verbose;
	so.no_tls = a->o.no_tls;
	so.hooks = a->o.hooks;
	so.cpu_compute = a->o.compute_cpu;
	so.on_step = on_step;
	so.step_ctx = a;
	so.step_site = a->o.step.path[0] ? &a->o.step : NULL;
	so.no_step_probe = a->o.no_step_probe;
	err = socktrace_open(&so, &a->st);
	if (err)
		a->st = NULL;
	return err ? tt_exit_of_errno(err) : 0;
}

static int open_compute(struct attach *a)
{
	int err;

	collect_sink(&a->c, &a->sink);
	if (a->metrics)
		metrics_wrap_sink(a->metrics, &a->sink);
	collect_set_compute(&a->c, a->o.compute_cpu ? "cpu" : "none", 0);
	if (!a->o.compute_cpu)
		return 0;
	err = cpusource_open(&a->cs, &a->sink);
	if (err)
		a->cs = NULL;
	return err ? tt_exit_of_errno(err) : 0;
}

static int find_targets(struct attach *a)
{
	const struct attach_opts *o = &a->o;

	if (o->pid)
		return target_add_pid(&a->tl, o->pid);
	if (o->port)
		return target_add_port(&a->tl, o->port);
	if (o->comm)
		return target_add_comm(&a->tl, o->comm);
	return target_add_cgroup(&a->tl, o->cgroup);
}

/* Trace tl.pids[from..]; a pid the CPU source refuses is said, not fatal. */
static void trace_pids(struct attach *a, size_t from)
{
	for (size_t i = from; i < a->tl.n; i++) {
		pid_t p = a->tl.pids[i];
		int err;

		socktrace_add_pid(a->st, p);
		if (from)	/* found later: a server restarted on the port */
			fprintf(stderr, "tokentrace: now tracing pid %d too\n",
				p);
		if (a->cs && (err = cpusource_add_pid(a->cs, p)))
			fprintf(stderr, "tokentrace %s: on-CPU time of pid %d "
				"not traced: %s\n", a->o.cmd, p,
				strerror(-err));
	}
}

int attach_open(struct attach *a)
{
	struct socktrace_stats s;
	int ret;

	if (!tt_bpf_privileged()) {
		fprintf(stderr, "tokentrace: needs root (or CAP_BPF and "
			"CAP_PERFMON) to load eBPF programs; run it with "
			"sudo\n");
		return TT_EXIT_PRIV;
	}
	hostinfo_read(&a->c.host);
	if (a->o.metrics && metrics_start_spec(a->o.metrics, &a->metrics))
		return TT_EXIT_USAGE;
	ret = open_socktrace(a);
	if (!ret)
		ret = open_compute(a);
	if (ret)
		return ret;
	if (find_targets(a) <= 0)
		return TT_EXIT_NOTARGET;
	a->start_ns = attach_now_ns();
	a->last_refresh_ns = a->start_ns;
	collect_set_start(&a->c, a->start_ns);
	trace_pids(a, 0);
	socktrace_stats(a->st, &s);
	collect_set_hooks(&a->c, socktrace_hooks_name(&s));
	fprintf(stderr, "tokentrace: tracing %zu process(es) with %s hooks"
		"%s%s\n", a->tl.n, socktrace_hooks_name(&s),
		s.ssl_procs ? " (TLS probes attached)" : "",
		a->cs ? " (on-CPU time too)" : "");
	return 0;
}

/* ---- running ------------------------------------------------------------- */

/* --port: trace what newly listens there (see the top of this file). */
static void refresh_targets(struct attach *a)
{
	unsigned long now[16];
	size_t before = a->tl.n;
	int n;

	if (!a->o.port)
		return;
	n = target_listen_inodes("/proc/net", a->o.port, now, 16);
	if (n == a->nlisten &&
	    (n <= 0 || !memcmp(now, a->listen_inodes, n * sizeof(now[0]))))
		return;
	a->nlisten = n;
	if (n > 0)
		memcpy(a->listen_inodes, now, n * sizeof(now[0]));
	if (n <= 0 || target_port_pids(&a->tl, a->o.port) <= 0)
		return;
	trace_pids(a, before);
}

/* The socket tracer's running loss totals into the store and metrics. */
static void update_losses(struct attach *a)
{
	struct socktrace_stats st;

	socktrace_stats(a->st, &st);
	collect_set_sock_losses(&a->c, st.lost_events, st.lost_bytes);
	if (st.targets)
		collect_set_hooks(&a->c, socktrace_hooks_name(&st));
	if (a->metrics)
		metrics_losses(a->metrics, &a->c.losses);
}

int attach_poll(struct attach *a, int timeout_ms)
{
	uint64_t now;
	int n;

	if (a->cs)
		cpusource_poll(a->cs, 0);
	n = socktrace_poll(a->st, timeout_ms);
	if (n < 0)
		return n;
	now = attach_now_ns();
	if (now - a->last_refresh_ns > ATTACH_REFRESH_NS) {
		a->last_refresh_ns = now;
		refresh_targets(a);
	}
	if (now - a->c.last_tick_ns >= ATTACH_TICK_NS) {
		update_losses(a);
		collect_tick(&a->c, now);	/* errors: at collect_close */
		a->c.last_tick_ns = now;
	}
	return 0;
}

void attach_stop(struct attach *a)
{
	if (a->stop_ns)
		return;
	a->stop_ns = attach_now_ns();
	if (a->cs)
		cpusource_stop(a->cs, a->stop_ns);
	socktrace_drain(a->st);
	reqtrack_flush(a->rt, a->stop_ns);
	update_losses(a);
}

int attach_report(struct attach *a, struct report *r)
{
	struct report_input in;
	uint64_t now = a->stop_ns ? a->stop_ns : attach_now_ns();
	int err;

	memset(r, 0, sizeof(*r));
	if (!a->c.window_closed && now > a->c.end_ns)
		a->c.end_ns = now;
	err = collect_report_input(&a->c, NULL, &in);
	if (!err)
		err = report_build(&in, r);
	if (err)
		fprintf(stderr, "tokentrace %s: the report could not be built: "
			"%s\n", a->o.cmd, strerror(-err));
	return err;
}

void attach_close(struct attach *a)
{
	if (a->st)
		socktrace_close(a->st);
	reqtrack_free(a->rt);
	cpusource_close(a->cs);
	collect_free(&a->c);
	metrics_stop(a->metrics);
	a->st = NULL;
	a->rt = NULL;
	a->cs = NULL;
	a->metrics = NULL;
}

/* ---- results ------------------------------------------------------------- */

int attach_write_summary(struct attach *a, const struct report *r,
			 const char *path)
{
	return collect_write_report_json(&a->c, r, path, a->o.cmd);
}
