/*
 * test_convert.c - CUPTI activity records, built by hand with the CUDA 13
 * layouts, through the library's conversion and file transport, then
 * back through the collector's decoder: field by field.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

struct rig {
	char *path;
	struct ttc_names *names;
	struct ttc_tx *tx;
	struct kept *kept;
	struct cuptirecv *recv;
};

static void rig_open(struct rig *g)
{
	struct ttc_tx_config cfg = { .backlog_max = 1 << 20, .pid = 4242 };

	memset(g, 0, sizeof(*g));
	g->path = test_path("records");
	cfg.file_path = g->path;
	g->names = ttc_names_new();
	g->tx = ttc_tx_new(&cfg);
	cr_assert(g->names && g->tx, "library parts must open on %s", g->path);
	g->kept = calloc(1, sizeof(*g->kept));
}

/* Writes everything queued, decodes the file; returns decode's result. */
static int rig_decode(struct rig *g)
{
	size_t len;

	cr_assert_eq(ttc_tx_drain(g->tx, 1000), 0, "file drain must finish");
	void *buf = slurp(g->path, &len);
	struct tt_compute_sink sink = kept_sink(g->kept);

	cr_assert(buf, "record file %s must exist", g->path);
	g->recv = cuptirecv_open(NULL, &sink);
	int n = cuptirecv_decode(g->recv, buf, len);

	free(buf);
	return n;
}

static void rig_close(struct rig *g)
{
	cuptirecv_close(g->recv);
	ttc_tx_free(g->tx);
	ttc_names_free(g->names);
	unlink(g->path);
	free(g->path);
	free(g->kept);
}

static CUpti_ActivityKernel10 kernel(const char *name, uint64_t start,
				     uint64_t end, uint32_t corr)
{
	CUpti_ActivityKernel10 k;

	memset(&k, 0, sizeof(k));
	k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
	k.start = start;
	k.end = end;
	k.deviceId = 0;
	k.contextId = 1;
	k.streamId = 7;
	k.correlationId = corr;
	k.gridX = 128, k.gridY = 2, k.gridZ = 1;
	k.blockX = 256, k.blockY = 1, k.blockZ = 1;
	k.registersPerThread = 40;
	k.staticSharedMemory = 1024;
	k.dynamicSharedMemory = 4096;
	k.name = name;
	return k;
}

static CUpti_ActivityDevice5 device(uint32_t ordinal, uint8_t uuid0)
{
	CUpti_ActivityDevice5 d;

	memset(&d, 0, sizeof(d));
	d.kind = CUPTI_ACTIVITY_KIND_DEVICE;
	d.id = ordinal;
	d.numMultiprocessors = 132;
	d.globalMemorySize = 80ull << 30;
	d.computeCapabilityMajor = 9;
	for (int i = 0; i < 16; i++)
		d.uuid.bytes[i] = (char)(uuid0 + i);
	d.name = "NVIDIA H100 80GB HBM3";
	return d;
}

Test(cupti_convert, kernel_fields_survive_to_the_collector)
{
	struct rig g;
	CUpti_ActivityDevice5 d = device(0, 0x10);
	CUpti_ActivityKernel10 k = kernel("gemm_kernel", 1000, 5000, 77);

	rig_open(&g);
	ttc_corr_note(77, 31337);
	cr_assert_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&d), 1);
	cr_assert_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&k), 1);
	cr_assert_gt(rig_decode(&g), 0, "decode: %s", "");
	cr_assert_eq(g.kept->niv, 1);
	struct tt_interval *iv = &g.kept->iv[0];

	cr_expect_eq(iv->start_ns, 1000);
	cr_expect_eq(iv->end_ns, 5000);
	cr_expect_eq(iv->pid, 4242);
	cr_expect_eq(iv->tid, 31337, "launching thread from the callback note");
	cr_expect_eq(iv->stream, 7);
	cr_expect_eq(iv->correlation, 77);
	cr_expect_eq(iv->kind, TT_IV_KERNEL);
	cr_expect_eq(iv->device, 1, "first GPU gets collector id 1");
	cr_expect_neq(iv->name_id, 0);
	cr_assert_eq(g.kept->nnames, 1);
	cr_expect_str_eq(g.kept->names[0].name, "gemm_kernel");
	cr_expect_eq(g.kept->names[0].id, iv->name_id);
	cr_assert_eq(g.kept->ndev, 1);
	cr_expect_str_eq(g.kept->dev[0].name, "NVIDIA H100 80GB HBM3");
	cr_expect_str_eq(g.kept->dev[0].uuid,
			 "10111213-1415-1617-1819-1a1b1c1d1e1f");
	cr_expect_eq(g.kept->dev[0].sm_count, 132);
	cr_expect_eq(g.kept->dev[0].memory_bytes, 80ull << 30);
	cr_expect_eq(g.kept->dev[0].id, 1);
	rig_close(&g);
}

