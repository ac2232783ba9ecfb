/*
 * harness.h - what every end-to-end suite shares: a temporary folder per
 * test, child processes started with their output in files of that folder
 * and all killed and reaped at the end, waits with deadlines, the reference
 * server's port file, loadgen, and small cJSON helpers.
 *
 * In:  names of files in the test's folder (a name that starts with '/' is
 *      taken as it is), argv vectors, deadlines in milliseconds.
 * Out: pids, wait statuses, exit codes, file contents, parsed JSON; failed
 *      preconditions end the test through Criterion's assertions.
 * Assumes: Criterion runs each test in its own process; a suite calls
 *      e2e_setup() from its .init and e2e_teardown() from its .fini, so the
 *      teardown runs after a failed assertion too. Run from the repository
 *      root (build/ paths are relative). One test at a time per process.
 */
#ifndef TT_E2E_HARNESS_H
#define TT_E2E_HARNESS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <cJSON.h>
#include <criterion/criterion.h>

#define E2E_MAX_PIDS	8

/* This test's folder ("" before e2e_setup). */
extern char e2e_dir[64];

/* ---- folder and fixture -------------------------------------------------- */

/* Makes /tmp/tt-<name>-XXXXXX (mode mode when not 0) and forgets every pid
 * of an earlier test. */
void e2e_setup(const char *name, mode_t mode);
/* Stops every tracked process (sig, then SIGKILL after 3 s) and removes the
 * folder, unless TT_KEEP is set in the environment and keep_ok. */
void e2e_teardown(int sig, bool keep_ok);
/* out = the folder's name/ (or name itself when it starts with '/'). */
void e2e_path(char *out, size_t n, const char *name);
/* The same in one of eight rotating static buffers. */
const char *e2e_tpath(const char *name);
/* build/NAME copied into the folder (0755) for a test that runs it as
 * another user: the tree may live where only root can reach (/root/...),
 * as a fresh clone does; the copy's path, in a static buffer. */
const char *e2e_bin_for_anyone(const char *name);

/* ---- processes ----------------------------------------------------------- */

void e2e_msleep(int ms);
/* Tracks p (on) so that the teardown ends it, or stops tracking it. */
void e2e_track(pid_t p, bool on);
/* Waits for p up to ms; its wait status, or -1 if it still runs. */
int e2e_reap(pid_t p, int ms);
/* sig, then SIGKILL after ms; the wait status (-1 when it could not). */
int e2e_stop(pid_t p, int sig, int ms);

/*
 * Starts argv (execvp) with stdout to the file out, or to out_fd when it is
 * >= 0, and stderr to the file err, or to stdout's file when err is NULL;
 * as user and group uid when uid >= 0; nice_inc added to its niceness when
 * not 0. The pid is tracked. A child that cannot redirect exits 126, one
 * that cannot change user 125, one that cannot exec 127.
 */
pid_t e2e_spawn_ex(char *const argv[], const char *out, const char *err,
		   int out_fd, int uid, int nice_inc);
pid_t e2e_spawn(char *const argv[], const char *out, const char *err);
/* The exit code of a wait status, or -1 when it did not exit. */
int e2e_code(int st);
/* The exit code of a wait status, 128 + signal when killed; fails the test
 * when st is -1 (it did not end in time). */
int e2e_exit_of(int st);
/* Waits up to ms for p to end (then kills it); its exit code, or -1 when
 * it did not exit. */
int e2e_finish(pid_t p, int ms);
/* Runs argv to its end (at most ms, then it is killed); its exit code, or
 * -1 when it did not exit. */
int e2e_run_ex(char *const argv[], const char *out, const char *err, int ms,
	       int uid);
int e2e_run(char *const argv[], const char *out, const char *err, int ms);

/* ---- files --------------------------------------------------------------- */

/* The whole file, NUL-terminated (caller frees), or NULL. */
char *e2e_slurp(const char *name);
/* At most the last max bytes of a file for a failure message, or
 * "(no log)"; a static buffer, valid until the next call. */
