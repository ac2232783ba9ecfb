/*
 * socktrace.c - the loader and the connection layer of socket tracing.
 *
 * In:  records of include/tokentrace/sock.h from the ring buffer of
 *      bpf/sock.bpf.c (through the build/sock.skel.h skeleton).
 * Out: per connection, its identity and addresses (struct tt_conn_meta) and
 *      the calls reqtrack_data / reqtrack_lost / reqtrack_close of the
 *      request tracker (user/requests.h); counters of what was seen and
 *      what was lost.
 * Assumes: root or CAP_BPF+CAP_PERFMON, kernel BTF, tracefs (mounted here
 *      when missing). The traced processes are servers: connections they
 *      open themselves (connect) are counted, not given to the tracker.
 *      Connections are kept in a hash table by conn_id; a connection
 *      silent for idle_timeout_ns, or whose process is gone (killed: its
 *      sockets closed by the kernel, no close() seen), is closed in the
 *      tracker at the next sweep (each second), so state stays bounded and
 *      a dead server's open requests end at once.
 */
#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tokentrace/sock.h"
#include "sock.skel.h"
#include "commands.h"
#include "socktrace.h"
#include "hooks.h"
#include "sslprobe.h"
#include "stepprobe.h"
#include "uprobes.h"
#include "tracefs.h"

#define CONN_BUCKETS	4096
#define SWEEP_NS	1000000000ull
#define IDLE_DEFAULT_NS	(600ull * 1000000000ull)
#define SYS_LINKS_MAX	32

struct conn_ent {
	struct tt_conn_meta meta;
	uint64_t last_ns;
	uint64_t losses_at_open;	/* ring buffer losses when first seen */
	bool client;		/* connect()ed by the traced process: its
				   requests go out, not in; not a server's */
	struct conn_ent *next;
};

struct socktrace {
	struct socktrace_opts o;
	struct sock_bpf *skel;
	struct ring_buffer *rb;
	struct uprobe_set *probes;	/* libc ('l') and libssl ('s') */
	struct bpf_link *sys_links[SYS_LINKS_MAX];	/* syscall tracepoints */
	int nsys;
	bool sys_on;
	struct target_ent {
		pid_t pid;
		uint8_t hook;
		bool stepped;	/* has had the step probe */
		dev_t step_dev;	/* the file it is on now (0: none) */
		ino_t step_ino;
	} *targets;
	size_t ntargets, captargets;
	struct conn_ent *buckets[CONN_BUCKETS];
	uint64_t last_sweep_ns;
	struct socktrace_stats s;
};

uint64_t socktrace_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

unsigned socktrace_ringbuf_bytes(unsigned kb)
{
	unsigned want = (kb ? kb : 4096) * 1024u, page = getpagesize();
	unsigned sz = page;

	while (sz < want && sz < (1u << 30))
		sz <<= 1;
	return sz;
}

/* ---- connections --------------------------------------------------------- */

static void read_losses(struct socktrace *st);
static void targets_sweep(struct socktrace *st);
static void on_proc(struct socktrace *st, const struct tt_sock_hdr *h);

/*
 * A connection's loss mark travels on its next event; when the lost events
 * were its last ones (its final writes, its close), none comes. A close
 * that is seen carries the mark of every loss after the last event seen,
 * so the loss is known exactly. A connection that ends unseen (its close
 * lost, the process gone, idle past the timeout, or the tracer stopping)
 * with ring-buffer losses since it was first seen has what it still has in
 * flight marked lost: possibly for another connection's lost events, but
 * never a guess taken as whole.
 */
static void conn_end_losses(struct socktrace *st, struct conn_ent *c,
			    uint64_t ts)
{
	if (!st->o.rt || c->client)
		return;
	read_losses(st);
	if (st->s.lost_events > c->losses_at_open)
		reqtrack_lost(st->o.rt, &c->meta, ts);
}

static struct conn_ent **conn_slot(struct socktrace *st, uint64_t id)
{
	struct conn_ent **pp = &st->buckets[id % CONN_BUCKETS];

	while (*pp && (*pp)->meta.conn_id != id)
		pp = &(*pp)->next;
	return pp;
}

static struct conn_ent *conn_lookup(struct socktrace *st,
				    const struct tt_sock_hdr *h)
{
	struct conn_ent **pp = conn_slot(st, h->conn_id), *c = *pp;

	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->meta.pid = h->tgid;
	c->meta.conn_id = h->conn_id;
	c->losses_at_open = st->s.lost_events;
	*pp = c;
	st->s.conns_live++;
	return c;
}

