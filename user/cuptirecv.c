/*
 * cuptirecv.c - receives the record streams of libtokentrace_cupti.so.
 *
 * In: unix stream connections on the socket named by the collector (it
 *     sets TOKENTRACE_CUPTI_SOCKET for the server it starts), one per
 *     traced process (several for tensor parallel), each carrying the
 *     records of tokentrace/compute.h; or a whole stream as bytes.
 * Out: tt_device (once per process and device, GPU ids from 1 shared by
 *     all processes using one UUID), tt_interval per kernel, copy, memset
 *     or graph launch, kernel names per process, and cumulative losses,
 *     all through the struct tt_compute_sink given at open.
 * Assumes: one thread; the library sends a stream record first, names
 *     before the kernels that use them, and may replay name and device
 *     records after a reconnect (duplicates are dropped here).
 *
 * Each connection keeps a small buffer of bytes that do not yet make a
 * whole record. Every record is checked before use: size a multiple of 8
 * within bounds, a known type no smaller than its version-1 layout, a
 * name NUL-terminated inside its record. A fault closes that connection
 * with a message naming the process, the byte offset and the reason, and
 * is counted; other connections go on. Unknown record types are skipped.
 *
 * An interval on a (pid, ordinal) never described by a device record
 * gets a device of its own (named "unknown GPU", counted), so no time is
 * lost; a later device record maps that ordinal to its real UUID.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <tokentrace/compute.h>

#include "cuptirecv.h"

#define CONN_BUF	(64u << 10)

struct gpu {
	uint8_t uuid[16];
};

struct devmap {
	uint32_t pid;
	uint32_t ordinal;
	uint32_t id;
	int provisional;
};

struct pidnames {
	uint32_t pid;
	uint8_t *seen;		/* seen[name_id] */
	uint32_t nseen;
};

struct stream {
	struct stream *next;
	int fd;
	uint32_t pid;
	int have_hdr;
	uint64_t offset;	/* bytes of the stream consumed */
	uint8_t *buf;
	size_t len;
};

struct cuptirecv {
	struct tt_compute_sink sink;
	int lfd;
	int epfd;
	char *path;
	struct stream *streams;
	struct gpu *gpus;
	uint32_t ngpus;
	struct devmap *maps;
	uint32_t nmaps;
	struct pidnames *names;
	uint32_t nnames;
	struct cuptirecv_stats st;
};

/* ---- growable arrays ------------------------------------------------------ */

static void *grow(void *arr, uint32_t n, size_t elem)
{
	/* Capacity is n rounded up to a power of two: grow when n is one. */
	if (n & (n - 1))
		return arr;
	return realloc(arr, (n ? n * 2 : 1) * elem);
}

/* ---- devices ------------------------------------------------------------- */

static uint32_t gpu_id(struct cuptirecv *r, const uint8_t uuid[16])
{
	for (uint32_t i = 0; i < r->ngpus; i++)
		if (!memcmp(r->gpus[i].uuid, uuid, 16))
			return i + 1;
	struct gpu *g = grow(r->gpus, r->ngpus, sizeof(*g));

	if (!g)
		return 0;
	r->gpus = g;
	memcpy(r->gpus[r->ngpus].uuid, uuid, 16);
	r->st.gpus = ++r->ngpus;
	return r->ngpus;
}

static struct devmap *find_map(struct cuptirecv *r, uint32_t pid,
			       uint32_t ordinal)
{
	for (uint32_t i = 0; i < r->nmaps; i++)
		if (r->maps[i].pid == pid && r->maps[i].ordinal == ordinal)
			return &r->maps[i];
	return NULL;
}

static struct devmap *add_map(struct cuptirecv *r, uint32_t pid,
			      uint32_t ordinal)
{
	struct devmap *m = grow(r->maps, r->nmaps, sizeof(*m));

	if (!m)
		return NULL;
	r->maps = m;
	m = &r->maps[r->nmaps++];
	*m = (struct devmap){ .pid = pid, .ordinal = ordinal };
	return m;
}

