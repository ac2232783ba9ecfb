/*
 * api.c - OpenAI-compatible request parsing and response JSON.
 *
 * In:  request bodies (cJSON parses them); token ids and counts.
 * Out: struct rs_api_req; JSON text for chunks and bodies.
 * Assumes: the prompt is a string (or a list of token ids 0..255, or a
 *      list of strings, joined); chat prompts are the concatenated message
 *      contents. Only n = 1. Errors name the offending field.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api.h"

static int fail(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "%s", msg);
	return -EINVAL;
}

static int add_text(struct rs_buf *p, const cJSON *s)
{
	return rs_buf_puts(p, s->valuestring);
}

static int prompt_from_list(const cJSON *list, struct rs_buf *p, char *err,
			    size_t errlen)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, list) {
		if (cJSON_IsString(e)) {
			if (add_text(p, e))
				return -ENOMEM;
		} else if (cJSON_IsNumber(e) && e->valuedouble >= 0 &&
			   e->valuedouble < 256 &&
			   e->valuedouble == (int)e->valuedouble) {
			char c = (char)e->valueint;

			if (rs_buf_put(p, &c, 1))
				return -ENOMEM;
		} else {
			return fail(err, errlen, "'prompt' must be a string, a "
				    "list of strings or a list of token ids "
				    "0..255");
		}
	}
	return 0;
}

static int prompt_from_messages(const cJSON *msgs, struct rs_buf *p,
				char *err, size_t errlen)
{
	const cJSON *m, *c, *part;

	if (!cJSON_IsArray(msgs))
		return fail(err, errlen, "'messages' must be a list");
	cJSON_ArrayForEach(m, msgs) {
		if (!cJSON_IsObject(m))
			return fail(err, errlen, "each message must be an object");
		c = cJSON_GetObjectItemCaseSensitive(m, "content");
		if (cJSON_IsString(c)) {
			if (add_text(p, c))
				return -ENOMEM;
			continue;
		}
		if (!cJSON_IsArray(c)) {
			if (cJSON_IsNull(c) || !c)
				continue;
			return fail(err, errlen, "message 'content' must be a "
				    "string or a list of parts");
		}
		cJSON_ArrayForEach(part, c) {
			const cJSON *t = cJSON_GetObjectItemCaseSensitive(part,
									  "text");

			if (cJSON_IsString(t) && add_text(p, t))
				return -ENOMEM;
		}
	}
	return 0;
}

static int get_prompt(const cJSON *root, struct rs_api_req *out, char *err,
		      size_t errlen)
{
	struct rs_buf p = { 0 };
	const cJSON *v;
	int rc;

	if (out->api == RS_API_CHAT) {
		v = cJSON_GetObjectItemCaseSensitive(root, "messages");
		rc = v ? prompt_from_messages(v, &p, err, errlen) :
			fail(err, errlen, "'messages' is required");
	} else {
		v = cJSON_GetObjectItemCaseSensitive(root, "prompt");
		if (cJSON_IsString(v))
			rc = add_text(&p, v);
		else if (cJSON_IsArray(v))
			rc = prompt_from_list(v, &p, err, errlen);
		else
			rc = fail(err, errlen, "'prompt' is required and must "
				  "be a string");
	}
	if (!rc && p.len == 0)
		rc = fail(err, errlen, "the prompt is empty: give at least "
			  "one byte");
	if (!rc && p.len > 1u << 30)
		rc = fail(err, errlen, "the prompt is too long");
	if (rc) {
		rs_buf_free(&p);
		return rc == -ENOMEM ? fail(err, errlen, "out of memory") : rc;
	}
	out->prompt = (unsigned char *)p.p;
	out->prompt_len = (int)p.len;
	return 0;
}

static int get_string(const cJSON *root, const char *name, char *dst,
		      size_t n, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);

	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v)) {
		snprintf(err, errlen, "'%s' must be a string", name);
		return -EINVAL;
	}
	snprintf(dst, n, "%s", v->valuestring);
	return 0;
}

static int get_max_tokens(const cJSON *root, struct rs_api_req *out,
			  char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");

	if (!v || cJSON_IsNull(v))
		v = cJSON_GetObjectItemCaseSensitive(root,
						     "max_completion_tokens");
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 ||
	    v->valuedouble > 1e9 || v->valuedouble != (int)v->valuedouble)
		return fail(err, errlen, "'max_tokens' must be an integer >= 1");
	out->max_tokens = v->valueint;
	return 0;
}

static int get_flags(const cJSON *root, struct rs_api_req *out, char *err,
		     size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "stream");
	const cJSON *so = cJSON_GetObjectItemCaseSensitive(root,
							   "stream_options");

	if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v))
		return fail(err, errlen, "'stream' must be true or false");
	out->stream = cJSON_IsTrue(v);
	v = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
	out->include_usage = cJSON_IsTrue(v);
	v = cJSON_GetObjectItemCaseSensitive(root, "n");
	if (v && !cJSON_IsNull(v) && (!cJSON_IsNumber(v) || v->valueint != 1))
		return fail(err, errlen, "only 'n' = 1 is supported");
	v = cJSON_GetObjectItemCaseSensitive(root, "temperature");
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble < 0 || v->valuedouble > 100)
			return fail(err, errlen,
				    "'temperature' must be 0..100");
		out->temperature = (float)v->valuedouble;
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "seed");
	if (cJSON_IsNumber(v)) {
		/* Out of int64's range the cast is undefined: refuse it. */
		if (!(v->valuedouble > -9e18 && v->valuedouble < 9e18))
			return fail(err, errlen, "'seed' is out of range");
		out->has_seed = true;
		out->seed = (uint64_t)(int64_t)v->valuedouble;
	}
	return 0;
}

