/*
 * API recognition: paths, request bodies, token events of each server
 * family, usage, ids, errors.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include <stdio.h>

#include "../../user/api.h"

static bool ev(const char *data, struct api_resp *r)
{
	return api_parse_event(data, strlen(data), r);
}

Test(api, paths_name_the_api)
{
	cr_assert_eq(api_from_path("POST", "/v1/completions"), API_COMPLETIONS);
	cr_assert_eq(api_from_path("POST", "/v1/chat/completions"), API_CHAT);
	cr_assert_eq(api_from_path("POST", "/v1/embeddings"), API_EMBEDDINGS);
	cr_assert_eq(api_from_path("POST", "/generate"), API_TGI);
	cr_assert_eq(api_from_path("POST", "/generate_stream"), API_TGI);
	cr_assert_eq(api_from_path("POST", "/completion"), API_LLAMACPP);
	cr_assert_eq(api_from_path("GET", "/v1/models"), API_OTHER);
	cr_assert_eq(api_from_path("GET", "/v1/completions"), API_OTHER);
	cr_assert_eq(api_from_path("POST", "/v1/chat/completions/x"), API_OTHER);
	cr_assert_str_eq(api_name(API_CHAT), "chat");
	cr_assert_str_eq(api_name(API_LLAMACPP), "llamacpp");
	cr_assert_str_eq(api_name(API_OTHER), "other");
	cr_assert(api_path_streams("/generate_stream"));
	cr_assert(!api_path_streams("/generate"));
}

static void req(const char *body, struct api_req *r)
{
	api_req_init(r);
	api_parse_request(body, strlen(body), false, r);
}

Test(api, request_fields_of_each_family)
{
	struct api_req r;

	req("{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"abcd\"},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ef\"}]}],"
	    "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
	    "\"max_completion_tokens\":9,\"user\":\"u-1\"}", &r);
	cr_assert_str_eq(r.model, "m1");
	cr_assert(r.stream);
	cr_assert(r.include_usage);
	cr_assert_eq(r.max_tokens, 9);
	cr_assert_str_eq(r.user, "u-1");
	cr_assert_eq(r.prompt_bytes, 6);
	cr_assert(!r.bad_json);

	req("{\"model\":\"m2\",\"prompt\":[\"ab\",\"c\"],\"max_tokens\":4}", &r);
	cr_assert(!r.stream);
	cr_assert(!r.include_usage);
	cr_assert_eq(r.max_tokens, 4);
	cr_assert_eq(r.prompt_bytes, 3);
	cr_assert(!r.has_user);

	req("{\"inputs\":\"hello\",\"parameters\":{\"max_new_tokens\":20}}", &r);
	cr_assert_eq(r.max_tokens, 20);
	cr_assert_eq(r.prompt_bytes, 5);
	cr_assert_str_eq(r.model, "");

	req("{\"prompt\":\"x\",\"n_predict\":128,\"stream\":true}", &r);
	cr_assert_eq(r.max_tokens, 128);
	cr_assert(r.stream);

	req("{\"model\":\"m3\",\"messages\":[]}", &r);
	cr_assert_eq(r.max_tokens, -1);
}

Test(api, broken_and_cut_request_bodies)
{
	struct api_req r;
	const char *cut = "{\"messages\":[{\"role\":\"user\",\"content\":\"say \\\"model\\\": no\"}],"
			  "\"model\" : \"scan-me\", \"stream\": true, \"max_tokens\": 33, \"x";

	api_req_init(&r);
	api_parse_request(cut, strlen(cut), true, &r);
	cr_assert(!r.bad_json, "cut short is not malformed");
	cr_assert_str_eq(r.model, "scan-me");
	cr_assert(r.stream);
	cr_assert_eq(r.max_tokens, 33);

	api_req_init(&r);
	api_parse_request("not json", 8, false, &r);
	cr_assert(r.bad_json);
	cr_assert_str_eq(r.model, "");
}

#define CHUNK "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,"

Test(api, chat_role_only_chunk_is_not_a_token)
{
	struct api_resp r;

	api_resp_init(&r);
	cr_assert(!ev(CHUNK "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}", &r));
	cr_assert(!ev(CHUNK "\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}", &r));
	cr_assert_str_eq(r.id, "chatcmpl-1");
	cr_assert(ev(CHUNK "\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}", &r));
	cr_assert(ev(CHUNK "\"delta\":{\"reasoning_content\":\"hmm\"},\"finish_reason\":null}]}", &r));
	cr_assert(ev(CHUNK "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\"}}]},\"finish_reason\":null}]}", &r));
	cr_assert(!ev(CHUNK "\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}", &r));
	cr_assert(!ev(CHUNK "\"delta\":{},\"finish_reason\":\"stop\"}]}", &r));
	cr_assert_eq(r.text_bytes, 5);
	cr_assert(!r.has_usage);
	cr_assert(!r.error);
	cr_assert(!r.done);
	cr_assert(!ev("[DONE]", &r));
	cr_assert(r.done);
	cr_assert(!r.bad_json);
}

Test(api, usage_chunk_and_completions_text)
{
	struct api_resp r;

	api_resp_init(&r);
	cr_assert(ev("{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" yes\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}", &r));
	cr_assert(!ev("{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}", &r));
	cr_assert(!r.has_usage, "usage:null is no usage");
	cr_assert(!ev("{\"id\":\"cmpl-2\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"total_tokens\":19,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":0}}}", &r));
	cr_assert(r.has_usage);
	cr_assert_eq(r.prompt_tokens, 7);
	cr_assert_eq(r.completion_tokens, 12);
}

Test(api, error_event_mid_stream)
{
	struct api_resp r;

	api_resp_init(&r);
	cr_assert(!ev("{\"error\":{\"object\":\"error\",\"message\":\"x\",\"code\":500}}", &r));
	cr_assert(r.error);
	api_resp_init(&r);
	cr_assert(!ev("{\"error\":\"Request failed during generation\",\"error_type\":\"generation\"}", &r));
	cr_assert(r.error, "TGI error events are strings");
	api_resp_init(&r);
	cr_assert(!ev("garbage", &r));
	cr_assert(r.bad_json);
}

Test(api, tgi_and_llamacpp_events)
{
	struct api_resp r;

	api_resp_init(&r);
	cr_assert(ev("{\"index\":1,\"token\":{\"id\":5,\"text\":\"He\",\"logprob\":-0.1,\"special\":false},\"generated_text\":null,\"details\":null}", &r));
	cr_assert(!ev("{\"index\":2,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":0,\"special\":true},\"generated_text\":\"He\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":2,\"seed\":null}}", &r));
	cr_assert(r.has_usage);
	cr_assert_eq(r.completion_tokens, 2);
	cr_assert_eq(r.prompt_tokens, -1);
	cr_assert(r.done);

	api_resp_init(&r);
	cr_assert(ev("{\"content\":\"Hel\",\"stop\":false,\"id_slot\":0,\"multimodal\":false}", &r));
	cr_assert(!ev("{\"content\":\"\",\"stop\":false}", &r));
	cr_assert(!r.has_usage);
	cr_assert(!ev("{\"content\":\"\",\"stop\":true,\"model\":\"x\",\"tokens_predicted\":9,\"tokens_evaluated\":4,\"timings\":{\"prompt_n\":4,\"predicted_n\":9}}", &r));
	cr_assert(r.has_usage);
	cr_assert_eq(r.completion_tokens, 9);
	cr_assert_eq(r.prompt_tokens, 4);
}

Test(api, non_streamed_bodies)
{
	struct api_resp r;
	const char *chat = "{\"id\":\"chatcmpl-3\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"12345678\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2}}";
	const char *emb = "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":[0.1,0.2],\"index\":0}],\"model\":\"e\",\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}";
	const char *tgi = "[{\"generated_text\":\"abc\",\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":3}}]";

	api_resp_init(&r);
	api_parse_body(API_CHAT, chat, strlen(chat), &r);
	cr_assert_str_eq(r.id, "chatcmpl-3");
	cr_assert_eq(r.completion_tokens, 2);
	cr_assert_eq(r.text_bytes, 8);
	api_resp_init(&r);
	api_parse_body(API_EMBEDDINGS, emb, strlen(emb), &r);
	cr_assert_eq(r.prompt_tokens, 8);
	cr_assert_eq(r.completion_tokens, 0);
	api_resp_init(&r);
	api_parse_body(API_TGI, tgi, strlen(tgi), &r);
	cr_assert_eq(r.completion_tokens, 3);
	cr_assert_eq(r.text_bytes, 3);
}

Test(api, event_parsing_cost_is_reasonable)
{
	struct api_resp r;
	const char *e = CHUNK "\"delta\":{\"content\":\" token\"},\"logprobs\":null,\"finish_reason\":null}]}";
	struct timespec a, b;
	double us;

	api_resp_init(&r);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 20000; i++)
		ev(e, &r);
	clock_gettime(CLOCK_MONOTONIC, &b);
	us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / 20000;
	cr_log_info("api_parse_event: %.2f us per chat chunk", us);
	cr_assert_eq(r.text_bytes, 6 * 20000);
	cr_assert_lt(us, 200.0, "%.2f us per event", us);	/* loose: shared CPUs, sanitizers */
}

