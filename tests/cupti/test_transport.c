/*
 * test_transport.c - the library's transport against a real collector
 * receiver on a unix socket: backlog while nobody listens, counted drops
 * when the backlog is full, delivery and drop counts after (re)connect,
 * names replayed to a new collector.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

struct link {
	char *path;
	struct ttc_names *names;
	struct ttc_tx *tx;
	struct kept *kept;
	struct cuptirecv *recv;
};

static void link_open(struct link *l, size_t backlog_max)
{
	struct ttc_tx_config cfg = {
		.backlog_max = backlog_max, .reconnect_ns = 0, .pid = 777,
	};

	memset(l, 0, sizeof(*l));
	l->path = test_path("sock");
	cfg.socket_path = l->path;
	l->names = ttc_names_new();
	l->tx = ttc_tx_new(&cfg);
	l->kept = calloc(1, sizeof(*l->kept));
	cr_assert(l->names && l->tx && l->kept);
}

static void collector_up(struct link *l)
{
	struct tt_compute_sink sink = kept_sink(l->kept);

	l->recv = cuptirecv_open(l->path, &sink);
	cr_assert(l->recv, "test collector must listen at %s", l->path);
}

/* Pumps and polls until the collector holds want intervals (or ~2 s). */
static void exchange(struct link *l, int want)
{
	for (int i = 0; i < 400 && l->kept->niv < want; i++) {
		ttc_tx_pump(l->tx, ttc_now_ns());
		cuptirecv_poll(l->recv, 5);
	}
	/* A little more for the drops record that may follow. */
	for (int i = 0; i < 5; i++) {
		ttc_tx_pump(l->tx, ttc_now_ns());
		cuptirecv_poll(l->recv, 2);
	}
}

static void link_close(struct link *l)
{
	cuptirecv_close(l->recv);
	ttc_tx_free(l->tx);
	ttc_names_free(l->names);
	unlink(l->path);
	free(l->path);
	free(l->kept);
}

static int send_kernel(struct link *l, const char *name, uint64_t start)
{
	CUpti_ActivityKernel10 k;

	memset(&k, 0, sizeof(k));
	k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
	k.start = start;
	k.end = start + 100;
	k.name = name;
	return ttc_conv_record(l->names, l->tx, (CUpti_Activity *)&k);
}

Test(cupti_transport, backlog_waits_for_a_collector_then_arrives)
{
	struct link l;
	struct ttc_tx_stats st;

	link_open(&l, 1 << 20);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(send_kernel(&l, "k", 1000 + i * 1000), 1);
	cr_assert_gt(ttc_tx_pump(l.tx, ttc_now_ns()), 0,
		     "nobody listens: records stay queued");
	ttc_tx_stats(l.tx, &st);
	cr_expect_eq(st.connected, 0);
	cr_expect_eq(st.lib_dropped, 0);
	collector_up(&l);
	exchange(&l, 50);
	cr_assert_eq(l.kept->niv, 50);
	for (int i = 0; i < 50; i++)
		cr_expect_eq(l.kept->iv[i].start_ns, 1000 + i * 1000ull,
			     "records arrive in order");
	cr_expect_eq(l.kept->iv[0].pid, 777);
	cr_expect_eq(l.kept->nnames, 1);
	ttc_tx_stats(l.tx, &st);
	cr_expect_eq(st.backlog_bytes, 0);
	cr_expect_eq(st.connects, 1);
	link_close(&l);
}

Test(cupti_transport, full_backlog_drops_and_counts_then_reports)
{
	struct link l;
	struct ttc_tx_stats st;
	/* Room for the name and 9 kernels, not more. */
	size_t room = 32 + 9 * sizeof(struct ttc_rec_kernel);
	int kept = 0, dropped = 0;

	link_open(&l, room);
	for (int i = 0; i < 25; i++) {
		int r = send_kernel(&l, "flash_attn", 1000 + i);

		kept += r == 1;
		dropped += r == -ENOBUFS;
	}
	cr_assert_eq(kept, 9, "the bound holds");
	cr_assert_eq(dropped, 16);
	ttc_tx_stats(l.tx, &st);
	cr_expect_eq(st.lib_dropped, 16);
	collector_up(&l);
	exchange(&l, 9);
	cr_expect_eq(l.kept->niv, 9);
	cr_assert_geq(l.kept->nlosses, 1, "the drop count reaches the collector");
	cr_expect_eq(l.kept->losses.lib_dropped, 16);
	/* Room again once sent: new records go through. */
	cr_expect_eq(send_kernel(&l, "flash_attn", 99999), 1);
	exchange(&l, 10);
	cr_expect_eq(l.kept->niv, 10);
	cr_expect_eq(l.kept->iv[9].name_id, l.kept->iv[0].name_id);
	link_close(&l);
}

