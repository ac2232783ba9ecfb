/*
 * hooks.h - which hooks see a process's socket I/O: pid-scoped uprobes on
 * its libc, or the syscall tracepoints.
 */
#ifndef TT_HOOKS_H
#define TT_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum tt_hooks {
	TT_HOOKS_AUTO = 0,	/* libc where the I/O goes through a shared
				   libc, else syscalls */
	TT_HOOKS_LIBC,
	TT_HOOKS_SYSCALLS,
};

/* The help lines of --hooks, for every command that traces sockets. */
#define HOOKS_HELP \
"  --hooks KIND       how socket I/O is seen: libc (uprobes on the\n" \
"                     target's libc, attached for its pid alone: other\n" \
"                     processes pay nothing, the target some 2-4 us a\n" \
"                     call), syscalls (syscall tracepoints: every\n" \
"                     process on the host pays some 300 ns a read or\n" \
"                     write), auto (default: libc where the target does\n" \
"                     its socket I/O through a shared libc, syscalls for\n" \
"                     static and Go servers); TOKENTRACE_HOOKS sets the\n" \
"                     default\n"

/* The default: TOKENTRACE_HOOKS when it names a kind, else auto. */
enum tt_hooks hooks_default(void);

/* "auto", "libc", "syscalls": 0, or -EINVAL. */
int hooks_parse(const char *s, enum tt_hooks *out);
const char *hooks_name(enum tt_hooks h);

/* The libc pid maps, as a path through /proc/PID/root: 0, or -ENOENT. */
int hooks_find_libc(pid_t pid, char *path, size_t len);
/* fn on each file pid maps (once each, deleted ones left out; file: the
 * path under /proc/PID/root, path: as the maps say) until it returns
 * true; whether one did. */
bool hooks_each_mapped(pid_t pid,
		       bool (*fn)(void *ctx, const char *file,
				  const char *path),
		       void *ctx);

/*
 * What an ELF file tells of its I/O: *dynamic when it has an interpreter
 * (so a shared libc), *go when it is a Go program (raw syscalls), *imports
 * when its dynamic symbols take a socket function (accept, recv, send, ...)
 * from a shared library; interp (when not NULL) gets its interpreter.
 * 0, or -errno when it cannot be read as ELF.
 */
int hooks_elf_io(const char *path, bool *dynamic, bool *go, bool *imports,
		 char *interp, size_t interp_len);

/*
 * The hooks for pid under `want`: want itself unless AUTO; for AUTO, libc
 * when the process does its I/O through a shared libc (exe, when not NULL,
 * is the program pid is about to exec: that is looked at instead of what
 * pid maps now), else syscalls; and syscalls when cpu_compute (the CPU
 * compute source measures the same process, and would count each uprobe's
 * trap, microseconds, as the server's compute). why gets the reason.
 */
enum tt_hooks hooks_pick(enum tt_hooks want, pid_t pid, const char *exe,
			 bool cpu_compute, char *why, size_t why_len);

#endif
