/*
 * test_cuptirecv.c - the collector's receiver of CUPTI library records,
 * fed wire records built by hand: valid streams decode field by field,
 * malformed ones are refused with a clear message and counted, never
 * crash, and a bad connection does not disturb a good one.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <tokentrace/compute.h>

#include "../../user/cuptirecv.h"

struct got {
	struct tt_interval iv[16];
	int niv;
	struct tt_device dev[8];
	int ndev;
	char name[64];
	uint32_t name_id;
	int nnames;
	struct tt_compute_losses losses;
	int nlosses;
};

static void on_dev(void *c, const struct tt_device *d)
{
	struct got *g = c;

	if (g->ndev < 8)
		g->dev[g->ndev++] = *d;
}

static void on_iv(void *c, const struct tt_interval *iv)
{
	struct got *g = c;

	if (g->niv < 16)
		g->iv[g->niv++] = *iv;
}

static void on_name(void *c, uint32_t pid, uint32_t id, const char *name)
{
	struct got *g = c;

	(void)pid;
	snprintf(g->name, sizeof(g->name), "%s", name);
	g->name_id = id;
	g->nnames++;
}

static void on_losses(void *c, uint32_t pid, const struct tt_compute_losses *l)
{
	struct got *g = c;

	(void)pid;
	g->losses = *l;
	g->nlosses++;
}

static struct got got;
static struct cuptirecv *rx;

static void setup(void)
{
	struct tt_compute_sink sink = {
		.device = on_dev, .interval = on_iv, .name = on_name,
		.losses = on_losses, .ctx = &got,
	};

	memset(&got, 0, sizeof(got));
	rx = cuptirecv_open(NULL, &sink);
	cr_assert(rx);
}

static void teardown(void)
{
	cuptirecv_close(rx);
}

/* A byte stream being built. */
struct buf {
	uint8_t b[8192];
	size_t n;
};

static void put(struct buf *b, const void *rec, size_t len)
{
	memcpy(b->b + b->n, rec, len);
	b->n += len;
}

static void put_stream(struct buf *b, uint32_t pid)
{
	struct ttc_rec_stream s = {
		.hdr = { TTC_REC_STREAM, 1, sizeof(s) },
		.magic = TTC_WIRE_MAGIC, .wire_version = TTC_WIRE_VERSION,
		.pid = pid, .clock_id = 1,
	};

	put(b, &s, sizeof(s));
}

static void put_kernel(struct buf *b, uint32_t ordinal, uint64_t start,
		       uint32_t name_id)
{
	struct ttc_rec_kernel k = {
		.hdr = { TTC_REC_KERNEL, 1, sizeof(k) },
		.start_ns = start, .end_ns = start + 50, .device = ordinal,
		.stream = 3, .correlation = 9, .tid = 4321, .name_id = name_id,
	};

	put(b, &k, sizeof(k));
}

static void put_device(struct buf *b, uint32_t ordinal, uint8_t uuid0)
{
	struct ttc_rec_device d = {
		.hdr = { TTC_REC_DEVICE, 1, sizeof(d) },
		.ordinal = ordinal, .sm_count = 108,
		.memory_bytes = 40ull << 30, .name = "NVIDIA A100",
	};

	memset(d.uuid, uuid0, sizeof(d.uuid));
	put(b, &d, sizeof(d));
}

static void put_name(struct buf *b, uint32_t id, const char *name)
{
	uint8_t rec[128] = { 0 };
	size_t len = strlen(name);
	uint32_t size = (uint32_t)((sizeof(struct ttc_rec_name) + len + 1 + 7)
				   & ~7u);
	struct ttc_rec_name n = {
		.hdr = { TTC_REC_NAME, 1, size }, .name_id = id,
		.len = (uint32_t)len,
	};

	memcpy(rec, &n, sizeof(n));
	memcpy(rec + sizeof(n), name, len);
	put(b, rec, size);
}