/* seen: its close record came (with its loss mark, if any). */
static void conn_drop(struct socktrace *st, uint64_t id, uint64_t ts,
		      bool seen)
{
	struct conn_ent **pp = conn_slot(st, id), *c = *pp;
	bool client;

	if (!c)
		return;
	client = c->client;
	if (!seen)
		conn_end_losses(st, c, ts);
	*pp = c->next;
	free(c);
	st->s.conns_live--;
	if (st->o.rt && !client)
		reqtrack_close(st->o.rt, id, ts);
}

/* Whether process pid is gone; the last answer is cached per sweep. */
static bool pid_gone(uint32_t pid, uint32_t *last_pid, bool *last_gone)
{
	if (pid != *last_pid) {
		*last_pid = pid;
		*last_gone = kill((pid_t)pid, 0) < 0 && errno == ESRCH;
	}
	return *last_gone;
}

/* Close what was silent longer than the idle timeout, and the connections
 * of processes that are gone. */
static void conn_sweep(struct socktrace *st, uint64_t now)
{
	uint64_t idle = st->o.idle_timeout_ns;
	uint32_t last_pid = 0;
	bool last_gone = false;

	if (now - st->last_sweep_ns < SWEEP_NS)
		return;
	st->last_sweep_ns = now;
	targets_sweep(st);
	for (int b = 0; b < CONN_BUCKETS; b++) {
		struct conn_ent **pp = &st->buckets[b];

		while (*pp) {
			struct conn_ent *c = *pp;

			if (now < c->last_ns + idle &&
			    !pid_gone(c->meta.pid, &last_pid, &last_gone)) {
				pp = &c->next;
				continue;
			}
			*pp = c->next;
			conn_end_losses(st, c, now);
			if (st->o.rt && !c->client)
				reqtrack_close(st->o.rt, c->meta.conn_id, now);
			free(c);
			st->s.conns_live--;
			st->s.conns_timed_out++;
		}
	}
}

static void conn_free_all(struct socktrace *st)
{
	for (int b = 0; b < CONN_BUCKETS; b++) {
		while (st->buckets[b]) {
			struct conn_ent *c = st->buckets[b];

			st->buckets[b] = c->next;
			free(c);
		}
	}
	st->s.conns_live = 0;
}

/* ---- records ------------------------------------------------------------- */

static void on_open(struct socktrace *st, struct conn_ent *c,
		    const struct tt_sock_hdr *h, size_t size)
{
	const struct tt_sock_open *o = (const void *)(h + 1);

	if (size < sizeof(*h) + sizeof(*o))
		return;
	c->meta.family = o->family;
	c->meta.local_port = o->local_port;
	c->meta.remote_port = o->remote_port;
	memcpy(c->meta.local_addr, o->local_addr, 16);
	memcpy(c->meta.remote_addr, o->remote_addr, 16);
	c->client = o->role == TT_SOCK_ROLE_CONNECTED;
	st->s.open_events++;
}

static void on_data(struct socktrace *st, struct conn_ent *c,
		    const struct tt_sock_hdr *h, size_t size)
{
	const struct tt_sock_data *d = (const void *)(h + 1);
	const uint8_t *payload = (const uint8_t *)(d + 1);
	enum tt_dir dir;

	if (size < sizeof(*h) + sizeof(*d) ||
	    d->len > size - sizeof(*h) - sizeof(*d))
		return;
	dir = d->dir == TT_SOCK_DIR_IN ? TT_DIR_IN : TT_DIR_OUT;
	st->s.data_events++;
	st->s.bytes += d->len;
	st->s.bytes_missing += d->missing;
	if (d->source == TT_SOCK_SRC_TLS)
		st->s.tls_bytes += d->len;
	if (st->o.on_data)
		st->o.on_data(st->o.ctx, &c->meta, dir, h->ts_ns, payload,
			      d->len, d->missing, h->flags & TT_SOCK_F_LOST);
	if (c->client) {
		st->s.client_bytes += d->len;
		return;
	}
	if (st->o.rt)
		reqtrack_data(st->o.rt, &c->meta, dir, h->ts_ns, payload,
			      d->len, d->missing);
}