const char *e2e_tail(const char *name, size_t max);
/* Logs the file line by line (cr_log_info) when it exists. */
void e2e_show(const char *name);
bool e2e_file_has(const char *name, const char *text);
/* Waits until the file holds text; false after ms. */
bool e2e_wait_text(const char *name, const char *text, int ms);
int e2e_count_lines(const char *name);

/* ---- skips --------------------------------------------------------------- */

/* Skips the test (printf-style reason). Criterion runs no fini after a
 * skip, so what the fini does is done first: processes ended, folder
 * removed. */
#define e2e_skip(...)							\
	do {								\
		e2e_teardown(SIGKILL, false);				\
		cr_skip_test(__VA_ARGS__);				\
	} while (0)

/* Skips the test unless it runs as root. */
void e2e_need_root(void);
/* Skips the test unless root and build/tokentrace, refserver and loadgen. */
void e2e_need_tools(void);
/* e2e_need_tools, and skips unless refserver has simulated CUDA devices
 * (built with the CUDA toolkit's CUPTI headers). */
void e2e_need_sim(void);

/* ---- servers and load ---------------------------------------------------- */

/*
 * Waits up to ms for a port number > 0 in the file port_file; that port.
 * When p > 0 and p ends first, or at the deadline, shows the file log (when
 * not NULL) and fails the test, naming what (the process waited on).
 */
int e2e_wait_port(const char *port_file, pid_t p, int ms, const char *log,
		  const char *what);
/* `build/refserver --port 0 --port-file DIR/port --truth DIR/truth.jsonl`
 * and extra (NULL-ended, may be NULL), output in server.out/server.err;
 * waits 10 s for the port. */
pid_t e2e_refserver(const char *const *extra, int *port);
/* `build/loadgen --url URL --out DIR/out` then pre and flags (each
 * NULL-ended, may be NULL), with its output in the files log_out/log_err
 * (log_err NULL: with stdout). */
pid_t e2e_loadgen(const char *url, const char *out, const char *const *pre,
		  const char *const *flags, const char *log_out,
		  const char *log_err);
/* A self-signed certificate and key for localhost (openssl(1)) in the
 * folder's cert.pem and key.pem; false when openssl failed. */
bool e2e_make_cert(char *cert, char *key, size_t n);

/* ---- JSON ---------------------------------------------------------------- */

/* The file parsed; fails the test (with the tail of log when not NULL)
 * when it cannot be read or is not JSON. */
cJSON *e2e_load_json(const char *name, const char *log);
/* Each line of a JSON-lines file parsed into v (at most max); how many. */
int e2e_read_jsonl(const char *name, cJSON **v, int max);
/* The same for a file another process is still writing: a last line not
 * yet ended by '\n' is left for the next read. */
int e2e_read_jsonl_growing(const char *name, cJSON **v, int max);
/* A number field; fails the test when it is not one. */
double e2e_num(const cJSON *o, const char *k);
/* A string field; fails the test when it is not one. */
const char *e2e_str(const cJSON *o, const char *k);
/* A number field, or dflt when it is not one. */
double e2e_num_or(const cJSON *o, const char *k, double dflt);

/* One request's attributed ns, its 90% interval (lo, hi; negative: the
 * report gave none) and its true ns. */
struct e2e_iv {
	double got, lo, hi, truth;
};

/*
 * How often the report's 90% intervals hold the truth, as shares of the
 * totals over v[0..n) (the truth's sum differs from busy time): logs the
 * fraction and the median width (hi - lo over the value) against the
 * goal (85-95%, width under 20%), and fails the test below `floor` or
 * with the median width at 100% or more (an interval that says next to
 * nothing).
 * Returns the fraction.
 */
double e2e_intervals(const struct e2e_iv *v, int n, const char *name,
		     double floor);
/* A string field, or "" when it is not one. */
const char *e2e_str_or(const cJSON *o, const char *k);

#endif
