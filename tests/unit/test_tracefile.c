/*
 * test_tracefile.c - the trace file format (user/tracefile.c): every
 * record type round-trips field by field, with and without zstd; the file
 * is private; a trace cut at any offset of its last block reads all
 * earlier blocks; a corrupt block is skipped and named by its offset; a
 * million intervals read back (and how fast).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../user/tracefile.h"

#define MAXREC 64

/* What the reader handed over. */
struct got {
	struct tt_request reqs[MAXREC];
	uint64_t tok[MAXREC][8];
	size_t nreqs;
	struct tt_device devs[MAXREC];
	size_t ndevs;
	struct tt_interval ivs[MAXREC];
	size_t nivs;
	uint64_t iv_count, iv_sum;
	uint32_t max_corr;
	uint32_t name_pid, name_id;
	char name[256];
	struct report_losses losses;
	uint64_t win_start, win_end;
	bool win_closed;
	char hooks[24];
	char compute[16];
	uint32_t max_batch;
};

static void g_req(void *ctx, const struct tt_request *q)
{
	struct got *g = ctx;

	if (g->nreqs == MAXREC)
		return;
	g->reqs[g->nreqs] = *q;
	for (uint32_t i = 0; i < q->token_ns_len && i < 8; i++)
		g->tok[g->nreqs][i] = q->token_ns[i];
	g->nreqs++;
}

static void g_dev(void *ctx, const struct tt_device *d)
{
	struct got *g = ctx;

	if (g->ndevs < MAXREC)
		g->devs[g->ndevs++] = *d;
}

static void g_iv(void *ctx, const struct tt_interval *iv)
{
	struct got *g = ctx;

	if (g->nivs < MAXREC)
		g->ivs[g->nivs++] = *iv;
	g->iv_count++;
	if (iv->correlation > g->max_corr)
		g->max_corr = iv->correlation;
	g->iv_sum += iv->end_ns - iv->start_ns;
}

static void g_name(void *ctx, uint32_t pid, uint32_t id, const char *n)
{
	struct got *g = ctx;

	g->name_pid = pid;
	g->name_id = id;
	snprintf(g->name, sizeof(g->name), "%s", n);
}

static void g_loss(void *ctx, const struct report_losses *l)
{
	((struct got *)ctx)->losses = *l;
}

static void g_win(void *ctx, uint64_t s, uint64_t e, bool closed)
{
	struct got *g = ctx;

	g->win_start = s;
	g->win_end = e;
	g->win_closed = closed;
}

static void g_comp(void *ctx, const char *src, uint32_t mb)
{
	struct got *g = ctx;

	snprintf(g->compute, sizeof(g->compute), "%s", src);
	g->max_batch = mb;
}

static void g_hooks(void *ctx, const char *hooks)
{
	struct got *g = ctx;

	snprintf(g->hooks, sizeof(g->hooks), "%s", hooks);
}

static struct tracefile_handlers handlers(struct got *g, FILE *log)
{
	return (struct tracefile_handlers){ g_req, g_dev, g_iv, g_name,
		g_loss, g_win, g_comp, g, log, g_hooks };
}

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tt_tracefile.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

static const char *tpath(const char *name)
{
	static char p[128];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return p;
}

static struct tt_hostinfo host(const char *governor)
{
	struct tt_hostinfo h = { .cpus = 8, .numa_nodes = 2 };

	snprintf(h.hostname, sizeof(h.hostname), "node7");
	snprintf(h.kernel, sizeof(h.kernel), "6.18.0 #1 SMP");
	snprintf(h.cmdline, sizeof(h.cmdline), "root=/dev/vda1 quiet");
	snprintf(h.cpu_model, sizeof(h.cpu_model), "Test CPU @ 3.0GHz");
	snprintf(h.governor, sizeof(h.governor), "%s", governor);
	snprintf(h.thp, sizeof(h.thp), "madvise");
	snprintf(h.gpu_model, sizeof(h.gpu_model), "NVIDIA H100");
	snprintf(h.gpu_driver, sizeof(h.gpu_driver), "550.54");
	snprintf(h.gpu_clocks, sizeof(h.gpu_clocks), "sm 1980 MHz");
	return h;
}

