/*
 * fuzz_api.c - libFuzzer target for user/api.c, which reads request
 * bodies, SSE event data and response bodies of the inference APIs.
 *
 * In:  byte 0: bits 0-1 what the rest is (0: a request body, 1: a request
 *      body cut short, 2: SSE events' data separated by NUL bytes, all
 *      into one response, 3: a whole response body), bits 2-4 the API kind
 *      for a body (mod 6); byte 1 on: the bytes.
 * Out: a crash on a memory error, an unterminated string field, or counts
 *      that cannot come from the input (more text bytes than input).
 * Assumes: nothing; every body and event is an exact-size heap copy.
 */
#include <stdbool.h>
#include <stdint.h>

#include "../../user/api.h"
#include "fuzz.h"

static void fuzz_check_resp(const struct api_resp *r, size_t size)
{
	fuzz_check_str(r->id);
	fuzz_check(r->text_bytes <= size, "%llu text bytes from %zu input",
		   (unsigned long long)r->text_bytes, size);
	fuzz_check(r->prompt_tokens >= -1 && r->completion_tokens >= -1,
		   "negative counts %lld %lld", (long long)r->prompt_tokens,
		   (long long)r->completion_tokens);
}

static void fuzz_request(const uint8_t *d, size_t n, bool cut)
{
	struct api_req r;
	char *b = fuzz_dup(d, n);

	api_req_init(&r);
	api_parse_request(b, n, cut, &r);
	fuzz_check_str(r.model);
	fuzz_check_str(r.user);
	fuzz_check(r.prompt_bytes <= n, "%llu prompt bytes from %zu input",
		   (unsigned long long)r.prompt_bytes, n);
	fuzz_check(r.max_tokens >= -1, "max_tokens %lld",
		   (long long)r.max_tokens);
	free(b);
}

static void fuzz_events(const uint8_t *d, size_t n)
{
	struct api_resp r;
	size_t off = 0;

	api_resp_init(&r);
	while (off <= n) {
		const uint8_t *z = memchr(d + off, 0, n - off);
		size_t len = (z ? (size_t)(z - d) : n) - off;
		char *b = fuzz_dup(d + off, len);

		api_parse_event(b, len, &r);
		free(b);
		off += len + 1;
	}
	fuzz_check_resp(&r, n);
}

static void fuzz_body(enum api_kind k, const uint8_t *d, size_t n)
{
	struct api_resp r;
	char *b = fuzz_dup(d, n);

	api_resp_init(&r);
	api_parse_body(k, b, n, &r);
	fuzz_check_resp(&r, n);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t mode = fuzz_u8(&in);

	switch (mode & 3) {
	case 0:
	case 1:
		fuzz_request(in.p, in.n, mode & 1);
		break;
	case 2:
		fuzz_events(in.p, in.n);
		break;
	default:
		fuzz_body((enum api_kind)((mode >> 2 & 7) % 6), in.p, in.n);
		break;
	}
	return 0;
}
