/*
 * uprobes.c - pid-scoped uprobes, kept per process and library.
 *
 * A uprobe attached with a pid (perf_event_open on that task, which
 * libbpf's bpf_program__attach_uprobe_opts does for pid > 0) has the
 * kernel insert its breakpoint only into the address spaces its filter
 * accepts: the mm of that process, all its threads included. Any other
 * process mapping the same library keeps the original instruction and
 * pays nothing. The price is one set of links per traced process, so they
 * are kept here in groups (process, library kind) and dropped when the
 * process is gone.
 *
 * Dropping is slow: each uprobe's unregistration waits for an RCU grace
 * period in the kernel, some 50 ms on a busy VM, so the forty-odd links of
 * one process take seconds. A dead process's links are therefore handed
 * to a thread of their own that destroys them, and the tracer goes on
 * reading its ring buffer and attaching to the process that replaced the
 * dead one. bpf_link__destroy touches only the link (its fds and memory),
 * so it runs beside the loop's libbpf calls safely.
 *
 * In:  pids, library paths, probe lists.
 * Out: bpf_link groups; counts.
 * Assumes: single-threaded use; libbpf resolves function names in the
 *      library's symbol tables (func_name).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "uprobes.h"

struct uprobe_group {
	pid_t pid;
	char tag;
	int n;
	struct bpf_link **links;
};

/* Links waiting for the reaper thread. */
struct uprobe_reaper {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	bool started, stop;
	size_t n, cap;
	struct bpf_link **links;
};

struct uprobe_set {
	size_t n, cap;
	struct uprobe_group *g;
	struct uprobe_reaper r;
};

static void group_free(struct uprobe_group *g)
{
	for (int i = 0; i < g->n; i++)
		bpf_link__destroy(g->links[i]);
	free(g->links);
	g->links = NULL;
	g->n = 0;
}

struct uprobe_set *uprobe_set_new(void)
{
	struct uprobe_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->r.lock, NULL);
	pthread_cond_init(&s->r.wake, NULL);
	return s;
}

static void *reaper_main(void *arg)
{
	struct uprobe_reaper *r = arg;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct bpf_link *l;

		while (!r->n && !r->stop)
			pthread_cond_wait(&r->wake, &r->lock);
		if (!r->n)
			break;
		l = r->links[--r->n];
		pthread_mutex_unlock(&r->lock);
		bpf_link__destroy(l);
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Hands a dead process's links to the reaper; destroys them here when no
 * thread can be had. */
static void reap_group(struct uprobe_set *s, struct uprobe_group *g)
{
	struct uprobe_reaper *r = &s->r;
	size_t need;

	pthread_mutex_lock(&r->lock);
	need = r->n + (size_t)g->n;
	if (need > r->cap) {
		size_t cap = need > 2 * r->cap ? need : 2 * r->cap;
		struct bpf_link **nl = realloc(r->links, cap * sizeof(*nl));

		if (nl) {
			r->links = nl;
			r->cap = cap;
		}
	}
	if (!r->started && !pthread_create(&r->thread, NULL, reaper_main, r))
		r->started = true;
	if (r->started && need <= r->cap) {
		memcpy(r->links + r->n, g->links, g->n * sizeof(*g->links));
		r->n = need;
		g->n = 0;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
	group_free(g);		/* what the reaper did not take */
}

void uprobe_set_free(struct uprobe_set *s)
{
	if (!s)
		return;
	if (s->r.started) {
		pthread_mutex_lock(&s->r.lock);
		s->r.stop = true;
		pthread_cond_signal(&s->r.wake);
		pthread_mutex_unlock(&s->r.lock);
		pthread_join(s->r.thread, NULL);
	}
	for (size_t i = 0; i < s->n; i++)
		group_free(&s->g[i]);
	free(s->r.links);
	pthread_mutex_destroy(&s->r.lock);
	pthread_cond_destroy(&s->r.wake);
	free(s->g);
	free(s);
}

bool uprobe_set_has(const struct uprobe_set *s, pid_t pid, char tag)
{
	for (size_t i = 0; s && i < s->n; i++)
		if (s->g[i].pid == pid && s->g[i].tag == tag)
			return true;
	return false;
}

unsigned uprobe_set_count(const struct uprobe_set *s, char tag)
{
	unsigned n = 0;

	for (size_t i = 0; s && i < s->n; i++)
		n += s->g[i].tag == tag;
	return n;
}

int uprobe_set_attach(struct uprobe_set *s, pid_t pid, char tag,
		      const char *path, const struct uprobe_spec *spec, int n)
{
	struct uprobe_group g = { .pid = pid, .tag = tag };
	int err = 0;

	if (uprobe_set_has(s, pid, tag))
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct uprobe_group *ng = realloc(s->g, cap * sizeof(*ng));

		if (!ng)
			return -ENOMEM;
		s->g = ng;
		s->cap = cap;
	}
	g.links = calloc(n, sizeof(*g.links));
	if (!g.links)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = spec[i].func,
			    .retprobe = spec[i].ret);
		struct bpf_link *l;

		l = bpf_program__attach_uprobe_opts(spec[i].prog, pid, path,
						    0, &o);
		if (l) {
			g.links[g.n++] = l;
			continue;
		}
		if (!spec[i].needed)
			continue;
		err = -errno;
		fprintf(stderr, "tokentrace: uprobe on %s in %s for pid %d "
			"failed: %s\n", spec[i].func, path, (int)pid,
			strerror(-err));
		group_free(&g);
		return err ? err : -EINVAL;
	}
	s->g[s->n++] = g;
	return g.n;
}

void uprobe_set_drop(struct uprobe_set *s, pid_t pid, char tag)
{
	for (size_t i = 0; s && i < s->n; i++) {
		if (s->g[i].pid != pid || s->g[i].tag != tag)
			continue;
		reap_group(s, &s->g[i]);
		s->g[i] = s->g[--s->n];
		return;
	}
}

int uprobe_set_sweep(struct uprobe_set *s)
{
	size_t kept = 0;
	int dropped = 0;

	for (size_t i = 0; s && i < s->n; i++) {
		if (kill(s->g[i].pid, 0) < 0 && errno == ESRCH) {
			reap_group(s, &s->g[i]);
			dropped++;
			continue;
		}
		s->g[kept++] = s->g[i];
	}
	if (s)
		s->n = kept;
	return dropped;
}
