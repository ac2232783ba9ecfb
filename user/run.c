/*
 * run.c - `tokentrace run [opts] -- CMD [ARGS...]`: start a server under
 * tracing, from its first instruction to its exit.
 *
 * In:  the command line (see usage()); the child's compute (CPU source:
 *      user/cpusource.c; GPU: records of libtokentrace_cupti.so through
 *      user/cuptirecv.c) and its socket traffic (user/socktrace.c).
 * Out: the child's own stdout and stderr, untouched; with -o FILE a trace
 *      file (user/tracefile.h), or request records as JSON lines when FILE
 *      ends in .jsonl (0600 either way); the full report of
 *      user/report.c as JSON with --summary FILE (0600); a short text
 *      summary on stderr. The exit
 *      code is CMD's, or 128 + the signal that killed it; 127 when CMD
 *      cannot be started; tokentrace's own codes (commands.h) for its
 *      failures before CMD starts.
 * Assumes: root (or CAP_BPF + CAP_PERFMON) for eBPF; a single thread.
 *
 * A race-free start: the child is forked and blocks on a pipe; the parent
 * puts its pid into the tracers' target maps, notes the window start, and
 * only then lets it exec CMD. So every CPU slice and every socket of the
 * server is seen, from exec on. An exec failure comes back to the parent
 * through a close-on-exec pipe as an errno.
 *
 * The child stays in tokentrace's session and process group, so a Ctrl-C
 * at the terminal reaches both. SIGINT and SIGTERM sent to tokentrace alone
 * (kill(2), not the terminal) are forwarded to the child; the run then waits
 * up to RUN_GRACE_S for the child and kills it after that. Signals are read
 * from a signalfd, so the wait loop is one poll(2) over the signalfd and
 * the sources' fds, with a 100 ms tick that also drains the sources that
 * write without wakeups.
 *
 * With --compute auto the CPU source always runs and the CUPTI library is
 * injected when it exists next to the tokentrace binary (or, installed,
 * in ../lib/tokentrace/ from it); the GPU devices
 * appear in the summary only if records arrive.
 *
 * Everything the sources deliver goes into a struct collect (user/
 * collect.c). With a trace file it goes to the file as it arrives and is
 * not kept (memory stays flat however long the server runs); the report
 * at the end is read back from the file, so it is the report `tokentrace
 * report` gives from it later. Without one, at most --max-requests
 * requests and --max-intervals intervals are kept, the rest counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attach.h"
#include "collect.h"
#include "commands.h"
#include "compute.h"
#include "cpusource.h"
#include "cuptirecv.h"
#include "hooks.h"
#include "hostinfo.h"
#include "metrics.h"
#include "report.h"
#include "requests.h"
#include "rotate.h"
#include "shard.h"
#include "socktrace.h"
#include "stepprobe.h"
#include "tenant.h"
#include "tracefile.h"

#define RUN_GRACE_S		5	/* after forwarding a signal */
#define RUN_TICK_MS		100
#define RUN_ZSTD_LEVEL		1
#define RUN_CUPTI_LIB		"libtokentrace_cupti.so"

enum run_compute { RUN_AUTO, RUN_CPU, RUN_CUPTI };

struct run_args {
	enum run_compute compute;
	const char *summary, *out_path, *tenant_key, *metrics, *hash_key;
	double duration_s;
	char **cmd;
	size_t max_reqs, max_ivs;
	enum tt_hooks hooks;
	struct rotate rot;		/* -o FILE|DIR, --rotate */
	struct stepprobe_site step;	/* --step-probe; path "": found */
	bool no_step_probe;
};

