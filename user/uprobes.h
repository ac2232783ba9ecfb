/*
 * uprobes.h - pid-scoped uprobes, kept per process and library.
 */
#ifndef TT_UPROBES_H
#define TT_UPROBES_H

#include <stdbool.h>
#include <sys/types.h>

struct bpf_program;
struct uprobe_set;

/* One probe: prog on func of the library (its return when ret). A probe
 * that is not needed may be missing from the library. */
struct uprobe_spec {
	struct bpf_program *prog;
	const char *func;
	bool ret;
	bool needed;
};

struct uprobe_set *uprobe_set_new(void);
/* Detaches everything. */
void uprobe_set_free(struct uprobe_set *s);

/*
 * Attaches the n probes of spec on the library file path for process pid
 * alone (the kernel inserts the breakpoints only into that process), as
 * group tag ('l' libc, 's' libssl, ...). Returns how many were attached,
 * 0 when pid already has group tag, -errno when a needed probe failed (then
 * none of this group stays attached; the message is on stderr).
 */
int uprobe_set_attach(struct uprobe_set *s, pid_t pid, char tag,
		      const char *path, const struct uprobe_spec *spec, int n);
bool uprobe_set_has(const struct uprobe_set *s, pid_t pid, char tag);
/* Detaches pid's group tag, if it has one. */
void uprobe_set_drop(struct uprobe_set *s, pid_t pid, char tag);
/* Detaches the groups of processes that are gone; how many groups. */
int uprobe_set_sweep(struct uprobe_set *s);
/* Processes with a group tag attached. */
unsigned uprobe_set_count(const struct uprobe_set *s, char tag);

#endif
