/*
 * test_regressions.c - inputs the fuzz targets (tests/fuzz) found to break
 * a module, each kept as the smallest input that showed it.
 *
 * In:  nothing but the modules under test.
 * Out: Criterion tests in suite `regressions`, named for the behaviour.
 * Assumes: the fuzz targets keep checking the same properties.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include <tokentrace/compute.h>

#include "../../tools/loadgen/loadgen.h"
#include "../../tools/refserver/api.h"
#include "../../tools/refserver/http.h"
#include "../../user/api.h"
#include "../../user/cuptirecv.h"

/* fuzz_api: a count past INT64_MAX was cast from double to int64_t
 * (undefined; on x86-64 it gave INT64_MIN, a negative token count). */
Test(regressions, usage_count_too_big_for_int64_is_unknown_not_negative)
{
	static const char ev[] =
		"{\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":"
		"{\"prompt_tokens\":12,\"completion_tokens\":3e200}}";
	struct api_resp r;

	api_resp_init(&r);
	api_parse_event(ev, strlen(ev), &r);
	cr_assert_eq(r.prompt_tokens, 12);
	cr_assert_eq(r.completion_tokens, -1,
		     "completion_tokens %lld from 3e200",
		     (long long)r.completion_tokens);
}

Test(regressions, max_tokens_too_big_for_int64_is_not_given)
{
	static const char body[] =
		"{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":1e19}";
	struct api_req r;

	api_req_init(&r);
	api_parse_request(body, strlen(body), false, &r);
	cr_assert_str_eq(r.model, "m");
	cr_assert_eq(r.max_tokens, -1, "max_tokens %lld from 1e19",
		     (long long)r.max_tokens);
}

/* fuzz_api: the plain scan of an unreadable request body multiplied
 * max_tokens digits into an int64_t without a bound (signed overflow). */
Test(regressions, cut_request_with_huge_max_tokens_does_not_overflow)
{
	static const char body[] =
		"{\"model\":\"m\",\"max_tokens\":9999999999999999999,\"pro";
	struct api_req r;

	api_req_init(&r);
	api_parse_request(body, strlen(body), true, &r);
	cr_assert_str_eq(r.model, "m");
	cr_assert_geq(r.max_tokens, 0, "max_tokens %lld from 19 nines",
		      (long long)r.max_tokens);
}

/* fuzz_cuptirecv: a name id of 2^31 or more made the doubling of the
 * seen-names bitmap wrap to 0 and loop forever (an id just under 2^31
 * allocated 2 GiB). The library's ids are at most 2^20. */
Test(regressions, name_record_with_huge_id_is_malformed_not_a_hang,
     .timeout = 10)
{
	static const char name[] = "gemm";
	struct {
		struct ttc_rec_stream st;
		struct ttc_rec_name nm;
		char str[8];
	} in;
	struct cuptirecv_stats st;
	struct cuptirecv *r = cuptirecv_open(NULL, NULL);

	cr_assert_not_null(r);
	memset(&in, 0, sizeof(in));
	in.st.hdr = (struct ttc_rec_hdr){ TTC_REC_STREAM, 1,
					  sizeof(in.st) };
	in.st.magic = TTC_WIRE_MAGIC;
	in.st.wire_version = TTC_WIRE_VERSION;
	in.st.pid = 4242;
	in.st.clock_id = 1;
	in.nm.hdr = (struct ttc_rec_hdr){ TTC_REC_NAME, 1,
					  sizeof(in.nm) + sizeof(in.str) };
	in.nm.name_id = 0xf9000001u;
	in.nm.len = strlen(name);
	memcpy(in.str, name, sizeof(name));
	cr_assert_eq(cuptirecv_decode(r, &in, sizeof(in)), -EINVAL);
	cuptirecv_stats(r, &st);
	cr_assert(strstr(st.last_error, "name record"), "error: %s",
		  st.last_error);
	cuptirecv_close(r);
}

/* A client's "seed" past int64's range was cast from double (undefined). */
Test(regressions, refserver_refuses_a_seed_out_of_range)
{
	static const char body[] = "{\"prompt\":\"hi\",\"seed\":1e300}";
	struct rs_api_req r;
	char err[128] = "";

	cr_expect_lt(rs_api_parse(RS_API_COMPLETIONS, body, strlen(body), &r,
				  err, sizeof(err)), 0);
	cr_expect(strstr(err, "seed") != NULL, "error '%s'", err);
	rs_api_req_free(&r);
}

/* A NUL byte matched strchr's terminator and passed as a token char. */
Test(regressions, refserver_rejects_nul_in_the_method)
{
	static const char req[] = "GE\0T / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct rs_http_req r;
	size_t used = 0;

	cr_expect_lt(rs_http_parse(req, sizeof(req) - 1, 1024, &r, &used), 0);
	rs_http_req_free(&r);
}

/* The load generator cast a huge usage count from double to long. */
Test(regressions, loadgen_ignores_a_usage_count_out_of_range)
{
	static const char resp[] =
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		"Content-Length: 64\r\n\r\n"
		"{\"id\":\"x\",\"usage\":{\"prompt_tokens\":3,"
		"\"completion_tokens\":3e200}}";
	struct lg_resp r;

	lg_resp_init(&r);
	lg_resp_feed(&r, resp, sizeof(resp) - 1);
	cr_expect(r.done);
	cr_expect_eq(r.prompt_tokens, 3);
	cr_expect_eq(r.completion_tokens, -1, "got %ld", r.completion_tokens);
	lg_resp_free(&r);
}
