/*
 * Recorded traces kept in tests/data (a CPU run of the reference server;
 * GPU runs saved by tests/gpu/check.sh) read back and report with every
 * nanosecond of busy device time accounted for, on every CI run.
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <string.h>

#include "../../user/collect.h"
#include "../../user/report.h"
#include "../../user/tracefile.h"

#define MAX_FIXTURES 64

static char fixtures[MAX_FIXTURES][512];
static int nfixtures;

static int found(const char *path, const struct stat *st, int type,
		 struct FTW *ftw)
{
	size_t n = strlen(path);

	(void)st;
	(void)ftw;
	if (type == FTW_F && n > 3 && !strcmp(path + n - 3, ".tt") &&
	    nfixtures < MAX_FIXTURES)
		snprintf(fixtures[nfixtures++], sizeof(fixtures[0]), "%s",
			 path);
	return 0;
}

static void check_fixture(const char *path, bool *saw_gpu)
{
	struct collect c;
	struct tracefile_header h = { 0 };
	struct collect_prices p = { NULL, 0, -1, -1 };
	struct report_input in;
	struct report r = { 0 };
	uint64_t sum = 0;

	collect_init(&c);
	cr_assert_eq(collect_load(&c, path, stderr, &h), 0, "%s", path);
	cr_expect_eq(c.trace_blocks_skipped, 0, "%s: damaged blocks", path);
	cr_assert_eq(collect_report_input(&c, &p, &in), 0, "%s", path);
	cr_assert_eq(report_build(&in, &r), 0, "%s: report or conservation",
		     path);
	cr_expect_gt(r.nreqs, 0, "%s: no requests", path);
	cr_expect_gt(r.busy_ns, 0, "%s: no busy time", path);
	for (size_t i = 0; i < r.nreqs; i++)
		sum += r.reqs[i].gpu_ns;
	cr_expect_eq(sum + r.unattributed_ns, r.busy_ns,
		     "%s: %llu + %llu != %llu", path, (unsigned long long)sum,
		     (unsigned long long)r.unattributed_ns,
		     (unsigned long long)r.busy_ns);
	for (size_t i = 0; i < r.ndevs; i++)
		if (r.devs[i].dev.kind == TT_DEV_GPU && r.devs[i].busy_ns)
			*saw_gpu = true;
	report_free(&r);
	collect_free(&c);
}

Test(fixtures, recorded_traces_report_and_conserve_device_time)
{
	bool saw_gpu = false;

	nfixtures = 0;
	cr_assert_eq(nftw("tests/data", found, 16, FTW_PHYS), 0,
		     "run the tests from the repository root");
	cr_assert_gt(nfixtures, 0, "tests/data holds no trace");
	for (int i = 0; i < nfixtures; i++)
		check_fixture(fixtures[i], &saw_gpu);
	if (!saw_gpu)	/* a note, not a warning: Criterion fails on those */
		fprintf(stderr, "fixtures: no GPU trace in tests/data yet: "
			"tests/gpu/check.sh on a GPU machine records one\n");
}