static const uint64_t toks[5] = { 5000, 7000, 6500, 9000, 1000000000 };

static struct tt_request sample_req(void)
{
	struct tt_request q = {
		.pid = 77, .conn_id = 0x123456789ull, .stream = true,
		.http_status = 200, .max_tokens = -1, .arrival_ns = 4000,
		.first_token_ns = 5000, .end_ns = 1000000001,
		.token_events = 9, .token_ns = toks, .token_ns_len = 5,
		.prompt_tokens = 31, .completion_tokens = -1,
		.tokens_source = TT_TOKENS_EVENTS, .end = TT_END_CLIENT_GONE,
		.flags = TT_REQF_NO_USAGE | TT_REQF_ABORTED, .ttft_ms = 0.001,
		.itl_p50_ms = 1.5, .itl_p99_ms = -1, .itl_max_ms = 2.25,
		.bytes_in = 1234, .bytes_out = 98765, .cached_tokens = 16,
		.cached_source = TT_CACHED_ESTIMATE, .prompt_bytes = 120,
		.prefix_bytes = 64 };

	snprintf(q.id, sizeof(q.id), "cmpl-abc");
	snprintf(q.model, sizeof(q.model), "tiny-model");
	snprintf(q.tenant, sizeof(q.tenant), "tenant-a");
	snprintf(q.api, sizeof(q.api), "completions");
	snprintf(q.path, sizeof(q.path), "/v1/completions");
	return q;
}

static struct tt_device sample_dev(void)
{
	struct tt_device d = { .id = 3, .kind = TT_DEV_GPU, .pid = 77,
			       .ordinal = 1, .sm_count = 132,
			       .memory_bytes = 85899345920ull };

	snprintf(d.name, sizeof(d.name), "NVIDIA H100 80GB HBM3");
	snprintf(d.uuid, sizeof(d.uuid), "GPU-0123");
	return d;
}

static struct tt_interval sample_iv(uint64_t i)
{
	return (struct tt_interval){ .start_ns = 1000 + i * 10,
		.end_ns = 1005 + i * 10, .device = 3, .pid = 77, .tid = 78,
		.stream = 7, .name_id = 12, .correlation = (uint32_t)i,
		.bytes = 4096, .kind = TT_IV_MEMCPY,
		.copy_kind = TT_COPY_HTOD, .reserved = 0 };
}

static bool iv_eq(const struct tt_interval *a, const struct tt_interval *b)
{
	return a->start_ns == b->start_ns && a->end_ns == b->end_ns &&
	       a->device == b->device && a->pid == b->pid &&
	       a->tid == b->tid && a->stream == b->stream &&
	       a->name_id == b->name_id && a->correlation == b->correlation &&
	       a->bytes == b->bytes && a->kind == b->kind &&
	       a->copy_kind == b->copy_kind && a->reserved == b->reserved;
}

static void write_every_record(struct tracefile_writer *w)
{
	struct tt_request q = sample_req();
	struct tt_device d = sample_dev();
	struct tt_interval iv = sample_iv(1);
	struct report_losses l = { 1, 2, 3, 4 };

	cr_assert_eq(tracefile_put_compute(w, "cupti", 48), 0);
	cr_assert_eq(tracefile_put_hooks(w, "libc+syscalls"), 0);
	cr_assert_eq(tracefile_put_window(w, 1000, 2000000000ull, true), 0);
	cr_assert_eq(tracefile_put_device(w, &d), 0);
	cr_assert_eq(tracefile_put_interval(w, &iv), 0);
	cr_assert_eq(tracefile_put_name(w, 77, 12, "void gemm<128>(float*)"),
		     0);
	cr_assert_eq(tracefile_put_losses(w, &l), 0);
	cr_assert_eq(tracefile_put_request(w, &q), 0);
}

