/*
 * sslprobe.c - libssl uprobes for TLS servers.
 *
 * In:  a traced pid and the loaded socket programs (build/sock.skel.h).
 * Out: uprobes and uretprobes on SSL_read, SSL_write, SSL_read_ex and
 *      SSL_write_ex of each distinct libssl file the traced processes map.
 * Assumes: the server links libssl dynamically (Python's _ssl, most C
 *      servers); the library is found in /proc/PID/maps and opened through
 *      /proc/PID/root so that containers work; libbpf resolves the symbol
 *      offsets (func_name). The probes fire for every process mapping that
 *      file; the kernel side keeps only traced tgids.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <bpf/libbpf.h>

#include "sock.skel.h"
#include "sslprobe.h"

#define SSLPROBE_MAX_LIBS	16
#define SSLPROBE_LINKS		8

struct ssl_lib {
	dev_t dev;
	ino_t ino;
	struct bpf_link *links[SSLPROBE_LINKS];
};

struct sslprobe_set {
	int n;
	struct ssl_lib libs[SSLPROBE_MAX_LIBS];
};

struct sslprobe_set *sslprobe_new(void)
{
	return calloc(1, sizeof(struct sslprobe_set));
}

void sslprobe_free(struct sslprobe_set *set)
{
	if (!set)
		return;
	for (int i = 0; i < set->n; i++)
		for (int j = 0; j < SSLPROBE_LINKS; j++)
			bpf_link__destroy(set->libs[i].links[j]);
	free(set);
}

int sslprobe_count(const struct sslprobe_set *set)
{
	return set ? set->n : 0;
}

int sslprobe_find_libssl(pid_t pid, char *path, size_t len)
{
	char maps[64], line[PATH_MAX + 128];
	int found = -ENOENT;
	FILE *f;

	snprintf(maps, sizeof(maps), "/proc/%d/maps", (int)pid);
	f = fopen(maps, "r");
	if (!f)
		return -errno;
	while (found && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, '/');

		if (!p || !strstr(p, "/libssl.so"))
			continue;
		p[strcspn(p, "\n")] = 0;
		snprintf(path, len, "/proc/%d/root%s", (int)pid, p);
		found = 0;
	}
	fclose(f);
	return found;
}

static struct bpf_link *attach_one(struct bpf_program *prog,
				   const char *path, const char *func,
				   bool ret)
{
	LIBBPF_OPTS(bpf_uprobe_opts, o, .func_name = func, .retprobe = ret);
	struct bpf_link *l = bpf_program__attach_uprobe_opts(prog, -1, path,
							     0, &o);

	if (!l)
		fprintf(stderr, "tokentrace: uprobe on %s in %s failed: %s\n",
			func, path, strerror(errno));
	return l;
}

static int attach_lib(struct ssl_lib *lib, struct sock_bpf *skel,
		      const char *path)
{
	struct {
		struct bpf_program *prog;
		const char *func;
		bool ret;
	} p[SSLPROBE_LINKS] = {
		{ skel->progs.ssl_read_enter, "SSL_read", false },
		{ skel->progs.ssl_ret, "SSL_read", true },
		{ skel->progs.ssl_write_enter, "SSL_write", false },
		{ skel->progs.ssl_ret, "SSL_write", true },
		{ skel->progs.ssl_read_ex_enter, "SSL_read_ex", false },
		{ skel->progs.ssl_ret, "SSL_read_ex", true },
		{ skel->progs.ssl_write_ex_enter, "SSL_write_ex", false },
		{ skel->progs.ssl_ret, "SSL_write_ex", true },
	};

	for (int i = 0; i < SSLPROBE_LINKS; i++) {
		lib->links[i] = attach_one(p[i].prog, path, p[i].func,
					   p[i].ret);
		/* the _ex functions are OpenSSL 1.1.1+; the others must be */
		if (!lib->links[i] && i < 4)
			return -ENOENT;
	}
	return 0;
}

int sslprobe_attach_pid(struct sslprobe_set *set, struct sock_bpf *skel,
			pid_t pid)
{
	char path[PATH_MAX];
	struct ssl_lib *lib;
	struct stat st;
	int err;

	if (sslprobe_find_libssl(pid, path, sizeof(path)))
		return 0;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "tokentrace: cannot stat %s (libssl of pid "
			"%d): %s\n", path, (int)pid, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < set->n; i++)
		if (set->libs[i].dev == st.st_dev &&
		    set->libs[i].ino == st.st_ino)
			return 0;
	if (set->n >= SSLPROBE_MAX_LIBS)
		return -ENOSPC;
	lib = &set->libs[set->n];
	memset(lib, 0, sizeof(*lib));
	lib->dev = st.st_dev;
	lib->ino = st.st_ino;
	set->n++;
	err = attach_lib(lib, skel, path);
	if (err)
		fprintf(stderr, "tokentrace: TLS of pid %d will not be seen: "
			"its libssl (%s) could not be probed\n", (int)pid,
			path);
	return err ? err : 1;
}
