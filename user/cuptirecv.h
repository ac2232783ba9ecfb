/*
 * cuptirecv.h - the collector's end of the CUPTI library's record stream.
 *
 * In: record streams (tokentrace/compute.h) from libtokentrace_cupti.so
 *     instances, one per traced process, over a unix socket this module
 *     listens on, or as bytes (a TOKENTRACE_CUPTI_FILE, a fuzz input).
 * Out: struct tt_device, struct tt_interval, kernel names and losses,
 *     delivered to a struct tt_compute_sink (compute.h). GPU device ids
 *     are collector-wide, from 1, one per GPU UUID. Losses are the
 *     cumulative totals of one process (pid), not increments.
 * Assumes: one thread calls into a struct cuptirecv.
 */
#ifndef TT_CUPTIRECV_H
#define TT_CUPTIRECV_H

#include <stddef.h>
#include <stdint.h>

#include "compute.h"

struct cuptirecv;

struct cuptirecv_stats {
	uint64_t connections;		/* accepted so far */
	uint64_t connections_open;
	uint64_t malformed;		/* streams closed as malformed */
	uint64_t records;		/* records decoded */
	uint64_t bytes;
	uint64_t unknown_types;		/* records skipped as unknown */
	uint64_t unknown_devices;	/* intervals on a device never described */
	uint32_t gpus;			/* distinct GPU UUIDs */
	char last_error[200];		/* "" if none */
};

/* Listen at path (a unix socket, mode 0600, a stale socket file there is
 * replaced); path NULL: no listener, for cuptirecv_decode alone. NULL
 * with a message on stderr on failure. */
struct cuptirecv *cuptirecv_open(const char *path,
				 const struct tt_compute_sink *sink);
/* An epoll fd that is readable when cuptirecv_poll has work; -1 without
 * a listener. */
int cuptirecv_fd(struct cuptirecv *r);
/* Accept and read what is ready, waiting up to timeout_ms. Records
 * delivered, or -errno. Never blocks on one connection. */
int cuptirecv_poll(struct cuptirecv *r, int timeout_ms);
/* Decode one whole stream held in memory (a record file). Records
 * delivered, or -EINVAL with the reason in stats.last_error (records
 * before the fault are delivered). */
int cuptirecv_decode(struct cuptirecv *r, const void *buf, size_t len);
void cuptirecv_stats(struct cuptirecv *r, struct cuptirecv_stats *st);
/* Closes connections and the listener, removes the socket file. */
void cuptirecv_close(struct cuptirecv *r);

#endif