TestSuite(cuptirecv, .init = setup, .fini = teardown);

Test(cuptirecv, valid_stream_decodes_field_by_field)
{
	struct buf b = { .n = 0 };
	struct ttc_rec_copy c = {
		.hdr = { TTC_REC_COPY, 1, sizeof(c) },
		.start_ns = 500, .end_ns = 900, .bytes = 1 << 16,
		.copy_kind = 1,
	};
	struct ttc_rec_drops d = {
		.hdr = { TTC_REC_DROPS, 1, sizeof(d) },
		.cupti_dropped = 3, .lib_dropped = 4, .zero_timestamps = 5,
	};

	put_stream(&b, 321);
	put_device(&b, 0, 0xab);
	put_name(&b, 1, "softmax");
	put_kernel(&b, 0, 1000, 1);
	put(&b, &c, sizeof(c));
	put(&b, &d, sizeof(d));
	cr_assert_eq(cuptirecv_decode(rx, b.b, b.n), 6);
	cr_assert_eq(got.ndev, 1);
	cr_expect_eq(got.dev[0].id, 1);
	cr_expect_eq(got.dev[0].pid, 321);
	cr_expect_str_eq(got.dev[0].name, "NVIDIA A100");
	cr_expect_str_eq(got.dev[0].uuid, "abababab-abab-abab-abab-abababababab");
	cr_expect_eq(got.dev[0].sm_count, 108);
	cr_expect_str_eq(got.name, "softmax");
	cr_assert_eq(got.niv, 2);
	cr_expect_eq(got.iv[0].kind, TT_IV_KERNEL);
	cr_expect_eq(got.iv[0].start_ns, 1000);
	cr_expect_eq(got.iv[0].end_ns, 1050);
	cr_expect_eq(got.iv[0].pid, 321);
	cr_expect_eq(got.iv[0].tid, 4321);
	cr_expect_eq(got.iv[0].device, 1);
	cr_expect_eq(got.iv[0].name_id, 1);
	cr_expect_eq(got.iv[1].kind, TT_IV_MEMCPY);
	cr_expect_eq(got.iv[1].copy_kind, TT_COPY_HTOD);
	cr_expect_eq(got.iv[1].bytes, 1 << 16);
	cr_assert_eq(got.nlosses, 1);
	cr_expect_eq(got.losses.cupti_dropped, 3);
	cr_expect_eq(got.losses.lib_dropped, 4);
	cr_expect_eq(got.losses.zero_timestamps, 5);
}

static void expect_malformed(struct buf *b, const char *why)
{
	struct cuptirecv_stats st;

	cr_assert_eq(cuptirecv_decode(rx, b->b, b->n), -EINVAL);
	cuptirecv_stats(rx, &st);
	cr_expect_eq(st.malformed, 1);
	cr_expect(strstr(st.last_error, why), "message '%s' should say '%s'",
		  st.last_error, why);
	cr_expect(strstr(st.last_error, "malformed"), "%s", st.last_error);
}

Test(cuptirecv, bad_magic_is_refused)
{
	struct buf b = { .n = 0 };

	put_stream(&b, 1);
	b.b[8] ^= 0xff;
	expect_malformed(&b, "magic");
	cr_expect_eq(got.niv, 0);
}

Test(cuptirecv, stream_without_header_is_refused)
{
	struct buf b = { .n = 0 };

	put_kernel(&b, 0, 10, 0);
	expect_malformed(&b, "stream record");
	cr_expect_eq(got.niv, 0);
}

