/*
 * tracefile.c - write and read tokentrace's trace files (format in
 * tracefile.h).
 *
 * In:  records from the collector (writer); a file or buffer (reader).
 * Out: an append-only file of checksummed blocks; records handed to the
 *      reader's handlers with counts of what was valid.
 * Assumes: little-endian fields are built byte by byte, so the format is
 *      the same on any host; nothing read from a file is trusted: every
 *      length is checked against what is left and against hard limits.
 *
 * The writer encodes records into a growing buffer and turns the buffer
 * into one block (compressed with zstd when that pays) with a single
 * write(2) on an O_APPEND descriptor: a crash leaves whole blocks and at
 * most one partial block at the end. The reader maps the file, checks the
 * header, then walks blocks: a block whose magic, lengths or checksum do
 * not hold is reported with its offset and skipped by scanning forward
 * for the next block magic.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "tracefile.h"

#define TF_REQ_VERSION	2	/* 2: requests carry their cached tokens */
#define TF_STR_MAX	65535u
#define TF_FLAG_ZSTD	1u

struct buf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

struct tracefile_writer {
	int fd;
	char path[256];
	int level;
	struct buf b;
	uint32_t nrec;
	uint64_t last_flush_ns, bytes;
	int err;
};

/* ---- CRC32C -------------------------------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t tracefile_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!crc_table[1])
		crc_init();
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- encoding ------------------------------------------------------------ */

static uint64_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static bool buf_room(struct buf *b, size_t n)
{
	if (b->oom)
		return false;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		void *p;

		while (cap < b->len + n)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return false;
		}
		b->p = p;
		b->cap = cap;
	}
	return true;
}

static void put_bytes(struct buf *b, const void *p, size_t n)
{
	if (buf_room(b, n)) {
		memcpy(b->p + b->len, p, n);
		b->len += n;
	}
}

