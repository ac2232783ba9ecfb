/*
 * test_names.c - kernel name interning and the correlation -> launching
 * thread table of the CUPTI library.
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "helpers.h"

Test(cupti_names, same_name_same_id_distinct_names_distinct_ids)
{
	struct ttc_names *n = ttc_names_new();
	int sent;
	uint32_t a = ttc_names_intern(n, "void gemm<128>(float*)", &sent);

	cr_assert_neq(a, 0);
	cr_expect_eq(sent, 0, "a new name is not sent yet");
	ttc_names_mark_sent(n, a);
	cr_expect_eq(ttc_names_intern(n, "void gemm<128>(float*)", &sent), a);
	cr_expect_eq(sent, 1, "marked sent stays sent");
	uint32_t b = ttc_names_intern(n, "void gemm<64>(float*)", &sent);

	cr_expect_neq(b, a);
	cr_expect_eq(sent, 0);
	ttc_names_free(n);
}

Test(cupti_names, table_grows_and_keeps_every_id)
{
	struct ttc_names *n = ttc_names_new();
	char buf[64];
	int sent;

	for (int i = 0; i < 5000; i++) {
		snprintf(buf, sizeof(buf), "kernel_%d", i);
		cr_assert_eq(ttc_names_intern(n, buf, &sent), (uint32_t)i + 1);
	}
	for (int i = 0; i < 5000; i += 97) {
		snprintf(buf, sizeof(buf), "kernel_%d", i);
		cr_expect_eq(ttc_names_intern(n, buf, &sent), (uint32_t)i + 1);
	}
	cr_expect_eq(ttc_names_count(n), 5000);
	ttc_names_free(n);
}

Test(cupti_names, correlation_gives_launching_thread)
{
	ttc_corr_note(1000, 11);
	ttc_corr_note(1001, 12);
	cr_expect_eq(ttc_corr_tid(1000), 11);
	cr_expect_eq(ttc_corr_tid(1001), 12);
	cr_expect_eq(ttc_corr_tid(999999), 0, "never noted: unknown");
	/* A later launch in the same slot makes the old id unknown, not wrong. */
	ttc_corr_note(1000 + (1u << 18), 13);
	cr_expect_eq(ttc_corr_tid(1000), 0);
	cr_expect_eq(ttc_corr_tid(1000 + (1u << 18)), 13);
}

Test(cupti_names, launch_apis_are_wanted_others_not)
{
	cr_expect(ttc_corr_api_wanted("cudaLaunchKernel_v7000"));
	cr_expect(ttc_corr_api_wanted("cuLaunchKernelEx"));
	cr_expect(ttc_corr_api_wanted("cudaGraphLaunch_v10000"));
	cr_expect(ttc_corr_api_wanted("cudaMemcpyAsync_v3020"));
	cr_expect(ttc_corr_api_wanted("cuMemsetD8Async"));
	cr_expect_not(ttc_corr_api_wanted("cudaLaunchHostFunc_v10000"));
	cr_expect_not(ttc_corr_api_wanted("cudaGetDevice_v3020"));
	cr_expect_not(ttc_corr_api_wanted(NULL));
}
