/*
 * chain.c and collect_rotate on traces written here: an engine of one GPU
 * that runs a full batch of 4 every 50 ms (two kernels and the sampled
 * ids' copy per step), requests of 4 to 16 tokens. The same records go
 * to one file and, through collect_rotate, to a chain of files: the
 * chain must report exactly as the file does. Ranges keep what overlaps
 * them; two hosts' traces (their own clocks, the same pid and device id)
 * give one report with the host as a dimension.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../../user/chain.h"
#include "../../user/collect.h"
#include "../../user/report.h"
#include "../../user/shard.h"
#include "../../user/tracefile.h"
#include "slot_engine.h"

#define MS		1000000ull
#define S		(1000 * MS)
#define STEP		(50 * MS)
#define BATCH		4

struct gen {
	struct collect *c[2];		/* fed alike; [1] may be NULL */
	uint32_t pid;
	char uuid[40];
	uint64_t t0, secs;
	uint64_t rotate_every;		/* c[1] rotates; 0: never */
	const char *dir;		/* c[1]'s chain */
	const struct tracefile_header *as;
	const char *hostname;
	/* what was generated */
	long requests;
	uint64_t arrival[4096], end[4096];
};

static void gen_request(void *ctx, const struct slot *s)
{
	struct gen *g = ctx;
	struct tt_request q = slot_request(s, g->pid);

	snprintf(q.id, sizeof(q.id), "%s-r%ld", g->hostname, s->req);
	snprintf(q.model, sizeof(q.model), "m");
	snprintf(q.tenant, sizeof(q.tenant), "t%ld", s->req % 2);
	for (int i = 0; i < 2; i++)
		if (g->c[i])
			cr_assert_eq(collect_add_request(g->c[i], &q), 0);
	cr_assert_lt(g->requests, 4096);
	g->arrival[g->requests] = q.arrival_ns;
	g->end[g->requests++] = q.end_ns;
}

static void gen_interval(struct gen *g, const struct tt_interval *iv)
{
	for (int i = 0; i < 2; i++) {
		struct tt_compute_sink k;

		if (!g->c[i])
			continue;
		collect_sink(g->c[i], &k);
		k.interval(k.ctx, iv);
	}
}

static void gen_step(struct gen *g, uint64_t t)
{
	struct tt_interval iv = { .device = 1, .pid = g->pid, .tid = g->pid,
				  .stream = 1, .kind = TT_IV_KERNEL,
				  .name_id = 1 };

	for (int k = 0; k < 2; k++) {
		iv.start_ns = t + k * 20 * MS;
		iv.end_ns = iv.start_ns + 20 * MS;
		gen_interval(g, &iv);
	}
	iv.start_ns = t + 40 * MS;
	iv.end_ns = iv.start_ns + 20000;
	iv.kind = TT_IV_MEMCPY;
	iv.copy_kind = TT_COPY_DTOH;
	iv.bytes = 8;
	iv.name_id = 0;
	gen_interval(g, &iv);
}

/* A file begun at t (g->as: the first file's clocks, moved to t). */
static struct tracefile_writer *gen_file(const struct gen *g, const char *p,
					 uint64_t t)
{
	struct tt_hostinfo host = { .cpus = 1 };
	struct tracefile_writer *w;
	struct tracefile_header as;

	if (g->as) {
		as = *g->as;
		as.wall_ns += t - as.mono_ns;
		as.mono_ns = t;
	}
	snprintf(host.hostname, sizeof(host.hostname), "%s", g->hostname);
	cr_assert_eq(tracefile_create_as(p, &host, 0, true, g->as ? &as : NULL,
					 &w), 0);
	return w;
}

/* Feed both collects the engine's records: c[0] to path0, c[1] to the
 * chain in g->dir, rotated every g->rotate_every. */
