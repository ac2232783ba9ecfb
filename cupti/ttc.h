/*
 * ttc.h - the parts of libtokentrace_cupti.so that need no GPU: name
 * interning, the correlation -> launching thread table, conversion of
 * CUPTI activity records into wire records (tokentrace/compute.h), and
 * the transport (bounded backlog, non-blocking unix socket, or a file).
 *
 * In: CUPTI activity records (CUpti_Activity *) as CUPTI hands them out,
 *     launch notes (correlation id, thread id) from API callbacks.
 * Out: wire records queued on a struct ttc_tx and written to a collector.
 * Assumes: inject.c serialises calls to ttc_conv_record (one converter
 *     at a time); ttc_tx_append and ttc_corr_* may be called from any
 *     thread; ttc_tx_pump from one thread (the library thread).
 */
#ifndef TTC_H
#define TTC_H

#include <stddef.h>
#include <stdint.h>
#include <cupti.h>

#include <tokentrace/compute.h>

/* ---- name interning (names.c) ------------------------------------------ */

struct ttc_names;

struct ttc_names *ttc_names_new(void);
void ttc_names_free(struct ttc_names *names);
/* Id (from 1) of name, adding it if new; 0 if the table is full or out
 * of memory. *sent says whether its name record already went out. */
uint32_t ttc_names_intern(struct ttc_names *names, const char *name, int *sent);
void ttc_names_mark_sent(struct ttc_names *names, uint32_t id);
uint32_t ttc_names_count(const struct ttc_names *names);

/* ---- correlation id -> launching thread (corr.c) ------------------------ */

void ttc_corr_note(uint32_t correlation, uint32_t tid);
uint32_t ttc_corr_tid(uint32_t correlation);	/* 0 if unknown */
/* Whether the API callback named name launches GPU work we record. */
int ttc_corr_api_wanted(const char *name);

/* ---- transport (transport.c) ------------------------------------------- */

struct ttc_tx_config {
	const char *socket_path;	/* collector's unix socket, or NULL */
	const char *file_path;		/* or write records to this file */
	size_t backlog_max;		/* bytes kept while nobody reads */
	uint64_t reconnect_ns;		/* between connection attempts */
	uint32_t pid;
};

struct ttc_tx_stats {
	uint64_t cupti_dropped;
	uint64_t lib_dropped;
	uint64_t zero_timestamps;
	uint64_t unknown_records;
	uint64_t records_sent;		/* appended and fully written */
	uint64_t bytes_sent;
	uint64_t connects;
	size_t backlog_bytes;
	int connected;
};

enum ttc_counter {
	TTC_CNT_CUPTI_DROPPED,
	TTC_CNT_LIB_DROPPED,
	TTC_CNT_ZERO_TS,
	TTC_CNT_UNKNOWN,
};

struct ttc_tx;

/* NULL with a message on stderr if the file cannot be opened or memory
 * is short. With neither path set, every record is counted as dropped. */
struct ttc_tx *ttc_tx_new(const struct ttc_tx_config *cfg);
void ttc_tx_free(struct ttc_tx *tx);
/* Queue len bytes holding nrec whole records; the first sticky_len bytes
 * (name and device records) are also replayed to every new connection.
 * 0, or -ENOBUFS when the backlog is full (the records are counted as
 * dropped). Never blocks on I/O. */
int ttc_tx_append(struct ttc_tx *tx, const void *data, size_t len,
		  unsigned nrec, size_t sticky_len);
void ttc_tx_count(struct ttc_tx *tx, enum ttc_counter which, uint64_t n);
/* Connect if due, send what the socket takes now, queue a drops record if
 * the counters moved. Returns bytes still queued. Never blocks. */
size_t ttc_tx_pump(struct ttc_tx *tx, uint64_t now_ns);
/* Pump until empty or timeout_ms passed, waiting for the socket; stops
 * early when no collector takes a connection. Returns bytes left. */
size_t ttc_tx_drain(struct ttc_tx *tx, int timeout_ms);
int ttc_tx_fd(struct ttc_tx *tx);	/* -1 if not connected */
void ttc_tx_stats(struct ttc_tx *tx, struct ttc_tx_stats *st);

uint64_t ttc_now_ns(void);	/* CLOCK_MONOTONIC */

/* ---- conversion (convert.c) -------------------------------------------- */

/* Convert one CUPTI record and queue the wire records it gives (a name
 * record first when its kernel name is new). Records with start or end 0
 * are counted, as are kinds it does not handle. 1 if queued, 0 if
 * counted or skipped, -ENOBUFS if dropped by a full backlog. */
int ttc_conv_record(struct ttc_names *names, struct ttc_tx *tx,
		    const CUpti_Activity *rec);

#endif
