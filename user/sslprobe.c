/*
 * sslprobe.c - libssl uprobes for TLS servers.
 *
 * In:  a traced pid and the loaded socket programs (build/sock.skel.h).
 * Out: uprobes and uretprobes on SSL_read, SSL_write, SSL_read_ex and
 *      SSL_write_ex of the libssl that process maps, attached for that pid
 *      alone (user/uprobes.c): other processes using the same libssl are
 *      not slowed down.
 * Assumes: the server links libssl dynamically (Python's _ssl, most C
 *      servers); the library is found in /proc/PID/maps and opened through
 *      /proc/PID/root so that containers work; libbpf resolves the symbol
 *      offsets (func_name).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "sock.skel.h"
#include "sslprobe.h"
#include "uprobes.h"

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

int sslprobe_attach_pid(struct uprobe_set *set, struct sock_bpf *skel,
			pid_t pid)
{
	/* the _ex functions are OpenSSL 1.1.1+; the others must be there */
	const struct uprobe_spec p[] = {
		{ skel->progs.ssl_read_enter, "SSL_read", false, true },
		{ skel->progs.ssl_ret, "SSL_read", true, true },
		{ skel->progs.ssl_write_enter, "SSL_write", false, true },
		{ skel->progs.ssl_ret, "SSL_write", true, true },
		{ skel->progs.ssl_read_ex_enter, "SSL_read_ex", false, false },
		{ skel->progs.ssl_ret, "SSL_read_ex", true, false },
		{ skel->progs.ssl_write_ex_enter, "SSL_write_ex", false, false },
		{ skel->progs.ssl_ret, "SSL_write_ex", true, false },
	};
	char path[PATH_MAX];
	int n;

	if (uprobe_set_has(set, pid, 's') ||
	    sslprobe_find_libssl(pid, path, sizeof(path)))
		return 0;
	n = uprobe_set_attach(set, pid, 's', path, p,
			      (int)(sizeof(p) / sizeof(p[0])));
	if (n < 0)
		fprintf(stderr, "tokentrace: TLS of pid %d will not be seen: "
			"its libssl (%s) could not be probed\n", (int)pid,
			path);
	return n < 0 ? n : n > 0;
}