static void on_step(struct socktrace *st, const struct tt_sock_hdr *h)
{
	const struct tt_sock_step *s = (const void *)(h + 1);
	const size_t head = sizeof(*h) + offsetof(struct tt_sock_step, runs);
	bool batch;

	if (h->size < head || s->start_ns > h->ts_ns)
		return;
	batch = (s->flags & TT_SOCK_STEP_BATCH) &&
		!(s->flags & TT_SOCK_STEP_CUT) && s->nruns &&
		s->nruns <= TT_SOCK_STEP_RUNS &&
		h->size >= head + s->nruns * sizeof(s->runs[0]);
	st->s.steps++;
	st->s.step_batches += batch;
	st->s.step_batches_cut += !!(s->flags & TT_SOCK_STEP_CUT);
	if (st->o.on_step)
		st->o.on_step(st->o.step_ctx, h->tgid, h->tid, s->start_ns,
			      h->ts_ns, batch ? s : NULL);
}

static int handle_record(void *ctx, void *data, size_t size)
{
	struct socktrace *st = ctx;
	const struct tt_sock_hdr *h = data;
	struct conn_ent *c;

	if (size < sizeof(*h) || h->version != TT_SOCK_VERSION ||
	    h->size > size)
		return 0;
	st->s.events++;
	if (h->type == TT_SOCK_EV_PROC) {
		on_proc(st, h);
		return 0;
	}
	if (h->type == TT_SOCK_EV_STEP) {
		on_step(st, h);
		return 0;
	}
	c = conn_lookup(st, h);
	if (!c)
		return 0;
	c->last_ns = h->ts_ns;
	if (h->flags & TT_SOCK_F_LOST) {
		st->s.lost_marks++;
		if (st->o.rt && !c->client)
			reqtrack_lost(st->o.rt, &c->meta, h->ts_ns);
	}
	switch (h->type) {
	case TT_SOCK_EV_OPEN:
		on_open(st, c, h, h->size);
		break;
	case TT_SOCK_EV_DATA:
		on_data(st, c, h, h->size);
		break;
	case TT_SOCK_EV_CLOSE:
		st->s.close_events++;
		conn_drop(st, h->conn_id, h->ts_ns, true);
		break;
	default:
		break;
	}
	return 0;
}

/* ---- loading ------------------------------------------------------------- */

static int quiet_print(enum libbpf_print_level level, const char *fmt,
		       va_list ap)
{
	(void)level;
	(void)fmt;
	(void)ap;
	return 0;
}