static void uuid_str(const uint8_t u[16], char out[40])
{
	static const int dash[] = { 4, 6, 8, 10 };
	size_t o = 0;

	for (int i = 0, d = 0; i < 16; i++) {
		if (d < 4 && i == dash[d]) {
			out[o++] = '-';
			d++;
		}
		o += (size_t)snprintf(out + o, 40 - o, "%02x", u[i]);
	}
	out[o] = '\0';
}

static void deliver_device(struct cuptirecv *r, const struct devmap *m,
			   const struct ttc_rec_device *d,
			   const uint8_t uuid[16])
{
	struct tt_device dev = {
		.id = m->id,
		.kind = TT_DEV_GPU,
		.pid = m->pid,
		.ordinal = m->ordinal,
	};

	if (d) {
		memcpy(dev.name, d->name, sizeof(d->name));
		dev.name[sizeof(dev.name) - 1] = '\0';
		dev.sm_count = d->sm_count;
		dev.memory_bytes = d->memory_bytes;
	} else {
		snprintf(dev.name, sizeof(dev.name), "unknown GPU");
	}
	uuid_str(uuid, dev.uuid);
	if (r->sink.device)
		r->sink.device(r->sink.ctx, &dev);
}

static void on_device(struct cuptirecv *r, uint32_t pid,
		      const struct ttc_rec_device *d)
{
	uint32_t id = gpu_id(r, d->uuid);
	struct devmap *m = find_map(r, pid, d->ordinal);

	if (!id)
		return;
	if (m && m->id == id && !m->provisional)
		return;		/* replayed after a reconnect */
	if (!m && !(m = add_map(r, pid, d->ordinal)))
		return;
	m->id = id;
	m->provisional = 0;
	deliver_device(r, m, d, d->uuid);
}

/* The collector id of (pid, ordinal), making one up if never described. */
static uint32_t device_of(struct cuptirecv *r, uint32_t pid, uint32_t ordinal)
{
	struct devmap *m = find_map(r, pid, ordinal);
	uint8_t uuid[16] = { 0xff, 0xff };

	if (m)
		return m->id;
	memcpy(uuid + 4, &pid, 4);
	memcpy(uuid + 8, &ordinal, 4);
	r->st.unknown_devices++;
	m = add_map(r, pid, ordinal);
	if (!m)
		return 0;
	m->id = gpu_id(r, uuid);
	m->provisional = 1;
	deliver_device(r, m, NULL, uuid);
	return m->id;
}

/* ---- names --------------------------------------------------------------- */

static struct pidnames *names_of(struct cuptirecv *r, uint32_t pid)
{
	for (uint32_t i = 0; i < r->nnames; i++)
		if (r->names[i].pid == pid)
			return &r->names[i];
	struct pidnames *p = grow(r->names, r->nnames, sizeof(*p));

	if (!p)
		return NULL;
	r->names = p;
	p = &r->names[r->nnames++];
	*p = (struct pidnames){ .pid = pid };
	return p;
}

/* 1 if (pid, id) is new and now marked, 0 if seen or out of memory. */
static int name_is_new(struct cuptirecv *r, uint32_t pid, uint32_t id)
{
	struct pidnames *p = names_of(r, pid);

	if (!p)
		return 0;
	if (id >= p->nseen) {
		uint32_t n = p->nseen ? p->nseen : 256;

		while (n <= id)
			n *= 2;
		uint8_t *s = realloc(p->seen, n);

		if (!s)
			return 0;
		memset(s + p->nseen, 0, n - p->nseen);
		p->seen = s;
		p->nseen = n;
	}
	if (p->seen[id])
		return 0;
	p->seen[id] = 1;
	return 1;
}

/* ---- records ------------------------------------------------------------- */

static const uint32_t min_size[] = {
	[TTC_REC_STREAM] = sizeof(struct ttc_rec_stream),
	[TTC_REC_KERNEL] = sizeof(struct ttc_rec_kernel),
	[TTC_REC_COPY] = sizeof(struct ttc_rec_copy),
	[TTC_REC_MEMSET] = sizeof(struct ttc_rec_memset),
	[TTC_REC_GRAPH] = sizeof(struct ttc_rec_graph),
	[TTC_REC_NAME] = sizeof(struct ttc_rec_name) + 8,
	[TTC_REC_DEVICE] = sizeof(struct ttc_rec_device),
	[TTC_REC_DROPS] = sizeof(struct ttc_rec_drops),
};

