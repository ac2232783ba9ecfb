/*
 * commands.h - the subcommands of the `tokentrace` binary. Each takes the
 * arguments after its own name (argv[0] is the subcommand) and returns the
 * process exit code. Exit codes: 0 ok, 1 runtime failure, 2 usage error,
 * 3 missing privilege (not root / no CAP_BPF), 4 missing kernel feature
 * (BTF, tracefs), 5 target not found (no such pid, nothing on that port).
 */
#ifndef TT_COMMANDS_H
#define TT_COMMANDS_H

#include <stdbool.h>

enum tt_exit {
	TT_EXIT_OK = 0,
	TT_EXIT_FAIL = 1,
	TT_EXIT_USAGE = 2,
	TT_EXIT_PRIV = 3,
	TT_EXIT_KERNEL = 4,
	TT_EXIT_NOTARGET = 5,
};

/* Root, or CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), effective. */
bool tt_bpf_privileged(void);

/* The exit code for a negative errno from loading or attaching tracing. */
int tt_exit_of_errno(int err);

int cmd_record(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_plan(int argc, char **argv);

#endif
