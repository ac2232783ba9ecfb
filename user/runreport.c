/*
 * runreport.c - the run's JSON summary (DESIGN.md, "Interfaces that users
 * and tests rely on": `tokentrace report --format json`), built with cJSON.
 *
 * In:  struct runreport (runreport.h).
 * Out: {window_ns, window_start_ns, window_end_ns, attribution: "none",
 *      devices: [{name, kind, id, busy_ns, idle_ns, (cpu) on_cpu_ns,
 *      intervals, late_intervals}], unattributed_ns, requests: [...],
 *      tenants: [...], models: [...], losses: {events, bytes, cpu, sockets,
 *      cupti}}; written 0600.
 * Assumes: no attribution exists yet, so every busy nanosecond is
 *      unattributed and the per-tenant/model gpu_ns and costs are null
 *      (unknown), not zero; `attribution: "none"` says so.
 *
 * Tenants and models are grouped with a linear scan: a run has a handful of
 * each, and the report is written once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runreport.h"

static const char *end_name(enum tt_req_end e)
{
	switch (e) {
	case TT_END_COMPLETE:		return "complete";
	case TT_END_CLIENT_GONE:	return "client_gone";
	case TT_END_SERVER_ERROR:	return "server_error";
	case TT_END_CLIENT_ERROR:	return "client_error";
	case TT_END_DATA_LOST:		return "data_lost";
	case TT_END_OPEN:		return "open";
	}
	return "unknown";
}

static const char *src_name(enum tt_tokens_source s)
{
	switch (s) {
	case TT_TOKENS_NONE:		return "none";
	case TT_TOKENS_USAGE:		return "usage";
	case TT_TOKENS_EVENTS:		return "events";
	case TT_TOKENS_ESTIMATE:	return "estimate";
	}
	return "none";
}

/* A number, or null when negative (unknown). */
static void add_num_or_null(cJSON *o, const char *k, double v)
{
	if (v < 0)
		cJSON_AddNullToObject(o, k);
	else
		cJSON_AddNumberToObject(o, k, v);
}

static cJSON *device_json(const struct timeline_dev_stats *d)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "name", d->name);
	cJSON_AddStringToObject(o, "kind", d->kind == TT_DEV_CPU ? "cpu" : "gpu");
	cJSON_AddNumberToObject(o, "id", d->id);
	cJSON_AddNumberToObject(o, "busy_ns", (double)d->busy_ns);
	cJSON_AddNumberToObject(o, "idle_ns", (double)d->idle_ns);
	if (d->kind == TT_DEV_CPU)
		cJSON_AddNumberToObject(o, "on_cpu_ns", (double)d->sum_ns);
	else
		cJSON_AddNumberToObject(o, "sum_ns", (double)d->sum_ns);
	cJSON_AddNumberToObject(o, "intervals", (double)d->intervals);
	cJSON_AddNumberToObject(o, "late_intervals", (double)d->late);
	return o;
}

static cJSON *request_json(const struct tt_request *q)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "id", q->id);
	cJSON_AddNumberToObject(o, "pid", q->pid);
	cJSON_AddStringToObject(o, "tenant", q->tenant);
	cJSON_AddStringToObject(o, "model", q->model);
	cJSON_AddStringToObject(o, "api", q->api);
	cJSON_AddBoolToObject(o, "stream", q->stream);
	cJSON_AddNumberToObject(o, "status", q->http_status);
	cJSON_AddStringToObject(o, "end", end_name(q->end));
	cJSON_AddNumberToObject(o, "arrival_ns", (double)q->arrival_ns);
	cJSON_AddNumberToObject(o, "first_token_ns", (double)q->first_token_ns);
	cJSON_AddNumberToObject(o, "end_ns", (double)q->end_ns);
	add_num_or_null(o, "ttft_ms", q->ttft_ms);
	add_num_or_null(o, "itl_p50_ms", q->itl_p50_ms);
	add_num_or_null(o, "itl_p99_ms", q->itl_p99_ms);
	cJSON_AddNumberToObject(o, "token_events", q->token_events);
	add_num_or_null(o, "prompt_tokens", (double)q->prompt_tokens);
	add_num_or_null(o, "completion_tokens", (double)q->completion_tokens);
	cJSON_AddStringToObject(o, "tokens_source", src_name(q->tokens_source));
	cJSON_AddNumberToObject(o, "flags", q->flags);
	return o;
}

