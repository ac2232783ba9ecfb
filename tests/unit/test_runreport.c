/*
 * test_runreport.c - the run's JSON summary (user/runreport.c): fields,
 * sums per tenant and model, losses, file mode.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../user/runreport.h"

static double num(const cJSON *o, const char *k)
{
	const cJSON *n = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsNumber(n), "field %s is not a number", k);
	return n->valuedouble;
}

static struct tt_request req(const char *tenant, const char *model,
			     int64_t prompt, int64_t completion)
{
	struct tt_request q = { .pid = 42, .http_status = 200,
				.prompt_tokens = prompt,
				.completion_tokens = completion,
				.ttft_ms = 12.5, .itl_p50_ms = -1,
				.itl_p99_ms = -1,
				.tokens_source = TT_TOKENS_USAGE };

	snprintf(q.tenant, sizeof(q.tenant), "%s", tenant);
	snprintf(q.model, sizeof(q.model), "%s", model);
	snprintf(q.api, sizeof(q.api), "completions");
	return q;
}

static struct timeline_dev_stats cpu_dev(void)
{
	struct timeline_dev_stats d = { .id = 0, .kind = TT_DEV_CPU,
					.busy_ns = 600, .idle_ns = 400,
					.sum_ns = 900 };

	snprintf(d.name, sizeof(d.name), "cpu");
	return d;
}

Test(runreport, empty_run_has_window_devices_losses_and_empty_arrays)
{
	struct timeline_dev_stats d = cpu_dev();
	struct runreport r = { .window_start_ns = 1000, .window_end_ns = 2000,
			       .devs = &d, .ndevs = 1,
			       .losses = { .cpu_events = 3 } };
	cJSON *o = runreport_json(&r), *dev;

	cr_assert_not_null(o);
	cr_expect_eq(num(o, "window_ns"), 1000);
	cr_expect_str_eq(cJSON_GetObjectItem(o, "attribution")->valuestring,
			 "none");
	cr_expect_eq(num(o, "unattributed_ns"), 600);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "requests")), 0);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "tenants")), 0);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "models")), 0);
	dev = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "devices"), 0);
	cr_expect_str_eq(cJSON_GetObjectItem(dev, "kind")->valuestring, "cpu");
	cr_expect_str_eq(cJSON_GetObjectItem(dev, "name")->valuestring, "cpu");
	cr_expect_eq(num(dev, "busy_ns") + num(dev, "idle_ns"), 1000);
	cr_expect_eq(num(dev, "on_cpu_ns"), 900);
	cr_expect_eq(num(cJSON_GetObjectItem(o, "losses"), "events"), 3);
	cr_expect_eq(num(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "losses"),
					     "cpu"), "events"), 3);
	cJSON_Delete(o);
}

Test(runreport, gpu_device_has_kind_gpu_and_no_on_cpu_field)
{
	struct timeline_dev_stats d = { .id = 1, .kind = TT_DEV_GPU,
					.busy_ns = 10, .idle_ns = 90 };
	struct runreport r = { .window_end_ns = 100, .devs = &d, .ndevs = 1 };
	cJSON *o = runreport_json(&r);
	cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "devices"), 0);

	cr_expect_str_eq(cJSON_GetObjectItem(dev, "kind")->valuestring, "gpu");
	cr_expect_null(cJSON_GetObjectItem(dev, "on_cpu_ns"));
	cJSON_Delete(o);
}

Test(runreport, tenants_and_models_sum_their_requests)
{
	struct tt_request q[3] = {
		req("alice", "m1", 10, 5), req("bob", "m1", 7, -1),
		req("alice", "m2", 3, 2),
	};
	struct runreport r = { .window_end_ns = 1, .reqs = q, .nreqs = 3 };
	cJSON *o = runreport_json(&r), *e, *alice = NULL, *m1 = NULL;

	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "requests")), 3);
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(o, "tenants"))
		if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, "alice"))
			alice = e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(o, "models"))
		if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, "m1"))
			m1 = e;
	cr_assert_not_null(alice);
	cr_assert_not_null(m1);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "tenants")), 2);
	cr_expect_eq(num(alice, "requests"), 2);
	cr_expect_eq(num(alice, "prompt_tokens"), 13);
	cr_expect_eq(num(alice, "completion_tokens"), 7);
	cr_expect_eq(num(m1, "requests"), 2);
	cr_expect_eq(num(m1, "completion_tokens"), 5);
	cr_expect(cJSON_IsNull(cJSON_GetObjectItem(alice, "gpu_ns")));
	e = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "requests"), 1);
	cr_expect(cJSON_IsNull(cJSON_GetObjectItem(e, "completion_tokens")));
	cr_expect_eq(num(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "requests"),
					    0), "ttft_ms"), 12.5);
	cJSON_Delete(o);
}

Test(runreport, file_is_private_and_parses_back)
{
	char path[] = "/tmp/tt-runreport-XXXXXX";
	struct timeline_dev_stats d = cpu_dev();
	struct runreport r = { .window_end_ns = 1000, .devs = &d, .ndevs = 1 };
	struct stat st;
	char buf[8192];
	int fd = mkstemp(path);
	ssize_t n;

	cr_assert_geq(fd, 0);
	fchmod(fd, 0644);	/* an existing, readable file */
	close(fd);
	cr_assert_eq(runreport_write(&r, path), 0);
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	fd = open(path, O_RDONLY);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unlink(path);
	cr_assert_gt(n, 0);
	buf[n] = 0;
	cJSON *o = cJSON_Parse(buf);
	cr_assert_not_null(o, "summary is not valid JSON");
	cr_expect_eq(num(o, "window_ns"), 1000);
	cJSON_Delete(o);
}

Test(runreport, unwritable_path_fails_with_errno)
{
	struct runreport r = { 0 };

	cr_expect_lt(runreport_write(&r, "/nonexistent-dir/x.json"), 0);
}