Test(cupti_transport, new_collector_gets_names_replayed)
{
	struct link l;
	struct ttc_tx_stats st;

	link_open(&l, 1 << 20);
	collector_up(&l);
	cr_assert_eq(send_kernel(&l, "layer_norm", 100), 1);
	exchange(&l, 1);
	cr_assert_eq(l.kept->nnames, 1);
	/* The collector goes away; a new one comes up at the same path. */
	cuptirecv_close(l.recv);
	memset(l.kept, 0, sizeof(*l.kept));
	cr_assert_eq(send_kernel(&l, "layer_norm", 200), 1);
	for (int i = 0; i < 5; i++)
		ttc_tx_pump(l.tx, ttc_now_ns());
	collector_up(&l);
	exchange(&l, 1);
	cr_assert_eq(l.kept->niv, 1, "the kernel queued while away arrives");
	cr_expect_eq(l.kept->iv[0].start_ns, 200);
	cr_assert_eq(l.kept->nnames, 1, "its name is replayed, not lost");
	cr_expect_str_eq(l.kept->names[0].name, "layer_norm");
	cr_expect_eq(l.kept->names[0].id, l.kept->iv[0].name_id);
	ttc_tx_stats(l.tx, &st);
	cr_expect_eq(st.connects, 2);
	link_close(&l);
}

Test(cupti_transport, collector_dying_mid_stream_leaves_a_clean_stream)
{
	struct link l;
	struct cuptirecv_stats rs;
	struct ttc_tx_stats st;
	const int total = 20000;	/* 1.7 MiB: more than a socket holds */

	link_open(&l, 4 << 20);
	collector_up(&l);
	for (int i = 0; i < total; i++)
		cr_assert_eq(send_kernel(&l, "mlp", 1000 + (uint64_t)i), 1);
	/* The collector never reads: the socket fills, a chunk is cut. */
	for (int i = 0; i < 5; i++)
		ttc_tx_pump(l.tx, ttc_now_ns());
	ttc_tx_stats(l.tx, &st);
	cr_assert_gt(st.backlog_bytes, 0, "the socket must have filled");
	cuptirecv_close(l.recv);
	for (int i = 0; i < 5; i++)
		ttc_tx_pump(l.tx, ttc_now_ns());
	memset(l.kept, 0, sizeof(*l.kept));
	collector_up(&l);
	for (int i = 0; i < 2000 && l.kept->last_start_ns != 1000 +
	     (uint64_t)total - 1; i++) {
		ttc_tx_pump(l.tx, ttc_now_ns());
		cuptirecv_poll(l.recv, 2);
	}
	cuptirecv_stats(l.recv, &rs);
	cr_expect_eq(rs.malformed, 0, "resumes at a record boundary: %s",
		     rs.last_error);
	cr_expect_gt(l.kept->total_iv, 0);
	cr_expect_eq(l.kept->last_start_ns, 1000 + (uint64_t)total - 1,
		     "the rest of the backlog arrives");
	cr_expect_eq(l.kept->disorder, 0);
	ttc_tx_stats(l.tx, &st);
	cr_expect_leq(l.kept->total_iv + st.lib_dropped, (uint64_t)total);
	cr_log_info("received %llu of %d, %llu cut at the break",
		    (unsigned long long)l.kept->total_iv, total,
		    (unsigned long long)st.lib_dropped);
	link_close(&l);
}

Test(cupti_transport, no_destination_counts_every_record_dropped)
{
	struct ttc_tx_config cfg = { .backlog_max = 1 << 20 };
	struct ttc_tx *tx = ttc_tx_new(&cfg);
	struct ttc_names *names = ttc_names_new();
	struct ttc_tx_stats st;
	CUpti_ActivityMemcpy6 c;

	memset(&c, 0, sizeof(c));
	c.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
	c.start = 1;
	c.end = 2;
	cr_assert(tx);
	for (int i = 0; i < 3; i++)
		cr_expect_eq(ttc_conv_record(names, tx, (CUpti_Activity *)&c),
			     -ENOBUFS);
	cr_expect_eq(ttc_tx_pump(tx, ttc_now_ns()), 0);
	ttc_tx_stats(tx, &st);
	cr_expect_eq(st.lib_dropped, 3);
	ttc_tx_free(tx);
	ttc_names_free(names);
}

Test(cupti_transport, unwritable_record_file_fails_with_message)
{
	struct ttc_tx_config cfg = {
		.file_path = "/nonexistent-dir/records.bin",
		.backlog_max = 1 << 20,
	};

	cr_expect_null(ttc_tx_new(&cfg));
}

Test(cupti_transport, exit_drain_without_collector_returns_at_once)
{
	struct link l;
	uint64_t t0;
	size_t left;

	link_open(&l, 1 << 20);
	cr_assert_eq(send_kernel(&l, "k", 10), 1);
	t0 = ttc_now_ns();
	left = ttc_tx_drain(l.tx, 2000);
	cr_expect_gt(left, 0, "nothing could be sent");
	cr_expect_lt(ttc_now_ns() - t0, 200000000ull,
		     "no waiting for a collector that is not there");
	link_close(&l);
}