static int loud_print(enum libbpf_print_level level, const char *fmt,
		      va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static int check_host(void)
{
	if (!tt_bpf_privileged()) {
		fprintf(stderr, "tokentrace: needs root (or CAP_BPF and "
			"CAP_PERFMON) to load eBPF programs; run it with "
			"sudo\n");
		return -EPERM;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		fprintf(stderr, "tokentrace: no kernel BTF at "
			"/sys/kernel/btf/vmlinux: the kernel needs "
			"CONFIG_DEBUG_INFO_BTF=y\n");
		return -ENOENT;
	}
	if (tracefs_ensure("syscalls") || tracefs_ensure("sched"))
		return -ENODEV;
	return 0;
}

/* The syscall tracepoints, once: from then on every process on the host
 * enters them (the traced ones are picked in the programs). */
static int attach_syscalls(struct socktrace *st)
{
	struct bpf_program *prog;

	if (st->sys_on)
		return 0;
	bpf_object__for_each_program(prog, st->skel->obj) {
		struct bpf_link *l;

		if (strncmp(bpf_program__section_name(prog),
			    "tracepoint/syscalls/", 20))
			continue;
		if (st->nsys == SYS_LINKS_MAX)
			return -E2BIG;
		l = bpf_program__attach(prog);
		if (!l) {
			int err = -errno;

			fprintf(stderr, "tokentrace: attaching the syscall "
				"tracepoint %s failed: %s\n",
				bpf_program__section_name(prog) + 11,
				strerror(-err));
			return err;
		}
		st->sys_links[st->nsys++] = l;
	}
	st->sys_on = true;
	return 0;
}

static int load(struct socktrace *st)
{
	unsigned cap = st->o.capture_cap ? st->o.capture_cap :
		       TT_SOCK_CAP_DEFAULT;
	unsigned rb = socktrace_ringbuf_bytes(st->o.ringbuf_kb);
	struct bpf_program *prog;
	int err;

	if (cap > TT_SOCK_CAP_MAX) {
		fprintf(stderr, "tokentrace: capture cap %u is above the "
			"maximum %u bytes per syscall\n", cap,
			TT_SOCK_CAP_MAX);
		return -EINVAL;
	}
	st->skel = sock_bpf__open();
	if (!st->skel) {
		err = -errno;
		fprintf(stderr, "tokentrace: opening the socket programs "
			"failed: %s\n", strerror(-err));
		return err;
	}
	st->skel->rodata->capture_cap = cap;
	/* the syscall tracepoints are attached when a target needs them */
	bpf_object__for_each_program(prog, st->skel->obj)
		if (!strncmp(bpf_program__section_name(prog),
			     "tracepoint/syscalls/", 20))
			bpf_program__set_autoattach(prog, false);
	bpf_map__set_max_entries(st->skel->maps.events, rb);
	st->s.capture_cap = cap;
	st->s.ringbuf_kb = rb / 1024;
	err = sock_bpf__load(st->skel);
	if (err) {
		fprintf(stderr, "tokentrace: loading the socket programs "
			"failed: %s%s\n", strerror(-err),
			st->o.verbose ? "" : " (--verbose shows the "
			"verifier's log)");
		return err == -EACCES ? -EPERM : err;
	}
	err = sock_bpf__attach(st->skel);
	if (err) {
		fprintf(stderr, "tokentrace: attaching the process "
			"tracepoints failed: %s\n", strerror(-err));
		return err;
	}
	return st->o.hooks == TT_HOOKS_SYSCALLS ? attach_syscalls(st) : 0;
}

int socktrace_open(const struct socktrace_opts *opts, struct socktrace **out)
{
	struct socktrace *st;
	int err;

	*out = NULL;
	err = check_host();
	if (err)
		return err;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->o = *opts;
	if (!st->o.idle_timeout_ns)
		st->o.idle_timeout_ns = IDLE_DEFAULT_NS;
	libbpf_set_print(st->o.verbose ? loud_print : quiet_print);
	err = load(st);
	if (!err) {
		st->rb = ring_buffer__new(bpf_map__fd(st->skel->maps.events),
					  handle_record, st, NULL);
		if (!st->rb)
			err = -errno;
	}
	if (!err && !(st->probes = uprobe_set_new()))
		err = -ENOMEM;
	if (err) {
		socktrace_close(st);
		return err;
	}
	st->last_sweep_ns = socktrace_now_ns();
	*out = st;
	return 0;
}

/* ---- targets and their hooks ---------------------------------------------- */

/* The libc functions of a process's socket I/O, by argument shape; the
 * libc of parent (0: none) when pid maps none (a child already in its
 * new program, before the dynamic loader mapped its libc). */
static int attach_libc(struct socktrace *st, pid_t pid, pid_t parent)
{
	struct sock_bpf *k = st->skel;
	const struct uprobe_spec p[] = {
		{ k->progs.libc_in_buf, "read", false, true },
		{ k->progs.libc_in_buf, "recv", false, true },
		{ k->progs.libc_in_buf, "recvfrom", false, true },
		{ k->progs.libc_in_buf, "__read_chk", false, false },
		{ k->progs.libc_in_buf, "__recv_chk", false, false },
		{ k->progs.libc_in_buf, "__recvfrom_chk", false, false },
		{ k->progs.libc_in_iov, "readv", false, true },
		{ k->progs.libc_in_msg, "recvmsg", false, true },
		{ k->progs.libc_out_buf, "write", false, true },
		{ k->progs.libc_out_buf, "send", false, true },
		{ k->progs.libc_out_buf, "sendto", false, true },
		{ k->progs.libc_out_iov, "writev", false, true },
		{ k->progs.libc_out_msg, "sendmsg", false, true },
		{ k->progs.libc_accept, "accept", false, true },
		{ k->progs.libc_accept, "accept4", false, true },
		{ k->progs.libc_connect, "connect", false, true },
		{ k->progs.libc_close, "close", false, true },
		{ k->progs.libc_ret, "read", true, true },
		{ k->progs.libc_ret, "recv", true, true },
		{ k->progs.libc_ret, "recvfrom", true, true },
		{ k->progs.libc_ret, "__read_chk", true, false },
		{ k->progs.libc_ret, "__recv_chk", true, false },
		{ k->progs.libc_ret, "__recvfrom_chk", true, false },
		{ k->progs.libc_ret, "readv", true, true },
		{ k->progs.libc_ret, "recvmsg", true, true },
		{ k->progs.libc_ret, "write", true, true },
		{ k->progs.libc_ret, "send", true, true },
		{ k->progs.libc_ret, "sendto", true, true },
		{ k->progs.libc_ret, "writev", true, true },
		{ k->progs.libc_ret, "sendmsg", true, true },
		{ k->progs.libc_ret, "accept", true, true },
		{ k->progs.libc_ret, "accept4", true, true },
		{ k->progs.libc_ret, "connect", true, true },
	};
	char path[PATH_MAX];
	int err = hooks_find_libc(pid, path, sizeof(path));

	if (err && parent)
		err = hooks_find_libc(parent, path, sizeof(path));
	if (err) {
		fprintf(stderr, "tokentrace: pid %d maps no shared libc for "
			"libc hooks\n", (int)pid);
		return err;
	}
	err = uprobe_set_attach(st->probes, pid, 'l', path, p,
				(int)(sizeof(p) / sizeof(p[0])));
	if (st->o.verbose)
		fprintf(stderr, "tokentrace: pid %d: %d libc probes in %s\n",
			(int)pid, err, path);
	return err < 0 ? err : 0;
}

static struct target_ent *target_find(struct socktrace *st, pid_t pid)
{
	for (size_t i = 0; i < st->ntargets; i++)
		if (st->targets[i].pid == pid)
			return &st->targets[i];
	return NULL;
}

static int target_note(struct socktrace *st, pid_t pid, uint8_t hook)
{
	struct target_ent *t = target_find(st, pid);

	if (t) {
		t->hook = hook;
		return 0;
	}
	if (st->ntargets == st->captargets) {
		size_t cap = st->captargets ? 2 * st->captargets : 16;
		struct target_ent *n = realloc(st->targets, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		st->targets = n;
		st->captargets = cap;
	}
	st->targets[st->ntargets++] = (struct target_ent){ .pid = pid,
							   .hook = hook };
	return 0;
}

static void ssl_attach(struct socktrace *st, pid_t pid)
{
	if (!st->o.no_tls)
		sslprobe_attach_pid(st->probes, st->skel, pid);
}

/* The step probe on site for pid. */
static void attach_site(struct socktrace *st, pid_t pid,
			const struct stepprobe_site *site)
{
	struct sock_bpf *k = st->skel;
	struct target_ent *t = target_find(st, pid);
	struct stat sb;
	int n;

	if (stat(site->path, &sb))
		return;
	if (t && t->step_ino && t->step_dev == sb.st_dev &&
	    t->step_ino == sb.st_ino && uprobe_set_has(st->probes, pid, 'p'))
		return;		/* on that file already (run's child) */
	uprobe_set_drop(st->probes, pid, 'p');
	/* not needed: a process gone before it is probed (it exec'd or
	   exited meanwhile) only has no steps from the probe */
	/* llama_decode's batch is read on the way in */
	const struct uprobe_spec p[] = {
		{ strcmp(site->sym, "llama_decode") ? k->progs.step_enter :
		  k->progs.llama_enter, site->sym, false, false },
		{ k->progs.step_exit, site->sym, true, false },
	};
	n = uprobe_set_attach(st->probes, pid, 'p', site->path, p, 2);
	if (n == 2 && t) {
		t->step_dev = sb.st_dev;
		t->step_ino = sb.st_ino;
		if (!t->stepped)
			st->s.step_procs++;
		t->stepped = true;
	}
	if (st->o.verbose)
		fprintf(stderr, "tokentrace: pid %d: step probe on %s in %s: "
			"%d of 2 uprobes\n", (int)pid, site->sym, site->path,
			n);
}

/* The step probe on pid's step function, when it has one (exe: the
 * program it is about to run; NULL: the one it runs). */
static void attach_steps(struct socktrace *st, pid_t pid, const char *exe)
{
	struct stepprobe_site site;

	if (st->o.on_step && !st->o.no_step_probe &&
	    !stepprobe_find(pid, exe, st->o.step_site, &site))
		attach_site(st, pid, &site);
}

/* A target without the step probe may have mapped its engine's library
 * since (llama-server's libllama.so is mapped by the dynamic loader after
 * the exec that was probed; an engine can load it later): looked for
 * again at each sweep. */
static void attach_steps_mapped(struct socktrace *st, pid_t pid)
{
	struct stepprobe_site site;

	if (st->o.on_step && !st->o.no_step_probe && !st->o.step_site &&
	    !uprobe_set_has(st->probes, pid, 'p') &&
	    !stepprobe_find_mapped(pid, &site))
		attach_site(st, pid, &site);
}

/* The hooks of pid: its libc's uprobes, or the syscall tracepoints (its
 * entry in the targets map says which programs take its I/O). */
static int trace_with(struct socktrace *st, pid_t pid, pid_t parent,
		      const char *exe, uint8_t hook)
{
	uint32_t tgid = pid;
	int err;

	if (hook == TT_SOCK_HOOK_LIBC && attach_libc(st, pid, parent)) {
		fprintf(stderr, "tokentrace: pid %d: libc hooks failed, "
			"tracing it with the syscall tracepoints\n", (int)pid);
		hook = TT_SOCK_HOOK_SYSCALLS;
	}
	if (hook == TT_SOCK_HOOK_SYSCALLS && (err = attach_syscalls(st)))
		return err;
	err = bpf_map__update_elem(st->skel->maps.targets, &tgid,
				   sizeof(tgid), &hook, sizeof(hook), BPF_ANY);
	if (err) {
		fprintf(stderr, "tokentrace: adding pid %d to the targets "
			"failed: %s\n", (int)pid, strerror(-err));
		return err;
	}
	err = target_note(st, pid, hook);
	if (hook == TT_SOCK_HOOK_LIBC)
		st->s.used_libc = true;
	else
		st->s.used_syscalls = true;
	ssl_attach(st, pid);
	attach_steps(st, pid, exe);
	return err;
}

int socktrace_add_pid_exe(struct socktrace *st, pid_t pid, const char *exe)
{
	char why[PATH_MAX + 64];
	enum tt_hooks h = hooks_pick(st->o.hooks, pid, exe, st->o.cpu_compute,
				     why, sizeof(why));
	int err;

	err = trace_with(st, pid, 0, exe, h == TT_HOOKS_LIBC ?
			 TT_SOCK_HOOK_LIBC :
			 TT_SOCK_HOOK_SYSCALLS);
	if (err)
		return err;
	st->s.targets++;
	if (st->o.verbose)
		fprintf(stderr, "tokentrace: pid %d: %s hooks (%s)\n",
			(int)pid, hooks_name(h), why);
	return 0;
}

int socktrace_add_pid(struct socktrace *st, pid_t pid)
{
	return socktrace_add_pid_exe(st, pid, NULL);
}

/* A libc-hooked process exec'd: the new program is judged by its file
 * (its libc is not mapped yet); a static or Go one moves to the syscall
 * tracepoints. */
static void on_exec(struct socktrace *st, pid_t pid)
{
	char exe[64], why[PATH_MAX + 64];

	snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)pid);
	if (hooks_pick(st->o.hooks, pid, exe, st->o.cpu_compute, why,
		       sizeof(why)) == TT_HOOKS_LIBC) {
		attach_steps(st, pid, NULL);
		return;
	}
	trace_with(st, pid, 0, NULL, TT_SOCK_HOOK_SYSCALLS);
	if (st->o.verbose)
		fprintf(stderr, "tokentrace: pid %d exec'd: syscalls hooks "
			"now (%s)\n", (int)pid, why);
}

