/*
 * The views other tools take, checked by those tools: the HTML report
 * rendered by headless Chromium, the metrics endpoint scraped by curl and
 * checked by promtool, then scraped by a real Prometheus server and read
 * back through its query API, and `tokentrace export` on a trace file.
 *
 * Needs: chromium, prometheus and promtool (Debian's chromium and
 * prometheus packages), curl, build/tokentrace; each test that lacks its
 * tool says so and skips. Run from the repository root.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../../user/export.h"
#include "../../user/html.h"
#include "../../user/metrics.h"
#include "../../user/tracefile.h"
#include "../unit/views_fixture.h"
#include "harness.h"

static bool have(const char *tool)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

/* stdout of a shell command (caller frees); *rc its exit status. */
static char *run(const char *cmd, int *rc)
{
	FILE *p = popen(cmd, "r");
	char *buf = NULL;
	size_t len = 0, n;
	char chunk[4096];
	FILE *m = open_memstream(&buf, &len);

	cr_assert_not_null(p, "cannot run %s", cmd);
	while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
		fwrite(chunk, 1, n, m);
	*rc = pclose(p);
	fclose(m);
	return buf;
}

static char *tmpdir(void)
{
	char *d = strdup("/tmp/tt-views-XXXXXX");

	cr_assert_not_null(mkdtemp(d));
	return d;
}

static void rmtree(const char *d)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	cr_expect_eq(system(cmd), 0);
}

/* No folder of the harness here (each test makes its own); the fini ends
 * whatever process a failed test left running. */
static void views_teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

TestSuite(views, .fini = views_teardown);

/* ---- HTML in Chromium ---------------------------------------------------- */

Test(views, html_report_renders_its_charts_in_headless_chromium,
     .timeout = 120)
{
	static const char *const ids[] = { "chart-busy-1", "chart-batch",
		"chart-tenant-cost", "chart-ttft", "chart-itl", NULL };
	struct vf v;
	char *dir, path[128], cmd[1024], want[96], *dom;
	FILE *f;
	int rc;

	if (!have("chromium"))
		cr_skip_test("chromium is not installed (apt-get install "
			     "chromium): the HTML report is not rendered");
	vf_init(&v);
	dir = tmpdir();
	snprintf(path, sizeof(path), "%s/report.html", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	cr_assert_eq(html_write_report(&v.rep, &v.c, f), 0);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "timeout 90 chromium --headless "
		 "--no-sandbox --disable-gpu --disable-quic --no-first-run "
		 "--disable-background-networking --disable-component-update "
		 "--disable-sync --user-data-dir=%s/profile --dump-dom "
		 "file://%s 2>/dev/null", dir, path);
	dom = run(cmd, &rc);
	cr_assert_eq(rc, 0, "chromium failed (%d)", rc);
	for (int i = 0; ids[i]; i++) {
		const char *p;

		snprintf(want, sizeof(want), "<svg id=\"%s\"", ids[i]);
		p = strstr(dom, want);
		cr_assert_not_null(p, "chart %s is not in the rendered DOM",
				   ids[i]);
		/* The page's script wrote the laid-out size: 720 x 220. */
		p = strstr(p, "data-rendered=\"");
		cr_assert_not_null(p, "chart %s was not laid out", ids[i]);
		cr_assert_eq(strncmp(p + 15, "720x220\"", 8), 0,
			     "chart %s laid out as %.12s", ids[i], p + 15);
	}
	free(dom);
	rmtree(dir);
	free(dir);
	vf_free(&v);
}

/* ---- metrics: curl, promtool, Prometheus --------------------------------- */

/* A metrics server on a free port, fed three requests and a device. */
static struct metrics *fed_server(uint16_t *port)
{
	struct metrics *m;
	struct vf v;
	struct report_losses l = { .sock_events = 2 };

	cr_assert_eq(metrics_start("127.0.0.1", 0, port, &m), 0);
	vf_init(&v);
	for (size_t i = 0; i < v.c.ndevs; i++)
		metrics_device(m, &v.c.devs[i]);
	for (size_t i = 0; i < v.c.nivs; i++)
		metrics_interval(m, &v.c.ivs[i]);
	for (size_t i = 0; i < v.rep.nreqs; i++) {
		const struct report_request *q = &v.rep.reqs[i];

		metrics_request(m, &q->req);
		metrics_attributed(m, 1, q->req.tenant, q->req.model,
				   q->prefill_ns, q->decode_ns, q->cost_usd);
	}
	metrics_losses(m, &l);
	vf_free(&v);
	return m;
}

