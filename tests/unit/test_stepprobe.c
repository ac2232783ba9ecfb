/*
 * Where the step probe goes: PATH:SYMBOL parsed, a function found in an
 * ELF file's symbol tables (this test binary's own), the known step
 * functions looked for in a process.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "../../user/stepprobe.h"

Test(stepprobe, path_and_symbol_split_at_the_last_colon)
{
	struct stepprobe_site s;

	cr_assert_eq(stepprobe_parse("/opt/llama/lib/libllama.so:llama_decode",
				     &s), 0);
	cr_expect_str_eq(s.path, "/opt/llama/lib/libllama.so");
	cr_expect_str_eq(s.sym, "llama_decode");
	cr_assert_eq(stepprobe_parse("/a:b/c:step", &s), 0);
	cr_expect_str_eq(s.path, "/a:b/c");
	cr_expect_str_eq(s.sym, "step");
}

Test(stepprobe, a_spec_without_both_halves_is_refused)
{
	struct stepprobe_site s;

	cr_expect_eq(stepprobe_parse("llama_decode", &s), -EINVAL);
	cr_expect_eq(stepprobe_parse(":llama_decode", &s), -EINVAL);
	cr_expect_eq(stepprobe_parse("/bin/x:", &s), -EINVAL);
	cr_expect_eq(stepprobe_parse(NULL, &s), -EINVAL);
}

Test(stepprobe, functions_are_found_in_the_symbol_table)
{
	cr_expect(stepprobe_defines("/proc/self/exe", "stepprobe_parse"));
	cr_expect_not(stepprobe_defines("/proc/self/exe",
					"no_such_function_here"));
	cr_expect_not(stepprobe_defines("/nonexistent/file", "main"));
	cr_expect_not(stepprobe_defines("/proc/self/status", "main"));
}

Test(stepprobe, a_process_without_a_step_function_has_none)
{
	struct stepprobe_site s, want;

	/* this binary has the reference server's engine in it: /bin/true
	   for the program, and nothing here maps a libllama */
	cr_expect_eq(stepprobe_find(getpid(), "/bin/true", NULL, &s), -ENOENT);
	cr_expect_str_eq(s.path, "");
	/* one named is taken where its file defines it, and only there */
	cr_assert_eq(stepprobe_parse("/proc/self/exe:stepprobe_find", &want),
		     0);
	cr_assert_eq(stepprobe_find(getpid(), NULL, &want, &s), 0);
	cr_expect_str_eq(s.sym, "stepprobe_find");
	cr_assert_eq(stepprobe_parse("/proc/self/exe:not_here", &want), 0);
	cr_expect_eq(stepprobe_find(getpid(), NULL, &want, &s), -ENOENT);
}

Test(stepprobe, the_reference_server_s_step_function_is_found)
{
	struct stepprobe_site s;

	if (access("build/refserver", R_OK)) {
		cr_log_info("no build/refserver here: skipped");
		return;
	}
	cr_assert_eq(stepprobe_find(getpid(), "build/refserver", NULL, &s), 0);
	cr_expect_str_eq(s.sym, "rs_engine_step");
	cr_expect_str_eq(s.path, "build/refserver");
}