/* The wire record itself, for the fields the sink does not carry. */
Test(cupti_convert, kernel_wire_record_carries_launch_shape)
{
	struct rig g;
	CUpti_ActivityKernel10 k = kernel("k", 10, 20, 5);
	size_t len;

	rig_open(&g);
	cr_assert_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&k), 1);
	ttc_tx_drain(g.tx, 1000);
	uint8_t *buf = slurp(g.path, &len);
	size_t off = sizeof(struct ttc_rec_stream) + sizeof(struct ttc_rec_drops);
	struct ttc_rec_hdr h;

	memcpy(&h, buf + off, sizeof(h));
	cr_assert_eq(h.type, TTC_REC_NAME, "name goes before its kernel");
	off += h.size;
	struct ttc_rec_kernel r;

	cr_assert_geq(len, off + sizeof(r));
	memcpy(&r, buf + off, sizeof(r));
	cr_expect_eq(r.hdr.type, TTC_REC_KERNEL);
	cr_expect_eq(r.hdr.size, sizeof(r));
	cr_expect_eq(r.grid[0], 128);
	cr_expect_eq(r.grid[1], 2);
	cr_expect_eq(r.block[0], 256);
	cr_expect_eq(r.registers, 40);
	cr_expect_eq(r.shmem_static, 1024);
	cr_expect_eq(r.shmem_dynamic, 4096);
	cr_expect_eq(r.context, 1);
	free(buf);
	rig_close(&g);
}

Test(cupti_convert, name_is_sent_once_then_referenced)
{
	struct rig g;
	CUpti_ActivityKernel10 a = kernel("attn_fwd", 100, 200, 1);
	CUpti_ActivityKernel10 b = kernel("attn_fwd", 300, 400, 2);
	CUpti_ActivityKernel10 c = kernel("rms_norm", 500, 600, 3);

	rig_open(&g);
	ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&a);
	ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&b);
	ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&c);
	/* 3 kernels + 2 names + stream + drops */
	cr_assert_eq(rig_decode(&g), 7);
	cr_assert_eq(g.kept->niv, 3);
	cr_expect_eq(g.kept->iv[0].name_id, g.kept->iv[1].name_id);
	cr_expect_neq(g.kept->iv[0].name_id, g.kept->iv[2].name_id);
	cr_assert_eq(g.kept->nnames, 2);
	cr_expect_str_eq(g.kept->names[1].name, "rms_norm");
	rig_close(&g);
}

Test(cupti_convert, copy_and_memset_fields)
{
	struct rig g;
	CUpti_ActivityMemcpy6 c;
	CUpti_ActivityMemset4 m;

	memset(&c, 0, sizeof(c));
	c.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
	c.copyKind = CUPTI_ACTIVITY_MEMCPY_KIND_DTOH;
	c.bytes = 4096;
	c.start = 7000;
	c.end = 7500;
	c.deviceId = 0;
	c.streamId = 3;
	c.correlationId = 90;
	memset(&m, 0, sizeof(m));
	m.kind = CUPTI_ACTIVITY_KIND_MEMSET;
	m.bytes = 1 << 20;
	m.start = 8000;
	m.end = 8100;
	m.streamId = 4;
	m.correlationId = 91;
	rig_open(&g);
	ttc_corr_note(90, 555);
	cr_assert_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&c), 1);
	cr_assert_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&m), 1);
	cr_assert_eq(rig_decode(&g), 4);
	cr_assert_eq(g.kept->niv, 2);
	cr_expect_eq(g.kept->iv[0].kind, TT_IV_MEMCPY);
	cr_expect_eq(g.kept->iv[0].copy_kind, TT_COPY_DTOH);
	cr_expect_eq(g.kept->iv[0].bytes, 4096);
	cr_expect_eq(g.kept->iv[0].start_ns, 7000);
	cr_expect_eq(g.kept->iv[0].end_ns, 7500);
	cr_expect_eq(g.kept->iv[0].stream, 3);
	cr_expect_eq(g.kept->iv[0].tid, 555);
	cr_expect_eq(g.kept->iv[1].kind, TT_IV_MEMSET);
	cr_expect_eq(g.kept->iv[1].bytes, 1 << 20);
	cr_expect_eq(g.kept->iv[1].correlation, 91);
	cr_expect_eq(g.kept->iv[1].tid, 0, "no note for 91: thread unknown");
	rig_close(&g);
}