/* The entry of `name` in the group array `arr`, created if new. */
static cJSON *group_entry(cJSON *arr, const char *name)
{
	cJSON *e;

	cJSON_ArrayForEach(e, arr)
		if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name))
			return e;
	e = cJSON_CreateObject();
	cJSON_AddStringToObject(e, "name", name);
	cJSON_AddNumberToObject(e, "requests", 0);
	cJSON_AddNumberToObject(e, "prompt_tokens", 0);
	cJSON_AddNumberToObject(e, "completion_tokens", 0);
	cJSON_AddNullToObject(e, "gpu_ns");
	cJSON_AddNullToObject(e, "cost_usd");
	cJSON_AddNullToObject(e, "cost_loaded_usd");
	cJSON_AddNullToObject(e, "usd_per_1m_prompt");
	cJSON_AddNullToObject(e, "usd_per_1m_completion");
	cJSON_AddItemToArray(arr, e);
	return e;
}

static void bump(cJSON *e, const char *k, double by)
{
	cJSON *n = cJSON_GetObjectItem(e, k);

	cJSON_SetNumberValue(n, n->valuedouble + by);
}

static void group_add(cJSON *arr, const char *name, const struct tt_request *q)
{
	cJSON *e = group_entry(arr, name[0] ? name : "unknown");

	bump(e, "requests", 1);
	if (q->prompt_tokens > 0)
		bump(e, "prompt_tokens", (double)q->prompt_tokens);
	if (q->completion_tokens > 0)
		bump(e, "completion_tokens", (double)q->completion_tokens);
}

static cJSON *loss_json(uint64_t events, uint64_t bytes)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "events", (double)events);
	cJSON_AddNumberToObject(o, "bytes", (double)bytes);
	return o;
}

static void add_losses(cJSON *root, const struct runreport_losses *l)
{
	cJSON *o = cJSON_AddObjectToObject(root, "losses");

	cJSON_AddNumberToObject(o, "events", (double)(l->cpu_events +
				l->sock_events + l->cupti_records));
	cJSON_AddNumberToObject(o, "bytes", (double)l->sock_bytes);
	cJSON_AddItemToObject(o, "cpu", loss_json(l->cpu_events, 0));
	cJSON_AddItemToObject(o, "sockets",
			      loss_json(l->sock_events, l->sock_bytes));
	cJSON_AddItemToObject(o, "cupti", loss_json(l->cupti_records, 0));
}

static void add_requests(cJSON *root, const struct runreport *r)
{
	cJSON *reqs = cJSON_AddArrayToObject(root, "requests");
	cJSON *tenants = cJSON_AddArrayToObject(root, "tenants");
	cJSON *models = cJSON_AddArrayToObject(root, "models");

	for (size_t i = 0; i < r->nreqs; i++) {
		cJSON_AddItemToArray(reqs, request_json(&r->reqs[i]));
		group_add(tenants, r->reqs[i].tenant, &r->reqs[i]);
		group_add(models, r->reqs[i].model, &r->reqs[i]);
	}
}

cJSON *runreport_json(const struct runreport *r)
{
	cJSON *root = cJSON_CreateObject(), *devs;
	uint64_t window = 0, busy = 0;

	if (!root)
		return NULL;
	if (r->window_end_ns > r->window_start_ns)
		window = r->window_end_ns - r->window_start_ns;
	cJSON_AddNumberToObject(root, "window_ns", (double)window);
	cJSON_AddNumberToObject(root, "window_start_ns",
				(double)r->window_start_ns);
	cJSON_AddNumberToObject(root, "window_end_ns", (double)r->window_end_ns);
	if (r->compute)
		cJSON_AddStringToObject(root, "compute", r->compute);
	cJSON_AddStringToObject(root, "attribution", "none");
	devs = cJSON_AddArrayToObject(root, "devices");
	for (size_t i = 0; i < r->ndevs; i++) {
		cJSON_AddItemToArray(devs, device_json(&r->devs[i]));
		busy += r->devs[i].busy_ns;
	}
	cJSON_AddNumberToObject(root, "unattributed_ns", (double)busy);
	add_requests(root, r);
	add_losses(root, &r->losses);
	return root;
}

static int write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		s += n;
		len -= n;
	}
	return 0;
}

int runreport_write(const struct runreport *r, const char *path)
{
	cJSON *root = runreport_json(r);
	char *text = root ? cJSON_Print(root) : NULL;
	int fd, err;

	cJSON_Delete(root);
	if (!text) {
		fprintf(stderr, "tokentrace: summary %s: out of memory\n", path);
		return -ENOMEM;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		fprintf(stderr, "tokentrace: cannot write the summary to %s: "
			"%s (check the directory exists and is writable)\n",
			path, strerror(-err));
		free(text);
		return err;
	}
	/* an existing file keeps its mode on O_CREAT: make it private */
	err = fchmod(fd, 0600) ? -errno : 0;
	if (!err)
		err = write_all(fd, text, strlen(text));
	if (!err)
		err = write_all(fd, "\n", 1);
	if (close(fd) && !err)
		err = -errno;
	if (err)
		fprintf(stderr, "tokentrace: writing the summary %s failed: "
			"%s\n", path, strerror(-err));
	free(text);
	return err;
}