static int fault(struct cuptirecv *r, const struct stream *s, const char *why)
{
	snprintf(r->st.last_error, sizeof(r->st.last_error),
		 "CUPTI record stream from pid %u is malformed at byte %llu: "
		 "%s; closing it (is the library the same version as "
		 "tokentrace?)", s->pid, (unsigned long long)s->offset, why);
	/* A flood of bad streams must not flood the terminal. */
	if (r->st.malformed < 8)
		fprintf(stderr, "tokentrace: %s\n", r->st.last_error);
	else if (r->st.malformed == 8)
		fprintf(stderr, "tokentrace: more malformed CUPTI streams; "
			"counting them without messages\n");
	r->st.malformed++;
	return -EINVAL;
}

static uint8_t copy_kind(uint8_t cupti_kind)
{
	switch (cupti_kind) {
	case 0:
		return TT_COPY_UNKNOWN;
	case 1:
		return TT_COPY_HTOD;
	case 2:
		return TT_COPY_DTOH;
	case 8:
		return TT_COPY_DTOD;
	default:
		return TT_COPY_OTHER;
	}
}

static void deliver(struct cuptirecv *r, struct tt_interval *iv,
		    uint32_t pid, uint32_t ordinal)
{
	iv->pid = pid;
	iv->device = device_of(r, pid, ordinal);
	if (r->sink.interval)
		r->sink.interval(r->sink.ctx, iv);
}

static void on_kernel(struct cuptirecv *r, uint32_t pid, const uint8_t *p)
{
	struct ttc_rec_kernel k;

	memcpy(&k, p, sizeof(k));
	struct tt_interval iv = {
		.start_ns = k.start_ns, .end_ns = k.end_ns, .tid = k.tid,
		.stream = k.stream, .name_id = k.name_id,
		.correlation = k.correlation, .kind = TT_IV_KERNEL,
	};
	deliver(r, &iv, pid, k.device);
}

static void on_copy(struct cuptirecv *r, uint32_t pid, const uint8_t *p)
{
	struct ttc_rec_copy c;

	memcpy(&c, p, sizeof(c));
	struct tt_interval iv = {
		.start_ns = c.start_ns, .end_ns = c.end_ns, .tid = c.tid,
		.stream = c.stream, .correlation = c.correlation,
		.bytes = c.bytes, .kind = TT_IV_MEMCPY,
		.copy_kind = copy_kind(c.copy_kind),
	};
	deliver(r, &iv, pid, c.device);
}

static void on_memset(struct cuptirecv *r, uint32_t pid, const uint8_t *p)
{
	struct ttc_rec_memset m;

	memcpy(&m, p, sizeof(m));
	struct tt_interval iv = {
		.start_ns = m.start_ns, .end_ns = m.end_ns, .tid = m.tid,
		.stream = m.stream, .correlation = m.correlation,
		.bytes = m.bytes, .kind = TT_IV_MEMSET,
	};
	deliver(r, &iv, pid, m.device);
}

static void on_graph(struct cuptirecv *r, uint32_t pid, const uint8_t *p)
{
	struct ttc_rec_graph g;

	memcpy(&g, p, sizeof(g));
	struct tt_interval iv = {
		.start_ns = g.start_ns, .end_ns = g.end_ns, .tid = g.tid,
		.stream = g.stream, .correlation = g.correlation,
		.kind = TT_IV_GRAPH,
	};
	deliver(r, &iv, pid, g.device);
}

static int on_name(struct cuptirecv *r, struct stream *s, const uint8_t *p,
		   uint32_t size)
{
	struct ttc_rec_name n;
	const char *str = (const char *)p + sizeof(n);

	memcpy(&n, p, sizeof(n));
	if (n.name_id == 0 || n.name_id > (1u << 20))	/* the library's limit */
		return fault(r, s, "name record with id 0 or over 2^20");
	if (n.len > TTC_NAME_MAX || sizeof(n) + n.len + 1 > size ||
	    str[n.len] != '\0')
		return fault(r, s, "name record length does not fit its size");
	if (name_is_new(r, s->pid, n.name_id) && r->sink.name)
		r->sink.name(r->sink.ctx, s->pid, n.name_id, str);
	return 0;
}

