/*
 * convert.c - CUPTI activity records to tokentrace wire records.
 *
 * In: one CUpti_Activity at a time, as cuptiActivityGetNextRecord walks a
 *     completed buffer: CUpti_ActivityKernel10 (CONCURRENT_KERNEL),
 *     CUpti_ActivityMemcpy6, CUpti_ActivityMemset4,
 *     CUpti_ActivityGraphTrace2, CUpti_ActivityDevice5 (the CUDA 13
 *     layouts).
 * Out: wire records (tokentrace/compute.h) queued on the transport: a
 *     kernel's name goes out once as a name record just before the first
 *     kernel that uses it; device records are replayed to every collector.
 * Assumes: one caller at a time; timestamps already CLOCK_MONOTONIC (the
 *     timestamp callback), so they are copied as they are.
 *
 * A name record and its kernel are queued in one append, so a full
 * backlog drops both or neither and a name is marked sent only once it is
 * queued: the collector never sees an id it cannot resolve.
 */
#include <errno.h>
#include <string.h>

#include "ttc.h"

#define HDR(t, s) ((struct ttc_rec_hdr){ .type = (t), .version = 1, \
					 .size = (uint32_t)(s) })

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static int queue(struct ttc_tx *tx, const void *rec, size_t len,
		 unsigned nrec, size_t sticky)
{
	int err = ttc_tx_append(tx, rec, len, nrec, sticky);

	return err ? err : 1;
}

static int zero_ts(struct ttc_tx *tx, uint64_t start, uint64_t end)
{
	if (start && end)
		return 0;
	ttc_tx_count(tx, TTC_CNT_ZERO_TS, 1);
	return 1;
}

/* Builds the name record for id at buf; returns its size. */
static size_t name_record(uint8_t *buf, uint32_t id, const char *name)
{
	size_t len = strnlen(name, TTC_NAME_MAX - 1);
	size_t size = pad8(sizeof(struct ttc_rec_name) + len + 1);
	struct ttc_rec_name *r = (struct ttc_rec_name *)buf;

	memset(buf, 0, size);
	r->hdr = HDR(TTC_REC_NAME, size);
	r->name_id = id;
	r->len = (uint32_t)len;
	memcpy(buf + sizeof(*r), name, len);
	return size;
}

static int conv_kernel(struct ttc_names *names, struct ttc_tx *tx,
		       const CUpti_ActivityKernel10 *k)
{
	_Alignas(8) uint8_t buf[TTC_REC_MAX_SIZE + sizeof(struct ttc_rec_kernel)];
	struct ttc_rec_kernel r = { .hdr = HDR(TTC_REC_KERNEL, sizeof(r)) };
	size_t off = 0;
	int sent = 1;

	if (zero_ts(tx, k->start, k->end))
		return 0;
	if (k->name)
		r.name_id = ttc_names_intern(names, k->name, &sent);
	if (r.name_id && !sent)
		off = name_record(buf, r.name_id, k->name);
	r.start_ns = k->start;
	r.end_ns = k->end;
	r.device = k->deviceId;
	r.context = k->contextId;
	r.stream = k->streamId;
	r.correlation = k->correlationId;
	r.tid = ttc_corr_tid(k->correlationId);
	r.grid[0] = k->gridX, r.grid[1] = k->gridY, r.grid[2] = k->gridZ;
	r.block[0] = k->blockX, r.block[1] = k->blockY, r.block[2] = k->blockZ;
	r.registers = k->registersPerThread;
	r.shmem_static = (uint32_t)k->staticSharedMemory;
	r.shmem_dynamic = (uint32_t)k->dynamicSharedMemory;
	r.graph_id = k->graphId;
	memcpy(buf + off, &r, sizeof(r));
	int ret = queue(tx, buf, off + sizeof(r), off ? 2 : 1, off);

	if (ret == 1 && off)
		ttc_names_mark_sent(names, r.name_id);
	return ret;
}

