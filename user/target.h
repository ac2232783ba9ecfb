/*
 * target.h - which processes to trace: by pid, command name, listening TCP
 * port, or cgroup.
 */
#ifndef TT_TARGET_H
#define TT_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TARGET_MAX_PIDS 1024

struct target_list {
	size_t n;
	pid_t pids[TARGET_MAX_PIDS];
};

/* Each returns the number of pids added (>= 1), or -errno with a message
 * on stderr (-ESRCH: nothing found). Duplicates are added once. */
int target_add_pid(struct target_list *tl, pid_t pid);
int target_add_comm(struct target_list *tl, const char *comm);
int target_add_port(struct target_list *tl, unsigned port);
int target_add_cgroup(struct target_list *tl, const char *path);

/* Adds pid unless present: 1 when added, 0 when present, -ENOSPC. */
int target_push(struct target_list *tl, pid_t pid);

/* Like target_add_port, without messages: new pids added, -ENOENT when
 * nothing listens on port. */
int target_port_pids(struct target_list *tl, unsigned port);

/* The socket inodes listening on TCP port `port` (IPv4 and IPv6) under
 * proc_net ("/proc/net" normally); returns how many were stored. */
int target_listen_inodes(const char *proc_net, unsigned port,
			 unsigned long *inodes, int max);

#endif