Test(cupti_convert, graph_launch_is_one_interval)
{
	struct rig g;
	CUpti_ActivityGraphTrace2 t;

	memset(&t, 0, sizeof(t));
	t.kind = CUPTI_ACTIVITY_KIND_GRAPH_TRACE;
	t.start = 1 << 20;
	t.end = 2 << 20;
	t.graphId = 12;
	t.streamId = 9;
	t.correlationId = 1234;
	rig_open(&g);
	cr_assert_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&t), 1);
	cr_assert_eq(rig_decode(&g), 3);
	cr_assert_eq(g.kept->niv, 1);
	cr_expect_eq(g.kept->iv[0].kind, TT_IV_GRAPH);
	cr_expect_eq(g.kept->iv[0].start_ns, 1 << 20);
	cr_expect_eq(g.kept->iv[0].end_ns, 2 << 20);
	cr_expect_eq(g.kept->iv[0].stream, 9);
	rig_close(&g);
}

Test(cupti_convert, zero_timestamps_are_counted_not_sent)
{
	struct rig g;
	CUpti_ActivityKernel10 a = kernel("z", 0, 500, 1);
	CUpti_ActivityKernel10 b = kernel("z", 500, 0, 2);
	CUpti_ActivityKernel10 ok = kernel("z", 500, 600, 3);
	CUpti_Activity other = { .kind = CUPTI_ACTIVITY_KIND_NAME };

	rig_open(&g);
	cr_expect_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&a), 0);
	cr_expect_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&b), 0);
	cr_expect_eq(ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&ok), 1);
	cr_expect_eq(ttc_conv_record(g.names, g.tx, &other), 0);
	cr_assert_gt(rig_decode(&g), 0);
	cr_expect_eq(g.kept->niv, 1);
	cr_expect_eq(g.kept->iv[0].start_ns, 500);
	cr_assert_geq(g.kept->nlosses, 1);
	cr_expect_eq(g.kept->losses.zero_timestamps, 2);
	cr_expect_eq(g.kept->losses.lib_dropped, 0);
	rig_close(&g);
}

Test(cupti_convert, two_processes_on_one_gpu_share_its_id)
{
	struct cuptirecv *r;
	struct kept *k = calloc(1, sizeof(*k));
	struct tt_compute_sink sink = kept_sink(k);
	uint32_t ids[2];

	r = cuptirecv_open(NULL, &sink);
	for (int p = 0; p < 2; p++) {
		struct rig g;
		CUpti_ActivityDevice5 d = device(p, 0x40);	/* same UUID */
		CUpti_ActivityKernel10 kk = kernel("x", 10, 20, 1);
		size_t len;

		kk.deviceId = p;
		rig_open(&g);
		ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&d);
		ttc_conv_record(g.names, g.tx, (CUpti_Activity *)&kk);
		ttc_tx_drain(g.tx, 1000);
		void *buf = slurp(g.path, &len);

		/* Tell the two streams apart by pid. */
		((struct ttc_rec_stream *)buf)->pid = 100 + p;
		cr_assert_gt(cuptirecv_decode(r, buf, len), 0);
		ids[p] = k->iv[k->niv - 1].device;
		free(buf);
		g.recv = NULL;
		rig_close(&g);
	}
	cr_expect_eq(ids[0], ids[1], "one UUID, one collector device id");
	cr_expect_eq(k->ndev, 2, "each process reports its view of the GPU");
	cr_expect_eq(k->dev[1].ordinal, 1);
	cr_expect_eq(k->dev[1].pid, 101);
	struct cuptirecv_stats st;

	cuptirecv_stats(r, &st);
	cr_expect_eq(st.gpus, 1);
	cr_expect_eq(st.unknown_devices, 0);
	cuptirecv_close(r);
	free(k);
}