Test(views, metrics_scraped_with_curl_pass_promtool, .timeout = 60)
{
	struct metrics *m;
	uint16_t port;
	char cmd[256], *out, *dir, path[128];
	int rc;
	FILE *f;

	if (!have("curl"))
		cr_skip_test("curl is not installed");
	m = fed_server(&port);
	snprintf(cmd, sizeof(cmd), "curl -sS --max-time 10 "
		 "http://127.0.0.1:%u/metrics", port);
	out = run(cmd, &rc);
	cr_assert_eq(rc, 0, "curl failed");
	cr_assert_not_null(strstr(out, "tokentrace_requests_total{tenant="
				  "\"acme\",model=\"tiny\",status=\"complete\"} 1"),
			   "%s", out);
	cr_assert_not_null(strstr(out, "tokentrace_gpu_seconds_total{device="
				  "\"gpu1\",tenant=\"bolt\",phase=\"prefill\"}"));
	if (!have("promtool")) {
		free(out);
		metrics_stop(m);
		cr_skip_test("promtool is not installed (apt-get install "
			     "prometheus): exposition not linted");
	}
	dir = tmpdir();
	snprintf(path, sizeof(path), "%s/metrics.txt", dir);
	f = fopen(path, "w");
	fputs(out, f);
	fclose(f);
	free(out);
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
	out = run(cmd, &rc);
	cr_assert_eq(rc, 0, "promtool check metrics failed:\n%s", out);
	free(out);
	rmtree(dir);
	free(dir);
	metrics_stop(m);
}

static uint16_t free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

static pid_t start_prometheus(const char *dir, uint16_t web, uint16_t target)
{
	char cfg[160], a1[200], a2[200], a3[64], log[160];
	char *argv[] = { "prometheus", a1, a2, a3, "--log.level=warn", NULL };
	FILE *f;

	snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", dir);
	f = fopen(cfg, "w");
	cr_assert_not_null(f);
	fprintf(f, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
		"scrape_configs:\n  - job_name: tokentrace\n"
		"    static_configs:\n      - targets: ['127.0.0.1:%u']\n",
		target);
	fclose(f);
	snprintf(a1, sizeof(a1), "--config.file=%s", cfg);
	snprintf(a2, sizeof(a2), "--storage.tsdb.path=%s/data", dir);
	snprintf(a3, sizeof(a3), "--web.listen-address=127.0.0.1:%u", web);
	snprintf(log, sizeof(log), "%s/prometheus.log", dir);
	return e2e_spawn(argv, log, NULL);
}

/* The value of a one-element vector query, or -1 while there is none. */
static double query(uint16_t web, const char *q)
{
	char cmd[512], *out;
	cJSON *o, *r, *val;
	double v = -1;
	int rc;

	snprintf(cmd, sizeof(cmd), "curl -sS --max-time 2 -G "
		 "http://127.0.0.1:%u/api/v1/query --data-urlencode "
		 "'query=%s' 2>/dev/null", web, q);
	out = run(cmd, &rc);
	o = cJSON_Parse(out);
	r = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "data"), "result");
	val = cJSON_GetArrayItem(cJSON_GetObjectItem(
		cJSON_GetArrayItem(r, 0), "value"), 1);
	if (cJSON_IsString(val))
		v = atof(val->valuestring);
	cJSON_Delete(o);
	free(out);
	return v;
}

Test(views, a_prometheus_server_scrapes_the_endpoint, .timeout = 120)
{
	struct metrics *m;
	uint16_t port, web;
	double n = -1, up = -1;
	char *dir;
	pid_t pid;

	if (!have("prometheus") || !have("curl"))
		cr_skip_test("prometheus or curl is not installed (apt-get "
			     "install prometheus curl): no scrape test");
	m = fed_server(&port);
	dir = tmpdir();
	web = free_port();
	pid = start_prometheus(dir, web, port);
	for (int i = 0; i < 120 && n != 3; i++) {
		e2e_msleep(500);
		n = query(web, "sum(tokentrace_requests_total)");
	}
	up = query(web, "up{job=\"tokentrace\"}");
	e2e_stop(pid, SIGTERM, 120000);
	metrics_stop(m);
	cr_expect_eq(up, 1, "Prometheus's up for the target is %g", up);
	cr_assert_eq(n, 3, "Prometheus read sum(tokentrace_requests_total) "
		     "= %g, expected 3 (log in %s/prometheus.log)", n, dir);
	rmtree(dir);
	free(dir);
}

