/*
 * transport.c - get wire records out of the server process without ever
 * making one of its threads wait.
 *
 * In: whole wire records from the buffer-completed path (ttc_tx_append,
 *     any thread), counters of what was lost, and periodic ttc_tx_pump
 *     calls from the library's own thread.
 * Out: the record stream on a unix stream socket (TOKENTRACE_CUPTI_SOCKET)
 *     or in a file (TOKENTRACE_CUPTI_FILE, mode 0600). Every connection
 *     opens with a stream record, a drops record and a replay of all
 *     name and device records so far, so a collector that (re)connects
 *     late can resolve every id in what follows.
 * Assumes: only the library thread pumps; appends are short critical
 *     sections (a memcpy) under one mutex, never any I/O.
 *
 * The backlog is a list of chunks (whole records, never split) bounded by
 * backlog_max bytes; an append that does not fit is dropped and counted.
 * The pump takes the head chunk out of the list and sends it with
 * non-blocking send(); if the connection breaks in the middle of a chunk
 * the record that was cut is counted as dropped and sending resumes at the
 * next record boundary on the next connection. Connection attempts are
 * spaced by reconnect_ns. Counters are cumulative and sent as a drops
 * record whenever they move.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ttc.h"

#define TTC_CHUNK_SIZE	(256u << 10)
#define TTC_REPLAY_MAX	(8u << 20)
#define TTC_NCOUNTERS	4

struct chunk {
	struct chunk *next;
	size_t len;
	size_t cap;
	unsigned nrec;
	uint8_t data[];
};

struct ttc_tx {
	pthread_mutex_t lock;
	/* under lock */
	struct chunk *head, *tail;
	size_t queued_bytes;		/* list + chunk in flight */
	uint8_t *replay;
	size_t replay_len, replay_cap;
	/* library thread only */
	struct chunk *cur;
	size_t cur_off;
	uint8_t *hello;
	size_t hello_len, hello_off;
	int fd;
	int is_file;
	int disabled;
	char *socket_path;
	uint64_t next_try_ns;
	uint64_t reconnect_ns;
	size_t backlog_max;
	uint32_t pid;
	uint64_t sent_cnt[TTC_NCOUNTERS];
	/* any thread */
	_Atomic uint64_t cnt[TTC_NCOUNTERS];
	_Atomic uint64_t records_sent, bytes_sent, connects;
};

uint64_t ttc_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t counter(struct ttc_tx *tx, int i)
{
	return atomic_load_explicit(&tx->cnt[i], memory_order_relaxed);
}

void ttc_tx_count(struct ttc_tx *tx, enum ttc_counter which, uint64_t n)
{
	atomic_fetch_add_explicit(&tx->cnt[which], n, memory_order_relaxed);
}

/* ---- the queue ----------------------------------------------------------- */

static int enqueue_locked(struct ttc_tx *tx, const void *data, size_t len,
			  unsigned nrec)
{
	struct chunk *t = tx->tail;

	if (!t || t->cap - t->len < len) {
		size_t cap = len > TTC_CHUNK_SIZE ? len : TTC_CHUNK_SIZE;

		t = malloc(sizeof(*t) + cap);
		if (!t)
			return -ENOMEM;
		*t = (struct chunk){ .cap = cap };
		if (tx->tail)
			tx->tail->next = t;
		else
			tx->head = t;
		tx->tail = t;
	}
	memcpy(t->data + t->len, data, len);
	t->len += len;
	t->nrec += nrec;
	tx->queued_bytes += len;
	return 0;
}

static void replay_locked(struct ttc_tx *tx, const void *data, size_t len)
{
	if (tx->replay_len + len > tx->replay_cap) {
		size_t cap = tx->replay_cap ? tx->replay_cap * 2 : 64u << 10;

		while (cap < tx->replay_len + len)
			cap *= 2;
		if (cap > TTC_REPLAY_MAX)
			return;
		uint8_t *r = realloc(tx->replay, cap);

		if (!r)
			return;
		tx->replay = r;
		tx->replay_cap = cap;
	}
	memcpy(tx->replay + tx->replay_len, data, len);
	tx->replay_len += len;
}

int ttc_tx_append(struct ttc_tx *tx, const void *data, size_t len,
		  unsigned nrec, size_t sticky_len)
{
	int err = -ENOBUFS;

	pthread_mutex_lock(&tx->lock);
	if (!tx->disabled && tx->queued_bytes + len <= tx->backlog_max)
		err = enqueue_locked(tx, data, len, nrec) ? -ENOBUFS : 0;
	if (!err && sticky_len)
		replay_locked(tx, data, sticky_len);
	pthread_mutex_unlock(&tx->lock);
	if (err)
		ttc_tx_count(tx, TTC_CNT_LIB_DROPPED, nrec);
	return err;
}

static struct chunk *take_head(struct ttc_tx *tx)
{
	pthread_mutex_lock(&tx->lock);
	struct chunk *c = tx->head;