/* A traced process forked: the child is in the targets map already, with
 * its parent's hooks; its own uprobes are attached here. */
static void on_proc(struct socktrace *st, const struct tt_sock_hdr *h)
{
	uint32_t tgid = h->tgid;
	uint8_t hook = 0;

	if (h->flags & TT_SOCK_F_EXEC) {
		struct target_ent *t = target_find(st, (pid_t)tgid);

		if (t && t->hook == TT_SOCK_HOOK_SYSCALLS) {
			/* its hooks see any program; its step function is
			   the new program's */
			attach_steps(st, (pid_t)tgid, NULL);
			return;
		}
		on_exec(st, (pid_t)tgid);
		/* its fork record came first: its hooks are in place */
		if (h->flags & TT_SOCK_F_HELD)
			kill((pid_t)tgid, SIGCONT);
		return;
	}
	if (bpf_map__lookup_elem(st->skel->maps.targets, &tgid, sizeof(tgid),
				 &hook, sizeof(hook), 0) || !hook)
		return;		/* gone already */
	hook &= ~TT_SOCK_TARGET_PENDING;
	if (trace_with(st, (pid_t)tgid, (pid_t)h->tid, NULL, hook))
		return;
	st->s.children++;
	if (st->o.verbose)
		fprintf(stderr, "tokentrace: following pid %u (child of %u) "
			"with %s hooks\n", tgid, h->tid,
			hook == TT_SOCK_HOOK_LIBC ? "libc" : "syscalls");
}

