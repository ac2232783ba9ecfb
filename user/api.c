/*
 * api.c - reading what the inference APIs put on the wire.
 *
 * In:  request paths and bodies, SSE event data, non-streamed bodies.
 * Out: struct api_req and struct api_resp (api.h).
 *
 * Bodies and events are parsed with cJSON and dropped at once; strings of
 * prompt or generated text are only measured. Events are recognised by
 * their shape (WIRE.md):
 *   OpenAI chat:        choices[].delta.{content,reasoning_content,
 *                       reasoning,tool_calls}; a role-only delta is not a
 *                       token
 *   OpenAI completions: choices[].text
 *   TGI:                token.{text,special}; details.generated_tokens
 *   llama.cpp:          content; stop, tokens_predicted, tokens_evaluated
 *   all:                id, usage.{prompt_tokens,completion_tokens}, error
 * A "[DONE]" event is recognised before any JSON parsing, and cJSON runs
 * only on events that begin with '{'. Measured on the development machine:
 * about 1.6 us per 250-byte chat chunk here, about 1.8 us per token event
 * for the whole tracker (HTTP, chunked, SSE, JSON), so no cheaper pre-scan
 * is used.
 *
 * A request body cut short by the capture cap is not valid JSON; then the
 * model, stream flag and token limit are found by a plain key scan.
 */
#include <ctype.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api.h"

struct path_api {
	const char *path;
	enum api_kind kind;
};

static const struct path_api paths[] = {
	{ "/v1/completions", API_COMPLETIONS },
	{ "/v1/chat/completions", API_CHAT },
	{ "/v1/embeddings", API_EMBEDDINGS },
	{ "/generate", API_TGI },
	{ "/generate_stream", API_TGI },
	{ "/completion", API_LLAMACPP },
	{ "/completions", API_LLAMACPP },
};

enum api_kind api_from_path(const char *method, const char *path)
{
	if (!method || strcmp(method, "POST") || !path)
		return API_OTHER;
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (!strcmp(path, paths[i].path))
			return paths[i].kind;
	return API_OTHER;
}

const char *api_name(enum api_kind k)
{
	static const char *const names[] = {
		[API_OTHER] = "other",
		[API_COMPLETIONS] = "completions",
		[API_CHAT] = "chat",
		[API_EMBEDDINGS] = "embeddings",
		[API_TGI] = "tgi",
		[API_LLAMACPP] = "llamacpp",
	};

	return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k]
							      : "other";
}

bool api_path_streams(const char *path)
{
	return path && !strcmp(path, "/generate_stream");
}

void api_req_init(struct api_req *r)
{
	memset(r, 0, sizeof(*r));
	r->max_tokens = -1;
}

void api_resp_init(struct api_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->prompt_tokens = -1;
	r->completion_tokens = -1;
	r->cached_tokens = -1;
}

static void copy_cstr(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);

	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static const char *get_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool get_num(const cJSON *o, const char *key, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 9e18)
		return false;	/* 9e18: the cast below stays defined */
	*out = (int64_t)v->valuedouble;
	return true;
}

static size_t str_len(const char *s)
{
	return s ? strlen(s) : 0;
}

/* Text length of a prompt: a string, strings, or chat content parts. */
static uint64_t text_bytes(const cJSON *v)
{
	uint64_t n = 0;
	const cJSON *e;

	if (cJSON_IsString(v))
		return strlen(v->valuestring);
	if (cJSON_IsObject(v))
		return text_bytes(cJSON_GetObjectItemCaseSensitive(v, "content")) +
		       str_len(get_str(v, "text"));
	cJSON_ArrayForEach(e, v)
		n += text_bytes(e);
	return n;
}

/* ---- a prompt's beginning, hashed --------------------------------------- */

struct hasher {
	struct api_req *r;
	uint64_t h;		/* the chain so far */
	size_t fill;		/* bytes of the current block */
};

static void hash_byte(struct hasher *x, unsigned char c)
{
	if (!x->r->prefix_hash || x->r->prefix_blocks >= API_PREFIX_BLOCKS)
		return;
	x->h = (x->h ^ c) * 0x100000001b3ull;
	if (++x->fill < API_PREFIX_BLOCK)
		return;
	/* a finaliser, so that the chain's value spreads over a table */
	uint64_t v = x->h ^ (x->h >> 29);

	v *= 0xbf58476d1ce4e5b9ull;
	x->r->prefix_hash[x->r->prefix_blocks++] = v ^ (v >> 32);
	x->fill = 0;
}

/* The prompt's text in order, as text_bytes walks it; each string ends
 * with a separator so that ["ab", "c"] and ["a", "bc"] differ. */
static void hash_text(struct hasher *x, const cJSON *v)
{
	const cJSON *e;

	if (cJSON_IsString(v)) {
		for (const char *p = v->valuestring; *p; p++)
			hash_byte(x, (unsigned char)*p);
		hash_byte(x, 0x1e);
		return;
	}
	if (cJSON_IsObject(v)) {
		hash_text(x, cJSON_GetObjectItemCaseSensitive(v, "role"));
		hash_text(x, cJSON_GetObjectItemCaseSensitive(v, "content"));
		hash_text(x, cJSON_GetObjectItemCaseSensitive(v, "text"));
		return;
	}
	cJSON_ArrayForEach(e, v)
		hash_text(x, e);
}