static void gen_run(struct gen *g, const char *path0)
{
	struct tt_device gpu = { .id = 1, .kind = TT_DEV_GPU, .pid = g->pid };
	struct slot s[BATCH];
	long next = 0;
	uint32_t piece = 0;
	uint64_t last_rot = g->t0;
	char p[256];

	snprintf(gpu.name, sizeof(gpu.name), "test GPU");
	snprintf(gpu.uuid, sizeof(gpu.uuid), "%s", g->uuid);
	for (int i = 0; i < 2; i++) {
		struct tt_compute_sink k;

		if (!g->c[i])
			continue;
		collect_set_spill(g->c[i], true);
		if (i == 0)
			snprintf(p, sizeof(p), "%s", path0);
		else
			snprintf(p, sizeof(p), "%s/trace-%06u.tt", g->dir,
				 piece++);
		cr_assert_eq(collect_attach_writer(g->c[i],
						   gen_file(g, p, g->t0)), 0);
		collect_set_compute(g->c[i], "cupti", BATCH);
		collect_set_start(g->c[i], g->t0);
		collect_sink(g->c[i], &k);
		k.device(k.ctx, &gpu);
		k.name(k.ctx, g->pid, 1, "gemm");
	}
	slots_init(s, BATCH);
	for (uint64_t t = g->t0 + 10 * MS; t + STEP < g->t0 + g->secs * S;
	     t += STEP) {
		if (g->c[1] && g->rotate_every &&
		    t - last_rot >= g->rotate_every) {
			snprintf(p, sizeof(p), "%s/trace-%06u.tt", g->dir,
				 piece++);
			cr_assert_eq(collect_rotate(g->c[1], gen_file(g, p, t), t),
				     0);
			last_rot = t;
		}
		/* a socket loss now and then: the chain's files sum them */
		for (int i = 0; i < 2; i++)
			if (g->c[i])
				collect_set_sock_losses(g->c[i],
					(t - g->t0) / S, 3 * ((t - g->t0) / S));
		gen_step(g, t);
		slots_step(s, BATCH, t, STEP, &next, gen_request, g);
	}
	for (int i = 0; i < 2; i++)
		if (g->c[i])
			cr_assert_eq(collect_close(g->c[i],
						   g->t0 + g->secs * S), 0);
}

static char dir[64], file0[96];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tt-chain-%d", getpid());
	snprintf(file0, sizeof(file0), "/tmp/tt-chain-%d.tt", getpid());
	cr_assert_eq(mkdir(dir, 0700), 0);
}

static void teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
	unlink(file0);
}

TestSuite(chain, .init = setup, .fini = teardown);

/* The report of c as JSON. */
static cJSON *report_of(struct collect *c)
{
	struct report_input in;
	struct report r;
	cJSON *o;

	cr_assert_eq(collect_report_input(c, NULL, &in), 0);
	cr_assert_eq(report_build(&in, &r), 0);
	o = collect_report_json(c, &r);
	cr_assert_not_null(o);
	report_free(&r);
	return o;
}

static void load(struct collect *c, char **paths, int n,
		 const struct chain_time *from, const struct chain_time *to,
		 size_t *nfiles)
{
	struct tracefile_header h;

	collect_init(c);
	cr_assert_eq(chain_read(c, paths, n, from, to, &h, NULL, nfiles), 0);
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsNumber(v), "no number %s", k);
	return v->valuedouble;
}

Test(chain, a_rotated_chain_reports_exactly_as_one_file)
{
	struct collect a, b, ra, rb;
	struct gen g = { .c = { &a, &b }, .pid = 7, .uuid = "GPU-1",
			 .t0 = 5000 * S, .secs = 30, .rotate_every = 7 * S,
			 .dir = dir, .hostname = "h1" };
	char *one[] = { file0 }, *folder[] = { dir };
	size_t nfiles;

	collect_init(&a);
	collect_init(&b);
	gen_run(&g, file0);
	collect_free(&a);
	collect_free(&b);
	load(&ra, one, 1, NULL, NULL, NULL);
	load(&rb, folder, 1, NULL, NULL, &nfiles);
	cr_expect_eq(nfiles, 5, "30 s rotated every 7 s: %zu files", nfiles);
	cr_expect_eq(ra.nreqs, (size_t)g.requests);
	cr_expect_eq(rb.nreqs, ra.nreqs);
	cr_expect_eq(rb.nivs, ra.nivs);
	cr_expect_eq(rb.start_ns, ra.start_ns);
	cr_expect_eq(rb.end_ns, ra.end_ns);
	cr_expect_eq(rb.ndevs, 1, "the chain's files each name the GPU: %zu "
		     "devices", rb.ndevs);
	/* each file's losses are its own: they sum to the whole */
	cr_expect_eq(rb.losses.sock_events, ra.losses.sock_events);
	cr_expect_eq(rb.losses.sock_bytes, ra.losses.sock_bytes);
	cr_expect_gt(ra.losses.sock_events, 20);
	cJSON *ja = report_of(&ra), *jb = report_of(&rb);
	char *sa = cJSON_PrintUnformatted(ja), *sb = cJSON_PrintUnformatted(jb);

	cr_expect_gt(num(ja, "busy_ns"), 0);
	cr_expect_str_eq(sb, sa, "the chain's report differs from the file's");
	free(sa);
	free(sb);
	cJSON_Delete(ja);
	cJSON_Delete(jb);
	collect_free(&ra);
	collect_free(&rb);
}

