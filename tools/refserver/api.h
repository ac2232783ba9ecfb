/*
 * api.h - the OpenAI-compatible surface: request bodies in, JSON out.
 *
 * In:  the JSON body of POST /v1/completions or /v1/chat/completions.
 * Out: struct rs_api_req (prompt bytes = prompt tokens, stream flags,
 *      max_tokens, model, user, sampling); the JSON of stream chunks,
 *      usage chunks and whole non-streamed responses, as vLLM shapes them.
 * Assumes: bodies are NUL-terminated (http.c makes them so). Token text:
 *      a token id is shown as one printable ASCII character
 *      (rs_token_char), so any token sequence is valid JSON and UTF-8,
 *      while the id itself stays the model's.
 */
#ifndef RS_API_H
#define RS_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define RS_NAME_MAX 128

enum rs_api { RS_API_COMPLETIONS = 0, RS_API_CHAT = 1 };

struct rs_api_req {
	enum rs_api api;
	bool stream;
	bool include_usage;
	int max_tokens;		/* -1: not given */
	char model[RS_NAME_MAX];	/* "" when not given */
	char user[RS_NAME_MAX];		/* "" when not given */
	float temperature;	/* default 1 */
	bool has_seed;
	uint64_t seed;
	unsigned char *prompt;	/* malloc'd; caller frees */
	int prompt_len;
};

/* 0, or -EINVAL with a message for the client in err. */
int rs_api_parse(enum rs_api api, const char *body, size_t len,
		 struct rs_api_req *out, char *err, size_t errlen);
void rs_api_req_free(struct rs_api_req *r);

/* What every chunk of one response repeats. */
struct rs_resp {
	enum rs_api api;
	const char *id;
	const char *model;
	long created;		/* unix seconds */
};

char rs_token_char(int token);
/* One chunk's JSON: a token (token >= 0), or the chat role chunk. */
int rs_fmt_chunk(struct rs_buf *b, const struct rs_resp *r, int token,
		 const char *finish);
int rs_fmt_role_chunk(struct rs_buf *b, const struct rs_resp *r);
/* cached_tokens < 0: no prompt_tokens_details in the usage. */
int rs_fmt_usage_chunk(struct rs_buf *b, const struct rs_resp *r,
		       int prompt_tokens, int completion_tokens,
		       int cached_tokens);
/* "data: <json>\n\n" */
int rs_fmt_event(struct rs_buf *b, const char *json, size_t n);
/*
 * The writes one token event of a stream turns into, in order: the chat
 * role chunk (before the first token), the token's chunk, and after the
 * last token the usage chunk (include_usage) and "data: [DONE]". Each unit
 * is one SSE event; chunked wraps each in one HTTP chunk and ends the body
 * after [DONE]. token_unit says which unit carries the token.
 */
#define RS_SSE_UNITS 4
struct rs_sse_units {
	struct rs_buf unit[RS_SSE_UNITS];
	int n;
	int token_unit;
};

struct rs_stream_tok {
	int token;
	int index;		/* 1-based */
	bool last;
	bool include_usage;
	int prompt_tokens;
	bool report_cached;	/* usage.prompt_tokens_details too */
	int cached_tokens;
	bool chunked;
};

int rs_fmt_stream_token(struct rs_sse_units *u, const struct rs_resp *r,
			const struct rs_stream_tok *t);
void rs_sse_units_free(struct rs_sse_units *u);

/* The non-streamed response body. */
int rs_fmt_body(struct rs_buf *b, const struct rs_resp *r, const int *tokens,
		int n, int prompt_tokens, int cached_tokens, const char *finish);
/* GET /v1/models */
int rs_fmt_models(struct rs_buf *b, const char *model, long created);

#endif
