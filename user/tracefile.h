/*
 * tracefile.h - tokentrace's trace file: record once, report anywhere.
 *
 * In:  (writer) host facts and the collector's records as they arrive;
 *      (reader) a file path, and handlers for each record type.
 * Out: (writer) an append-only file, mode 0600; (reader) the records, the
 *      header, and counts of what was valid and what was skipped.
 * Assumes: one thread per writer; reading needs no root, BTF or GPU.
 *
 * Format, version 1. Every integer is little-endian; strings are a uint16
 * length then that many bytes (no NUL).
 *
 *   header    "TOKTRACE" (8 bytes), uint32 format version, uint32 header
 *             size (bytes, from the file's start, the CRC included),
 *             uint32 clock id (1 = CLOCK_MONOTONIC), uint32 flags (0),
 *             string boot id (/proc/sys/kernel/random/boot_id),
 *             uint64 wall-clock ns (CLOCK_REALTIME) at start, uint64
 *             CLOCK_MONOTONIC ns at that moment, then the host facts of
 *             struct tt_hostinfo in its order (strings, uint32 cpus and
 *             numa_nodes), then uint32 CRC32C of all the bytes before it.
 *             A reader skips header bytes it does not know (header size).
 *   blocks    uint32 magic 0x4B425454 ("TTBK"), uint32 flags (bit 0: zstd
 *             compressed), uint32 uncompressed length, uint32 stored length,
 *             uint32 records, uint32 CRC32C of the 20 header bytes before it
 *             followed by the stored bytes; then the stored bytes. Lengths
 *             are at most TRACEFILE_BLOCK_MAX.
 *   records   (a block's payload, uncompressed) uint16 type, uint16
 *             version, uint32 size of the body, then the body. Types:
 *     1 request   u32 pid, u64 conn_id, strings id model tenant api path,
 *                 u8 stream, i32 http_status, i64 max_tokens, u64
 *                 arrival_ns first_token_ns end_ns, u32 token_events,
 *                 u32 token_ns_len, i64 prompt_tokens completion_tokens,
 *                 u32 tokens_source end flags, f64 ttft_ms itl_p50_ms
 *                 itl_p99_ms itl_max_ms, u64 bytes_in bytes_out, then
 *                 token_ns_len times as zigzag varint deltas, the first
 *                 from arrival_ns; from record version 2, i64
 *                 cached_tokens, u32 cached_source prompt_bytes
 *                 prefix_bytes after them. Never any prompt or
 *                 completion text.
 *     2 device    u32 id kind pid ordinal, strings name uuid, u32
 *                 sm_count, u64 memory_bytes
 *     3 interval  u64 start_ns end_ns, u32 device pid tid stream name_id
 *                 correlation, u64 bytes, u8 kind copy_kind, u16 reserved
 *     4 name      u32 pid name_id, string name
 *     5 losses    u64 cpu_events sock_events sock_bytes cupti_records
 *                 (running totals: the last one counts)
 *     6 window    u64 start_ns end_ns, u8 closed (0: written while
 *                 recording, end is the time of writing; the last counts)
 *     7 compute   string source ("cpu", "cupti", "auto"), u32 max_batch
 *     8 hooks     string kinds of socket hook in use ("libc", "syscalls",
 *                 "libc+syscalls"; the last counts)
 *   Unknown types are skipped by size; a known type with a newer version
 *   is read for the fields above and the rest skipped.
 *
 * Blocks are written when the buffer reaches TRACEFILE_BLOCK_TARGET bytes
 * or tracefile_tick finds a second has passed, so a trace cut short by a
 * crash or kill -9 loses at most its last second. The reader checks every
 * size against hard limits and every block's checksum; a bad block is
 * reported with its byte offset and skipped, and reading resumes at the
 * next block magic.
 */
#ifndef TT_TRACEFILE_H
#define TT_TRACEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "collect.h"

#define TRACEFILE_MAGIC		"TOKTRACE"
#define TRACEFILE_VERSION	1
#define TRACEFILE_BLOCK_MAGIC	0x4B425454u
#define TRACEFILE_BLOCK_HDR	24
#define TRACEFILE_BLOCK_TARGET	(256u * 1024)
#define TRACEFILE_BLOCK_MAX	(64u * 1024 * 1024)
#define TRACEFILE_HEADER_MAX	(64u * 1024)

enum tracefile_rec {
	TRACEFILE_REC_REQUEST = 1,
	TRACEFILE_REC_DEVICE = 2,
	TRACEFILE_REC_INTERVAL = 3,
	TRACEFILE_REC_NAME = 4,
	TRACEFILE_REC_LOSSES = 5,
	TRACEFILE_REC_WINDOW = 6,
	TRACEFILE_REC_COMPUTE = 7,
	TRACEFILE_REC_HOOKS = 8,
};

struct tracefile_header {
	uint32_t version, header_size, clock_id;
	char boot_id[40];
	uint64_t wall_ns, mono_ns;	/* the same moment on both clocks */
	struct tt_hostinfo host;
};

struct tracefile_writer;