Test(chain, a_range_keeps_what_overlaps_it_and_conserves)
{
	struct collect a, b, r;
	struct gen g = { .c = { &a, &b }, .pid = 7, .uuid = "GPU-1",
			 .t0 = 5000 * S, .secs = 30, .rotate_every = 5 * S,
			 .dir = dir, .hostname = "h1" };
	struct chain_time from, to;
	char *folder[] = { dir };
	size_t nfiles, want = 0;

	g.as = &(struct tracefile_header){ .boot_id = "boot-a",
					   .wall_ns = 1700000000ull * S,
					   .mono_ns = g.t0 };
	collect_init(&a);
	collect_init(&b);
	gen_run(&g, file0);
	collect_free(&a);
	collect_free(&b);
	cr_assert_eq(chain_parse_time("12s", &from), 0);
	/* the same moment as a wall time: the header's wall clock + 20 s */
	cr_assert_eq(chain_parse_time("2023-11-14T22:13:40Z", &to), 0);
	cr_assert(to.wall);
	cr_assert_eq(to.ns, (1700000000ull + 20) * S);
	load(&r, folder, 1, &from, &to, &nfiles);
	/* the files wholly before 12 s are not read */
	cr_expect_lt(nfiles, 7);
	cr_expect_eq(r.start_ns, g.t0 + 12 * S);
	cr_expect_eq(r.end_ns, g.t0 + 20 * S);
	for (long i = 0; i < g.requests; i++)
		want += g.end[i] >= g.t0 + 12 * S && g.arrival[i] < g.t0 + 20 * S;
	cr_expect_eq(r.nreqs, want, "%zu requests kept, %zu overlap the range",
		     r.nreqs, want);
	for (size_t i = 0; i < r.nivs; i++)
		cr_assert(r.ivs[i].end_ns >= r.start_ns &&
			  r.ivs[i].start_ns < r.end_ns);
	cJSON *o = report_of(&r);
	const cJSON *q;
	double sum = 0;

	cJSON_ArrayForEach(q, cJSON_GetObjectItem(o, "requests"))
		sum += num(q, "gpu_ns");
	cr_expect_eq(sum + num(o, "unattributed_ns"), num(o, "busy_ns"));
	/* 8 s of a GPU busy 40 of every 50 ms */
	cr_expect_leq(num(o, "busy_ns"), 8 * 0.801 * S);
	cr_expect_geq(num(o, "busy_ns"), 8 * 0.79 * S);
	cJSON_Delete(o);
	collect_free(&r);

	/* a range outside the trace is an error, not an empty report */
	struct tracefile_header h;

	cr_assert_eq(chain_parse_time("2h", &from), 0);
	collect_init(&r);
	cr_expect_eq(chain_read(&r, folder, 1, &from, NULL, &h, NULL, NULL),
		     -EINVAL);
	collect_free(&r);
}

/* Two hosts' traces in dir, pa and pb: the same pid and device id on
 * each, their own clocks. */
static void two_hosts(char *pa, char *pb, size_t len)
{
	struct collect a, b;
	/* host b's clock is 4000 s ahead of a's; it starts 3 s later */
	struct tracefile_header ha = { .boot_id = "boot-a",
				       .wall_ns = 1700000000ull * S,
				       .mono_ns = 5000 * S };
	struct tracefile_header hb = { .boot_id = "boot-b",
				       .wall_ns = 1700000003ull * S,
				       .mono_ns = 9003 * S };
	struct gen ga = { .c = { &a }, .pid = 7, .uuid = "GPU-a", .t0 = 5000 * S,
			  .secs = 20, .hostname = "alpha", .as = &ha };
	struct gen gb = { .c = { &b }, .pid = 7, .uuid = "GPU-b", .t0 = 9003 * S,
			  .secs = 12, .hostname = "beta", .as = &hb };

	snprintf(pa, len, "%s/a.tt", dir);
	snprintf(pb, len, "%s/b.tt", dir);
	collect_init(&a);
	gen_run(&ga, pa);
	collect_free(&a);
	collect_init(&b);
	gen_run(&gb, pb);
	collect_free(&b);
}