static void put_le(struct buf *b, uint64_t v, int n)
{
	uint8_t x[8];

	for (int i = 0; i < n; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	put_bytes(b, x, n);
}

static void put8(struct buf *b, uint8_t v) { put_le(b, v, 1); }
static void put16(struct buf *b, uint16_t v) { put_le(b, v, 2); }
static void put32(struct buf *b, uint32_t v) { put_le(b, v, 4); }
static void put64(struct buf *b, uint64_t v) { put_le(b, v, 8); }

static void put_f64(struct buf *b, double d)
{
	uint64_t v;

	memcpy(&v, &d, 8);
	put64(b, v);
}

static void put_str(struct buf *b, const char *s)
{
	size_t n = s ? strnlen(s, TF_STR_MAX) : 0;

	put16(b, (uint16_t)n);
	put_bytes(b, s, n);
}

static void put_varint(struct buf *b, uint64_t v)
{
	uint8_t x[10];
	int n = 0;

	while (v >= 0x80) {
		x[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	x[n++] = (uint8_t)v;
	put_bytes(b, x, n);
}

static void put_hostinfo(struct buf *b, const struct tt_hostinfo *h)
{
	put_str(b, h->hostname);
	put_str(b, h->kernel);
	put_str(b, h->cmdline);
	put_str(b, h->cpu_model);
	put32(b, h->cpus);
	put_str(b, h->governor);
	put32(b, h->numa_nodes);
	put_str(b, h->thp);
	put_str(b, h->gpu_model);
	put_str(b, h->gpu_driver);
	put_str(b, h->gpu_clocks);
}

/* Open a record; returns where its size goes, patched by rec_end. */
static size_t rec_begin(struct tracefile_writer *w, uint16_t type)
{
	size_t at;

	put16(&w->b, type);
	put16(&w->b, TF_REQ_VERSION);
	at = w->b.len;
	put32(&w->b, 0);
	return at;
}

static int rec_end(struct tracefile_writer *w, size_t at)
{
	uint32_t size;

	if (w->b.oom) {
		if (!w->err)
			w->err = -ENOMEM;
		return -ENOMEM;
	}
	size = (uint32_t)(w->b.len - at - 4);
	for (int i = 0; i < 4; i++)
		w->b.p[at + i] = (uint8_t)(size >> (8 * i));
	w->nrec++;
	if (w->b.len >= TRACEFILE_BLOCK_TARGET)
		return tracefile_flush(w);
	return w->err;
}

/* ---- writer -------------------------------------------------------------- */

static void read_boot_id(char *out, size_t cap)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	out[0] = 0;
	if (!f)
		return;
	if (fgets(out, (int)cap, f))
		out[strcspn(out, "\n")] = 0;
	fclose(f);
}

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *c = p;

	while (n) {
		ssize_t k = write(fd, c, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

static int write_header(struct tracefile_writer *w,
			const struct tt_hostinfo *host,
			const struct tracefile_header *as)
{
	struct buf h = { 0 };
	struct timespec rt;
	char boot[40];
	uint64_t mono;
	int err;

	read_boot_id(boot, sizeof(boot));
	clock_gettime(CLOCK_REALTIME, &rt);
	mono = mono_now();
	if (as) {
		snprintf(boot, sizeof(boot), "%s", as->boot_id);
		rt.tv_sec = (time_t)(as->wall_ns / 1000000000ull);
		rt.tv_nsec = (long)(as->wall_ns % 1000000000ull);
		mono = as->mono_ns;
	}
	put_bytes(&h, TRACEFILE_MAGIC, 8);
	put32(&h, TRACEFILE_VERSION);
	put32(&h, 0);			/* header size, patched below */
	put32(&h, CLOCK_MONOTONIC);
	put32(&h, 0);
	put_str(&h, boot);
	put64(&h, (uint64_t)rt.tv_sec * 1000000000ull + rt.tv_nsec);
	put64(&h, mono);
	put_hostinfo(&h, host);
	if (h.oom) {
		free(h.p);
		return -ENOMEM;
	}
	uint32_t size = (uint32_t)h.len + 4;
	for (int i = 0; i < 4; i++)
		h.p[12 + i] = (uint8_t)(size >> (8 * i));
	put32(&h, tracefile_crc32c(0, h.p, h.len));
	err = h.oom ? -ENOMEM : write_all(w->fd, h.p, h.len);
	w->bytes += h.len;
	free(h.p);
	return err;
}

int tracefile_create(const char *path, const struct tt_hostinfo *host,
		     int zstd_level, bool overwrite,
		     struct tracefile_writer **out)
{
	return tracefile_create_as(path, host, zstd_level, overwrite, NULL,
				   out);
}

int tracefile_create_as(const char *path, const struct tt_hostinfo *host,
			int zstd_level, bool overwrite,
			const struct tracefile_header *as,
			struct tracefile_writer **out)
{
	struct tracefile_writer *w;
	int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
		    (overwrite ? O_TRUNC : O_EXCL);
	int err;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	snprintf(w->path, sizeof(w->path), "%s", path);
	w->level = zstd_level < 0 ? 0 : zstd_level > 3 ? 3 : zstd_level;
	w->fd = open(path, flags, 0600);
	if (w->fd < 0 || fchmod(w->fd, 0600)) {
		err = -errno;
		fprintf(stderr, "tokentrace: cannot create trace file %s: %s%s"
			"\n", path, strerror(-err), err == -EEXIST ?
			" (remove it or choose another name)" : "");
		goto fail;
	}
	err = write_header(w, host, as);
	if (err) {
		fprintf(stderr, "tokentrace: cannot write the header of %s: "
			"%s\n", path, strerror(-err));
		goto fail;
	}
	w->last_flush_ns = mono_now();
	*out = w;
	return 0;
fail:
	if (w->fd >= 0)
		close(w->fd);
	free(w);
	return err;
}

int tracefile_put_request(struct tracefile_writer *w,
			  const struct tt_request *q)
{
	struct buf *b = &w->b;
	size_t at = rec_begin(w, TRACEFILE_REC_REQUEST);
	uint32_t ntok = q->token_ns ? q->token_ns_len : 0;
	uint64_t prev = q->arrival_ns;

	put32(b, q->pid);
	put64(b, q->conn_id);
	put_str(b, q->id);
	put_str(b, q->model);
	put_str(b, q->tenant);
	put_str(b, q->api);
	put_str(b, q->path);
	put8(b, q->stream);
	put32(b, (uint32_t)q->http_status);
	put64(b, (uint64_t)q->max_tokens);
	put64(b, q->arrival_ns);
	put64(b, q->first_token_ns);
	put64(b, q->end_ns);
	put32(b, q->token_events);
	put32(b, ntok);
	put64(b, (uint64_t)q->prompt_tokens);
	put64(b, (uint64_t)q->completion_tokens);
	put32(b, q->tokens_source);
	put32(b, q->end);
	put32(b, q->flags);
	put_f64(b, q->ttft_ms);
	put_f64(b, q->itl_p50_ms);
	put_f64(b, q->itl_p99_ms);
	put_f64(b, q->itl_max_ms);
	put64(b, q->bytes_in);
	put64(b, q->bytes_out);
	for (uint32_t i = 0; i < ntok; i++) {
		int64_t d = (int64_t)(q->token_ns[i] - prev);

		put_varint(b, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
		prev = q->token_ns[i];
	}
	put64(b, (uint64_t)q->cached_tokens);	/* appended in version 2 */
	put32(b, q->cached_source);
	put32(b, q->prompt_bytes);
	put32(b, q->prefix_bytes);
	return rec_end(w, at);
}

int tracefile_put_device(struct tracefile_writer *w,
			 const struct tt_device *d)
{
	size_t at = rec_begin(w, TRACEFILE_REC_DEVICE);

	put32(&w->b, d->id);
	put32(&w->b, d->kind);
	put32(&w->b, d->pid);
	put32(&w->b, d->ordinal);
	put_str(&w->b, d->name);
	put_str(&w->b, d->uuid);
	put32(&w->b, d->sm_count);
	put64(&w->b, d->memory_bytes);
	return rec_end(w, at);
}

int tracefile_put_interval(struct tracefile_writer *w,
			   const struct tt_interval *iv)
{
	size_t at = rec_begin(w, TRACEFILE_REC_INTERVAL);

	put64(&w->b, iv->start_ns);
	put64(&w->b, iv->end_ns);
	put32(&w->b, iv->device);
	put32(&w->b, iv->pid);
	put32(&w->b, iv->tid);
	put32(&w->b, iv->stream);
	put32(&w->b, iv->name_id);
	put32(&w->b, iv->correlation);
	put64(&w->b, iv->bytes);
	put8(&w->b, iv->kind);
	put8(&w->b, iv->copy_kind);
	put16(&w->b, iv->reserved);
	return rec_end(w, at);
}

int tracefile_put_name(struct tracefile_writer *w, uint32_t pid,
		       uint32_t name_id, const char *name)
{
	size_t at = rec_begin(w, TRACEFILE_REC_NAME);

	put32(&w->b, pid);
	put32(&w->b, name_id);
	put_str(&w->b, name);
	return rec_end(w, at);
}

int tracefile_put_losses(struct tracefile_writer *w,
			 const struct report_losses *l)
{
	size_t at = rec_begin(w, TRACEFILE_REC_LOSSES);

	put64(&w->b, l->cpu_events);
	put64(&w->b, l->sock_events);
	put64(&w->b, l->sock_bytes);
	put64(&w->b, l->cupti_records);
	return rec_end(w, at);
}

int tracefile_put_window(struct tracefile_writer *w, uint64_t start_ns,
			 uint64_t end_ns, bool closed)
{
	size_t at = rec_begin(w, TRACEFILE_REC_WINDOW);

	put64(&w->b, start_ns);
	put64(&w->b, end_ns);
	put8(&w->b, closed);
	return rec_end(w, at);
}

int tracefile_put_compute(struct tracefile_writer *w, const char *source,
			  uint32_t max_batch)
{
	size_t at = rec_begin(w, TRACEFILE_REC_COMPUTE);

	put_str(&w->b, source);
	put32(&w->b, max_batch);
	return rec_end(w, at);
}

int tracefile_put_hooks(struct tracefile_writer *w, const char *hooks)
{
	size_t at = rec_begin(w, TRACEFILE_REC_HOOKS);

	put_str(&w->b, hooks);
	return rec_end(w, at);
}

/* Compress the payload into out when it pays; the stored bytes. */
static const uint8_t *block_payload(struct tracefile_writer *w, void **tmp,
				    size_t *stored, uint32_t *flags)
{
	size_t bound, n;

	*tmp = NULL;
	*stored = w->b.len;
	*flags = 0;
	if (!w->level || w->b.len < 256)
		return w->b.p;
	bound = ZSTD_compressBound(w->b.len);
	*tmp = malloc(bound);
	if (!*tmp)
		return w->b.p;
	n = ZSTD_compress(*tmp, bound, w->b.p, w->b.len, w->level);
	if (ZSTD_isError(n) || n >= w->b.len - w->b.len / 16)
		return w->b.p;
	*stored = n;
	*flags = TF_FLAG_ZSTD;
	return *tmp;
}

int tracefile_flush(struct tracefile_writer *w)
{
	struct buf blk = { 0 };
	const uint8_t *pl;
	uint32_t flags;
	size_t stored;
	void *tmp;
	int err;

	w->last_flush_ns = mono_now();
	if (w->err)		/* nothing more can be written: drop it */
		w->b.len = 0, w->nrec = 0;
	if (!w->b.len)
		return w->err;
	pl = block_payload(w, &tmp, &stored, &flags);
	put32(&blk, TRACEFILE_BLOCK_MAGIC);
	put32(&blk, flags);
	put32(&blk, (uint32_t)w->b.len);
	put32(&blk, (uint32_t)stored);
	put32(&blk, w->nrec);
	if (!blk.oom)		/* header fields, then the stored bytes */
		put32(&blk, tracefile_crc32c(tracefile_crc32c(0, blk.p, 20),
					     pl, stored));
	put_bytes(&blk, pl, stored);
	err = blk.oom ? -ENOMEM : write_all(w->fd, blk.p, blk.len);
	if (!err)
		w->bytes += blk.len;
	else
		fprintf(stderr, "tokentrace: writing trace file %s failed: "
			"%s; the trace ends at its last whole block\n",
			w->path, strerror(-err));
	free(tmp);
	free(blk.p);
	w->b.len = 0;
	w->nrec = 0;
	w->err = err;
	return err;
}

int tracefile_tick(struct tracefile_writer *w, uint64_t now_ns)
{
	if (now_ns - w->last_flush_ns < 1000000000ull)
		return w->err;
	return tracefile_flush(w);
}

int tracefile_close(struct tracefile_writer *w)
{
	int err;

	if (!w)
		return 0;
	err = tracefile_flush(w);
	if (fsync(w->fd) && !err && errno != EINVAL)
		err = -errno;
	if (close(w->fd) && !err)
		err = -errno;
	free(w->b.p);
	free(w);
	return err;
}

uint64_t tracefile_bytes(const struct tracefile_writer *w)
{
	return w->bytes;
}

/* ---- reading ------------------------------------------------------------- */

/* A bounded cursor: reading past the end sets bad and yields zeros. */
struct cur {
	const uint8_t *p;
	size_t n;
	bool bad;
};

static const uint8_t *take(struct cur *c, size_t n)
{
	const uint8_t *p;

	if (c->bad || c->n < n) {
		c->bad = true;
		return NULL;
	}
	p = c->p;
	c->p += n;
	c->n -= n;
	return p;
}

static uint64_t get_le(struct cur *c, int n)
{
	const uint8_t *p = take(c, n);
	uint64_t v = 0;

	for (int i = 0; p && i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint8_t get8(struct cur *c) { return (uint8_t)get_le(c, 1); }
static uint16_t get16(struct cur *c) { return (uint16_t)get_le(c, 2); }
static uint32_t get32(struct cur *c) { return (uint32_t)get_le(c, 4); }
static uint64_t get64(struct cur *c) { return get_le(c, 8); }

static double get_f64(struct cur *c)
{
	uint64_t v = get64(c);
	double d;

	memcpy(&d, &v, 8);
	return d;
}

/* A string into out (truncated to cap - 1, always terminated). */
static void get_str(struct cur *c, char *out, size_t cap)
{
	uint16_t n = get16(c);
	const uint8_t *p = take(c, n);
	size_t k = n < cap - 1 ? n : cap - 1;

	if (!p)
		k = 0;
	else
		memcpy(out, p, k);
	out[k] = 0;
	for (size_t i = 0; i < k; i++)	/* NULs would cut it silently */
		if (!out[i])
			out[i] = '?';
}

static uint64_t get_varint(struct cur *c)
{
	uint64_t v = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		const uint8_t *p = take(c, 1);

		if (!p)
			return 0;
		v |= (uint64_t)(*p & 0x7f) << shift;
		if (!(*p & 0x80))
			return v;
	}
	c->bad = true;
	return 0;
}

static void get_hostinfo(struct cur *c, struct tt_hostinfo *h)
{
	get_str(c, h->hostname, sizeof(h->hostname));
	get_str(c, h->kernel, sizeof(h->kernel));
	get_str(c, h->cmdline, sizeof(h->cmdline));
	get_str(c, h->cpu_model, sizeof(h->cpu_model));
	h->cpus = get32(c);
	get_str(c, h->governor, sizeof(h->governor));
	h->numa_nodes = get32(c);
	get_str(c, h->thp, sizeof(h->thp));
	get_str(c, h->gpu_model, sizeof(h->gpu_model));
	get_str(c, h->gpu_driver, sizeof(h->gpu_driver));
	get_str(c, h->gpu_clocks, sizeof(h->gpu_clocks));
}

struct rd {
	const struct tracefile_handlers *h;
	struct tracefile_stats *st;
	const char *name;
	uint64_t *tok;			/* token times of one request */
	const uint8_t *map;		/* the file's mapping (tracefile_read):
					   pages read are dropped behind */
	size_t dropped;			/* bytes of it dropped so far */
};

/* Pages of a mapped file that reading has passed are given back every
 * TF_DROP_EVERY bytes, so that reading a file costs no more resident
 * memory than that, however long it is. */
#define TF_DROP_EVERY	(32u << 20)

static void drop_behind(struct rd *r, size_t pos)
{
	size_t upto = pos & ~(size_t)(TF_DROP_EVERY - 1);

	if (!r->map || upto <= r->dropped)
		return;
	madvise((void *)(r->map + r->dropped), upto - r->dropped,
		MADV_DONTNEED);
	r->dropped = upto;
}

static void say(const struct rd *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void say(const struct rd *r, const char *fmt, ...)
{
	va_list ap;

	if (!r->h->log)
		return;
	fprintf(r->h->log, "tokentrace: %s: ", r->name);
	va_start(ap, fmt);
	vfprintf(r->h->log, fmt, ap);
	va_end(ap);
	fputc('\n', r->h->log);
}

static int read_header(struct rd *r, const uint8_t *p, size_t len,
		       struct tracefile_header *hdr)
{
	struct cur c = { p, len, false };
	uint32_t crc;

	memset(hdr, 0, sizeof(*hdr));
	if (len < 20 || memcmp(p, TRACEFILE_MAGIC, 8)) {
		say(r, "not a tokentrace trace file (%zu bytes, no \"%s\" "
		    "magic at offset 0)", len, TRACEFILE_MAGIC);
		return -EBADMSG;
	}
	take(&c, 8);
	hdr->version = get32(&c);
	hdr->header_size = get32(&c);
	if (hdr->header_size < 24 || hdr->header_size > TRACEFILE_HEADER_MAX ||
	    hdr->header_size > len) {
		say(r, "header cut short or corrupt: it declares %u bytes, "
		    "the file has %zu", hdr->header_size, len);
		return -EBADMSG;
	}
	crc = (uint32_t)p[hdr->header_size - 4] |
	      (uint32_t)p[hdr->header_size - 3] << 8 |
	      (uint32_t)p[hdr->header_size - 2] << 16 |
	      (uint32_t)p[hdr->header_size - 1] << 24;
	if (crc != tracefile_crc32c(0, p, hdr->header_size - 4)) {
		say(r, "header checksum mismatch (bytes 0..%u): the file is "
		    "corrupt", hdr->header_size);
		return -EBADMSG;
	}
	c.n = hdr->header_size - 4 - 16;
	hdr->clock_id = get32(&c);
	get32(&c);
	get_str(&c, hdr->boot_id, sizeof(hdr->boot_id));
	hdr->wall_ns = get64(&c);
	hdr->mono_ns = get64(&c);
	get_hostinfo(&c, &hdr->host);
	if (c.bad) {
		say(r, "header of %u bytes too short for format version %u",
		    hdr->header_size, hdr->version);
		return -EBADMSG;
	}
	return 0;
}

static void rec_request(struct rd *r, struct cur *c)
{
	struct tt_request q = { 0 };
	uint64_t prev;

	q.pid = get32(c);
	q.conn_id = get64(c);
	get_str(c, q.id, sizeof(q.id));
	get_str(c, q.model, sizeof(q.model));
	get_str(c, q.tenant, sizeof(q.tenant));
	get_str(c, q.api, sizeof(q.api));
	get_str(c, q.path, sizeof(q.path));
	q.stream = get8(c) != 0;
	q.http_status = (int)get32(c);
	q.max_tokens = (int64_t)get64(c);
	q.arrival_ns = get64(c);
	q.first_token_ns = get64(c);
	q.end_ns = get64(c);
	q.token_events = get32(c);
	q.token_ns_len = get32(c);
	q.prompt_tokens = (int64_t)get64(c);
	q.completion_tokens = (int64_t)get64(c);
	q.tokens_source = get32(c);
	q.end = get32(c);
	q.flags = get32(c);
	q.ttft_ms = get_f64(c);
	q.itl_p50_ms = get_f64(c);
	q.itl_p99_ms = get_f64(c);
	q.itl_max_ms = get_f64(c);
	q.bytes_in = get64(c);
	q.bytes_out = get64(c);
	/* each time takes at least one byte: a count beyond that is a lie */
	if (q.token_ns_len > TT_TOKEN_NS_MAX || q.token_ns_len > c->n ||
	    q.tokens_source > TT_TOKENS_ESTIMATE || q.end > TT_END_OPEN)
		c->bad = true;
	prev = q.arrival_ns;
	for (uint32_t i = 0; !c->bad && i < q.token_ns_len; i++) {
		uint64_t z = get_varint(c);
		int64_t d = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);

		prev += (uint64_t)d;
		r->tok[i] = prev;
	}
	if (!c->bad && c->n >= 20) {	/* version 2 on: the cached tokens */
		q.cached_tokens = (int64_t)get64(c);
		q.cached_source = get32(c);
		q.prompt_bytes = get32(c);
		q.prefix_bytes = get32(c);
		if (q.cached_source > TT_CACHED_ESTIMATE ||
		    (q.cached_source && (q.cached_tokens < 0 ||
					 (q.prompt_tokens >= 0 &&
					  q.cached_tokens > q.prompt_tokens))))
			c->bad = true;
	}
	q.token_ns = q.token_ns_len ? r->tok : NULL;
	if (!c->bad && r->h->request)
		r->h->request(r->h->ctx, &q);
}

static void rec_device(struct rd *r, struct cur *c)
{
	struct tt_device d;

	memset(&d, 0, sizeof(d));
	d.id = get32(c);
	d.kind = get32(c) ? TT_DEV_CPU : TT_DEV_GPU;
	d.pid = get32(c);
	d.ordinal = get32(c);
	get_str(c, d.name, sizeof(d.name));
	get_str(c, d.uuid, sizeof(d.uuid));
	d.sm_count = get32(c);
	d.memory_bytes = get64(c);
	if (!c->bad && r->h->device)
		r->h->device(r->h->ctx, &d);
}

static void rec_interval(struct rd *r, struct cur *c)
{
	struct tt_interval iv;

	memset(&iv, 0, sizeof(iv));
	iv.start_ns = get64(c);
	iv.end_ns = get64(c);
	iv.device = get32(c);
	iv.pid = get32(c);
	iv.tid = get32(c);
	iv.stream = get32(c);
	iv.name_id = get32(c);
	iv.correlation = get32(c);
	iv.bytes = get64(c);
	iv.kind = get8(c);
	iv.copy_kind = get8(c);
	iv.reserved = get16(c);
	if (!c->bad && r->h->interval)
		r->h->interval(r->h->ctx, &iv);
}

static void rec_name(struct rd *r, struct cur *c)
{
	uint32_t pid = get32(c), id = get32(c);
	char name[8192];		/* C++ kernel names run long */

	get_str(c, name, sizeof(name));
	if (!c->bad && r->h->name)
		r->h->name(r->h->ctx, pid, id, name);
}

static void rec_losses(struct rd *r, struct cur *c)
{
	struct report_losses l;

	l.cpu_events = get64(c);
	l.sock_events = get64(c);
	l.sock_bytes = get64(c);
	l.cupti_records = get64(c);
	if (!c->bad && r->h->losses)
		r->h->losses(r->h->ctx, &l);
}

static void rec_window(struct rd *r, struct cur *c)
{
	uint64_t s = get64(c), e = get64(c);
	bool closed = get8(c) != 0;

	if (!c->bad && r->h->window)
		r->h->window(r->h->ctx, s, e, closed);
}

static void rec_compute(struct rd *r, struct cur *c)
{
	char src[16];
	uint32_t mb;

	get_str(c, src, sizeof(src));
	mb = get32(c);
	if (!c->bad && r->h->compute)
		r->h->compute(r->h->ctx, src, mb);
}

static void rec_hooks(struct rd *r, struct cur *c)
{
	char hooks[24];

	get_str(c, hooks, sizeof(hooks));
	if (!c->bad && r->h->hooks)
		r->h->hooks(r->h->ctx, hooks);
}

static void one_record(struct rd *r, uint16_t type, struct cur *body)
{
	switch (type) {
	case TRACEFILE_REC_REQUEST: rec_request(r, body); break;
	case TRACEFILE_REC_DEVICE: rec_device(r, body); break;
	case TRACEFILE_REC_INTERVAL: rec_interval(r, body); break;
	case TRACEFILE_REC_NAME: rec_name(r, body); break;
	case TRACEFILE_REC_LOSSES: rec_losses(r, body); break;
	case TRACEFILE_REC_WINDOW: rec_window(r, body); break;
	case TRACEFILE_REC_COMPUTE: rec_compute(r, body); break;
	case TRACEFILE_REC_HOOKS: rec_hooks(r, body); break;
	default:
		r->st->records_unknown++;
		return;
	}
	if (body->bad)
		r->st->records_bad++;
	else
		r->st->records++;
}

static void read_records(struct rd *r, const uint8_t *p, size_t len,
			 uint64_t off)
{
	struct cur c = { p, len, false };

	while (c.n) {
		uint16_t type = get16(&c);
		uint32_t size;
		struct cur body;

		get16(&c);		/* version: fields only get appended */
		size = get32(&c);
		if (c.bad || size > c.n) {
			say(r, "block at offset %llu: a record runs past the "
			    "block's end; the block's remaining %zu bytes "
			    "skipped", (unsigned long long)off, c.n);
			r->st->records_bad++;
			return;
		}
		body = (struct cur){ take(&c, size), size, false };
		one_record(r, type, &body);
	}
}

/* The block at p (len bytes left in the file): true if it was read. */
static bool read_block(struct rd *r, const uint8_t *p, size_t len,
		       uint64_t off, size_t *used)
{
	struct cur c = { p, len, false };
	uint32_t flags, raw, stored, nrec, crc;
	const uint8_t *pl;

	get32(&c);
	flags = get32(&c);
	raw = get32(&c);
	stored = get32(&c);
	nrec = get32(&c);
	crc = get32(&c);
	*used = 0;
	if (c.bad) {
		say(r, "block at offset %llu: cut short inside its %d-byte "
		    "header (the trace ends there)", (unsigned long long)off,
		    TRACEFILE_BLOCK_HDR);
		r->st->cut = true;
		return false;
	}
	if (raw > TRACEFILE_BLOCK_MAX || stored > TRACEFILE_BLOCK_MAX ||
	    (!(flags & TF_FLAG_ZSTD) && raw != stored) || flags > 1) {
		say(r, "block at offset %llu: impossible header (flags %u, "
		    "length %u stored as %u): skipped", (unsigned long long)off,
		    flags, raw, stored);
		return false;
	}
	if (stored > c.n) {
		say(r, "block at offset %llu: cut short (%zu of its %u bytes "
		    "present), %u records skipped", (unsigned long long)off,
		    c.n, stored, nrec);
		r->st->records_skipped += nrec;
		r->st->cut = true;
		return false;
	}
	pl = take(&c, stored);
	if (tracefile_crc32c(tracefile_crc32c(0, p, 20), pl, stored) != crc) {
		say(r, "block at offset %llu: checksum mismatch, %u records "
		    "skipped", (unsigned long long)off, nrec);
		r->st->records_skipped += nrec;
		return false;
	}
	*used = TRACEFILE_BLOCK_HDR + stored;
	if (r->h->block)
		r->h->block(r->h->ctx, off);
	if (!(flags & TF_FLAG_ZSTD)) {
		read_records(r, pl, stored, off);
		return true;
	}
	void *out = malloc(raw ? raw : 1);
	size_t n = out ? ZSTD_decompress(out, raw, pl, stored) : 0;

	if (!out || ZSTD_isError(n) || n != raw) {
		say(r, "block at offset %llu: %s, %u records skipped",
		    (unsigned long long)off, out ? "does not decompress to its "
		    "stated length" : "out of memory", nrec);
		r->st->records_skipped += nrec;
		free(out);
		*used = 0;
		return false;
	}
	read_records(r, out, raw, off);
	free(out);
	return true;
}

/* Offset of the next block magic after pos, or len. */
static size_t resync(const uint8_t *p, size_t len, size_t pos)
{
	static const uint8_t m[4] = { 0x54, 0x54, 0x42, 0x4B };

	for (size_t i = pos + 1; i + 4 <= len; i++)
		if (p[i] == m[0] && !memcmp(p + i, m, 4))
			return i;
	return len;
}

static tracefile_progress_fn progress_fn;
static void *progress_ctx;

void tracefile_set_progress(tracefile_progress_fn fn, void *ctx)
{
	progress_fn = fn;
	progress_ctx = ctx;
}

static void progress(const char *name, size_t done, size_t total,
		     uint64_t records)
{
	if (progress_fn)
		progress_fn(progress_ctx, name, done, total, records);
}

/* Only the blocks at h->offsets. */
static void read_some(struct rd *r, const uint8_t *p, size_t len)
{
	const struct tracefile_handlers *h = r->h;

	for (size_t i = 0; i < h->noffsets; i++) {
		uint64_t off = h->offsets[i];
		size_t used = 0;

		if (off < len && len - off >= 4 &&
		    get_le(&(struct cur){ p + off, 4, false }, 4) ==
		    TRACEFILE_BLOCK_MAGIC &&
		    read_block(r, p + off, len - off, off, &used)) {
			r->st->blocks_ok++;
			drop_behind(r, off + used);
			continue;
		}
		say(r, "offset %llu: no valid block starts here",
		    (unsigned long long)off);
		r->st->blocks_skipped++;
	}
}

static int read_mem(struct rd *rp, const void *buf, size_t len,
		    struct tracefile_header *hdr)
{
	struct rd r = *rp;
	const struct tracefile_handlers *h = r.h;
	struct tracefile_stats *st = r.st;
	const char *name = r.name;
	const uint8_t *p = buf;
	size_t pos;
	int err;

	memset(st, 0, sizeof(*st));
	err = read_header(&r, p, len, hdr);
	if (err)
		return err;
	r.tok = malloc(TT_TOKEN_NS_MAX * sizeof(uint64_t));
	if (!r.tok)
		return -ENOMEM;
	if (h->noffsets) {
		read_some(&r, p, len);
		free(r.tok);
		return 0;
	}
	pos = hdr->header_size;
	while (pos < len) {
		size_t used = 0, next;
		bool magic = len - pos >= 4 &&
			get_le(&(struct cur){ p + pos, 4, false }, 4) ==
			TRACEFILE_BLOCK_MAGIC;

		if (!magic)
			say(&r, "offset %zu: no block starts here", pos);
		else if (read_block(&r, p + pos, len - pos, pos, &used)) {
			st->blocks_ok++;
			pos += used;
			drop_behind(&r, pos);
			progress(name, pos, len, st->records);
			continue;
		}
		next = resync(p, len, pos);
		st->blocks_skipped++;
		st->bytes_skipped += next - pos;
		if (next < len) {
			st->cut = false;	/* more follows: it was corrupt */
			say(&r, "resuming at the block at offset %zu (%zu "
			    "bytes skipped)", next, next - pos);
		} else if (!magic) {
			st->cut = true;		/* the tail is a cut block */
		}
		pos = next;
		progress(name, pos, len, st->records);
	}
	progress(name, len, len, st->records);
	free(r.tok);
	return 0;
}

int tracefile_read_mem(const void *buf, size_t len, const char *name,
		       const struct tracefile_handlers *h,
		       struct tracefile_header *hdr,
		       struct tracefile_stats *st)
{
	struct rd r = { h, st, name, NULL, NULL, 0 };

	return read_mem(&r, buf, len, hdr);
}

int tracefile_read_header(const char *path, struct tracefile_header *hdr,
			  FILE *log)
{
	struct tracefile_handlers h = { .log = log };
	struct rd r = { &h, NULL, path, NULL };
	uint8_t *buf = malloc(TRACEFILE_HEADER_MAX);
	ssize_t n;
	int fd, err;

	if (!buf)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	n = pread(fd, buf, TRACEFILE_HEADER_MAX, 0);
	err = n < 0 ? -errno : read_header(&r, buf, (size_t)n, hdr);
	close(fd);
	free(buf);
	return err;
}

int tracefile_read(const char *path, const struct tracefile_handlers *h,
		   struct tracefile_header *hdr, struct tracefile_stats *st)
{
	struct stat sb;
	void *map = NULL;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb)) {
		err = -errno;
		fprintf(stderr, "tokentrace: cannot read trace file %s: %s\n",
			path, strerror(-err));
		if (fd >= 0)
			close(fd);
		return err;
	}
	if (sb.st_size > 0) {
		map = mmap(NULL, sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			err = -errno;
			fprintf(stderr, "tokentrace: cannot map trace file %s:"
				" %s\n", path, strerror(-err));
			close(fd);
			return err;
		}
	}
	close(fd);
	struct rd r = { h, st, path, NULL, map, 0 };

	err = read_mem(&r, map ? map : "", map ? sb.st_size : 0, hdr);
	if (map)
		munmap(map, sb.st_size);
	return err;
}