static int conv_copy(struct ttc_tx *tx, const CUpti_ActivityMemcpy6 *c)
{
	struct ttc_rec_copy r = { .hdr = HDR(TTC_REC_COPY, sizeof(r)) };

	if (zero_ts(tx, c->start, c->end))
		return 0;
	r.start_ns = c->start;
	r.end_ns = c->end;
	r.bytes = c->bytes;
	r.device = c->deviceId;
	r.context = c->contextId;
	r.stream = c->streamId;
	r.correlation = c->correlationId;
	r.tid = ttc_corr_tid(c->correlationId);
	if (!r.tid)
		r.tid = ttc_corr_tid(c->runtimeCorrelationId);
	r.copy_kind = c->copyKind;
	r.src_kind = c->srcKind;
	r.dst_kind = c->dstKind;
	r.flags = c->flags;
	return queue(tx, &r, sizeof(r), 1, 0);
}

static int conv_memset(struct ttc_tx *tx, const CUpti_ActivityMemset4 *m)
{
	struct ttc_rec_memset r = { .hdr = HDR(TTC_REC_MEMSET, sizeof(r)) };

	if (zero_ts(tx, m->start, m->end))
		return 0;
	r.start_ns = m->start;
	r.end_ns = m->end;
	r.bytes = m->bytes;
	r.device = m->deviceId;
	r.context = m->contextId;
	r.stream = m->streamId;
	r.correlation = m->correlationId;
	r.tid = ttc_corr_tid(m->correlationId);
	r.value = m->value;
	return queue(tx, &r, sizeof(r), 1, 0);
}

static int conv_graph(struct ttc_tx *tx, const CUpti_ActivityGraphTrace2 *g)
{
	struct ttc_rec_graph r = { .hdr = HDR(TTC_REC_GRAPH, sizeof(r)) };

	if (zero_ts(tx, g->start, g->end))
		return 0;
	r.start_ns = g->start;
	r.end_ns = g->end;
	r.device = g->deviceId;
	r.context = g->contextId;
	r.stream = g->streamId;
	r.correlation = g->correlationId;
	r.tid = ttc_corr_tid(g->correlationId);
	r.graph_id = g->graphId;
	return queue(tx, &r, sizeof(r), 1, 0);
}

static int conv_device(struct ttc_tx *tx, const CUpti_ActivityDevice5 *d)
{
	struct ttc_rec_device r = { .hdr = HDR(TTC_REC_DEVICE, sizeof(r)) };

	r.ordinal = d->id;
	r.sm_count = d->numMultiprocessors;
	r.memory_bytes = d->globalMemorySize;
	r.cc_major = d->computeCapabilityMajor;
	r.cc_minor = d->computeCapabilityMinor;
	memcpy(r.uuid, d->uuid.bytes, sizeof(r.uuid));
	if (d->name)
		strncpy(r.name, d->name, sizeof(r.name) - 1);
	return queue(tx, &r, sizeof(r), 1, sizeof(r));
}

int ttc_conv_record(struct ttc_names *names, struct ttc_tx *tx,
		    const CUpti_Activity *rec)
{
	switch (rec->kind) {
	case CUPTI_ACTIVITY_KIND_KERNEL:
	case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
		return conv_kernel(names, tx,
				   (const CUpti_ActivityKernel10 *)rec);
	case CUPTI_ACTIVITY_KIND_MEMCPY:
		return conv_copy(tx, (const CUpti_ActivityMemcpy6 *)rec);
	case CUPTI_ACTIVITY_KIND_MEMSET:
		return conv_memset(tx, (const CUpti_ActivityMemset4 *)rec);
	case CUPTI_ACTIVITY_KIND_GRAPH_TRACE:
		return conv_graph(tx, (const CUpti_ActivityGraphTrace2 *)rec);
	case CUPTI_ACTIVITY_KIND_DEVICE:
		return conv_device(tx, (const CUpti_ActivityDevice5 *)rec);
	default:
		ttc_tx_count(tx, TTC_CNT_UNKNOWN, 1);
		return 0;
	}
}