int rs_api_parse(enum rs_api api, const char *body, size_t len,
		 struct rs_api_req *out, char *err, size_t errlen)
{
	cJSON *root;
	int rc;

	memset(out, 0, sizeof(*out));
	out->api = api;
	out->max_tokens = -1;
	out->temperature = 1.0f;
	root = cJSON_ParseWithLength(body, len);
	if (!root)
		return fail(err, errlen, "the request body is not valid JSON");
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return fail(err, errlen, "the request body must be a JSON object");
	}
	rc = get_flags(root, out, err, errlen);
	if (!rc)
		rc = get_max_tokens(root, out, err, errlen);
	if (!rc)
		rc = get_string(root, "model", out->model, sizeof(out->model),
				err, errlen);
	if (!rc)
		rc = get_string(root, "user", out->user, sizeof(out->user),
				err, errlen);
	if (!rc)
		rc = get_prompt(root, out, err, errlen);
	cJSON_Delete(root);
	if (rc)
		rs_api_req_free(out);
	return rc;
}

void rs_api_req_free(struct rs_api_req *r)
{
	free(r->prompt);
	r->prompt = NULL;
	r->prompt_len = 0;
}

/* ---- responses ---------------------------------------------------------- */

char rs_token_char(int token)
{
	return (char)(' ' + ((unsigned)token % 95));
}

static int fmt_head(struct rs_buf *b, const struct rs_resp *r,
		    const char *object)
{
	int rc = rs_buf_puts(b, "{\"id\":");

	if (!rc)
		rc = rs_buf_json_str(b, r->id, strlen(r->id));
	if (!rc)
		rc = rs_buf_printf(b, ",\"object\":\"%s\",\"created\":%ld,"
				   "\"model\":", object, r->created);
	if (!rc)
		rc = rs_buf_json_str(b, r->model, strlen(r->model));
	return rc;
}

static int fmt_finish(struct rs_buf *b, const char *finish)
{
	if (finish)
		return rs_buf_printf(b, ",\"logprobs\":null,"
				     "\"finish_reason\":\"%s\"}]}", finish);
	return rs_buf_puts(b, ",\"logprobs\":null,\"finish_reason\":null}]}");
}

int rs_fmt_chunk(struct rs_buf *b, const struct rs_resp *r, int token,
		 const char *finish)
{
	bool chat = r->api == RS_API_CHAT;
	char c = rs_token_char(token);
	int rc = fmt_head(b, r, chat ? "chat.completion.chunk" :
			  "text_completion");

	if (!rc)
		rc = rs_buf_puts(b, chat ? ",\"choices\":[{\"index\":0,"
				 "\"delta\":{\"content\":" :
				 ",\"choices\":[{\"index\":0,\"text\":");
	if (!rc)
		rc = rs_buf_json_str(b, &c, 1);
	if (!rc && chat)
		rc = rs_buf_puts(b, "}");
	return rc ? rc : fmt_finish(b, finish);
}

int rs_fmt_role_chunk(struct rs_buf *b, const struct rs_resp *r)
{
	int rc = fmt_head(b, r, "chat.completion.chunk");

	if (!rc)
		rc = rs_buf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":"
				 "{\"role\":\"assistant\",\"content\":\"\"}");
	return rc ? rc : fmt_finish(b, NULL);
}

/* cached < 0: prompt_tokens_details is left out. */
static int fmt_usage(struct rs_buf *b, int p, int c, int cached)
{
	int rc = rs_buf_printf(b, "\"usage\":{\"prompt_tokens\":%d,"
			       "\"completion_tokens\":%d,\"total_tokens\":%d",
			       p, c, p + c);

	if (!rc && cached >= 0)
		rc = rs_buf_printf(b, ",\"prompt_tokens_details\":"
				   "{\"cached_tokens\":%d}", cached);
	return rc ? rc : rs_buf_puts(b, "}");
}