static void expect_every_record(const struct got *g)
{
	struct tt_request w = sample_req();
	struct tt_device d = sample_dev();
	struct tt_interval iv = sample_iv(1);
	const struct tt_request *q = &g->reqs[0];

	cr_assert_eq(g->nreqs, 1);
	cr_expect_eq(q->pid, w.pid);
	cr_expect_eq(q->conn_id, w.conn_id);
	cr_expect_str_eq(q->id, w.id);
	cr_expect_str_eq(q->model, w.model);
	cr_expect_str_eq(q->tenant, w.tenant);
	cr_expect_str_eq(q->api, w.api);
	cr_expect_str_eq(q->path, w.path);
	cr_expect_eq(q->stream, w.stream);
	cr_expect_eq(q->http_status, w.http_status);
	cr_expect_eq(q->max_tokens, w.max_tokens);
	cr_expect_eq(q->arrival_ns, w.arrival_ns);
	cr_expect_eq(q->first_token_ns, w.first_token_ns);
	cr_expect_eq(q->end_ns, w.end_ns);
	cr_expect_eq(q->token_events, w.token_events);
	cr_expect_eq(q->token_ns_len, 5);
	for (int i = 0; i < 5; i++)	/* one goes backwards: zigzag */
		cr_expect_eq(g->tok[0][i], toks[i], "token %d", i);
	cr_expect_eq(q->prompt_tokens, w.prompt_tokens);
	cr_expect_eq(q->completion_tokens, w.completion_tokens);
	cr_expect_eq(q->cached_tokens, w.cached_tokens);
	cr_expect_eq(q->cached_source, w.cached_source);
	cr_expect_eq(q->prompt_bytes, w.prompt_bytes);
	cr_expect_eq(q->prefix_bytes, w.prefix_bytes);
	cr_expect_eq(q->tokens_source, w.tokens_source);
	cr_expect_eq(q->end, w.end);
	cr_expect_eq(q->flags, w.flags);
	cr_expect_eq(q->ttft_ms, w.ttft_ms);
	cr_expect_eq(q->itl_p50_ms, w.itl_p50_ms);
	cr_expect_eq(q->itl_p99_ms, w.itl_p99_ms);
	cr_expect_eq(q->itl_max_ms, w.itl_max_ms);
	cr_expect_eq(q->bytes_in, w.bytes_in);
	cr_expect_eq(q->bytes_out, w.bytes_out);
	cr_assert_eq(g->ndevs, 1);
	cr_expect_eq(g->devs[0].id, d.id);
	cr_expect_eq(g->devs[0].kind, d.kind);
	cr_expect_eq(g->devs[0].pid, d.pid);
	cr_expect_eq(g->devs[0].ordinal, d.ordinal);
	cr_expect_str_eq(g->devs[0].name, d.name);
	cr_expect_str_eq(g->devs[0].uuid, d.uuid);
	cr_expect_eq(g->devs[0].sm_count, d.sm_count);
	cr_expect_eq(g->devs[0].memory_bytes, d.memory_bytes);
	cr_assert_eq(g->nivs, 1);
	cr_expect(iv_eq(&g->ivs[0], &iv), "interval differs");
	cr_expect_eq(g->name_pid, 77);
	cr_expect_eq(g->name_id, 12);
	cr_expect_str_eq(g->name, "void gemm<128>(float*)");
	cr_expect_eq(g->losses.cpu_events, 1);
	cr_expect_eq(g->losses.sock_events, 2);
	cr_expect_eq(g->losses.sock_bytes, 3);
	cr_expect_eq(g->losses.cupti_records, 4);
	cr_expect_eq(g->win_start, 1000);
	cr_expect_eq(g->win_end, 2000000000ull);
	cr_expect(g->win_closed);
	cr_expect_str_eq(g->compute, "cupti");
	cr_expect_str_eq(g->hooks, "libc+syscalls");
	cr_expect_eq(g->max_batch, 48);
}

TestSuite(tracefile, .init = setup, .fini = teardown, .timeout = 60);