Test(cuptirecv, odd_or_huge_sizes_are_refused_after_good_records)
{
	struct buf b = { .n = 0 };
	struct ttc_rec_hdr bad = { TTC_REC_KERNEL, 1, 13 };

	put_stream(&b, 1);
	put_kernel(&b, 0, 10, 0);
	put(&b, &bad, sizeof(bad));
	put(&b, "\0\0\0\0\0\0\0\0", 8);
	expect_malformed(&b, "size");
	cr_expect_eq(got.niv, 1, "records before the fault are delivered");

	struct buf h = { .n = 0 };
	struct ttc_rec_hdr huge = { TTC_REC_KERNEL, 1, 1u << 30 };

	put_stream(&h, 2);
	put(&h, &huge, sizeof(huge));
	cr_assert_eq(cuptirecv_decode(rx, h.b, h.n), -EINVAL);
}

Test(cuptirecv, kernel_record_smaller_than_its_layout_is_refused)
{
	struct buf b = { .n = 0 };
	struct ttc_rec_hdr small = { TTC_REC_KERNEL, 1, 16 };

	put_stream(&b, 1);
	put(&b, &small, sizeof(small));
	put(&b, "\0\0\0\0\0\0\0\0", 8);
	expect_malformed(&b, "smaller");
}

Test(cuptirecv, name_longer_than_its_record_is_refused)
{
	struct buf b = { .n = 0 };
	struct ttc_rec_name n = {
		.hdr = { TTC_REC_NAME, 1, 24 }, .name_id = 1, .len = 200,
	};

	put_stream(&b, 1);
	put(&b, &n, sizeof(n));
	put(&b, "abcdefgh", 8);
	expect_malformed(&b, "name record length");
	cr_expect_eq(got.nnames, 0);
}

Test(cuptirecv, truncated_stream_is_reported)
{
	struct buf b = { .n = 0 };

	put_stream(&b, 1);
	put_kernel(&b, 0, 10, 0);
	b.n -= 8;
	expect_malformed(&b, "truncated");
}

Test(cuptirecv, unknown_types_and_longer_versions_are_skipped_not_fatal)
{
	struct buf b = { .n = 0 };
	uint8_t future[32] = { 0 };
	struct ttc_rec_hdr fh = { 99, 1, sizeof(future) };
	uint8_t v2[sizeof(struct ttc_rec_kernel) + 16] = { 0 };
	struct ttc_rec_kernel k = {
		.hdr = { TTC_REC_KERNEL, 2, sizeof(v2) },
		.start_ns = 70, .end_ns = 80,
	};
	struct cuptirecv_stats st;

	memcpy(future, &fh, sizeof(fh));
	memcpy(v2, &k, sizeof(k));
	put_stream(&b, 1);
	put(&b, future, sizeof(future));
	put(&b, v2, sizeof(v2));
	put_kernel(&b, 0, 90, 0);
	cr_assert_eq(cuptirecv_decode(rx, b.b, b.n), 4);
	cuptirecv_stats(rx, &st);
	cr_expect_eq(st.unknown_types, 1);
	cr_expect_eq(st.malformed, 0);
	cr_assert_eq(got.niv, 2);
	cr_expect_eq(got.iv[0].start_ns, 70);
	cr_expect_eq(got.iv[1].start_ns, 90);
}

Test(cuptirecv, replayed_names_and_devices_are_delivered_once)
{
	struct buf b = { .n = 0 };

	put_stream(&b, 5);
	put_device(&b, 0, 1);
	put_name(&b, 1, "gemm");
	put_device(&b, 0, 1);
	put_name(&b, 1, "gemm");
	put_kernel(&b, 0, 10, 1);
	cr_assert_eq(cuptirecv_decode(rx, b.b, b.n), 6);
	cr_expect_eq(got.ndev, 1);
	cr_expect_eq(got.nnames, 1);
}