struct run_state {
	struct run_args a;
	struct collect c;
	struct tt_compute_sink sink;
	struct cpusource *cs;
	FILE *out;			/* -o FILE.jsonl */
	char tmpdir[64], sock_path[96], lib_path[PATH_MAX];
	bool have_lib;
	int sigfd;
	pid_t child;
	int child_status;
	bool child_done;
	uint64_t start_ns, stop_ns;
	struct socktrace *st;
	struct reqtrack *rt;
	struct cuptirecv *cr;
	struct metrics *metrics;	/* --metrics */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace run [--compute cupti|cpu|auto] [--summary FILE] [-o FILE]\n"
"                      [--tenant-key KEY] [--duration S] [--rotate D|SIZE]\n"
"                      -- CMD [ARGS...]\n"
"\n"
"Starts CMD under tracing: its CPU time (sched_switch), its GPU kernels\n"
"(CUPTI injection) and its requests (socket tracing), until it exits.\n"
"\n"
"  --compute SRC      cpu: on-CPU time of CMD's threads; cupti: GPU work via\n"
"                     " RUN_CUPTI_LIB " next to tokentrace; auto (default):\n"
"                     both, GPU devices shown if CMD uses a GPU\n"
"  --summary FILE     write the report (tokentrace report --format json)\n"
"                     to FILE at the end, mode 0600\n"
"  -o, --output FILE  a trace file for `tokentrace report`, or request\n"
"                     records as JSON lines if FILE ends in .jsonl; 0600\n"
"  --tenant-key KEY   header:NAME | user | api-key | client-addr\n"
"  --hash-key FILE    key for hashing API keys into tenant names, made on\n"
"                     first use (default /var/lib/tokentrace/hash.key)\n"
"  --duration S       send CMD SIGTERM after S seconds\n"
"  --metrics ADDR:PORT serve Prometheus metrics at /metrics (ADDR\n"
"                     127.0.0.1 unless given; PORT 0 picks a free one)\n"
"  --max-requests N   without a trace file: requests kept for the report\n"
"                     (default 1000000; later ones are counted as losses)\n"
"  --max-intervals N  the same for compute intervals (default 10000000)\n"
ROTATE_HELP
HOOKS_HELP
STEPPROBE_HELP
"  --no-step-probe    cut steps from the work and the tokens alone\n"
"\n"
"Exit code: CMD's, or 128+N if a signal N ended it; 127 if CMD cannot\n"
"run; 2 usage, 3 not root, 4 kernel feature missing.\n");
}

/* ---- arguments ----------------------------------------------------------- */

static int parse_compute(const char *s, enum run_compute *c)
{
	if (!strcmp(s, "auto"))
		*c = RUN_AUTO;
	else if (!strcmp(s, "cpu"))
		*c = RUN_CPU;
	else if (!strcmp(s, "cupti"))
		*c = RUN_CUPTI;
	else {
		fprintf(stderr, "tokentrace run: --compute '%s': use cupti, "
			"cpu or auto\n", s);
		return -1;
	}
	return 0;
}

static bool is_jsonl(const char *path)
{
	size_t n = strlen(path);

	return n >= 6 && !strcmp(path + n - 6, ".jsonl");
}