static void on_drops(struct cuptirecv *r, uint32_t pid, const uint8_t *p)
{
	struct ttc_rec_drops d;

	memcpy(&d, p, sizeof(d));
	struct tt_compute_losses l = {
		.cupti_dropped = d.cupti_dropped,
		.lib_dropped = d.lib_dropped,
		.zero_timestamps = d.zero_timestamps,
	};
	if (r->sink.losses)
		r->sink.losses(r->sink.ctx, pid, &l);
}

static int on_stream(struct cuptirecv *r, struct stream *s, const uint8_t *p)
{
	struct ttc_rec_stream h;

	memcpy(&h, p, sizeof(h));
	if (h.magic != TTC_WIRE_MAGIC)
		return fault(r, s, "bad magic in the stream record");
	if (h.wire_version != TTC_WIRE_VERSION)
		return fault(r, s, "unsupported wire version");
	if (s->have_hdr && h.pid != s->pid)
		return fault(r, s, "stream record changes the pid");
	s->pid = h.pid;
	s->have_hdr = 1;
	return 0;
}

static int check_header(struct cuptirecv *r, struct stream *s,
			const struct ttc_rec_hdr *h)
{
	char why[96];

	if (h->size < sizeof(*h) || h->size % 8 || h->size > TTC_REC_MAX_SIZE)
		snprintf(why, sizeof(why), "record type %u has size %u, not a "
			 "multiple of 8 from 8 to %u", h->type, h->size,
			 TTC_REC_MAX_SIZE);
	else if (h->version == 0)
		snprintf(why, sizeof(why), "record type %u has version 0",
			 h->type);
	else if (!s->have_hdr && h->type != TTC_REC_STREAM)
		snprintf(why, sizeof(why), "stream opens with record type %u, "
			 "not a stream record", h->type);
	else if (h->type < sizeof(min_size) / sizeof(min_size[0]) &&
		 min_size[h->type] && h->size < min_size[h->type])
		snprintf(why, sizeof(why), "record type %u of %u bytes is "
			 "smaller than its layout (%u)", h->type, h->size,
			 min_size[h->type]);
	else
		return 0;
	return fault(r, s, why);
}

static int record(struct cuptirecv *r, struct stream *s, const uint8_t *p,
		  const struct ttc_rec_hdr *h)
{
	switch (h->type) {
	case TTC_REC_STREAM:
		return on_stream(r, s, p);
	case TTC_REC_KERNEL:
		on_kernel(r, s->pid, p);
		return 0;
	case TTC_REC_COPY:
		on_copy(r, s->pid, p);
		return 0;
	case TTC_REC_MEMSET:
		on_memset(r, s->pid, p);
		return 0;
	case TTC_REC_GRAPH:
		on_graph(r, s->pid, p);
		return 0;
	case TTC_REC_NAME:
		return on_name(r, s, p, h->size);
	case TTC_REC_DEVICE: {
		struct ttc_rec_device d;

		memcpy(&d, p, sizeof(d));
		on_device(r, s->pid, &d);
		return 0;
	}
	case TTC_REC_DROPS:
		on_drops(r, s->pid, p);
		return 0;
	default:
		r->st.unknown_types++;
		return 0;
	}
}

/* Decodes the whole records in p[0..n); *used says how many bytes they
 * took. Records delivered, or -EINVAL. */
static int feed(struct cuptirecv *r, struct stream *s, const uint8_t *p,
		size_t n, size_t *used)
{
	size_t off = 0;
	int count = 0;

	while (n - off >= sizeof(struct ttc_rec_hdr)) {
		struct ttc_rec_hdr h;

		memcpy(&h, p + off, sizeof(h));
		if (check_header(r, s, &h))
			return -EINVAL;
		if (n - off < h.size)
			break;
		if (record(r, s, p + off, &h))
			return -EINVAL;
		off += h.size;
		s->offset += h.size;
		r->st.records++;
		count++;
	}
	*used = off;
	return count;
}

int cuptirecv_decode(struct cuptirecv *r, const void *buf, size_t len)
{
	struct stream s = { .fd = -1 };
	size_t used = 0;
	int n = feed(r, &s, buf, len, &used);

	if (n < 0)
		return n;
	r->st.bytes += used;
	if (used < len) {
		fault(r, &s, "stream ends inside a record (truncated)");
		return -EINVAL;
	}
	return n;
}