Test(tracefile, every_record_type_round_trips_field_by_field)
{
	for (int level = 0; level <= 3; level += 3) {
		struct tt_hostinfo h = host("performance");
		struct tracefile_writer *w;
		struct tracefile_header hdr;
		struct tracefile_stats st;
		struct got *g = calloc(1, sizeof(*g));
		struct tracefile_handlers hd = handlers(g, stderr);
		char name[32];

		snprintf(name, sizeof(name), "rt%d.tt", level);
		cr_assert_eq(tracefile_create(tpath(name), &h, level, false,
					      &w), 0);
		write_every_record(w);
		cr_assert_eq(tracefile_close(w), 0);
		cr_assert_eq(tracefile_read(tpath(name), &hd, &hdr, &st), 0);
		expect_every_record(g);
		cr_expect_eq(memcmp(&hdr.host, &h, sizeof(h)), 0,
			     "host facts differ (zstd level %d)", level);
		cr_expect_eq(hdr.version, TRACEFILE_VERSION);
		cr_expect_eq(hdr.clock_id, CLOCK_MONOTONIC);
		cr_expect_gt(hdr.wall_ns, 1600000000ull * 1000000000ull);
		cr_expect_gt(hdr.mono_ns, 0);
		cr_expect_eq(st.blocks_ok, 1);
		cr_expect_eq(st.blocks_skipped, 0);
		cr_expect_eq(st.records, 8);
		cr_expect_not(st.cut);
		free(g);
	}
}

Test(tracefile, file_is_private_even_under_a_permissive_umask)
{
	struct tt_hostinfo h = host("");
	struct tracefile_writer *w;
	mode_t old = umask(0);
	struct stat sb;

	cr_assert_eq(tracefile_create(tpath("m.tt"), &h, 1, false, &w), 0);
	umask(old);
	cr_assert_eq(tracefile_close(w), 0);
	cr_assert_eq(stat(tpath("m.tt"), &sb), 0);
	cr_expect_eq(sb.st_mode & 0777, 0600, "mode %o", sb.st_mode & 0777);
}

Test(tracefile, an_existing_file_is_not_overwritten_unless_asked)
{
	struct tt_hostinfo h = host("");
	struct tracefile_writer *w;

	cr_assert_eq(tracefile_create(tpath("x.tt"), &h, 0, false, &w), 0);
	tracefile_close(w);
	cr_expect_eq(tracefile_create(tpath("x.tt"), &h, 0, false, &w),
		     -EEXIST);
	cr_expect_null(w);
	cr_assert_eq(tracefile_create(tpath("x.tt"), &h, 0, true, &w), 0);
	tracefile_close(w);
}

/* Three blocks of 100 intervals each: off[0..2] where each block starts,
 * off[3] the file's size. */
static void three_blocks(const char *path, int level, long off[4])
{
	struct tt_hostinfo h = host("performance");
	struct tracefile_writer *w;

	cr_assert_eq(tracefile_create(path, &h, level, true, &w), 0);
	for (int b = 0; b < 3; b++) {
		for (int i = 0; i < 100; i++) {
			struct tt_interval iv = sample_iv(b * 100 + i);

			cr_assert_eq(tracefile_put_interval(w, &iv), 0);
		}
		off[b] = (long)tracefile_bytes(w);
		cr_assert_eq(tracefile_flush(w), 0);
	}
	off[3] = (long)tracefile_bytes(w);
	cr_assert_eq(tracefile_close(w), 0);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;

	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	buf = malloc(*len + 1);
	cr_assert_eq(fread(buf, 1, *len, f), *len);
	fclose(f);
	return buf;
}

