/*
 * target.c - target selection for the tracer.
 *
 * In:  a pid, a command name, a TCP port, or a cgroup path.
 * Out: the pids (thread group ids) to put in the kernel side's target map.
 * Assumes: /proc is mounted; a port's owner is the process holding the
 *      listening socket: its inode from /proc/net/tcp{,6} (state 0A), then
 *      the process whose /proc/PID/fd links to socket:[inode]. cgroup v2:
 *      PATH/cgroup.procs lists the member processes (PATH may be relative
 *      to /sys/fs/cgroup). Processes forked later are followed by the
 *      kernel side.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target.h"

int target_push(struct target_list *tl, pid_t pid)
{
	for (size_t i = 0; i < tl->n; i++)
		if (tl->pids[i] == pid)
			return 0;
	if (tl->n >= TARGET_MAX_PIDS)
		return -ENOSPC;
	tl->pids[tl->n++] = pid;
	return 1;
}

int target_add_pid(struct target_list *tl, pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (pid <= 0 || access(path, R_OK) != 0) {
		fprintf(stderr, "tokentrace: no such process: pid %d; check "
			"the pid with ps\n", (int)pid);
		return -ESRCH;
	}
	target_push(tl, pid);
	return 1;
}

/* Calls fn(pid, ctx) for every numeric entry of /proc. */
static int for_each_pid(int (*fn)(pid_t, void *), void *ctx)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		n += fn(atoi(e->d_name), ctx);
	}
	closedir(d);
	return n;
}

struct comm_ctx {
	struct target_list *tl;
	const char *comm;
};

static int match_comm(pid_t pid, void *arg)
{
	struct comm_ctx *cc = arg;
	char path[64], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f))
		buf[strcspn(buf, "\n")] = 0;
	fclose(f);
	if (strcmp(buf, cc->comm) || pid == getpid())
		return 0;
	return target_push(cc->tl, pid) > 0;
}

int target_add_comm(struct target_list *tl, const char *comm)
{
	struct comm_ctx cc = { tl, comm };
	int n = for_each_pid(match_comm, &cc);

	if (n <= 0) {
		fprintf(stderr, "tokentrace: no process named '%s' (as in "
			"/proc/PID/comm, at most 15 characters)\n", comm);
		return -ESRCH;
	}
	return n;
}

int target_listen_inodes(const char *proc_net, unsigned port,
			 unsigned long *inodes, int max)
{
	static const char *files[] = { "tcp", "tcp6" };
	char path[PATH_MAX], line[512];
	int n = 0;

	for (int i = 0; i < 2; i++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", proc_net, files[i]);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f) && n < max) {
			char local[64], rem[64];
			unsigned st, lport;
			unsigned long inode;
			char *colon;

			if (sscanf(line, "%*d: %63s %63s %x %*s %*s %*s %*s "
				   "%*s %lu", local, rem, &st, &inode) != 4)
				continue;
			colon = strrchr(local, ':');
			if (!colon || sscanf(colon + 1, "%x", &lport) != 1)
				continue;
			if (st == 0x0A && lport == port && inode)
				inodes[n++] = inode;
		}
		fclose(f);
	}
	return n;
}

struct port_ctx {
	struct target_list *tl;
	unsigned long *inodes;
	int n;
};

static int holds_inode(pid_t pid, void *arg)
{
	struct port_ctx *pc = arg;
	char dir[64], path[PATH_MAX], link[128];
	struct dirent *e;
	int found = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return 0;
	while (!found && (e = readdir(d))) {
		unsigned long ino;
		ssize_t len;

		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		len = readlink(path, link, sizeof(link) - 1);
		if (len <= 0)
			continue;
		link[len] = 0;
		if (sscanf(link, "socket:[%lu]", &ino) != 1)
			continue;
		for (int i = 0; i < pc->n; i++)
			if (ino == pc->inodes[i])
				found = 1;
	}
	closedir(d);
	return found ? target_push(pc->tl, pid) > 0 : 0;
}

int target_port_pids(struct target_list *tl, unsigned port)
{
	unsigned long inodes[16];
	struct port_ctx pc = { tl, inodes, 0 };

	pc.n = target_listen_inodes("/proc/net", port, inodes, 16);
	if (pc.n <= 0)
		return -ENOENT;
	return for_each_pid(holds_inode, &pc);
}

int target_add_port(struct target_list *tl, unsigned port)
{
	int n = target_port_pids(tl, port);

	if (n == -ENOENT) {
		fprintf(stderr, "tokentrace: nothing listens on TCP port %u "
			"(see ss -ltnp); start the server first\n", port);
		return -ESRCH;
	}
	if (n <= 0) {
		fprintf(stderr, "tokentrace: TCP port %u is listening but no "
			"visible process holds it (another pid namespace?); "
			"use --pid\n", port);
		return -ESRCH;
	}
	return n;
}

int target_add_cgroup(struct target_list *tl, const char *path)
{
	char file[PATH_MAX];
	FILE *f;
	int pid, n = 0;

	if (path[0] == '/' && !strncmp(path, "/sys/fs/cgroup", 14))
		snprintf(file, sizeof(file), "%s/cgroup.procs", path);
	else
		snprintf(file, sizeof(file), "/sys/fs/cgroup/%s/cgroup.procs",
			 path[0] == '/' ? path + 1 : path);
	f = fopen(file, "r");
	if (!f) {
		fprintf(stderr, "tokentrace: cannot read %s: %s; give a cgroup "
			"v2 path such as system.slice/vllm.service\n", file,
			strerror(errno));
		return -ESRCH;
	}
	while (fscanf(f, "%d", &pid) == 1)
		n += target_push(tl, pid) > 0;
	fclose(f);
	if (tl->n == 0) {
		fprintf(stderr, "tokentrace: cgroup %s has no processes\n",
			path);
		return -ESRCH;
	}
	return n;
}