/* 0 ok, 1 help shown, -1 usage error. */
static int parse_args(int argc, char **argv, struct run_args *a)
{
	static const struct option longopts[] = {
		{ "compute", required_argument, 0, 'c' },
		{ "summary", required_argument, 0, 's' },
		{ "output", required_argument, 0, 'o' },
		{ "tenant-key", required_argument, 0, 't' },
		{ "duration", required_argument, 0, 'd' },
		{ "metrics", required_argument, 0, 'm' },
		{ "hash-key", required_argument, 0, 'k' },
		{ "max-requests", required_argument, 0, 'R' },
		{ "max-intervals", required_argument, 0, 'I' },
		{ "hooks", required_argument, 0, 'H' },
		{ "rotate", required_argument, 0, 'r' },
		{ "step-probe", required_argument, 0, 'P' },
		{ "no-step-probe", no_argument, 0, 'N' },
		{ "help", no_argument, 0, 'h' },
		{ 0 }
	};
	char *end;
	int opt;

	optind = 1;
	a->max_reqs = COLLECT_MAX_REQS_DEFAULT;
	a->max_ivs = COLLECT_MAX_IVS_DEFAULT;
	a->hooks = hooks_default();
	/* '+': stop at the first non-option, CMD's own flags stay CMD's */
	while ((opt = getopt_long(argc, argv, "+o:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			if (parse_compute(optarg, &a->compute))
				return -1;
			break;
		case 's': a->summary = optarg; break;
		case 'o': a->out_path = optarg; break;
		case 't': a->tenant_key = optarg; break;
		case 'm': a->metrics = optarg; break;
		case 'k': a->hash_key = optarg; break;
		case 'R': case 'I':
			if (collect_parse_limit("run", opt == 'R' ?
						"--max-requests" :
						"--max-intervals", optarg,
						opt == 'R' ? &a->max_reqs :
						&a->max_ivs))
				return -1;
			break;
		case 'd':
			a->duration_s = strtod(optarg, &end);
			if (*end || end == optarg || a->duration_s <= 0) {
				fprintf(stderr, "tokentrace run: --duration "
					"'%s' is not a positive number of "
					"seconds\n", optarg);
				return -1;
			}
			break;
		case 'H':
			if (hooks_parse(optarg, &a->hooks) == 0)
				break;
			fprintf(stderr, "tokentrace run: --hooks takes auto, "
				"libc or syscalls, not '%s'\n", optarg);
			return -1;
		case 'r':
			if (rotate_parse("run", optarg, &a->rot))
				return -1;
			break;
		case 'P':
			if (stepprobe_parse(optarg, &a->step) == 0)
				break;
			fprintf(stderr, "tokentrace run: --step-probe takes "
				"PATH:SYMBOL, not '%s'\n", optarg);
			return -1;
		case 'N': a->no_step_probe = true; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	if (rotate_check("run", &a->rot, a->out_path,
			 a->out_path && is_jsonl(a->out_path), RUN_ZSTD_LEVEL))
		return -1;
	if (optind >= argc) {
		fprintf(stderr, "tokentrace run: no command given: "
			"tokentrace run [opts] -- CMD [ARGS...]\n");
		return -1;
	}
	a->cmd = argv + optind;
	return 0;
}

/* ---- privilege, paths ---------------------------------------------------- */

/*
 * The CUPTI library's absolute path: next to /proc/self/exe (the build
 * tree), else in ../lib/tokentrace/ from it (make install: PREFIX/bin and
 * PREFIX/lib/tokentrace).
 */
static bool find_cupti_lib(char *out, size_t cap)
{
	static const char *const dirs[] = { "", "/../lib/tokentrace" };
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0)
		return false;
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (!slash)
		return false;
	*slash = 0;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if ((size_t)snprintf(out, cap, "%s%s/%s", exe, dirs[i],
				     RUN_CUPTI_LIB) >= cap)
			continue;
		if (access(out, R_OK) == 0)
			return true;
	}
	return false;
}

static int make_private_dir(struct run_state *rs)
{
	snprintf(rs->tmpdir, sizeof(rs->tmpdir), "/tmp/tokentrace.XXXXXX");
	if (!mkdtemp(rs->tmpdir)) {	/* mkdtemp makes it 0700 */
		fprintf(stderr, "tokentrace run: cannot create a private "
			"directory under /tmp: %s\n", strerror(errno));
		rs->tmpdir[0] = 0;
		return -errno;
	}
	snprintf(rs->sock_path, sizeof(rs->sock_path), "%s/cupti.sock",
		 rs->tmpdir);
	return 0;
}

/* ---- what the sources deliver -------------------------------------------- */

static const char *compute_name(enum run_compute c)
{
	return c == RUN_CPU ? "cpu" : c == RUN_CUPTI ? "cupti" : "auto";
}

/* The socket tracer's running loss totals into the store. */
static void sock_losses(struct run_state *rs)
{
	struct socktrace_stats st;

	if (!rs->st)
		return;
	socktrace_stats(rs->st, &st);
	collect_set_sock_losses(&rs->c, st.lost_events, st.lost_bytes);
	if (st.targets)
		collect_set_hooks(&rs->c, socktrace_hooks_name(&st));
}

static void keep_request(struct run_state *rs, const struct tt_request *q)
{
	if (rs->out) {
		tt_request_write_json(q, rs->out);
		fflush(rs->out);
	}
	if (rs->metrics)
		metrics_request(rs->metrics, q);
	if (collect_add_request(&rs->c, q))
		fprintf(stderr, "tokentrace run: out of memory: request %s "
			"not kept\n", q->id);
}

static void on_request(void *ctx, const struct tt_request *q)
{
	keep_request(ctx, q);
}

static void on_step(void *ctx, uint32_t pid, uint32_t tid, uint64_t start_ns,
		    uint64_t end_ns, const struct tt_sock_step *batch)
{
	struct run_state *rs = ctx;

	collect_add_step(&rs->c, pid, tid, start_ns, end_ns, batch);
}

/* ---- sources ------------------------------------------------------------- */

/* -o FILE: JSON lines for FILE.jsonl, else a trace file (or with --rotate
 * a folder of them). */
static int open_output(struct run_state *rs)
{
	int fd;

	if (!rs->a.out_path)
		return 0;
	if (!is_jsonl(rs->a.out_path))
		return rotate_open(&rs->a.rot, &rs->c, now_ns()) ? -EIO : 0;
	fd = open(rs->a.out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		  0600);
	if (fd < 0 || fchmod(fd, 0600) || !(rs->out = fdopen(fd, "w"))) {
		fprintf(stderr, "tokentrace run: cannot write %s: %s\n",
			rs->a.out_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	return 0;
}

static int open_socktrace(struct run_state *rs)
{
	struct reqtrack_opts ro = { 0 };
	struct socktrace_opts so = { 0 };
	int err;

	if (rs->a.tenant_key && tenant_parse_spec(rs->a.tenant_key, &ro))
		return -EINVAL;		/* it said why */
	if (attach_hash_key(rs->a.hash_key, "run", ro.hash_key))
		return -EIO;
	ro.on_request = on_request;
	ro.ctx = rs;
	rs->rt = reqtrack_new(&ro);
	if (!rs->rt)
		return -ENOMEM;
	so.rt = rs->rt;
	so.hooks = rs->a.hooks;
	/* auto may end up measuring the CPU: it too keeps auto off uprobes */
	so.cpu_compute = rs->a.compute != RUN_CUPTI;
	so.on_step = on_step;
	so.step_ctx = rs;
	so.step_site = rs->a.step.path[0] ? &rs->a.step : NULL;
	so.no_step_probe = rs->a.no_step_probe;
	err = socktrace_open(&so, &rs->st);
	if (err) {
		reqtrack_free(rs->rt);
		rs->rt = NULL;
		rs->st = NULL;
	}
	return err;
}

/* Open what --compute asks for. A tokentrace exit code, 0 when ready. */
static int open_sources(struct run_state *rs)
{
	int err;

	collect_sink(&rs->c, &rs->sink);
	if (rs->metrics)
		metrics_wrap_sink(rs->metrics, &rs->sink);
	collect_set_compute(&rs->c, compute_name(rs->a.compute), 0);
	if (rs->a.compute != RUN_CPU) {
		rs->have_lib = find_cupti_lib(rs->lib_path,
					      sizeof(rs->lib_path));
		if (!rs->have_lib && rs->a.compute == RUN_CUPTI) {
			fprintf(stderr, "tokentrace run: CUPTI library missing:"
				" no %s next to the tokentrace binary nor in "
				"../lib/tokentrace/ from it (build "
				"it where the CUDA toolkit is installed, or "
				"use --compute cpu)\n", RUN_CUPTI_LIB);
			return TT_EXIT_FAIL;
		}
	}
	if (rs->have_lib) {
		rs->cr = cuptirecv_open(rs->sock_path, &rs->sink);
		if (!rs->cr)
			return TT_EXIT_FAIL;
	}
	if (rs->a.compute != RUN_CUPTI) {
		err = cpusource_open(&rs->cs, &rs->sink);
		if (err)	/* privilege was checked: a refusal is the kernel's */
			return err == -EPERM || err == -EACCES ?
			       TT_EXIT_KERNEL : tt_exit_of_errno(err);
	}
	err = open_socktrace(rs);
	if (err == -EPERM || err == -EACCES || err == -EINVAL)
		return tt_exit_of_errno(err);
	if (err)
		fprintf(stderr, "tokentrace run: socket tracing unavailable "
			"(%s): no request records for this run\n",
			strerror(-err));
	return open_output(rs) ? TT_EXIT_FAIL : 0;
}

/* CMD's file as execvp finds it, in out; NULL when it finds none. */
static const char *resolve_cmd(const char *cmd, char *out, size_t n)
{
	const char *path = getenv("PATH");
	char dirs[PATH_MAX], *save = NULL, *d;

	if (strchr(cmd, '/')) {
		snprintf(out, n, "%s", cmd);
		return out;
	}
	snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/bin:/bin");
	for (d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(out, n, "%s/%s", *d ? d : ".", cmd);
		if (access(out, X_OK) == 0)
			return out;
	}
	return NULL;
}

static int add_target(struct run_state *rs, pid_t pid)
{
	int err;

	if (rs->cs) {
		err = cpusource_add_pid(rs->cs, pid);
		if (err)
			return err;
	}
	if (rs->st) {
		char exe[PATH_MAX];

		err = socktrace_add_pid_exe(rs->st, pid,
					    resolve_cmd(rs->a.cmd[0], exe,
							sizeof(exe)));
		if (err)
			fprintf(stderr, "tokentrace run: socket tracing of pid "
				"%d failed: %s\n", pid, strerror(-err));
	}
	return 0;
}

/* Read what every source has, waiting up to timeout_ms on the first. */
static void poll_sources(struct run_state *rs, int timeout_ms)
{
	if (rs->cs)
		cpusource_poll(rs->cs, 0);
	if (rs->st)
		socktrace_poll(rs->st, 0);
	if (rs->cr)
		cuptirecv_poll(rs->cr, timeout_ms);
}

/* ---- the child ----------------------------------------------------------- */

/* In the child: wait for the go byte, then exec; report errno on failure. */
static void child_main(struct run_state *rs, int go_fd, int err_fd,
		       const sigset_t *oldmask)
{
	char c = 0;
	ssize_t n;
	int e;

	sigprocmask(SIG_SETMASK, oldmask, NULL);
	if (rs->have_lib) {
		setenv("CUDA_INJECTION64_PATH", rs->lib_path, 1);
		setenv("TOKENTRACE_CUPTI_SOCKET", rs->sock_path, 1);
	}
	do
		n = read(go_fd, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1 || c != 'g')	/* the parent gave up: never run untraced */
		_exit(127);
	execvp(rs->a.cmd[0], rs->a.cmd);
	e = errno;
	if (write(err_fd, &e, sizeof(e)) < 0)
		_exit(127);
	_exit(127);
}

/* Fork CMD held at a pipe, trace it, release it. 0, or an exit code. */
static int start_child(struct run_state *rs, const sigset_t *oldmask)
{
	int go[2] = { -1, -1 }, ep[2] = { -1, -1 }, e = 0, ret = 0;
	ssize_t n;

	fflush(NULL);
	if (pipe2(go, O_CLOEXEC) || pipe2(ep, O_CLOEXEC) ||
	    (rs->child = fork()) < 0) {
		fprintf(stderr, "tokentrace run: cannot start '%s': pipe/fork: "
			"%s\n", rs->a.cmd[0], strerror(errno));
		for (int i = 0; i < 2; i++) {
			if (go[i] >= 0)
				close(go[i]);
			if (ep[i] >= 0)
				close(ep[i]);
		}
		rs->child = 0;
		return TT_EXIT_FAIL;
	}
	if (rs->child == 0) {
		close(go[1]);
		close(ep[0]);
		child_main(rs, go[0], ep[1], oldmask);
	}
	close(go[0]);
	close(ep[1]);
	if (add_target(rs, rs->child)) {
		fprintf(stderr, "tokentrace run: cannot trace the child "
			"(pid %d): not starting '%s'\n", rs->child,
			rs->a.cmd[0]);
		ret = TT_EXIT_FAIL;
	} else {
		rs->start_ns = now_ns();
		collect_set_start(&rs->c, rs->start_ns);
		if (write(go[1], "g", 1) != 1)
			ret = TT_EXIT_FAIL;
	}
	close(go[1]);
	do
		n = read(ep[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(ep[0]);
	if (!ret && n == sizeof(e)) {
		fprintf(stderr, "tokentrace run: cannot run '%s': %s\n",
			rs->a.cmd[0], strerror(e));
		ret = 127;
	}
	if (ret) {
		waitpid(rs->child, NULL, 0);
		rs->child = 0;
	}
	return ret;
}

static void reap(struct run_state *rs)
{
	int status;

	if (rs->child_done)
		return;
	if (waitpid(rs->child, &status, WNOHANG) == rs->child) {
		rs->child_status = status;
		rs->child_done = true;
	}
}

/* Forward signals sent to us alone; the terminal's reached the child. */
static void on_signal_info(struct run_state *rs,
			   const struct signalfd_siginfo *si,
			   uint64_t *kill_at)
{
	if (si->ssi_signo == SIGCHLD) {
		reap(rs);
		return;
	}
	if (*kill_at) {			/* second one: do not wait */
		kill(rs->child, SIGKILL);
		return;
	}
	if (si->ssi_code != SI_KERNEL)
		kill(rs->child, si->ssi_signo);
	*kill_at = now_ns() + RUN_GRACE_S * 1000000000ull;
}

static void read_signals(struct run_state *rs, uint64_t *kill_at)
{
	struct signalfd_siginfo si;

	while (read(rs->sigfd, &si, sizeof(si)) == sizeof(si))
		on_signal_info(rs, &si, kill_at);
}

/* Until the child exits: read the sources, handle signals and timers. */
static void wait_loop(struct run_state *rs)
{
	uint64_t end = rs->a.duration_s > 0 ?
		       rs->start_ns + (uint64_t)(rs->a.duration_s * 1e9) : 0;
	uint64_t kill_at = 0;

	while (!rs->child_done) {
		/* device records wake the loop as they come: the library's
		 * socket buffer holds a few thousand of them, a tick's worth
		 * at the rates of a multi-GPU server is a hundred times that */
		struct pollfd p[3] = { { rs->sigfd, POLLIN, 0 },
				       { -1, POLLIN, 0 }, { -1, POLLIN, 0 } };
		uint64_t now;

		if (rs->cs)
			p[1].fd = cpusource_fd(rs->cs);
		if (rs->cr)
			p[2].fd = cuptirecv_fd(rs->cr);
		poll(p, 3, RUN_TICK_MS);
		read_signals(rs, &kill_at);
		poll_sources(rs, 0);
		reap(rs);
		now = now_ns();
		if (end && now >= end && !kill_at) {
			kill(rs->child, SIGTERM);
			kill_at = now + RUN_GRACE_S * 1000000000ull;
		}
		if (kill_at && now >= kill_at && !rs->child_done) {
			fprintf(stderr, "tokentrace run: '%s' still running %d "
				"s after the signal: killing it\n",
				rs->a.cmd[0], RUN_GRACE_S);
			kill(rs->child, SIGKILL);
			kill_at = UINT64_MAX;
		}
		rotate_tick(&rs->a.rot, &rs->c, now);
		if (now - rs->c.last_tick_ns >= 1000000000ull) {
			sock_losses(rs);
			collect_tick(&rs->c, now);
			if (rs->metrics)
				metrics_losses(rs->metrics, &rs->c.losses);
		}
	}
}

/* The child is gone: cut the window, take what the sources still hold. */
static void stop_sources(struct run_state *rs)
{
	rs->stop_ns = now_ns();
	if (rs->cs)
		cpusource_stop(rs->cs, rs->stop_ns);
	/* the library sends its last buffers at exit: take what arrived */
	for (int i = 0; rs->cr && i < 5 && cuptirecv_poll(rs->cr, 20) > 0; i++)
		;
	if (rs->st) {
		socktrace_drain(rs->st);
		reqtrack_flush(rs->rt, rs->stop_ns);
	}
	sock_losses(rs);
}

/* ---- results ------------------------------------------------------------- */

static void print_text(struct run_state *rs, const struct report *r)
{
	double win = r->window_ns / 1e9;

	fprintf(stderr, "tokentrace: '%s' ran %.2f s", rs->a.cmd[0], win);
	if (WIFEXITED(rs->child_status))
		fprintf(stderr, ", exit status %d\n",
			WEXITSTATUS(rs->child_status));
	else
		fprintf(stderr, ", killed by signal %d\n",
			WTERMSIG(rs->child_status));
	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];

		fprintf(stderr, "  %-24s busy %.3f s (%.1f%%), idle %.3f s",
			d->dev.name, d->busy_ns / 1e9,
			win > 0 ? 100.0 * d->busy_ns / 1e9 / win : 0.0,
			d->idle_ns / 1e9);
		if (d->dev.kind == TT_DEV_CPU)
			fprintf(stderr, ", on-CPU %.3f s", collect_on_cpu_ns(
				&rs->c, d->dev.id) / 1e9);
		fprintf(stderr, "\n");
	}
	if (rs->cs) {
		struct cpusource_stats cs;

		cpusource_get_stats(rs->cs, &cs);
		fprintf(stderr, "  cpu source: %llu slices in %llu records "
			"(%.0f records/s), %llu flushed at stop\n",
			(unsigned long long)cs.slices,
			(unsigned long long)cs.records,
			win > 0 ? cs.records / win : 0.0,
			(unsigned long long)cs.flushed);
	}
	if (rs->st) {
		struct socktrace_stats ss;

		socktrace_stats(rs->st, &ss);
		if (ss.step_procs)
			fprintf(stderr, "  step probe: %llu steps in %u "
				"process(es)", (unsigned long long)ss.steps,
				ss.step_procs);
		if (ss.step_procs && (ss.step_batches || ss.step_batches_cut))
			fprintf(stderr, ", %llu with their batch read, %llu "
				"batches too big to read whole",
				(unsigned long long)ss.step_batches,
				(unsigned long long)ss.step_batches_cut);
		if (ss.step_procs)
			fputc('\n', stderr);
	}
	fprintf(stderr, "  requests %zu, unattributed %.3f s; lost: cpu %llu, "
		"sockets %llu events %llu bytes, cupti %llu\n", r->nreqs,
		r->unattributed_ns / 1e9,
		(unsigned long long)r->losses.cpu_events,
		(unsigned long long)r->losses.sock_events,
		(unsigned long long)r->losses.sock_bytes,
		(unsigned long long)r->losses.cupti_records);
}

/* Close the trace, build the report, write --summary and the text. 0, or
 * TT_EXIT_FAIL if the summary or the trace failed. */
static int report(struct run_state *rs)
{
	struct report_input in;
	struct report r;
	int err, ret = 0;

	if (collect_close(&rs->c, rs->stop_ns) && rs->a.out_path &&
	    !rs->out) {
		fprintf(stderr, "tokentrace run: the trace file %s is "
			"incomplete: %s\n", rs->a.out_path,
			strerror(-rs->c.write_error));
		ret = TT_EXIT_FAIL;
	}
	if (rs->a.out_path && !rs->out && !ret) {
		/* a long run is reported a time range at a time */
		err = shard_end_of_run(rs->a.out_path, rs->a.summary, stderr,
				       "run");
		if (err <= 0) {
			if (!err && rs->a.summary)
				fprintf(stderr, "tokentrace: summary in %s\n",
					rs->a.summary);
			if (!err)
				fprintf(stderr, "tokentrace: trace in %s "
					"(tokentrace report %s)\n",
					rs->a.out_path, rs->a.out_path);
			return err ? TT_EXIT_FAIL : ret;
		}
	}
	if (rs->a.out_path && !rs->out &&
	    rotate_reload(&rs->a.rot, &rs->c, stderr))
		ret = TT_EXIT_FAIL;
	if (rs->c.reqs_dropped || rs->c.ivs_dropped)
		fprintf(stderr, "tokentrace run: memory limit: %llu request(s) "
			"and %llu interval(s) not kept for the report (raise "
			"--max-requests/--max-intervals, or write a trace file "
			"with -o FILE)\n",
			(unsigned long long)rs->c.reqs_dropped,
			(unsigned long long)rs->c.ivs_dropped);
	err = collect_report_input(&rs->c, NULL, &in);
	if (!err)
		err = report_build(&in, &r);
	else
		memset(&r, 0, sizeof(r));
	if (err)
		fprintf(stderr, "tokentrace run: the report could not be "
			"built: %s\n", strerror(-err));
	if (rs->a.summary && (err || collect_write_report_json(&rs->c, &r, rs->a.summary, "run")))
		ret = TT_EXIT_FAIL;
	else if (rs->a.summary)
		fprintf(stderr, "tokentrace: summary in %s\n", rs->a.summary);
	if (!err)
		print_text(rs, &r);
	if (rs->a.out_path && !rs->out && !ret)
		fprintf(stderr, "tokentrace: trace in %s (tokentrace report "
			"%s)\n", rs->a.out_path, rs->a.out_path);
	report_free(&r);
	return ret;
}

static void cleanup(struct run_state *rs)
{
	if (rs->st)
		socktrace_close(rs->st);
	reqtrack_free(rs->rt);
	if (rs->cr)
		cuptirecv_close(rs->cr);
	cpusource_close(rs->cs);
	if (rs->out)
		fclose(rs->out);
	if (rs->tmpdir[0]) {
		unlink(rs->sock_path);
		rmdir(rs->tmpdir);
	}
	if (rs->sigfd >= 0)
		close(rs->sigfd);
	collect_free(&rs->c);
	metrics_stop(rs->metrics);
}

static int child_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return TT_EXIT_FAIL;
}

static int run_traced(struct run_state *rs)
{
	sigset_t mask, oldmask;
	int ret;

	if (make_private_dir(rs))
		return TT_EXIT_FAIL;
	hostinfo_read(&rs->c.host);
	if (rs->a.metrics && metrics_start_spec(rs->a.metrics, &rs->metrics))
		return TT_EXIT_USAGE;
	ret = open_sources(rs);
	if (ret)
		return ret;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	rs->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (rs->sigfd < 0) {
		fprintf(stderr, "tokentrace run: signalfd: %s\n",
			strerror(errno));
		ret = TT_EXIT_FAIL;
		goto out;
	}
	ret = start_child(rs, &oldmask);
	if (ret)
		goto out;
	wait_loop(rs);
	stop_sources(rs);
	ret = report(rs);
	if (!ret)
		ret = child_exit_code(rs->child_status);
out:
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
	return ret;
}

int cmd_run(int argc, char **argv)
{
	struct run_state *rs;
	int ret;

	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return TT_EXIT_FAIL;
	rs->sigfd = -1;
	collect_init(&rs->c);
	ret = parse_args(argc, argv, &rs->a);
	if (ret) {
		free(rs);
		return ret > 0 ? TT_EXIT_OK : TT_EXIT_USAGE;
	}
	collect_set_limits(&rs->c, rs->a.max_reqs, rs->a.max_ivs);
	if (!tt_bpf_privileged()) {
		fprintf(stderr, "tokentrace run: needs root (or CAP_BPF and "
			"CAP_PERFMON) to load its eBPF programs: run it with "
			"sudo\n");
		free(rs);
		return TT_EXIT_PRIV;
	}
	signal(SIGPIPE, SIG_IGN);
	ret = run_traced(rs);
	cleanup(rs);
	free(rs);
	return ret;
}