Test(tracefile, cut_anywhere_in_the_last_block_keeps_the_earlier_ones)
{
	long off[4];
	size_t len;
	char *buf;

	three_blocks(tpath("cut.tt"), 0, off);
	buf = slurp(tpath("cut.tt"), &len);
	cr_assert_eq((long)len, off[3]);
	long last = off[2], cuts[] = { 1, 3, 4, 23, 24, 25, 100,
				       off[3] - off[2] - 1 };
	for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
		struct got *g = calloc(1, sizeof(*g));
		char *msg = NULL;
		size_t mlen = 0;
		FILE *log = open_memstream(&msg, &mlen);
		struct tracefile_handlers hd = handlers(g, log);
		struct tracefile_header hdr;
		struct tracefile_stats st;

		cr_assert_eq(tracefile_read_mem(buf, last + cuts[k], "cut.tt",
						&hd, &hdr, &st), 0);
		fclose(log);
		cr_expect_eq(st.blocks_ok, 2, "cut at +%ld", cuts[k]);
		cr_expect_eq(g->iv_count, 200, "cut at +%ld", cuts[k]);
		cr_expect(st.cut, "cut at +%ld not reported", cuts[k]);
		cr_expect_eq(st.blocks_skipped, 1);
		cr_expect_eq(st.bytes_skipped, (uint64_t)cuts[k]);
		if (cuts[k] >= 4) {
			char want[64];

			snprintf(want, sizeof(want), "block at offset %ld",
				 last);
			cr_expect_not_null(strstr(msg, want),
					   "message '%s' lacks '%s'", msg,
					   want);
		}
		free(msg);
		free(g);
	}
	free(buf);
}

Test(tracefile, cut_at_a_block_boundary_is_a_whole_trace)
{
	long off[4];
	size_t len;
	char *buf;
	struct got *g = calloc(1, sizeof(*g));
	struct tracefile_handlers hd = handlers(g, NULL);
	struct tracefile_header hdr;
	struct tracefile_stats st;

	three_blocks(tpath("b.tt"), 3, off);
	buf = slurp(tpath("b.tt"), &len);
	cr_assert_eq(tracefile_read_mem(buf, off[2], "b.tt", &hd, &hdr, &st),
		     0);
	cr_expect_eq(st.blocks_ok, 2);
	cr_expect_not(st.cut);
	cr_expect_eq(g->iv_count, 200);
	free(buf);
	free(g);
}

Test(tracefile, cut_inside_the_header_is_a_clear_error)
{
	long off[4];
	size_t len;
	char *buf;

	three_blocks(tpath("h.tt"), 0, off);
	buf = slurp(tpath("h.tt"), &len);
	struct tracefile_header full;
	struct tracefile_stats st;
	struct tracefile_handlers quiet = { 0 };

	cr_assert_eq(tracefile_read_mem(buf, len, "h.tt", &quiet, &full, &st),
		     0);
	long cuts[] = { 0, 5, 8, 15, 40, (long)full.header_size - 1 };
	for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
		char *msg = NULL;
		size_t mlen = 0;
		FILE *log = open_memstream(&msg, &mlen);
		struct tracefile_handlers hd = { .log = log };
		struct tracefile_header hdr;

		cr_expect_eq(tracefile_read_mem(buf, cuts[k], "h.tt", &hd,
						&hdr, &st), -EBADMSG,
			     "header cut at %ld accepted", cuts[k]);
		fclose(log);
		cr_expect(strstr(msg, "header") || strstr(msg, "magic"),
			  "message for a cut at %ld: '%s'", cuts[k], msg);
		free(msg);
	}
	free(buf);
}

Test(tracefile, a_flipped_byte_skips_only_its_block_and_names_its_offset)
{
	for (int level = 0; level <= 3; level += 3) {
		long off[4];
		size_t len;
		char *buf, *msg = NULL, want[80];
		size_t mlen = 0;
		struct got *g = calloc(1, sizeof(*g));
		FILE *log = open_memstream(&msg, &mlen);
		struct tracefile_handlers hd = handlers(g, log);
		struct tracefile_header hdr;
		struct tracefile_stats st;

		three_blocks(tpath("flip.tt"), level, off);
		buf = slurp(tpath("flip.tt"), &len);
		buf[off[1] + TRACEFILE_BLOCK_HDR + 40] ^= 0x10;
		cr_assert_eq(tracefile_read_mem(buf, len, "flip.tt", &hd,
						&hdr, &st), 0);
		fclose(log);
		cr_expect_eq(st.blocks_ok, 2, "level %d", level);
		cr_expect_eq(st.blocks_skipped, 1);
		cr_expect_not(st.cut);
		cr_expect_eq(st.records_skipped, 100);
		cr_expect_eq(g->iv_count, 200);
		/* the block after the bad one was read */
		cr_expect_eq(g->max_corr, 299);
		snprintf(want, sizeof(want), "block at offset %ld: checksum "
			 "mismatch, 100 records skipped", off[1]);
		cr_expect_not_null(strstr(msg, want), "'%s' lacks '%s'", msg,
				   want);
		free(msg);
		free(buf);
		free(g);
	}
}