Test(chain, two_hosts_give_one_report_with_the_host_as_a_dimension)
{
	struct collect one[2], both;
	char pa[128], pb[128];

	two_hosts(pa, pb, sizeof(pa));
	char *fa[] = { pa }, *fb[] = { pb }, *folder[] = { dir };

	load(&one[0], fa, 1, NULL, NULL, NULL);
	load(&one[1], fb, 1, NULL, NULL, NULL);
	load(&both, folder, 1, NULL, NULL, NULL);
	cr_expect_eq(both.nhosts, 2);
	cr_expect_eq(both.ndevs, 2, "the hosts' GPUs (both id 1) kept apart");
	cr_expect_eq(both.nreqs, one[0].nreqs + one[1].nreqs);
	/* b's times on a's clock: b began 3 s after a, ended 5 s before */
	cr_expect_eq(both.start_ns, 5000 * S);
	cr_expect_eq(both.end_ns, 5020 * S);
	for (size_t i = 0; i < both.nreqs; i++)
		if (both.reqs[i].pid > COLLECT_HOST_PID_STRIDE) {
			cr_expect_geq(both.reqs[i].arrival_ns, 5003 * S);
			cr_expect_leq(both.reqs[i].end_ns, 5015 * S);
		}
	cJSON *o = report_of(&both), *j0 = report_of(&one[0]),
	      *j1 = report_of(&one[1]);
	const cJSON *hosts = cJSON_GetObjectItem(o, "hosts"), *d;
	const cJSON *t0 = cJSON_GetObjectItem(j0, "tenants"),
		    *t1 = cJSON_GetObjectItem(j1, "tenants"),
		    *t = cJSON_GetObjectItem(o, "tenants");

	cr_assert_eq(cJSON_GetArraySize(hosts), 2);
	cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(hosts, 0),
					     "name")->valuestring, "alpha");
	cr_expect_eq(num(cJSON_GetArrayItem(hosts, 0), "requests"),
		     (double)one[0].nreqs);
	cr_expect_eq(num(cJSON_GetArrayItem(hosts, 1), "requests"),
		     (double)one[1].nreqs);
	/* each host's GPU: the busy time its own trace gives, and the same
	 * split: its requests' time as when reported alone */
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices")) {
		const char *h = cJSON_GetObjectItem(d, "host")->valuestring;
		const cJSON *alone = cJSON_GetArrayItem(
			cJSON_GetObjectItem(strcmp(h, "alpha") ? j1 : j0,
					    "devices"), 0);

		cr_expect_eq(num(d, "busy_ns"), num(alone, "busy_ns"), "%s: "
			     "%.0f, alone %.0f", h, num(d, "busy_ns"),
			     num(alone, "busy_ns"));
	}
	cr_expect_eq(num(cJSON_GetArrayItem(hosts, 0), "gpu_ns") +
		     num(cJSON_GetArrayItem(hosts, 1), "gpu_ns"),
		     num(o, "busy_ns") - num(o, "unattributed_ns"));
	cr_expect_eq(num(cJSON_GetArrayItem(hosts, 1), "gpu_ns"),
		     num(j1, "busy_ns") - num(j1, "unattributed_ns"));
	/* tenants summed across the hosts */
	for (int i = 0; i < 2; i++)
		cr_expect_eq(num(cJSON_GetArrayItem(t, i), "requests"),
			     num(cJSON_GetArrayItem(t0, i), "requests") +
			     num(cJSON_GetArrayItem(t1, i), "requests"));
	cJSON_Delete(o);
	cJSON_Delete(j0);
	cJSON_Delete(j1);
	collect_free(&one[0]);
	collect_free(&one[1]);
	collect_free(&both);
}

static const struct report_group *group_named(const struct report_group *g,
					      size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(g[i].name, name))
			return &g[i];
	return NULL;
}

/* A fleet's traces too long for one range: cut on the first host's clock,
 * every range holding both hosts' devices, the hosts kept as groups. */
