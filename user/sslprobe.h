/*
 * sslprobe.h - uprobes on the libssl a traced process maps.
 */
#ifndef TT_SSLPROBE_H
#define TT_SSLPROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct sock_bpf;
struct uprobe_set;

/* The path (through /proc/PID/root) of the libssl pid maps: 0, or
 * -ENOENT when it maps none. */
int sslprobe_find_libssl(pid_t pid, char *path, size_t len);

/*
 * Attaches SSL_read, SSL_write, SSL_read_ex, SSL_write_ex (entry and
 * return) in the libssl that pid maps, for pid alone (group 's' of set).
 * Returns 1 when probes were attached now, 0 when pid maps no libssl or is
 * already probed, -errno on failure (message on stderr).
 */
int sslprobe_attach_pid(struct uprobe_set *set, struct sock_bpf *skel,
			pid_t pid);

#endif