/* Forgets the processes that are gone (and their uprobes); looks again for
 * a libssl in those that had none (Python loads it on `import ssl`), and
 * for an engine's library in those without the step probe. */
static void targets_sweep(struct socktrace *st)
{
	size_t kept = 0;

	uprobe_set_sweep(st->probes);
	for (size_t i = 0; i < st->ntargets; i++) {
		pid_t p = st->targets[i].pid;

		if (kill(p, 0) < 0 && errno == ESRCH)
			continue;
		ssl_attach(st, p);
		attach_steps_mapped(st, p);
		st->targets[kept++] = st->targets[i];
	}
	st->ntargets = kept;
}

int socktrace_poll(struct socktrace *st, int timeout_ms)
{
	/* Records are written without a wakeup until the ring is an eighth
	 * full, so take what is there before waiting for one. */
	int n = ring_buffer__consume(st->rb);

	if (n == 0)
		n = ring_buffer__poll(st->rb, timeout_ms);

	if (n == -EINTR)
		n = 0;
	conn_sweep(st, socktrace_now_ns());
	return n;
}

int socktrace_drain(struct socktrace *st)
{
	int n = ring_buffer__consume(st->rb);
	uint64_t now = socktrace_now_ns();

	/* Callers drain before flushing the request tracker: the last
	 * chance to mark what losses may have cut short. */
	for (int b = 0; b < CONN_BUCKETS; b++)
		for (struct conn_ent *c = st->buckets[b]; c; c = c->next)
			conn_end_losses(st, c, now);
	return n;
}