	if (c) {
		tx->head = c->next;
		if (!tx->head)
			tx->tail = NULL;
		c->next = NULL;
	}
	pthread_mutex_unlock(&tx->lock);
	return c;
}

static void chunk_done(struct ttc_tx *tx)
{
	pthread_mutex_lock(&tx->lock);
	tx->queued_bytes -= tx->cur->len;
	pthread_mutex_unlock(&tx->lock);
	atomic_fetch_add(&tx->records_sent, tx->cur->nrec);
	free(tx->cur);
	tx->cur = NULL;
	tx->cur_off = 0;
}

/* ---- records the transport writes itself -------------------------------- */

static struct ttc_rec_drops drops_record(struct ttc_tx *tx)
{
	struct ttc_rec_drops d = {
		.hdr = { TTC_REC_DROPS, 1, sizeof(d) },
	};

	for (int i = 0; i < TTC_NCOUNTERS; i++)
		tx->sent_cnt[i] = counter(tx, i);
	d.cupti_dropped = tx->sent_cnt[TTC_CNT_CUPTI_DROPPED];
	d.lib_dropped = tx->sent_cnt[TTC_CNT_LIB_DROPPED];
	d.zero_timestamps = tx->sent_cnt[TTC_CNT_ZERO_TS];
	d.unknown_records = tx->sent_cnt[TTC_CNT_UNKNOWN];
	return d;
}

/*
 * Only while connected (a new connection's hello carries the counters)
 * and within the bound; if the backlog is full the counters go out with
 * a later pump.
 */
static void queue_drops_if_moved(struct ttc_tx *tx)
{
	int moved = 0;

	for (int i = 0; i < TTC_NCOUNTERS; i++)
		moved |= counter(tx, i) != tx->sent_cnt[i];
	if (!moved || tx->fd < 0)
		return;
	pthread_mutex_lock(&tx->lock);
	if (tx->queued_bytes + sizeof(struct ttc_rec_drops) <= tx->backlog_max) {
		struct ttc_rec_drops d = drops_record(tx);

		enqueue_locked(tx, &d, sizeof(d), 1);
	}
	pthread_mutex_unlock(&tx->lock);
}

/* Stream record, drops record, then (sockets) the name/device replay. */
static int build_hello(struct ttc_tx *tx, int with_replay)
{
	struct ttc_rec_stream s = {
		.hdr = { TTC_REC_STREAM, 1, sizeof(s) },
		.magic = TTC_WIRE_MAGIC,
		.wire_version = TTC_WIRE_VERSION,
		.pid = tx->pid,
		.clock_id = CLOCK_MONOTONIC,
		.sent_ns = ttc_now_ns(),
	};
	struct ttc_rec_drops d = drops_record(tx);

	pthread_mutex_lock(&tx->lock);
	size_t rl = with_replay ? tx->replay_len : 0;

	free(tx->hello);
	tx->hello = malloc(sizeof(s) + sizeof(d) + rl);
	if (tx->hello) {
		memcpy(tx->hello, &s, sizeof(s));
		memcpy(tx->hello + sizeof(s), &d, sizeof(d));
		if (rl)
			memcpy(tx->hello + sizeof(s) + sizeof(d), tx->replay, rl);
	}
	pthread_mutex_unlock(&tx->lock);
	if (!tx->hello)
		return -ENOMEM;
	tx->hello_len = sizeof(s) + sizeof(d) + rl;
	tx->hello_off = 0;
	return 0;
}

/* ---- the connection ------------------------------------------------------ */

static int try_connect(struct ttc_tx *tx)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd;

	strncpy(a.sun_path, tx->socket_path, sizeof(a.sun_path) - 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (build_hello(tx, 1)) {
		close(fd);
		return -ENOMEM;
	}
	tx->fd = fd;
	atomic_fetch_add(&tx->connects, 1);
	return 0;
}

/* Resume the chunk in flight at the record after the one that was cut. */
static void skip_cut_record(struct ttc_tx *tx)
{
	size_t r = 0;

	if (!tx->cur || !tx->cur_off)
		return;
	while (r < tx->cur_off && r < tx->cur->len)
		r += ((const struct ttc_rec_hdr *)(tx->cur->data + r))->size;
	if (r > tx->cur_off) {
		ttc_tx_count(tx, TTC_CNT_LIB_DROPPED, 1);
		tx->cur->nrec = tx->cur->nrec ? tx->cur->nrec - 1 : 0;
	}
	tx->cur_off = r;
}

static void disconnect(struct ttc_tx *tx, uint64_t now_ns)
{
	close(tx->fd);
	tx->fd = -1;
	tx->hello_len = tx->hello_off = 0;
	skip_cut_record(tx);
	tx->next_try_ns = now_ns + tx->reconnect_ns;
}