static void hash_prompt(const cJSON *root, struct api_req *r)
{
	static const char *const keys[] = { "prompt", "messages", "inputs",
					    "input" };
	struct hasher x = { .r = r, .h = 0xcbf29ce484222325ull };

	r->prefix_blocks = 0;
	if (!r->prefix_hash)
		return;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		hash_text(&x, cJSON_GetObjectItemCaseSensitive(root, keys[i]));
}

static void request_limits(const cJSON *root, struct api_req *r)
{
	const cJSON *params = cJSON_GetObjectItemCaseSensitive(root,
							       "parameters");
	const cJSON *so = cJSON_GetObjectItemCaseSensitive(root,
							   "stream_options");

	if (!get_num(root, "max_tokens", &r->max_tokens) &&
	    !get_num(root, "max_completion_tokens", &r->max_tokens) &&
	    !get_num(params, "max_new_tokens", &r->max_tokens))
		get_num(root, "n_predict", &r->max_tokens);
	r->include_usage = cJSON_IsTrue(
		cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
}

static void request_json(const cJSON *root, struct api_req *r)
{
	const char *s;

	if ((s = get_str(root, "model")))
		copy_cstr(r->model, sizeof(r->model), s);
	if ((s = get_str(root, "user"))) {
		copy_cstr(r->user, sizeof(r->user), s);
		r->has_user = true;
	}
	r->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root,
								  "stream"));
	request_limits(root, r);
	r->prompt_bytes =
		text_bytes(cJSON_GetObjectItemCaseSensitive(root, "prompt")) +
		text_bytes(cJSON_GetObjectItemCaseSensitive(root, "messages")) +
		text_bytes(cJSON_GetObjectItemCaseSensitive(root, "inputs")) +
		text_bytes(cJSON_GetObjectItemCaseSensitive(root, "input"));
	hash_prompt(root, r);
}

/* Where the value of "key" starts in raw JSON text, or NULL. */
static const char *scan_key(const char *b, size_t n, const char *key)
{
	size_t k = strlen(key);
	const char *end = b + n, *p = b;

	while ((p = memmem(p, end - p, key, k))) {
		const char *q = p + k;

		if (p > b && p[-1] == '\\') {	/* inside a string */
			p = q;
			continue;
		}
		while (q < end && isspace((unsigned char)*q))
			q++;
		if (q < end && *q == ':') {
			q++;
			while (q < end && isspace((unsigned char)*q))
				q++;
			return q < end ? q : NULL;
		}
		p = q;
	}
	return NULL;
}

static void scan_request(const char *b, size_t n, struct api_req *r)
{
	const char *end = b + n, *v;

	if ((v = scan_key(b, n, "\"model\"")) && *v == '"') {
		const char *q = memchr(v + 1, '"', end - v - 1);
		size_t len = q ? (size_t)(q - v - 1) : 0;

		if (len >= sizeof(r->model))
			len = sizeof(r->model) - 1;
		memcpy(r->model, v + 1, len);
		r->model[len] = '\0';
	}
	if ((v = scan_key(b, n, "\"stream\"")) && end - v >= 4)
		r->stream = !memcmp(v, "true", 4);
	if ((v = scan_key(b, n, "\"max_tokens\"")) ||
	    (v = scan_key(b, n, "\"max_completion_tokens\"")) ||
	    (v = scan_key(b, n, "\"max_new_tokens\"")) ||
	    (v = scan_key(b, n, "\"n_predict\""))) {
		int64_t x = 0;

		if (isdigit((unsigned char)*v)) {
			while (v < end && isdigit((unsigned char)*v) &&
			       x < 100000000000000000LL)	/* no overflow */
				x = x * 10 + (*v++ - '0');
			r->max_tokens = x;
		}
	}
}

void api_parse_request(const char *body, size_t len, bool cut,
		       struct api_req *r)
{
	cJSON *root = len ? cJSON_ParseWithLength(body, len) : NULL;

	if (cJSON_IsObject(root)) {
		request_json(root, r);
	} else if (len) {
		r->bad_json = !cut;
		scan_request(body, len, r);
	}
	cJSON_Delete(root);
}

/*
 * llama.cpp's prompt cache: "tokens_cached" where it sends it, else its
 * timings: prompt_n is the prompt tokens it computed, so the rest of the
 * prompt came from the cache.
 */
static void read_llamacpp_cache(const cJSON *root, struct api_resp *r)
{
	const cJSON *t;
	int64_t n = -1;

	if (r->cached_tokens >= 0)
		return;
	if (get_num(root, "tokens_cached", &n) && n >= 0) {
		r->cached_tokens = n;
		return;
	}
	t = cJSON_GetObjectItemCaseSensitive(root, "timings");
	if (cJSON_IsObject(t) && get_num(t, "prompt_n", &n) &&
	    r->prompt_tokens >= n && n >= 0)
		r->cached_tokens = r->prompt_tokens - n;
}