/* ---- tokentrace export --------------------------------------------------- */

static void write_trace(const struct vf *v, const char *path)
{
	struct tracefile_writer *w;
	const struct collect *c = &v->c;

	cr_assert_eq(tracefile_create(path, &c->host, 0, true, &w), 0);
	tracefile_put_compute(w, c->compute, 0);
	tracefile_put_window(w, c->start_ns, c->end_ns, true);
	for (size_t i = 0; i < c->ndevs; i++)
		tracefile_put_device(w, &c->devs[i]);
	for (size_t i = 0; i < c->nnames; i++)
		tracefile_put_name(w, c->names[i].pid, c->names[i].name_id,
				   c->names[i].name);
	for (size_t i = 0; i < c->nivs; i++)
		tracefile_put_interval(w, &c->ivs[i]);
	for (size_t i = 0; i < c->nreqs; i++)
		tracefile_put_request(w, &c->reqs[i]);
	cr_assert_eq(tracefile_close(w), 0);
}

Test(views, export_command_writes_perfetto_otlp_and_jsonl, .timeout = 60)
{
	struct vf v;
	struct tracefile_header h;
	struct collect back;
	char *dir, trace[128], pf[128], ot[128], jl[128], cmd[768], *out;
	cJSON *o, *span;
	struct stat st;
	int rc;

	if (access("build/tokentrace", X_OK))
		cr_skip_test("build/tokentrace is not built (make)");
	vf_init(&v);
	dir = tmpdir();
	snprintf(trace, sizeof(trace), "%s/t.tt", dir);
	snprintf(pf, sizeof(pf), "%s/p.json", dir);
	snprintf(ot, sizeof(ot), "%s/o.json", dir);
	snprintf(jl, sizeof(jl), "%s/r.jsonl", dir);
	write_trace(&v, trace);
	snprintf(cmd, sizeof(cmd), "build/tokentrace export %s --perfetto %s "
		 "--otlp %s --jsonl %s --price 'NVIDIA H100=4' 2>&1", trace,
		 pf, ot, jl);
	out = run(cmd, &rc);
	cr_assert_eq(rc, 0, "export failed: %s", out);
	free(out);
	cr_assert_eq(stat(pf, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);

	o = e2e_load_json(pf, NULL);
	cr_assert_gt(cJSON_GetArraySize(cJSON_GetObjectItem(o, "traceEvents")),
		     (int)v.c.nivs);
	cJSON_Delete(o);

	collect_init(&back);
	cr_assert_eq(collect_load(&back, trace, stderr, &h), 0);
	o = e2e_load_json(ot, NULL);
	span = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(
		cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o,
		"resourceSpans"), 0), "scopeSpans"), 0), "spans"), 0);
	snprintf(cmd, sizeof(cmd), "%lld", (long long)(h.wall_ns - h.mono_ns +
		 v.rep.reqs[0].req.arrival_ns));
	cr_assert_str_eq(cJSON_GetObjectItem(span, "startTimeUnixNano")
			 ->valuestring, cmd, "the trace header's clocks "
			 "convert monotonic to Unix time");
	cJSON_Delete(o);
	collect_free(&back);

	snprintf(cmd, sizeof(cmd), "wc -l < %s", jl);
	out = run(cmd, &rc);
	cr_assert_eq(atoi(out), 3);
	free(out);

	/* the same trace as the HTML report, through `report` */
	snprintf(cmd, sizeof(cmd), "build/tokentrace report %s --format html "
		 "-o %s/r.html 2>&1 && cat %s/r.html", trace, dir, dir);
	out = run(cmd, &rc);
	cr_assert_eq(rc, 0, "report --format html failed: %.300s", out);
	cr_assert_not_null(strstr(out, "<svg id=\"chart-ttft\""));
	cr_assert_not_null(strstr(out, "<svg id=\"chart-tenant-cost\""));
	free(out);
	rmtree(dir);
	free(dir);
	vf_free(&v);
}

Test(views, export_without_a_format_is_a_usage_error)
{
	char *out;
	int rc;

	if (access("build/tokentrace", X_OK))
		cr_skip_test("build/tokentrace is not built (make)");
	out = run("build/tokentrace export /nonexistent.tt 2>&1", &rc);
	cr_assert_eq(WEXITSTATUS(rc), 2);
	cr_assert_not_null(strstr(out, "--perfetto"));
	free(out);
}

/* ---- run --metrics ------------------------------------------------------- */

