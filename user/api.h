/*
 * api.h - what the inference APIs say, read from paths, request bodies,
 * SSE events and response bodies (OpenAI-compatible, TGI, llama.cpp).
 *
 * In:  a request path; a request body; each event's data or a whole
 *      non-streamed response body (all bounded, already in memory).
 * Out: plain structs: model, stream flag, token limit, user; whether an
 *      event carries generated text; usage counts, response id, errors.
 *      No text is kept: generated text is only measured (its byte count).
 *
 * Assumes: bodies are JSON (WIRE.md describes the shapes). Events are read
 * by shape, not by path, since servers serve one API on another's path.
 */
#ifndef TT_API_H
#define TT_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum api_kind {
	API_OTHER = 0,
	API_COMPLETIONS,	/* /v1/completions */
	API_CHAT,		/* /v1/chat/completions */
	API_EMBEDDINGS,		/* /v1/embeddings */
	API_TGI,		/* /generate, /generate_stream */
	API_LLAMACPP,		/* /completion */
};

#define API_MODEL_MAX	64
#define API_USER_MAX	64
#define API_ID_MAX	96

/*
 * A prompt's beginning as chained hashes of blocks of its text (block i's
 * hash covers every byte before its end), so that the requests that begin
 * like an earlier one can be told without keeping any text. 4096 blocks
 * of 16 bytes: the first 64 KiB of a prompt.
 */
#define API_PREFIX_BLOCK	16
#define API_PREFIX_BLOCKS	4096

struct api_req {
	char model[API_MODEL_MAX];
	char user[API_USER_MAX];
	bool has_user;
	bool stream;
	bool include_usage;
	int64_t max_tokens;	/* -1 if not given */
	uint64_t prompt_bytes;	/* length of the prompt text (not kept) */
	uint64_t *prefix_hash;	/* the caller's [API_PREFIX_BLOCKS] for the
				   prompt's block hashes, or NULL: none */
	uint32_t prefix_blocks;	/* whole blocks hashed */
	bool bad_json;		/* unreadable: fields from a plain scan */
};

struct api_resp {
	char id[API_ID_MAX];
	bool has_usage;
	int64_t prompt_tokens;		/* -1 if unknown */
	int64_t completion_tokens;	/* -1 if unknown */
	int64_t cached_tokens;		/* prompt tokens from a prefix cache
					   (usage.prompt_tokens_details, or
					   llama.cpp's counts); -1 if unsent */
	bool error;			/* an error object */
	bool done;			/* [DONE] or a final event */
	bool bad_json;
	uint64_t text_bytes;		/* generated text seen, in bytes */
};

enum api_kind api_from_path(const char *method, const char *path);
const char *api_name(enum api_kind k);

/* Is this API streamed regardless of the body (TGI /generate_stream)? */
bool api_path_streams(const char *path);

void api_req_init(struct api_req *r);
void api_resp_init(struct api_resp *r);

/* Read a request body (possibly cut short: then fields come from a scan). */
void api_parse_request(const char *body, size_t len, bool cut,
		       struct api_req *r);

/* One SSE event's data. Returns true if it carries generated text. */
bool api_parse_event(const char *data, size_t len, struct api_resp *r);

/* A whole non-streamed response body. */
void api_parse_body(enum api_kind k, const char *body, size_t len,
		    struct api_resp *r);

#endif