Test(chain, two_hosts_are_reported_by_ranges)
{
	struct collect both;
	struct report_input in;
	struct report w, s;
	struct shard_trace t;
	char pa[128], pb[128];
	char *folder[] = { dir };
	struct shard_cfg cfg = { .paths = folder, .npaths = 1,
				 .max_events = 1000, .jobs = 2, .log = stderr };

	two_hosts(pa, pb, sizeof(pa));
	load(&both, folder, 1, NULL, NULL, NULL);
	cr_assert_eq(collect_report_input(&both, NULL, &in), 0);
	cr_assert_eq(report_build(&in, &w), 0);
	cr_assert_eq(shard_report(&cfg, &t, &s), 0, "not cut into ranges");
	fprintf(stderr, "chain: two hosts: %u ranges\n", t.nshards);
	cr_expect_geq(t.nshards, 3);
	cr_expect_eq(t.c.nhosts, 2);
	cr_assert_eq(s.nhosts, 2);
	cr_expect_eq(s.busy_ns, w.busy_ns);
	cr_expect_eq(s.streamed_gpu_ns + s.unattributed_ns, s.busy_ns);
	cr_assert_eq(s.ndevs, w.ndevs);
	for (size_t i = 0; i < w.ndevs; i++) {
		cr_expect_eq(s.devs[i].dev.host, w.devs[i].dev.host);
		cr_expect_eq(s.devs[i].busy_ns, w.devs[i].busy_ns,
			     "device %zu", i);
	}
	for (int k = 0; k < 3; k++) {
		const struct report_group *wg = k == 0 ? w.hosts :
						k == 1 ? w.tenants : w.models;
		const struct report_group *sg = k == 0 ? s.hosts :
						k == 1 ? s.tenants : s.models;
		size_t n = k == 0 ? w.nhosts : k == 1 ? w.ntenants : w.nmodels;
		size_t m = k == 0 ? s.nhosts : k == 1 ? s.ntenants : s.nmodels;

		cr_expect_eq(m, n);
		for (size_t i = 0; i < n; i++) {
			const struct report_group *a = &wg[i];
			const struct report_group *b = group_named(sg, m,
								   a->name);
			double off;

			cr_assert(b, "%s missing by ranges", a->name);
			cr_expect_eq(b->requests, a->requests, "%s", a->name);
			cr_expect_eq(b->completion_tokens, a->completion_tokens,
				     "%s", a->name);
			off = fabs((double)b->gpu_ns - (double)a->gpu_ns) /
			      (double)a->gpu_ns;
			cr_expect_leq(off, 0.01, "%s: %.2f%% off", a->name,
				      100 * off);
			off = fabs(b->cost_loaded_usd - a->cost_loaded_usd) /
			      a->cost_loaded_usd;
			cr_expect_leq(off, 0.01, "%s: loaded %.2f%% off",
				      a->name, 100 * off);
			fprintf(stderr, "chain: two hosts: %s: %llu ns by "
				"ranges, %llu whole\n", a->name,
				(unsigned long long)b->gpu_ns,
				(unsigned long long)a->gpu_ns);
		}
	}
	report_free(&s);
	shard_trace_free(&t);
	report_free(&w);
	collect_free(&both);
}

Test(chain, folders_and_files_that_are_not_traces)
{
	struct chain ch;
	char p[128], *folder[] = { dir }, *bad[] = { p };
	FILE *f;

	/* a folder with no trace: said, and an error */
	snprintf(p, sizeof(p), "%s/notes.txt", dir);
	f = fopen(p, "w");
	cr_assert_not_null(f);
	fputs("not a trace\n", f);
	fclose(f);
	cr_expect_eq(chain_open(&ch, folder, 1, NULL), -ENOENT);
	/* a file named that is not a trace: an error */
	cr_expect_eq(chain_open(&ch, bad, 1, NULL), -EBADMSG);
	/* with a trace beside it: the other file skipped and counted */
	struct collect a;
	struct gen g = { .c = { &a }, .pid = 7, .uuid = "GPU-1", .t0 = 100 * S,
			 .secs = 2, .hostname = "h" };
	char pt[128];

	snprintf(pt, sizeof(pt), "%s/t.tt", dir);
	collect_init(&a);
	gen_run(&g, pt);
	collect_free(&a);
	cr_assert_eq(chain_open(&ch, folder, 1, NULL), 0);
	cr_expect_eq(ch.nfiles, 1);
	cr_expect_eq(ch.skipped, 1);
	chain_free(&ch);
	/* the same file twice is read once */
	char *twice[] = { pt, dir };

	cr_assert_eq(chain_open(&ch, twice, 2, NULL), 0);
	cr_expect_eq(ch.nfiles, 1);
	chain_free(&ch);
}

Test(chain, times_of_from_and_to)
{
	struct chain_time t;

	cr_assert_eq(chain_parse_time("90", &t), 0);
	cr_expect(!t.wall && t.ns == 90 * S);
	cr_assert_eq(chain_parse_time("1.5h", &t), 0);
	cr_expect_eq(t.ns, 5400 * S);
	cr_assert_eq(chain_parse_time("15m", &t), 0);
	cr_expect_eq(t.ns, 900 * S);
	cr_assert_eq(chain_parse_time("2026-12-03 10:00:00", &t), 0);
	cr_expect(t.wall);
	cr_expect_eq(t.ns, 1796292000ull * S);
	cr_expect_eq(chain_parse_time("soon", &t), -EINVAL);
	cr_expect_eq(chain_parse_time("-5s", &t), -EINVAL);
	cr_expect_eq(chain_parse_time("5d", &t), -EINVAL);
	cr_expect_eq(chain_parse_time("2026-12-03T10:00:00+01", &t), -EINVAL);
}
