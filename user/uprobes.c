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
 * In:  pids, library paths, probe lists.
 * Out: bpf_link groups; counts.
 * Assumes: single-threaded use; libbpf resolves function names in the
 *      library's symbol tables (func_name).
 */
#include <errno.h>
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

struct uprobe_set {
	size_t n, cap;
	struct uprobe_group *g;
};

struct uprobe_set *uprobe_set_new(void)
{
	return calloc(1, sizeof(struct uprobe_set));
}

static void group_free(struct uprobe_group *g)
{
	for (int i = 0; i < g->n; i++)
		bpf_link__destroy(g->links[i]);
	free(g->links);
	g->links = NULL;
	g->n = 0;
}

void uprobe_set_free(struct uprobe_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		group_free(&s->g[i]);
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

int uprobe_set_sweep(struct uprobe_set *s)
{
	size_t kept = 0;
	int dropped = 0;

	for (size_t i = 0; s && i < s->n; i++) {
		if (kill(s->g[i].pid, 0) < 0 && errno == ESRCH) {
			group_free(&s->g[i]);
			dropped++;
			continue;
		}
		s->g[kept++] = s->g[i];
	}
	if (s)
		s->n = kept;
	return dropped;
}
