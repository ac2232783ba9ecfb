/*
 * test_soak.c - the short soak: `tokentrace record` on a busy reference
 * server for SOAK_TEST_SECONDS (45 s by default) of connection churn,
 * keep-alive, non-streamed requests and streams cut by the client; the
 * collector's memory must stay flat and its fds fixed. `make soak` runs the
 * same script (tools/soak.sh) for 30 minutes.
 *
 * In:  tools/soak.sh and the binaries it uses; run from the repository
 *      root. SOAK_TEST_SECONDS changes the length.
 * Out: Criterion suite "soak"; the script's figures on stderr.
 * Assumes: root (eBPF); skips with the reason otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "harness.h"

/* Growth of the collector's RSS allowed over the second half. Keeping every
 * request in memory (about 0.5 KiB each, a few thousand in that half) would
 * pass this bound several times over. */
#define SOAK_RSS_GROWTH_KB	1024

struct soak_result {
	long requests, seconds, failed, recorded;
	long rss_start_kb, rss_mid_kb, rss_end_kb, rss_max2_kb;
	long fds_start, fds_mid, fds_end, fds_max2, fds_mid_low, fds_end_low;
	long record_exit, report_exit;
	double req_s;
};

static long soak_field(const char *line, const char *key)
{
	char pat[48];
	const char *p;

	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	cr_assert(p, "no %s in the soak result: %s", key, line);
	return strtol(p + strlen(pat), NULL, 10);
}

static void soak_parse(const char *line, struct soak_result *r)
{
	const char *p = strstr(line, " req_s=");

	r->requests = soak_field(line, "requests");
	r->seconds = soak_field(line, "seconds");
	r->failed = soak_field(line, "failed");
	r->recorded = soak_field(line, "recorded");
	r->rss_start_kb = soak_field(line, "rss_start_kb");
	r->rss_mid_kb = soak_field(line, "rss_mid_kb");
	r->rss_end_kb = soak_field(line, "rss_end_kb");
	r->rss_max2_kb = soak_field(line, "rss_max2_kb");
	r->fds_start = soak_field(line, "fds_start");
	r->fds_mid = soak_field(line, "fds_mid");
	r->fds_end = soak_field(line, "fds_end");
	r->fds_max2 = soak_field(line, "fds_max2");
	r->fds_mid_low = soak_field(line, "fds_mid_low");
	r->fds_end_low = soak_field(line, "fds_end_low");
	r->record_exit = soak_field(line, "record_exit");
	r->report_exit = soak_field(line, "report_exit");
	r->req_s = p ? strtod(p + 7, NULL) : 0;
}

/* Runs tools/soak.sh for secs with its output in out; its exit code. */
static int soak_run(const char *secs, const char *out)
{
	char *argv[] = { "tools/soak.sh", NULL };
	char bound[16];

	snprintf(bound, sizeof(bound), "%d", SOAK_RSS_GROWTH_KB);
	setenv("SOAK_SECONDS", secs, 1);
	setenv("SOAK_RSS_GROWTH_KB", bound, 1);
	return e2e_finish(e2e_spawn(argv, out, NULL), 150000);
}

/* The test makes no folder of the harness; the fini ends the script if a
 * failed test left it running. */
static void soak_teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

TestSuite(soak, .fini = soak_teardown);

Test(soak, collector_memory_and_fds_stay_flat_under_churn, .timeout = 150)
{
	const char *secs = getenv("SOAK_TEST_SECONDS");
	char out[] = "/tmp/tt-soak-test-XXXXXX", line[1024];
	struct soak_result r;
	bool found = false;
	int fd, rc;
	FILE *f;

	if (geteuid() != 0)
		cr_skip_test("needs root to load eBPF programs");
	fd = mkstemp(out);
	cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
	close(fd);
	rc = soak_run(secs && *secs ? secs : "45", out);
	f = fopen(out, "r");
	cr_assert(f, "no soak output");
	/* the figures go to stderr as they are, so that make test shows them */
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stderr);
		if (!strncmp(line, "soak-result ", 12)) {
			soak_parse(line, &r);
			found = true;
		}
	}
	fclose(f);
	unlink(out);
	cr_assert(found, "tools/soak.sh gave no result (exit %d)", rc);
	cr_expect_gt(r.requests, 1000, "only %ld requests in %ld s",
		     r.requests, r.seconds);
	cr_expect_eq(r.failed, 0, "%ld requests failed under tracing",
		     r.failed);
	cr_expect_eq(r.record_exit, 0);
	cr_expect_eq(r.report_exit, 0, "the trace did not read back");
	cr_expect_geq(r.recorded * 100, r.requests * 99, "recorded %ld of "
		      "%ld requests", r.recorded, r.requests);
	cr_expect_leq(r.rss_max2_kb - r.rss_mid_kb, SOAK_RSS_GROWTH_KB,
		      "collector RSS grew from %ld kB to %ld kB in the second "
		      "half", r.rss_mid_kb, r.rss_max2_kb);
	/* lowest of three samples each: an fd open for a moment (a /proc
	 * folder read to find the server behind --port) is not a leak */
	cr_expect_leq(r.fds_end_low, r.fds_mid_low, "collector fds grew from "
		      "%ld to %ld in the second half (highest %ld)",
		      r.fds_mid_low, r.fds_end_low, r.fds_max2);
	cr_expect_eq(rc, 0, "tools/soak.sh exit %d", rc);
}
