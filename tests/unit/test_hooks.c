/*
 * test_hooks.c - which hooks see a process's socket I/O (user/hooks.c):
 * the names, what ELF files say of their I/O, scripts resolved to their
 * interpreter, and the pick for a program and for a running process.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../user/hooks.h"

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tt_hooks.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(hooks, .init = setup, .fini = teardown);

/* dir/name holding text, mode 0755; its path in a static buffer. */
static const char *put(const char *name, const char *text)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, 0755);
	return path;
}

Test(hooks, names_parse_and_print_back)
{
	const char *names[] = { "auto", "libc", "syscalls" };
	enum tt_hooks h;

	for (int i = 0; i < 3; i++) {
		cr_assert_eq(hooks_parse(names[i], &h), 0);
		cr_expect_str_eq(hooks_name(h), names[i]);
	}
	cr_expect_eq(hooks_parse("kprobes", &h), -EINVAL);
	cr_expect_eq(hooks_parse("", &h), -EINVAL);
}

Test(hooks, environment_sets_the_default_and_a_bad_value_is_auto)
{
	setenv("TOKENTRACE_HOOKS", "syscalls", 1);
	cr_expect_eq(hooks_default(), TT_HOOKS_SYSCALLS);
	setenv("TOKENTRACE_HOOKS", "fentry", 1);
	cr_expect_eq(hooks_default(), TT_HOOKS_AUTO);
	unsetenv("TOKENTRACE_HOOKS");
	cr_expect_eq(hooks_default(), TT_HOOKS_AUTO);
}

/* The reference server takes accept4 from libc: dynamic, imports. */
Test(hooks, a_dynamic_server_imports_its_socket_functions)
{
	bool dyn, go, imp;
	char interp[256];

	cr_assert_eq(hooks_elf_io("build/refserver", &dyn, &go, &imp, interp,
				  sizeof(interp)), 0);
	cr_expect(dyn);
	cr_expect(!go);
	cr_expect(imp, "accept4 is not seen as imported");
	cr_expect(strstr(interp, "ld-linux") != NULL, "interpreter '%s'",
		  interp);
}

/* /bin/true takes no socket function; ldconfig is static-pie. */
Test(hooks, programs_without_socket_imports_or_static)
{
	bool dyn, go, imp;

	cr_assert_eq(hooks_elf_io("/bin/true", &dyn, &go, &imp, NULL, 0), 0);
	cr_expect(dyn && !imp && !go);
	cr_assert_eq(hooks_elf_io("/sbin/ldconfig", &dyn, &go, &imp, NULL, 0),
		     0);
	cr_expect(!dyn, "ldconfig is static but has an interpreter");
	cr_expect_eq(hooks_elf_io(put("text", "hello\n"), &dyn, &go, &imp,
				  NULL, 0), -ENOEXEC);
	cr_expect_eq(hooks_elf_io("/nonexistent/x", &dyn, &go, &imp, NULL, 0),
		     -ENOENT);
}

/* A Go program (known by its sections) makes raw syscalls. */
Test(hooks, a_go_program_gets_the_syscall_hooks)
{
	char out[160], cmd[400], why[256];
	bool dyn, go, imp;

	snprintf(out, sizeof(out), "%s/goserver", dir);
	snprintf(cmd, sizeof(cmd), "objcopy --add-section .note.go.buildid="
		 "/dev/null build/refserver %s", out);
	cr_assert_eq(system(cmd), 0, "objcopy failed");
	cr_assert_eq(hooks_elf_io(out, &dyn, &go, &imp, NULL, 0), 0);
	cr_expect(go && dyn && imp);
	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), out, false,
				why, sizeof(why)), TT_HOOKS_SYSCALLS);
	cr_expect(strstr(why, "Go") != NULL, "why: %s", why);
}

Test(hooks, auto_picks_libc_for_a_dynamic_program_and_syscalls_for_static)
{
	char why[256];

	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), "build/refserver", false,
				why, sizeof(why)), TT_HOOKS_LIBC, "%s", why);
	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), "/sbin/ldconfig", false,
				why, sizeof(why)), TT_HOOKS_SYSCALLS);
	cr_expect(strstr(why, "statically linked") != NULL, "why: %s", why);
	/* what the user asked for stands */
	cr_expect_eq(hooks_pick(TT_HOOKS_SYSCALLS, getpid(), "build/refserver", false,
				why, sizeof(why)), TT_HOOKS_SYSCALLS);
	cr_expect_eq(hooks_pick(TT_HOOKS_LIBC, getpid(), "/sbin/ldconfig", false,
				why, sizeof(why)), TT_HOOKS_LIBC);
}

/* A script is judged by its interpreter, `#!/usr/bin/env NAME` too. */
Test(hooks, scripts_are_judged_by_their_interpreter)
{
	char why[256];
	const char *s;

	s = put("static.sh", "#!/sbin/ldconfig -p\n");
	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), s, false, why, sizeof(why)),
		     TT_HOOKS_SYSCALLS, "%s", why);
	cr_expect(strstr(why, "/sbin/ldconfig") != NULL, "why: %s", why);
	setenv("PATH", "/nonexistent:/usr/bin:/bin", 1);
	s = put("env.sh", "#!/usr/bin/env true\n");
	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), s, false, why, sizeof(why)),
		     TT_HOOKS_LIBC, "%s", why);
	cr_expect(strstr(why, "/true") != NULL, "why: %s", why);
	s = put("none.sh", "echo no interpreter line\n");
	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), s, false, why, sizeof(why)),
		     TT_HOOKS_SYSCALLS, "%s", why);
}

/* This test binary maps libc and (through the reference server's code
 * linked into it) takes accept4 from it. */
Test(hooks, a_running_process_is_judged_by_what_it_maps)
{
	char libc[4096], why[256];

	cr_assert_eq(hooks_find_libc(getpid(), libc, sizeof(libc)), 0);
	cr_expect(strstr(libc, "/libc.so.6") != NULL, "libc '%s'", libc);
	cr_expect_eq(access(libc, R_OK), 0, "%s cannot be read", libc);
	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), NULL, false, why,
				sizeof(why)), TT_HOOKS_LIBC, "%s", why);
	cr_expect_lt(hooks_find_libc(999999999, libc, sizeof(libc)), 0);
}

/* With the CPU compute source on the same process, auto keeps to the
 * tracepoints (a uprobe's trap would be counted as compute); what the
 * user asked for still stands. */
Test(hooks, cpu_compute_keeps_auto_off_uprobes)
{
	char why[256];

	cr_expect_eq(hooks_pick(TT_HOOKS_AUTO, getpid(), "build/refserver",
				true, why, sizeof(why)), TT_HOOKS_SYSCALLS);
	cr_expect(strstr(why, "on-CPU") != NULL, "why: %s", why);
	cr_expect_eq(hooks_pick(TT_HOOKS_LIBC, getpid(), "build/refserver",
				true, why, sizeof(why)), TT_HOOKS_LIBC);
}