/* Sum of a metric's samples in exposition text, whatever their labels. */
static double sum_of(const char *text, const char *name)
{
	size_t n = strlen(name);
	double sum = 0;

	for (const char *p = text; (p = strstr(p, name)); p += n) {
		const char *sp;

		if ((p != text && p[-1] != '\n') || (p[n] != '{' && p[n] != ' '))
			continue;
		sp = strchr(p, ' ');
		if (sp && (!strchr(p, '\n') || sp < strchr(p, '\n')))
			sum += atof(sp + 1);
	}
	return sum;
}

Test(views, run_serves_live_metrics_of_its_server, .timeout = 120)
{
	char *dir, pf[128], log[128], url[96], lglog[128], spec[32], cmd[160];
	char *out = NULL;
	double reqs = 0;
	uint16_t mport = 0;
	int rc, port = 0, lgstatus = 0;
	pid_t tt, lg;
	FILE *f;

	if (geteuid())
		cr_skip_test("needs root to load eBPF programs");
	if (access("build/tokentrace", X_OK) || access("build/refserver", X_OK)
	    || access("build/loadgen", X_OK) || !have("curl"))
		cr_skip_test("build/tokentrace, refserver, loadgen or curl "
			     "missing (make)");
	dir = tmpdir();
	snprintf(pf, sizeof(pf), "%s/port", dir);
	snprintf(log, sizeof(log), "%s/run.log", dir);
	mport = free_port();
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", mport);
	{
		char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
				 "--metrics", spec, "--", "build/refserver",
				 "--chunked", "--host", "127.0.0.1", "--port", "0",
				 "--port-file", pf, NULL };

		tt = e2e_spawn(argv, log, NULL);
	}
	for (int i = 0; i < 750 && port <= 0; i++) {
		e2e_msleep(20);
		f = fopen(pf, "r");
		if (f && fscanf(f, "%d", &port) != 1)
			port = 0;
		if (f)
			fclose(f);
		cr_assert_eq(e2e_reap(tt, 0), -1,
			     "run ended early (log in %s)", log);
	}
	if (port <= 0) {	/* leave nothing running */
		e2e_stop(tt, SIGTERM, 120000);
	}
	cr_assert_gt(port, 0, "refserver never listened (log in %s)", log);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions", port);
	snprintf(lglog, sizeof(lglog), "%s/load.log", dir);
	{
		char *argv[] = { "build/loadgen", "--url", url, "--requests",
				 "3", "--concurrency", "1", "--stream",
				 "--max-tokens", "4", "--tenants", "acme:1",
				 NULL };

		lg = e2e_spawn(argv, lglog, NULL);
	}
	lgstatus = e2e_reap(lg, 120000);
	snprintf(cmd, sizeof(cmd), "curl -sS --max-time 2 "
		 "http://127.0.0.1:%u/metrics", mport);
	for (int i = 0; i < 50 && reqs < 3; i++) {
		free(out);
		out = run(cmd, &rc);
		reqs = sum_of(out, "tokentrace_requests_total");
		if (reqs < 3)
			e2e_msleep(100);
	}
	e2e_stop(tt, SIGTERM, 120000);
	rmtree(dir);
	free(dir);
	cr_assert_eq(WEXITSTATUS(lgstatus), 0, "loadgen failed");
	cr_assert_eq(reqs, 3, "live metrics counted %g requests (requests "
		     "reach them only when the socket tracer delivers them "
		     "while the run goes on):\n%s", reqs, out);
	cr_assert_not_null(strstr(out, "tenant=\"acme\""));
	cr_assert_gt(sum_of(out, "tokentrace_device_busy_seconds_total"), 0,
		     "no busy time of the server's threads:\n%s", out);
	cr_assert_gt(sum_of(out, "tokentrace_tokens_total"), 0);
	free(out);
}

Test(views, run_with_a_bad_metrics_address_is_a_usage_error)
{
	char *out;
	int rc;

	if (geteuid())
		cr_skip_test("needs root: run checks privilege first");
	if (access("build/tokentrace", X_OK))
		cr_skip_test("build/tokentrace is not built (make)");
	out = run("build/tokentrace run --metrics 'here:port' -- true 2>&1",
		  &rc);
	cr_assert_eq(WEXITSTATUS(rc), 2, "exit %d: %s", WEXITSTATUS(rc), out);
	cr_assert_not_null(strstr(out, "--metrics 'here:port'"), "%s", out);
	free(out);
}