Test(tracefile, garbage_between_blocks_is_skipped_to_the_next_magic)
{
	long off[4];
	size_t len;
	char *buf;
	struct got *g = calloc(1, sizeof(*g));
	struct tracefile_handlers hd = handlers(g, NULL);
	struct tracefile_header hdr;
	struct tracefile_stats st;

	three_blocks(tpath("g.tt"), 0, off);
	buf = slurp(tpath("g.tt"), &len);
	memset(buf + off[1], 0xAB, 8);	/* the second block's magic gone */
	cr_assert_eq(tracefile_read_mem(buf, len, "g.tt", &hd, &hdr, &st), 0);
	cr_expect_eq(st.blocks_ok, 2);
	cr_expect_eq(st.blocks_skipped, 1);
	cr_expect_eq(st.bytes_skipped, (uint64_t)(off[2] - off[1]));
	cr_expect_eq(g->iv_count, 200);
	free(buf);
	free(g);
}

Test(tracefile, unknown_record_types_are_skipped_by_size)
{
	struct tt_hostinfo h = host("");
	struct tracefile_writer *w;
	struct tt_interval iv = sample_iv(5);
	/* a block by hand: type 99 with 5 bytes, then an interval */
	uint8_t pl[256], blk[TRACEFILE_BLOCK_HDR];
	size_t n = 0;
	FILE *f;

	cr_assert_eq(tracefile_create(tpath("u.tt"), &h, 0, true, &w), 0);
	cr_assert_eq(tracefile_close(w), 0);
	memcpy(pl, "\x63\x00\x01\x00\x05\x00\x00\x00hello", 13);
	n = 13;
	{	/* the interval, as a writer made it, from another file */
		size_t len;
		char *buf;

		cr_assert_eq(tracefile_create(tpath("i.tt"), &h, 0, true, &w),
			     0);
		tracefile_put_interval(w, &iv);
		tracefile_close(w);
		buf = slurp(tpath("i.tt"), &len);
		memcpy(pl + n, buf + len - 60, 60);	/* 8 + 52 bytes */
		n += 60;
		free(buf);
	}
	uint32_t v[6] = { TRACEFILE_BLOCK_MAGIC, 0, (uint32_t)n, (uint32_t)n,
			  2, 0 };
	memcpy(blk, v, sizeof(v));	/* little-endian host */
	v[5] = tracefile_crc32c(tracefile_crc32c(0, blk, 20), pl, n);
	memcpy(blk + 20, &v[5], 4);
	f = fopen(tpath("u.tt"), "a");
	fwrite(blk, 1, sizeof(blk), f);
	fwrite(pl, 1, n, f);
	fclose(f);

	struct got *g = calloc(1, sizeof(*g));
	struct tracefile_handlers hd = handlers(g, stderr);
	struct tracefile_header hdr;
	struct tracefile_stats st;

	cr_assert_eq(tracefile_read(tpath("u.tt"), &hd, &hdr, &st), 0);
	cr_expect_eq(st.records_unknown, 1);
	cr_expect_eq(st.records, 1);
	cr_assert_eq(g->nivs, 1);
	cr_expect(iv_eq(&g->ivs[0], &iv), "interval differs");
	free(g);
}

Test(tracefile, crc32c_matches_the_standard_check_value)
{
	cr_expect_eq(tracefile_crc32c(0, "123456789", 9), 0xE3069283u);
}