static void read_usage(const cJSON *root, struct api_resp *r)
{
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
	int64_t p = -1, c = -1;

	if (!cJSON_IsObject(u))
		return;
	get_num(u, "prompt_tokens", &p);
	get_num(u, "completion_tokens", &c);
	if (p < 0 && c < 0)
		return;
	r->has_usage = true;
	r->prompt_tokens = p;
	r->completion_tokens = c;
	get_num(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"),
		"cached_tokens", &r->cached_tokens);
	read_llamacpp_cache(root, r);	/* its /v1 endpoints' last chunk */
}

static void read_common(const cJSON *root, struct api_resp *r)
{
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
	const char *id = get_str(root, "id");

	if (id && !r->id[0])
		copy_cstr(r->id, sizeof(r->id), id);
	if (err && !cJSON_IsNull(err) && !cJSON_IsFalse(err))
		r->error = true;
	read_usage(root, r);
}

/* TGI's details and llama.cpp's final counts. */
static void read_native_counts(const cJSON *root, struct api_resp *r)
{
	const cJSON *det = cJSON_GetObjectItemCaseSensitive(root, "details");
	int64_t x;

	if (cJSON_IsObject(det)) {
		r->done = true;
		if (get_num(det, "generated_tokens", &x)) {
			r->has_usage = true;
			r->completion_tokens = x;
		}
	}
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stop")) ||
	    get_str(root, "generated_text")) {
		r->done = true;
		if (get_num(root, "tokens_predicted", &x)) {
			r->has_usage = true;
			r->completion_tokens = x;
		}
		if (get_num(root, "tokens_evaluated", &x))
			r->prompt_tokens = x;
		read_llamacpp_cache(root, r);
	}
}

static bool delta_has_token(const cJSON *d, struct api_resp *r)
{
	size_t n = str_len(get_str(d, "content")) +
		   str_len(get_str(d, "reasoning_content")) +
		   str_len(get_str(d, "reasoning"));
	const cJSON *tc = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");

	r->text_bytes += n;
	return n > 0 || cJSON_GetArraySize(tc) > 0;
}

static bool choices_have_token(const cJSON *root, struct api_resp *r)
{
	const cJSON *ch, *choices = cJSON_GetObjectItemCaseSensitive(root,
								     "choices");
	bool tok = false;

	cJSON_ArrayForEach(ch, choices) {
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
		size_t n = str_len(get_str(ch, "text"));

		r->text_bytes += n;
		tok |= n > 0;
		if (cJSON_IsObject(d))
			tok |= delta_has_token(d, r);
	}
	return tok;
}

static bool native_token(const cJSON *root, struct api_resp *r)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "token");
	size_t n;

	if (cJSON_IsObject(t)) {
		r->text_bytes += str_len(get_str(t, "text"));
		return !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t,
								      "special"));
	}
	n = str_len(get_str(root, "content"));
	r->text_bytes += n;
	return n > 0;
}

bool api_parse_event(const char *data, size_t len, struct api_resp *r)
{
	cJSON *root;
	bool tok = false;

	while (len && isspace((unsigned char)*data))
		data++, len--;
	while (len && isspace((unsigned char)data[len - 1]))
		len--;
	if (len == 6 && !memcmp(data, "[DONE]", 6)) {
		r->done = true;
		return false;
	}
	if (!len || *data != '{') {
		r->bad_json = true;
		return false;
	}
	root = cJSON_ParseWithLength(data, len);
	if (!cJSON_IsObject(root)) {
		r->bad_json = true;
		cJSON_Delete(root);
		return false;
	}
	read_common(root, r);
	if (cJSON_GetObjectItemCaseSensitive(root, "choices"))
		tok = choices_have_token(root, r);
	else
		tok = native_token(root, r);
	read_native_counts(root, r);
	cJSON_Delete(root);
	return tok;
}

static void body_text(const cJSON *root, struct api_resp *r)
{
	const cJSON *ch, *choices = cJSON_GetObjectItemCaseSensitive(root,
								     "choices");

	cJSON_ArrayForEach(ch, choices) {
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(ch, "message");

		r->text_bytes += str_len(get_str(ch, "text")) +
				 str_len(get_str(m, "content")) +
				 str_len(get_str(m, "reasoning_content"));
	}
	r->text_bytes += str_len(get_str(root, "generated_text")) +
			 str_len(get_str(root, "content"));
}

void api_parse_body(enum api_kind k, const char *body, size_t len,
		    struct api_resp *r)
{
	cJSON *root = len ? cJSON_ParseWithLength(body, len) : NULL;
	const cJSON *o = root;

	if (cJSON_IsArray(root))	/* TGI may answer with a list */
		o = cJSON_GetArrayItem(root, 0);
	if (!cJSON_IsObject(o)) {
		r->bad_json = len > 0;
		cJSON_Delete(root);
		return;
	}
	read_common(o, r);
	read_native_counts(o, r);
	body_text(o, r);
	if (k == API_EMBEDDINGS && r->has_usage && r->completion_tokens < 0)
		r->completion_tokens = 0;
	r->done = true;
	cJSON_Delete(root);
}