/* ---- cached prompt tokens ------------------------------------------------ */

Test(api, cached_tokens_from_usage_details_and_llamacpp)
{
	struct api_resp r;

	api_resp_init(&r);
	ev("{\"id\":\"c-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":500,"
	   "\"completion_tokens\":9,\"prompt_tokens_details\":"
	   "{\"cached_tokens\":384}}}", &r);
	cr_expect_eq(r.prompt_tokens, 500);
	cr_expect_eq(r.cached_tokens, 384);

	api_resp_init(&r);
	ev("{\"id\":\"c-2\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,"
	   "\"completion_tokens\":9}}", &r);
	cr_expect_eq(r.cached_tokens, -1, "nothing sent is not zero cached");

	/* llama.cpp: timings.prompt_n is what it computed of the prompt */
	api_resp_init(&r);
	ev("{\"content\":\"\",\"stop\":true,\"tokens_predicted\":7,"
	   "\"tokens_evaluated\":300,\"timings\":{\"prompt_n\":44,"
	   "\"predicted_n\":7}}", &r);
	cr_expect_eq(r.prompt_tokens, 300);
	cr_expect_eq(r.cached_tokens, 256);
	api_resp_init(&r);
	ev("{\"content\":\"\",\"stop\":true,\"tokens_predicted\":7,"
	   "\"tokens_evaluated\":300,\"tokens_cached\":290}", &r);
	cr_expect_eq(r.cached_tokens, 290);
}

Test(api, prompts_are_hashed_by_blocks_only_when_asked)
{
	uint64_t h1[API_PREFIX_BLOCKS], h2[API_PREFIX_BLOCKS];
	struct api_req a, b;
	char body[512], other[512];
	const char *p = "You are a careful assistant. Answer briefly.";

	snprintf(body, sizeof(body), "{\"prompt\":\"%s Q1?\"}", p);
	snprintf(other, sizeof(other), "{\"prompt\":\"%s Q2, longer?\"}", p);
	req(body, &a);
	cr_expect_eq(a.prefix_blocks, 0, "no buffer given: nothing hashed");
	api_req_init(&a);
	a.prefix_hash = h1;
	api_parse_request(body, strlen(body), false, &a);
	api_req_init(&b);
	b.prefix_hash = h2;
	api_parse_request(other, strlen(other), false, &b);
	/* 44 shared bytes: the first two 16-byte blocks are the same */
	cr_assert_geq(a.prefix_blocks, 2);
	cr_assert_geq(b.prefix_blocks, 3);
	cr_expect_eq(h1[0], h2[0]);
	cr_expect_eq(h1[1], h2[1]);
	cr_expect_neq(h1[2], h2[2], "block 3 holds the questions, which "
		      "differ");
}