int rs_fmt_usage_chunk(struct rs_buf *b, const struct rs_resp *r,
		       int prompt_tokens, int completion_tokens,
		       int cached_tokens)
{
	int rc = fmt_head(b, r, r->api == RS_API_CHAT ?
			  "chat.completion.chunk" : "text_completion");

	if (!rc)
		rc = rs_buf_puts(b, ",\"choices\":[],");
	if (!rc)
		rc = fmt_usage(b, prompt_tokens, completion_tokens,
			       cached_tokens);
	return rc ? rc : rs_buf_puts(b, "}");
}

int rs_fmt_event(struct rs_buf *b, const char *json, size_t n)
{
	int rc = rs_buf_put(b, "data: ", 6);

	if (!rc)
		rc = rs_buf_put(b, json, n);
	return rc ? rc : rs_buf_put(b, "\n\n", 2);
}

/* Appends one SSE event as the next unit. */
static int add_unit(struct rs_sse_units *u, struct rs_buf *json, bool chunked,
		    bool end)
{
	struct rs_buf ev = { 0 };
	struct rs_buf *out = &u->unit[u->n++];
	int rc = rs_fmt_event(&ev, json->p, json->len);

	out->len = 0;
	if (!rc)
		rc = chunked ? rs_http_chunk(out, ev.p, ev.len) :
			rs_buf_put(out, ev.p, ev.len);
	if (!rc && end && chunked)
		rc = rs_buf_puts(out, "0\r\n\r\n");
	rs_buf_free(&ev);
	json->len = 0;
	return rc;
}

int rs_fmt_stream_token(struct rs_sse_units *u, const struct rs_resp *r,
			const struct rs_stream_tok *t)
{
	struct rs_buf json = { 0 };
	int rc = 0;

	u->n = 0;
	if (t->index == 1 && r->api == RS_API_CHAT) {
		rc = rs_fmt_role_chunk(&json, r);
		if (!rc)
			rc = add_unit(u, &json, t->chunked, false);
	}
	u->token_unit = u->n;
	if (!rc)
		rc = rs_fmt_chunk(&json, r, t->token, t->last ? "length" : NULL);
	if (!rc)
		rc = add_unit(u, &json, t->chunked, false);
	if (!rc && t->last && t->include_usage) {
		rc = rs_fmt_usage_chunk(&json, r, t->prompt_tokens, t->index,
					t->report_cached ? t->cached_tokens :
							   -1);
		if (!rc)
			rc = add_unit(u, &json, t->chunked, false);
	}
	if (!rc && t->last) {
		rc = rs_buf_puts(&json, "[DONE]");
		if (!rc)
			rc = add_unit(u, &json, t->chunked, true);
	}
	rs_buf_free(&json);
	return rc;
}

void rs_sse_units_free(struct rs_sse_units *u)
{
	for (int i = 0; i < RS_SSE_UNITS; i++)
		rs_buf_free(&u->unit[i]);
	u->n = 0;
}

static int fmt_text(struct rs_buf *b, const int *tokens, int n)
{
	struct rs_buf t = { 0 };
	int rc = 0;

	for (int i = 0; i < n && !rc; i++) {
		char c = rs_token_char(tokens[i]);

		rc = rs_buf_put(&t, &c, 1);
	}
	if (!rc)
		rc = rs_buf_json_str(b, t.p ? t.p : "", t.len);
	rs_buf_free(&t);
	return rc;
}

int rs_fmt_body(struct rs_buf *b, const struct rs_resp *r, const int *tokens,
		int n, int prompt_tokens, int cached_tokens, const char *finish)
{
	bool chat = r->api == RS_API_CHAT;
	int rc = fmt_head(b, r, chat ? "chat.completion" : "text_completion");

	if (!rc)
		rc = rs_buf_puts(b, chat ? ",\"choices\":[{\"index\":0,"
				 "\"message\":{\"role\":\"assistant\","
				 "\"content\":" :
				 ",\"choices\":[{\"index\":0,\"text\":");
	if (!rc)
		rc = fmt_text(b, tokens, n);
	if (!rc)
		rc = rs_buf_printf(b, "%s,\"logprobs\":null,\"finish_reason\":"
				   "\"%s\"}],", chat ? "}" : "", finish);
	if (!rc)
		rc = fmt_usage(b, prompt_tokens, n, cached_tokens);
	return rc ? rc : rs_buf_puts(b, "}");
}

int rs_fmt_models(struct rs_buf *b, const char *model, long created)
{
	int rc = rs_buf_puts(b, "{\"object\":\"list\",\"data\":[{\"id\":");

	if (!rc)
		rc = rs_buf_json_str(b, model, strlen(model));
	if (!rc)
		rc = rs_buf_printf(b, ",\"object\":\"model\",\"created\":%ld,"
				   "\"owned_by\":\"refserver\",\"root\":",
				   created);
	if (!rc)
		rc = rs_buf_json_str(b, model, strlen(model));
	return rc ? rc : rs_buf_puts(b, "}]}");
}