/* ---- connections --------------------------------------------------------- */

static void drop_stream(struct cuptirecv *r, struct stream *s)
{
	struct stream **pp = &r->streams;

	while (*pp && *pp != s)
		pp = &(*pp)->next;
	if (*pp)
		*pp = s->next;
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	close(s->fd);
	free(s->buf);
	free(s);
	r->st.connections_open--;
}

static void accept_all(struct cuptirecv *r)
{
	int fd;

	while ((fd = accept4(r->lfd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct stream *s = calloc(1, sizeof(*s));
		struct epoll_event ev = { .events = EPOLLIN };

		if (s)
			s->buf = malloc(CONN_BUF);
		if (!s || !s->buf) {
			free(s);
			close(fd);
			continue;
		}
		s->fd = fd;
		ev.data.ptr = s;
		if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev)) {
			close(fd);
			free(s->buf);
			free(s);
			continue;
		}
		s->next = r->streams;
		r->streams = s;
		r->st.connections++;
		r->st.connections_open++;
	}
}

/* Reads what the connection has; records delivered, -1 when it closed. */
static int read_stream(struct cuptirecv *r, struct stream *s)
{
	int total = 0;

	for (;;) {
		ssize_t n = read(s->fd, s->buf + s->len, CONN_BUF - s->len);
		size_t used = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return total;
		if (n <= 0)
			return -1;
		s->len += (size_t)n;
		r->st.bytes += (uint64_t)n;
		int got = feed(r, s, s->buf, s->len, &used);

		if (got < 0)
			return -1;
		total += got;
		memmove(s->buf, s->buf + used, s->len - used);
		s->len -= used;
	}
}

int cuptirecv_poll(struct cuptirecv *r, int timeout_ms)
{
	struct epoll_event ev[16];
	int n, total = 0;

	if (r->epfd < 0)
		return -EINVAL;
	n = epoll_wait(r->epfd, ev, 16, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		if (ev[i].data.ptr == NULL) {
			accept_all(r);
			continue;
		}
		struct stream *s = ev[i].data.ptr;
		int got = read_stream(r, s);

		if (got < 0)
			drop_stream(r, s);
		else
			total += got;
	}
	return total;
}

/* ---- life ---------------------------------------------------------------- */

static int listen_at(struct cuptirecv *r, const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	struct stat st;

	if (strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "tokentrace: CUPTI socket path %s is longer "
			"than %zu bytes; choose a shorter one\n", path,
			sizeof(a.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(a.sun_path, path);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	r->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    chmod(path, 0600) || listen(r->lfd, 64)) {
		int err = errno;

		fprintf(stderr, "tokentrace: cannot listen for the CUPTI "
			"library at %s: %s; check the directory exists and is "
			"writable\n", path, strerror(err));
		return -err;
	}
	r->path = strdup(path);
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!r->path || r->epfd < 0 ||
	    epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->lfd, &ev)) {
		fprintf(stderr, "tokentrace: cannot set up polling for the "
			"CUPTI socket %s: %s\n", path, strerror(errno));
		return -ENOMEM;
	}
	return 0;
}

struct cuptirecv *cuptirecv_open(const char *path,
				 const struct tt_compute_sink *sink)
{
	struct cuptirecv *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->lfd = r->epfd = -1;
	if (sink)
		r->sink = *sink;
	if (path && listen_at(r, path)) {
		cuptirecv_close(r);
		return NULL;
	}
	return r;
}

int cuptirecv_fd(struct cuptirecv *r)
{
	return r->epfd;
}

void cuptirecv_stats(struct cuptirecv *r, struct cuptirecv_stats *st)
{
	*st = r->st;
}

void cuptirecv_close(struct cuptirecv *r)
{
	if (!r)
		return;
	while (r->streams)
		drop_stream(r, r->streams);
	if (r->lfd >= 0)
		close(r->lfd);
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->path)
		unlink(r->path);
	for (uint32_t i = 0; i < r->nnames; i++)
		free(r->names[i].seen);
	free(r->names);
	free(r->maps);
	free(r->gpus);
	free(r->path);
	free(r);
}
