/*
 * test_inject.c - the built library, loaded as the CUDA driver would load
 * it, on a machine with no GPU driver: InitializeInjection must log and
 * return, never crash or exit the process. Runs in a forked child.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define LIB "build/libtokentrace_cupti.so"

/* Child: load, initialise, exit 0 if it returned 1, 3 otherwise. */
static void child(const char *err_path)
{
	int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	void *h;
	int (*init)(void);

	dup2(fd, 2);
	h = dlopen(LIB, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		_exit(2);
	}
	*(void **)&init = dlsym(h, "InitializeInjection");
	if (!init)
		_exit(4);
	int r = init();

	exit(r == 1 ? 0 : 3);	/* exit(), so atexit handlers run too */
}

static pid_t last_child;

static char *run_child(int *status, const char *sock, const char *file)
{
	char *err_path = test_path("stderr");
	size_t len;
	pid_t pid;

	if (access(LIB, R_OK))
		cr_skip_test(LIB " is not built (run from the repository root "
			     "after `make " LIB "`)");
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (sock)
			setenv("TOKENTRACE_CUPTI_SOCKET", sock, 1);
		else
			unsetenv("TOKENTRACE_CUPTI_SOCKET");
		if (file)
			setenv("TOKENTRACE_CUPTI_FILE", file, 1);
		else
			unsetenv("TOKENTRACE_CUPTI_FILE");
		child(err_path);
	}
	last_child = pid;
	cr_assert_eq(waitpid(pid, status, 0), pid);
	char *text = slurp(err_path, &len);

	unlink(err_path);
	free(err_path);
	cr_assert(text);
	text = realloc(text, len + 1);
	text[len] = '\0';
	return text;
}

Test(cupti_inject, no_driver_no_destination_logs_and_returns)
{
	int status;
	char *err = run_child(&status, NULL, NULL);

	cr_assert(WIFEXITED(status), "child died of signal %d; stderr: %s",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0, err);
	cr_expect_eq(WEXITSTATUS(status), 0, "stderr: %s", err);
	cr_expect(strstr(err, "libtokentrace_cupti: neither "
			 "TOKENTRACE_CUPTI_SOCKET nor TOKENTRACE_CUPTI_FILE"),
		  "stderr: %s", err);
	free(err);
}

Test(cupti_inject, no_driver_with_socket_logs_cupti_failure_once)
{
	int status;
	char *err = run_child(&status, "/tmp/ttc-test-nobody-listens.sock",
			      NULL);

	cr_assert(WIFEXITED(status), "child died of signal %d; stderr: %s",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0, err);
	cr_expect_eq(WEXITSTATUS(status), 0, "stderr: %s", err);
	if (access("/dev/nvidiactl", F_OK) == 0) {
		free(err);
		cr_skip_test("a GPU driver is present: CUPTI may succeed here");
	}
	const char *first = strstr(err, "libtokentrace_cupti: ");

	cr_assert(first, "a CUPTI failure must be logged; stderr: %s", err);
	cr_expect(strstr(err, "failed"), "stderr: %s", err);
	cr_expect_null(strstr(first + 1, "libtokentrace_cupti: "),
		       "one message, not a flood; stderr: %s", err);
	free(err);
}

Test(cupti_inject, record_file_gets_the_pid_and_mode_0600)
{
	int status;
	char path[128];
	struct stat st;
	char *err = run_child(&status, NULL, "/tmp/ttc-test-records-%p.bin");

	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "stderr: %s", err);
	snprintf(path, sizeof(path), "/tmp/ttc-test-records-%d.bin",
		 (int)last_child);
	cr_assert_eq(stat(path, &st), 0, "%s must exist; stderr: %s", path,
		     err);
	cr_expect_eq(st.st_mode & 0777, 0600, "records are private: %o",
		     st.st_mode & 0777);
	unlink(path);
	free(err);
}