/* 1 all sent, 0 would block, -1 connection gone. */
static int send_bytes(struct ttc_tx *tx, const uint8_t *p, size_t len,
		      size_t *off)
{
	while (*off < len) {
		ssize_t n = tx->is_file ?
			write(tx->fd, p + *off, len - *off) :
			send(tx->fd, p + *off, len - *off,
			     MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -1;
		*off += (size_t)n;
		atomic_fetch_add(&tx->bytes_sent, (uint64_t)n);
	}
	return 1;
}

static int send_all(struct ttc_tx *tx)
{
	int r = 1;

	if (tx->hello_off < tx->hello_len)
		r = send_bytes(tx, tx->hello, tx->hello_len, &tx->hello_off);
	while (r == 1) {
		if (!tx->cur)
			tx->cur = take_head(tx);
		if (!tx->cur)
			break;
		r = send_bytes(tx, tx->cur->data, tx->cur->len, &tx->cur_off);
		if (r == 1)
			chunk_done(tx);
	}
	return r;
}

static size_t queued(struct ttc_tx *tx)
{
	pthread_mutex_lock(&tx->lock);
	size_t q = tx->queued_bytes;

	pthread_mutex_unlock(&tx->lock);
	return q + (tx->hello_len - tx->hello_off);
}

size_t ttc_tx_pump(struct ttc_tx *tx, uint64_t now_ns)
{
	if (tx->disabled)
		return 0;
	if (tx->fd < 0 && !tx->is_file && now_ns >= tx->next_try_ns &&
	    try_connect(tx))
		tx->next_try_ns = now_ns + tx->reconnect_ns;
	queue_drops_if_moved(tx);
	if (tx->fd >= 0 && send_all(tx) < 0) {
		if (tx->is_file) {
			fprintf(stderr, "libtokentrace_cupti: writing the "
				"record file failed (%s); records are dropped "
				"from now on\n", strerror(errno));
			tx->disabled = 1;
			return 0;
		}
		disconnect(tx, now_ns);
	}
	return queued(tx);
}

/* With no collector after one connection attempt, gives up at once. */
size_t ttc_tx_drain(struct ttc_tx *tx, int timeout_ms)
{
	uint64_t end = ttc_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	size_t left;

	tx->next_try_ns = 0;
	while ((left = ttc_tx_pump(tx, ttc_now_ns())) && tx->fd >= 0 &&
	       ttc_now_ns() < end) {
		struct pollfd p = { .fd = tx->fd, .events = POLLOUT };

		poll(&p, tx->fd >= 0 ? 1 : 0, 10);
	}
	return left;
}

int ttc_tx_fd(struct ttc_tx *tx)
{
	return tx->is_file ? -1 : tx->fd;
}

void ttc_tx_stats(struct ttc_tx *tx, struct ttc_tx_stats *st)
{
	*st = (struct ttc_tx_stats){
		.cupti_dropped = counter(tx, TTC_CNT_CUPTI_DROPPED),
		.lib_dropped = counter(tx, TTC_CNT_LIB_DROPPED),
		.zero_timestamps = counter(tx, TTC_CNT_ZERO_TS),
		.unknown_records = counter(tx, TTC_CNT_UNKNOWN),
		.records_sent = atomic_load(&tx->records_sent),
		.bytes_sent = atomic_load(&tx->bytes_sent),
		.connects = atomic_load(&tx->connects),
		.connected = tx->fd >= 0,
	};
	pthread_mutex_lock(&tx->lock);
	st->backlog_bytes = tx->queued_bytes;
	pthread_mutex_unlock(&tx->lock);
}

/* ---- life ---------------------------------------------------------------- */

static int open_file(struct ttc_tx *tx, const char *path)
{
	tx->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (tx->fd < 0) {
		fprintf(stderr, "libtokentrace_cupti: cannot create record "
			"file %s: %s; check TOKENTRACE_CUPTI_FILE\n", path,
			strerror(errno));
		return -1;
	}
	tx->is_file = 1;
	return build_hello(tx, 0);
}

struct ttc_tx *ttc_tx_new(const struct ttc_tx_config *cfg)
{
	struct ttc_tx *tx = calloc(1, sizeof(*tx));

	if (!tx)
		return NULL;
	pthread_mutex_init(&tx->lock, NULL);
	tx->fd = -1;
	tx->pid = cfg->pid;
	tx->backlog_max = cfg->backlog_max;
	tx->reconnect_ns = cfg->reconnect_ns;
	if (cfg->file_path && *cfg->file_path) {
		if (open_file(tx, cfg->file_path)) {
			ttc_tx_free(tx);
			return NULL;
		}
	} else if (cfg->socket_path && *cfg->socket_path) {
		tx->socket_path = strdup(cfg->socket_path);
		if (!tx->socket_path) {
			ttc_tx_free(tx);
			return NULL;
		}
	} else {
		tx->disabled = 1;
	}
	return tx;
}

void ttc_tx_free(struct ttc_tx *tx)
{
	if (!tx)
		return;
	if (tx->fd >= 0)
		close(tx->fd);
	while (tx->head) {
		struct chunk *c = tx->head;

		tx->head = c->next;
		free(c);
	}
	free(tx->cur);
	free(tx->hello);
	free(tx->replay);
	free(tx->socket_path);
	pthread_mutex_destroy(&tx->lock);
	free(tx);
}