Test(cuptirecv, gpu_ids_follow_uuids_across_processes)
{
	struct buf a = { .n = 0 }, b = { .n = 0 };

	put_stream(&a, 10);
	put_device(&a, 0, 0x11);
	put_device(&a, 1, 0x22);
	put_kernel(&a, 1, 100, 0);
	put_stream(&b, 20);
	put_device(&b, 0, 0x22);	/* the same GPU as pid 10's ordinal 1 */
	put_kernel(&b, 0, 200, 0);
	cr_assert_gt(cuptirecv_decode(rx, a.b, a.n), 0);
	cr_assert_gt(cuptirecv_decode(rx, b.b, b.n), 0);
	cr_assert_eq(got.niv, 2);
	cr_expect_eq(got.iv[0].device, 2);
	cr_expect_eq(got.iv[1].device, 2, "same UUID, same id");
	cr_expect_eq(got.dev[0].id, 1);
}

Test(cuptirecv, interval_on_undescribed_device_gets_a_device)
{
	struct buf b = { .n = 0 };
	struct cuptirecv_stats st;

	put_stream(&b, 7);
	put_kernel(&b, 3, 10, 0);
	cr_assert_eq(cuptirecv_decode(rx, b.b, b.n), 2);
	cr_assert_eq(got.ndev, 1);
	cr_expect_str_eq(got.dev[0].name, "unknown GPU");
	cr_expect_eq(got.iv[0].device, got.dev[0].id);
	cr_expect_neq(got.iv[0].device, 0, "never the CPU device");
	cuptirecv_stats(rx, &st);
	cr_expect_eq(st.unknown_devices, 1);
}

Test(cuptirecv, random_bytes_never_crash)
{
	struct buf b;

	srand(1);
	for (int i = 0; i < 2000; i++) {
		b.n = 0;
		put_stream(&b, 1);
		size_t n = (size_t)(rand() % 600);

		for (size_t j = 0; j < n; j++)
			b.b[b.n++] = (uint8_t)rand();
		/* Headers that look plausible now and then. */
		if (i % 3 == 0 && n >= 8) {
			struct ttc_rec_hdr h = { (uint16_t)(rand() % 10), 1,
						 (uint32_t)(rand() % 40) * 8 };

			memcpy(b.b + 32, &h, sizeof(h));
		}
		cuptirecv_decode(rx, b.b, b.n);
	}
}

static int connect_to(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

Test(cuptirecv, bad_connection_is_closed_good_one_goes_on)
{
	char path[64];
	struct tt_compute_sink sink = { .interval = on_iv, .ctx = &got };
	struct cuptirecv *r;
	struct cuptirecv_stats st;
	struct buf good = { .n = 0 };
	int bad_fd, good_fd;

	snprintf(path, sizeof(path), "/tmp/tt-cuptirecv-%d.sock", getpid());
	r = cuptirecv_open(path, &sink);
	cr_assert(r);
	cr_assert_geq(cuptirecv_fd(r), 0);
	bad_fd = connect_to(path);
	good_fd = connect_to(path);
	put_stream(&good, 2);
	put_kernel(&good, 0, 100, 0);
	/* Split across two writes, mid-record. */
	cr_assert_eq(write(good_fd, good.b, 40), 40);
	cr_assert_eq(write(bad_fd, "GET / HTTP/1.1\r\n\r\n", 18), 18);
	for (int i = 0; i < 20; i++)
		cuptirecv_poll(r, 10);
	cr_assert_eq(write(good_fd, good.b + 40, good.n - 40),
		     (ssize_t)(good.n - 40));
	for (int i = 0; i < 20 && got.niv < 1; i++)
		cuptirecv_poll(r, 10);
	cuptirecv_stats(r, &st);
	cr_expect_eq(st.connections, 2);
	cr_expect_eq(st.malformed, 1);
	cr_expect_eq(st.connections_open, 1, "only the bad one is closed");
	cr_assert_eq(got.niv, 1);
	cr_expect_eq(got.iv[0].pid, 2);
	cr_expect_eq(got.iv[0].start_ns, 100);
	close(bad_fd);
	close(good_fd);
	cuptirecv_close(r);
	cr_expect_neq(access(path, F_OK), 0, "socket file removed at close");
}