static double secs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(tracefile, a_million_intervals_read_back_compressed)
{
	struct tt_hostinfo h = host("");
	struct tracefile_writer *w;
	struct got *g = calloc(1, sizeof(*g));
	struct tracefile_handlers hd = handlers(g, stderr);
	struct tracefile_header hdr;
	struct tracefile_stats st;
	uint64_t want = 0;
	struct stat sb;
	double t0, t1;

	cr_assert_eq(tracefile_create(tpath("big.tt"), &h, 1, true, &w), 0);
	for (uint64_t i = 0; i < 1000000; i++) {
		struct tt_interval iv = sample_iv(i);

		iv.end_ns += i % 7;
		want += iv.end_ns - iv.start_ns;
		cr_assert_eq(tracefile_put_interval(w, &iv), 0);
	}
	cr_assert_eq(tracefile_close(w), 0);
	cr_assert_eq(stat(tpath("big.tt"), &sb), 0);
	t0 = secs();
	cr_assert_eq(tracefile_read(tpath("big.tt"), &hd, &hdr, &st), 0);
	t1 = secs();
	cr_expect_eq(g->iv_count, 1000000);
	cr_expect_eq(g->iv_sum, want);
	cr_expect_eq(st.blocks_skipped, 0);
	cr_expect_lt(sb.st_size, 1000000 * 64 / 2,
		     "zstd did not pay: %lld bytes", (long long)sb.st_size);
	cr_log_info("tracefile: 1M intervals in %lld bytes (%.1f B/interval)"
		    ", read in %.3f s = %.2f M events/s", (long long)sb.st_size,
		    sb.st_size / 1e6, t1 - t0, 1.0 / (t1 - t0));
	printf("tracefile: read 1M intervals in %.3f s = %.2f M events/s "
	       "(%lld bytes)\n", t1 - t0, 1.0 / (t1 - t0),
	       (long long)sb.st_size);
	free(g);
}

Test(tracefile, every_cut_of_a_small_trace_reads_its_whole_blocks)
{
	long off[4];
	size_t len;
	char *buf;
	struct tracefile_header full;
	struct tracefile_stats st;
	struct tracefile_handlers quiet = { 0 };

	three_blocks(tpath("every.tt"), 1, off);
	buf = slurp(tpath("every.tt"), &len);
	cr_assert_eq(tracefile_read_mem(buf, len, "every.tt", &quiet, &full,
					&st), 0);
	for (size_t cut = 0; cut <= len; cut++) {
		struct got *g = calloc(1, sizeof(*g));
		struct tracefile_handlers hd = handlers(g, NULL);
		struct tracefile_header hdr;
		uint64_t whole = 0;
		int err = tracefile_read_mem(buf, cut, "every.tt", &hd, &hdr,
					     &st);

		if (cut < full.header_size) {
			cr_expect_eq(err, -EBADMSG, "cut at %zu", cut);
			free(g);
			continue;
		}
		for (int b = 1; b <= 3; b++)
			whole += (long)cut >= off[b];
		cr_expect_eq(err, 0, "cut at %zu", cut);
		cr_expect_eq(st.blocks_ok, whole, "cut at %zu", cut);
		cr_expect_eq(g->iv_count, 100 * whole, "cut at %zu", cut);
		cr_expect_eq(st.cut, (long)cut != off[0] && (long)cut != off[1]
			     && (long)cut != off[2] && (long)cut != off[3],
			     "cut at %zu", cut);
		free(g);
	}
	free(buf);
}

Test(tracefile, random_bit_flips_never_crash_and_lose_at_most_their_blocks)
{
	long off[4];
	size_t len;
	char *buf, *copy;
	unsigned seed = 12345;

	three_blocks(tpath("flips.tt"), 2, off);
	buf = slurp(tpath("flips.tt"), &len);
	copy = malloc(len);
	for (int round = 0; round < 500; round++) {
		struct got *g = calloc(1, sizeof(*g));
		struct tracefile_handlers hd = handlers(g, NULL);
		struct tracefile_header hdr;
		struct tracefile_stats st;
		size_t at = off[0] + rand_r(&seed) % (len - off[0]);

		memcpy(copy, buf, len);
		copy[at] ^= (char)(1u << (rand_r(&seed) % 8));
		cr_assert_eq(tracefile_read_mem(copy, len, "flips.tt", &hd,
						&hdr, &st), 0);
		cr_expect_eq(st.blocks_ok, 2, "flip at %zu", at);
		cr_expect_eq(g->iv_count, 200, "flip at %zu", at);
		free(g);
	}
	free(copy);
	free(buf);
}
