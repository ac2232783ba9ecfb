/*
 * tokentrace/compute.h - the records the injected CUPTI library
 * (libtokentrace_cupti.so) sends to the collector.
 *
 * In: nothing; this header only fixes a byte layout.
 * Out: a byte stream (unix socket or file) of records, each opening with
 *      struct ttc_rec_hdr {type, version, size}. size is the whole record
 *      in bytes, header included, a multiple of 8, at least 8.
 * Assumes: both sides are little-endian (x86-64, aarch64), fields are
 *      naturally aligned so the structs have no hidden padding, and all
 *      times are CLOCK_MONOTONIC nanoseconds (the library registers a
 *      CUPTI timestamp callback that reads that clock).
 *
 * Compatibility: a reader skips record types it does not know (by size);
 * a newer version of a known type may only append fields, so a reader
 * takes the fields it knows from any record at least as large as its
 * version-1 layout and rejects a smaller one.
 *
 * A stream opens with one TTC_REC_STREAM record (magic, wire version,
 * pid, clock id). Kernel names are sent once as TTC_REC_NAME (id > 0, per
 * process) before the first kernel that refers to them. Device numbers in
 * records are CUDA device ordinals of the sending process; TTC_REC_DEVICE
 * ties an ordinal to a UUID. TTC_REC_DROPS carries cumulative counters.
 */
#ifndef TOKENTRACE_COMPUTE_WIRE_H
#define TOKENTRACE_COMPUTE_WIRE_H

#include <stdint.h>

#define TTC_WIRE_MAGIC		0x55435454u	/* "TTCU" little-endian */
#define TTC_WIRE_VERSION	1u
#define TTC_REC_MAX_SIZE	4096u		/* larger: malformed stream */
#define TTC_NAME_MAX		(TTC_REC_MAX_SIZE - 16u)

enum ttc_rec_type {
	TTC_REC_STREAM = 1,
	TTC_REC_KERNEL = 2,
	TTC_REC_COPY = 3,
	TTC_REC_MEMSET = 4,
	TTC_REC_GRAPH = 5,
	TTC_REC_NAME = 6,
	TTC_REC_DEVICE = 7,
	TTC_REC_DROPS = 8,
};

struct ttc_rec_hdr {
	uint16_t type;		/* enum ttc_rec_type */
	uint16_t version;	/* 1 for every type here */
	uint32_t size;		/* whole record, bytes, multiple of 8 */
};

struct ttc_rec_stream {
	struct ttc_rec_hdr hdr;
	uint32_t magic;		/* TTC_WIRE_MAGIC */
	uint32_t wire_version;	/* TTC_WIRE_VERSION */
	uint32_t pid;
	uint32_t clock_id;	/* CLOCK_MONOTONIC (1) */
	uint64_t sent_ns;	/* when the stream was opened */
};

struct ttc_rec_kernel {
	struct ttc_rec_hdr hdr;
	uint64_t start_ns;
	uint64_t end_ns;
	uint32_t device;	/* CUDA device ordinal */
	uint32_t context;
	uint32_t stream;
	uint32_t correlation;
	uint32_t tid;		/* launching thread, 0 if unknown */
	uint32_t name_id;	/* TTC_REC_NAME id, 0 if none */
	int32_t grid[3];
	int32_t block[3];
	uint32_t registers;	/* per thread */
	uint32_t shmem_static;	/* bytes per block */
	uint32_t shmem_dynamic;	/* bytes per block */
	uint32_t graph_id;	/* 0 if not from a graph */
};

struct ttc_rec_copy {
	struct ttc_rec_hdr hdr;
	uint64_t start_ns;
	uint64_t end_ns;
	uint64_t bytes;
	uint32_t device;
	uint32_t context;
	uint32_t stream;
	uint32_t correlation;
	uint32_t tid;
	uint8_t copy_kind;	/* CUpti_ActivityMemcpyKind (1 HtoD, 2 DtoH,
				   8 DtoD, ...) */
	uint8_t src_kind;	/* CUpti_ActivityMemoryKind */
	uint8_t dst_kind;
	uint8_t flags;
};

struct ttc_rec_memset {
	struct ttc_rec_hdr hdr;
	uint64_t start_ns;
	uint64_t end_ns;
	uint64_t bytes;
	uint32_t device;
	uint32_t context;
	uint32_t stream;
	uint32_t correlation;
	uint32_t tid;
	uint32_t value;
};

struct ttc_rec_graph {
	struct ttc_rec_hdr hdr;
	uint64_t start_ns;
	uint64_t end_ns;
	uint32_t device;
	uint32_t context;
	uint32_t stream;
	uint32_t correlation;
	uint32_t tid;
	uint32_t graph_id;
};

/* Followed by len bytes of name and a NUL, padded with NULs to 8. */
struct ttc_rec_name {
	struct ttc_rec_hdr hdr;
	uint32_t name_id;
	uint32_t len;		/* bytes of name, without the NUL */
};

struct ttc_rec_device {
	struct ttc_rec_hdr hdr;
	uint32_t ordinal;
	uint32_t sm_count;
	uint64_t memory_bytes;
	uint32_t cc_major;
	uint32_t cc_minor;
	uint8_t uuid[16];
	char name[64];		/* NUL-terminated */
};

/* Cumulative since the library started. */
struct ttc_rec_drops {
	struct ttc_rec_hdr hdr;
	uint64_t cupti_dropped;		/* cuptiActivityGetNumDroppedRecords */
	uint64_t lib_dropped;		/* records the library could not keep */
	uint64_t zero_timestamps;	/* start or end 0: counted, not sent */
	uint64_t unknown_records;	/* CUPTI kinds the library skips */
};

#endif