static void read_losses(struct socktrace *st)
{
	int ncpu = libbpf_num_possible_cpus();
	struct tt_sock_loss *v;
	uint32_t zero = 0;

	if (ncpu <= 0 || !(v = calloc(ncpu, sizeof(*v))))
		return;
	if (!bpf_map__lookup_elem(st->skel->maps.losses, &zero, sizeof(zero),
				  v, ncpu * sizeof(*v), 0)) {
		st->s.lost_events = st->s.lost_bytes = 0;
		for (int i = 0; i < ncpu; i++) {
			st->s.lost_events += v[i].events;
			st->s.lost_bytes += v[i].bytes;
		}
	}
	free(v);
}

void socktrace_stats(struct socktrace *st, struct socktrace_stats *out)
{
	read_losses(st);
	st->s.libc_procs = st->s.syscall_procs = 0;
	for (size_t i = 0; i < st->ntargets; i++) {
		if (st->targets[i].hook == TT_SOCK_HOOK_LIBC)
			st->s.libc_procs++;
		else
			st->s.syscall_procs++;
	}
	st->s.ssl_procs = uprobe_set_count(st->probes, 's');
	st->s.syscall_hooks = st->sys_on;
	*out = st->s;
}

const char *socktrace_hooks_name(const struct socktrace_stats *s)
{
	if (s->used_libc && s->used_syscalls)
		return "libc+syscalls";
	if (s->used_libc)
		return "libc";
	if (s->used_syscalls)
		return "syscalls";
	return "none";
}

/* A child stopped at its exec whose record was not read yet goes on: no
 * process is left stopped by a loader that is gone. */
static void release_held(struct socktrace *st)
{
	uint32_t key, next, *prev = NULL;
	uint8_t hook;

	while (!bpf_map__get_next_key(st->skel->maps.targets, prev, &next,
				      sizeof(next))) {
		if (!bpf_map__lookup_elem(st->skel->maps.targets, &next,
					  sizeof(next), &hook, sizeof(hook), 0) &&
		    (hook & TT_SOCK_TARGET_PENDING))
			kill((pid_t)next, SIGCONT);
		key = next;
		prev = &key;
	}
}

void socktrace_close(struct socktrace *st)
{
	if (!st)
		return;
	if (st->skel)
		release_held(st);
	ring_buffer__free(st->rb);
	uprobe_set_free(st->probes);
	for (int i = 0; i < st->nsys; i++)
		bpf_link__destroy(st->sys_links[i]);
	sock_bpf__destroy(st->skel);
	free(st->targets);
	conn_free_all(st);
	free(st);
}
