/*
 * fuzz_refserver_http.c - libFuzzer target for rs_http_parse in
 * tools/refserver/http.c, the reference server's request parser, which
 * reads whatever a client sends.
 *
 * In:  byte 0: the body limit (0: 1 MiB, else 4 * byte); byte 1: where to
 *      cut a prefix of each request (a fraction, byte / 256, of its length);
 *      the rest: bytes received on one connection (pipelined requests).
 * Out: a crash on a memory error, a leak, a request that uses more bytes
 *      than there are or none, a body over the limit or not NUL-terminated,
 *      an unterminated field, or a prefix of a whole request that is
 *      rejected instead of "need more" (bytes can arrive split anywhere).
 * Assumes: the parser keeps no state between calls; every buffer it reads
 *      is an exact-size heap copy.
 */
#include <stdint.h>

#include "../../tools/refserver/http.h"
#include "fuzz.h"

static int fuzz_parse(const uint8_t *d, size_t n, size_t max_body,
		      struct rs_http_req *req, size_t *used)
{
	char *b = fuzz_dup(d, n);
	int rc = rs_http_parse(b, n, max_body, req, used);

	free(b);
	return rc;
}

static void fuzz_check_req(const struct rs_http_req *req, size_t used,
			   size_t n, size_t max_body)
{
	fuzz_check(used > 0 && used <= n, "used %zu of %zu", used, n);
	fuzz_check(req->body != NULL, "no body buffer");
	fuzz_check(req->body_len <= max_body, "body %zu over limit %zu",
		   req->body_len, max_body);
	fuzz_check(req->body_len < used, "body %zu from %zu bytes",
		   req->body_len, used);
	fuzz_check(req->body[req->body_len] == '\0', "body not terminated");
	fuzz_check_str(req->method);
	fuzz_check_str(req->path);
	fuzz_check_str(req->tenant);
	fuzz_check(req->head_done, "whole request without head_done");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t lim = fuzz_u8(&in);
	uint8_t cut = fuzz_u8(&in);
	size_t max_body = lim ? (size_t)lim * 4 : 1u << 20;

	while (in.n) {
		struct rs_http_req req, part;
		size_t used = 0, pused = 1, at;
		int rc = fuzz_parse(in.p, in.n, max_body, &req, &used);

		if (rc != 1) {
			fuzz_check(rc == 0 || rc == -400 || rc == -413 ||
				   rc == -431 || rc == -501 || rc == -505,
				   "status %d", rc);
			fuzz_check(used == 0, "used %zu without a request",
				   used);
			rs_http_req_free(&req);
			break;
		}
		fuzz_check_req(&req, used, in.n, max_body);
		at = used * cut / 256;
		rc = fuzz_parse(in.p, at, max_body, &part, &pused);
		fuzz_check(rc == 0 && pused == 0,
			   "prefix %zu of a %zu-byte request gives %d",
			   at, used, rc);
		rs_http_req_free(&part);
		rs_http_req_free(&req);
		in.p += used;
		in.n -= used;
	}
	return 0;
}