/*
 * Create path (O_EXCL unless overwrite; mode 0600) and write its header.
 * zstd_level 0 stores blocks uncompressed; 1-3 compresses a block when
 * that saves space. 0 or a negative errno, with a message naming path.
 */
int tracefile_create(const char *path, const struct tt_hostinfo *host,
		     int zstd_level, bool overwrite,
		     struct tracefile_writer **out);

/* The same with as's boot id and clock pair (wall_ns, mono_ns) in the
 * header instead of this host's now: a trace converted from another
 * host's data, or one built by a test. */
int tracefile_create_as(const char *path, const struct tt_hostinfo *host,
			int zstd_level, bool overwrite,
			const struct tracefile_header *as,
			struct tracefile_writer **out);

/* Append one record to the buffer; a full buffer is written as a block.
 * 0 or a negative errno (the first write error, kept). */
int tracefile_put_request(struct tracefile_writer *w,
			  const struct tt_request *q);
int tracefile_put_device(struct tracefile_writer *w,
			 const struct tt_device *d);
int tracefile_put_interval(struct tracefile_writer *w,
			   const struct tt_interval *iv);
int tracefile_put_name(struct tracefile_writer *w, uint32_t pid,
		       uint32_t name_id, const char *name);
int tracefile_put_losses(struct tracefile_writer *w,
			 const struct report_losses *l);
int tracefile_put_window(struct tracefile_writer *w, uint64_t start_ns,
			 uint64_t end_ns, bool closed);
int tracefile_put_compute(struct tracefile_writer *w, const char *source,
			  uint32_t max_batch);
int tracefile_put_hooks(struct tracefile_writer *w, const char *hooks);

/* Write what is buffered as one block. 0 or a negative errno. */
int tracefile_flush(struct tracefile_writer *w);

/* Flush if a second has passed since the last block (now: monotonic ns). */
int tracefile_tick(struct tracefile_writer *w, uint64_t now_ns);

/* Flush, fsync and close; frees w. 0 or the first error of its life. */
int tracefile_close(struct tracefile_writer *w);

/* Bytes written to the file so far, and blocks. */
uint64_t tracefile_bytes(const struct tracefile_writer *w);

/* ---- reading ------------------------------------------------------------- */

/* Called for each valid record; any may be NULL. token_ns of a request is
 * valid only during the call. */
struct tracefile_handlers {
	void (*request)(void *ctx, const struct tt_request *q);
	void (*device)(void *ctx, const struct tt_device *d);
	void (*interval)(void *ctx, const struct tt_interval *iv);
	void (*name)(void *ctx, uint32_t pid, uint32_t name_id,
		     const char *name);
	void (*losses)(void *ctx, const struct report_losses *l);
	void (*window)(void *ctx, uint64_t start_ns, uint64_t end_ns,
		       bool closed);
	void (*compute)(void *ctx, const char *source, uint32_t max_batch);
	void *ctx;
	FILE *log;		/* problems, one line each; NULL: not shown */
	void (*hooks)(void *ctx, const char *hooks);	/* may be NULL */
	/* before each block's records: its byte offset (may be NULL) */
	void (*block)(void *ctx, uint64_t offset);
	/* with noffsets: only the blocks at these offsets (ascending, as
	   the block hook gave them) are read, the rest not even looked at;
	   an offset where no valid block starts is said and counted */
	const uint64_t *offsets;
	size_t noffsets;
};

struct tracefile_stats {
	uint64_t blocks_ok, blocks_skipped;
	uint64_t bytes_skipped;		/* in blocks skipped and between them */
	uint64_t records;		/* valid records read */
	uint64_t records_skipped;	/* in skipped blocks, by their headers */
	uint64_t records_unknown;	/* unknown types, skipped by size */
	uint64_t records_bad;		/* too short for their type */
	bool cut;			/* the file ends inside a block */
};

/*
 * Read path. 0 when the header is valid (bad blocks are skipped, counted
 * in st and reported on h->log); -ENOENT/-EACCES etc. when it cannot be
 * opened, -EBADMSG when the header is missing, cut or corrupt (a message
 * on h->log says which), -ENOMEM.
 */
int tracefile_read(const char *path, const struct tracefile_handlers *h,
		   struct tracefile_header *hdr, struct tracefile_stats *st);

/* Only the header of path: 0, -EBADMSG (said on log, NULL: not said) or
 * an errno of opening it. */
int tracefile_read_header(const char *path, struct tracefile_header *hdr,
			  FILE *log);

/* The same over a buffer in memory (name: used in messages). */
int tracefile_read_mem(const void *buf, size_t len, const char *name,
		       const struct tracefile_handlers *h,
		       struct tracefile_header *hdr,
		       struct tracefile_stats *st);

/*
 * Progress of reading: after each block, fn(ctx, name, bytes done, bytes
 * in all, records read so far), and once at the end with done == total. One hook for the
 * process, set by a command that shows progress (NULL: none).
 */
typedef void (*tracefile_progress_fn)(void *ctx, const char *name,
				      uint64_t done, uint64_t total,
				      uint64_t records);
void tracefile_set_progress(tracefile_progress_fn fn, void *ctx);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (0 to start). */
uint32_t tracefile_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
