/*
 * shard.c - a long trace reported a shard at a time; see shard.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shard.h"

/* Events are counted per tenth of a second (the ranges' edges); past
 * ten days of them the rest count in the last (a clock gone wrong cannot
 * make the count huge). */
#define NS_PER_S	100000000ull
#define SHARD_MAX_SECONDS	(10u * 864000)

/* One block of a file: its offset and what its requests and intervals
 * span. */
struct sblock {
	uint64_t off, lo, hi;
};

struct sfile {
	struct sblock *b;
	size_t nb, capb;
	struct collect_idmap *map;
	size_t nmap;
};

struct scan {
	struct sfile *f;
	size_t file;
	uint64_t t0;			/* second 0 */
	uint32_t *per_s;		/* events a tenth of a second */
	size_t nsec;
	uint64_t events;
	bool oom;
};

static size_t second_of(const struct scan *s, uint64_t t)
{
	uint64_t k = t > s->t0 ? (t - s->t0) / NS_PER_S : 0;

	return k < SHARD_MAX_SECONDS ? (size_t)k : SHARD_MAX_SECONDS - 1;
}

/* Seconds before second 0 make room for themselves: the count moves up. */
static bool room_before(struct scan *s, uint64_t t)
{
	uint64_t back = (s->t0 - t + NS_PER_S - 1) / NS_PER_S + 64;
	size_t n;
	uint32_t *p;

	if (!s->nsec) {
		s->t0 = t > 64 * NS_PER_S ? t - 64 * NS_PER_S : 0;
		return true;
	}
	if (back > s->t0 / NS_PER_S)
		back = s->t0 / NS_PER_S;
	if (s->nsec + back > SHARD_MAX_SECONDS)
		return true;	/* counted in second 0 */
	n = s->nsec + (size_t)back;
	p = realloc(s->per_s, n * sizeof(*p));
	if (!p) {
		s->oom = true;
		return false;
	}
	memmove(p + back, p, s->nsec * sizeof(*p));
	memset(p, 0, (size_t)back * sizeof(*p));
	s->per_s = p;
	s->nsec = n;
	s->t0 -= back * NS_PER_S;
	return true;
}

static void count_at(struct scan *s, uint64_t t)
{
	size_t k;

	if ((t < s->t0 || !s->nsec) && !room_before(s, t))
		return;
	k = second_of(s, t);

	if (k >= s->nsec) {
		size_t n = s->nsec ? s->nsec : 64;
		uint32_t *p;

		while (n <= k)
			n *= 2;
		p = realloc(s->per_s, n * sizeof(*p));
		if (!p) {
			s->oom = true;
			return;
		}
		memset(p + s->nsec, 0, (n - s->nsec) * sizeof(*p));
		s->per_s = p;
		s->nsec = n;
	}
	s->per_s[k]++;
	s->events++;
}

static void scan_seen(void *ctx, uint64_t block, uint64_t start, uint64_t end,
		      const uint64_t *tok, uint32_t ntok)
{
	struct scan *s = ctx;
	struct sfile *f = &s->f[s->file];
	struct sblock *b = f->nb ? &f->b[f->nb - 1] : NULL;

	if (!b || b->off != block) {
		if (f->nb == f->capb) {
			size_t cap = f->capb ? 2 * f->capb : 256;
			struct sblock *v = realloc(f->b, cap * sizeof(*v));

			if (!v) {
				s->oom = true;
				return;
			}
			f->b = v;
			f->capb = cap;
		}
		b = &f->b[f->nb++];
		*b = (struct sblock){ block, start, end };
	}
	b->lo = start < b->lo ? start : b->lo;
	b->hi = end > b->hi ? end : b->hi;
	count_at(s, start);
	for (uint32_t i = 0; i < ntok; i++)
		count_at(s, tok[i]);
}

static int scan_file(void *ctx, size_t file, struct collect_part *p)
{
	struct scan *s = ctx;

	s->file = file;
	p->seen_ctx = s;
	p->map_out = &s->f[file].map;
	p->nmap_out = &s->f[file].nmap;
	return 0;
}

/* ---- shards ---------------------------------------------------------------- */

struct shard {
	uint64_t from, to;		/* [from, to); to 0: to the end */
	uint64_t start, end;		/* its report's window */
	bool first, last;
	uint64_t events;		/* the first reading's count */
};

struct run {
	const struct shard_cfg *cfg;
	const struct chain *ch;
	const struct collect *base;
	struct sfile *f;
	const struct shard *sh;
	/* per file, the offsets of the blocks the shard reads */
	uint64_t *offs;
	size_t noffs;
	size_t loaded_ndevs;	/* report_input's */
};

static bool overlaps(uint64_t lo, uint64_t hi, const struct shard *s)
{
	return hi >= s->from && (!s->to || lo < s->to);
}

static int shard_file(void *ctx, size_t file, struct collect_part *p)
{
	struct run *r = ctx;
	const struct sfile *f = &r->f[file];

	p->map_in = f->map;
	p->nmap_in = f->nmap;
	if (r->cfg->all_blocks)
		return 0;
	r->noffs = 0;
	for (size_t i = 0; i < f->nb; i++)
		if (overlaps(f->b[i].lo, f->b[i].hi, r->sh))
			r->offs[r->noffs++] = f->b[i].off;
	p->offsets = r->offs;
	p->noffsets = r->noffs;
	return r->noffs ? 0 : 1;
}

/* What the shard's collect takes from the first reading: everything but
 * requests and intervals (shared, not copied: see unshare_base). */
static void share_base(struct collect *c, const struct collect *b)
{
	snprintf(c->compute, sizeof(c->compute), "%s", b->compute);
	snprintf(c->hooks, sizeof(c->hooks), "%s", b->hooks);
	c->max_batch = b->max_batch;
	c->host = b->host;
	c->devs = b->devs;
	c->ndevs = c->capdevs = b->ndevs;
	c->names = b->names;
	c->nnames = c->capnames = b->nnames;
	c->losses = b->losses;
	c->window_closed = b->window_closed;
}

static void unshare_base(struct collect *c)
{
	c->devs = NULL;
	c->ndevs = 0;
	c->names = NULL;
	c->nnames = 0;
	collect_free(c);
}

/* One shard's collect and report. */
struct job {
	struct run r;
	struct collect c;
	struct report rep;
	uint64_t *on_cpu, *nivs;	/* per device of the base */
	int err;
};

static void count_store(struct job *j)
{
	const struct collect *c = &j->c;

	for (size_t i = 0; i < c->nivs; i++) {
		const struct tt_interval *iv = &c->ivs[i];
		uint64_t s = iv->start_ns > c->start_ns ? iv->start_ns :
			     c->start_ns;
		uint64_t e = iv->end_ns < c->end_ns ? iv->end_ns : c->end_ns;

		for (size_t d = 0; d < c->ndevs; d++) {
			if (c->devs[d].id != iv->device)
				continue;
			if (e > s)
				j->on_cpu[d] += e - s;
			/* counted once: in the first shard it overlaps */
			if (!j->r.sh->from || iv->start_ns >= j->r.sh->from)
				j->nivs[d]++;
			break;
		}
	}
}

static void *build(void *arg)
{
	struct job *j = arg;
	const struct shard *sh = j->r.sh;
	struct collect_part tmpl = { .records_only = true };
	struct report_input in;

	collect_init(&j->c);
	share_base(&j->c, j->r.base);
	j->c.start_ns = sh->start;
	j->c.end_ns = sh->end;
	j->err = chain_load_with(j->r.ch, &j->c, sh->from, sh->to, NULL,
				 j->r.cfg->log, &tmpl, shard_file, &j->r);
	j->c.start_ns = sh->start;
	j->c.end_ns = sh->end;
	if (!j->err)
		j->err = collect_report_input(&j->c, j->r.cfg->prices, &in);
	in.cut_before = !sh->first;
	in.cut_after = !sh->last;
	in.loaded_ndevs = j->r.loaded_ndevs;
	if (!j->err)
		j->err = report_build(&in, &j->rep);
	if (!j->err)
		count_store(j);
	return NULL;
}

/* ---- requests over shards ---------------------------------------------- */

/* Requests that a later shard holds too; with their busy ns per device
 * (nd a request, in ns), and the marks of those written out. */
struct pending {
	struct report_request *v;
	size_t n, cap;
	size_t nd;
	uint64_t *ns, *row;		/* row: the request in hand's */
	struct report_marks *marks;	/* NULL: the figures written */
};

static int pending_grow(struct pending *p)
{
	size_t cap = p->cap ? 2 * p->cap : 64;
	void *v = realloc(p->v, cap * sizeof(*p->v));

	if (!v)
		return -ENOMEM;
	p->v = v;
	if (p->nd) {
		v = realloc(p->ns, cap * p->nd * sizeof(uint64_t));
		if (!v)
			return -ENOMEM;
		p->ns = v;
	}
	p->cap = cap;
	return 0;
}

static bool same_request(const struct tt_request *a, const struct tt_request *b)
{
	return a->pid == b->pid && a->conn_id == b->conn_id &&
	       a->arrival_ns == b->arrival_ns && a->end_ns == b->end_ns &&
	       !strcmp(a->id, b->id);
}

static uint64_t last_of(const struct tt_request *q)
{
	return q->end_ns > q->arrival_ns ? q->end_ns : q->arrival_ns;
}

/* The shard's requests: merged with their earlier parts, handed on when
 * no later shard holds them. */
static int take_requests(const struct shard_cfg *cfg, struct report *acc,
			 struct pending *p, struct report *part,
			 const struct shard *sh, bool last)
{
	size_t nd = p->nd;

	for (size_t i = 0; i < part->nreqs; i++) {
		struct report_request q = part->reqs[i];
		size_t k = p->n;
		int err;

		q.req.token_ns = NULL;	/* part's, about to go */
		if (q.req.arrival_ns < sh->from)
			for (k = 0; k < p->n; k++)
				if (same_request(&p->v[k].req, &q.req))
					break;
		if (k < p->n) {
			report_request_merge(&p->v[k], &q);
			for (size_t d = 0; d < nd; d++)
				p->row[d] = p->ns[k * nd + d] + q.dev_ns[d];
			q = p->v[k];
			q.dev_ns = nd ? p->row : NULL;
			p->v[k] = p->v[--p->n];
			if (nd)
				memcpy(p->ns + k * nd, p->ns + p->n * nd,
				       nd * sizeof(uint64_t));
		}
		/* every shard holds the whole record: its token times are
		 * the part's, good until the part is freed */
		q.req.token_ns = part->reqs[i].req.token_ns;
		q.req.token_ns_len = part->reqs[i].req.token_ns_len;
		if (!last && sh->to && last_of(&q.req) >= sh->to) {
			q.req.token_ns = NULL;
			if (p->n == p->cap && (err = pending_grow(p)))
				return err;
			if (nd)
				memcpy(p->ns + p->n * nd, q.dev_ns,
				       nd * sizeof(uint64_t));
			q.dev_ns = NULL;	/* p->ns's row, where it goes */
			p->v[p->n++] = q;
			continue;
		}
		report_request_finish(&q);
		err = p->marks ? report_mark_loaded(p->marks, &q) : 0;
		if (!err)
			err = report_add_request(acc, &q);
		if (!err && cfg->request)
			err = cfg->request(cfg->ctx, &q);
		if (err)
			return err;
	}
	return 0;
}

/* ---- the whole --------------------------------------------------------- */

/* The devices whose busy ns each request keeps: the trace's own, which
 * every shard's report lists first and in their order, unless two share
 * an id (then each shard shares its own idle time). */
static size_t loaded_devices(const struct collect *c)
{
	for (size_t i = 0; i < c->ndevs; i++)
		for (size_t k = 0; k < i; k++)
			if (c->devs[i].id == c->devs[k].id)
				return 0;
	return c->ndevs;
}

/* Shards of at most max events, cut at whole tenths of a second, over
 * [start, end]. */
static int cut_shards(const struct scan *s, uint64_t start, uint64_t end,
		      uint64_t max, uint64_t from_ns, struct shard **out,
		      uint32_t *n)
{
	size_t a = second_of(s, start), b = second_of(s, end);
	uint64_t acc = 0, at = start;
	struct shard *v = NULL;
	uint32_t k = 0, cap = 0;

	for (size_t i = a; i <= b && i < s->nsec; i++) {
		uint64_t edge = s->t0 + (uint64_t)(i + 1) * NS_PER_S;

		acc += s->per_s[i];
		if (acc < max || edge <= at || edge >= end)
			continue;
		if (k == cap) {
			cap = cap ? 2 * cap : 64;
			void *p = realloc(v, cap * sizeof(*v));
			if (!p) {
				free(v);
				return -ENOMEM;
			}
			v = p;
		}
		v[k] = (struct shard){ k ? at : from_ns, edge, at, edge,
				       !k, false, acc };
		k++;
		at = edge;
		acc = 0;
	}
	if (k == cap) {
		void *p = realloc(v, (cap + 1) * sizeof(*v));
		if (!p) {
			free(v);
			return -ENOMEM;
		}
		v = p;
	}
	for (size_t i = b + 1; i < s->nsec; i++)
		acc += s->per_s[i];	/* after the window: its last shard's */
	v[k] = (struct shard){ k ? at : from_ns, 0, at, end, !k, true, acc };
	k++;
	*out = v;
	*n = k;
	return 0;
}

void shard_trace_free(struct shard_trace *t)
{
	if (t->marks.side)
		fclose(t->marks.side);
	collect_free(&t->c);
	free(t->on_cpu_ns);
	free(t->intervals);
	memset(t, 0, sizeof(*t));
}

bool shard_small(char *const *paths, int n, uint64_t max_events)
{
	struct chain ch;
	uint64_t bytes = 0;
	FILE *quiet = fopen("/dev/null", "w");

	if (!max_events)
		max_events = SHARD_EVENTS_DEFAULT;
	if (chain_open(&ch, paths, n, quiet)) {
		if (quiet)
			fclose(quiet);
		return true;	/* the plain read says what is wrong */
	}
	for (size_t i = 0; i < ch.nfiles; i++) {
		struct stat sb;

		if (!stat(ch.files[i].path, &sb))
			bytes += (uint64_t)sb.st_size;
	}
	chain_free(&ch);
	if (quiet)
		fclose(quiet);
	return bytes < max_events;
}

static void free_files(struct sfile *f, size_t n)
{
	for (size_t i = 0; f && i < n; i++) {
		free(f[i].b);
		free(f[i].map);
	}
	free(f);
}

/*
 * The shards built by up to `jobs` threads and merged in order by the
 * caller's: shard s builds in job s % jobs once shard s - jobs is merged,
 * so a thread takes the next shard as soon as a job is free and none
 * waits for the slowest of a batch; memory stays that of `jobs` shards.
 */
struct line {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *jv;
	bool *built;			/* per job: built, not yet merged */
	const struct shard *sh;
	size_t ndevs;
	uint32_t nshards, jobs, next, merged;
	bool stop;
};

static void job_start(struct job *j, const struct shard *sh, size_t ndevs)
{
	j->r.sh = sh;
	memset(j->on_cpu, 0, (ndevs + 1) * sizeof(uint64_t));
	memset(j->nivs, 0, (ndevs + 1) * sizeof(uint64_t));
	memset(&j->rep, 0, sizeof(j->rep));
}

static void *builder(void *arg)
{
	struct line *l = arg;

	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!l->stop && l->next < l->nshards &&
		       l->next >= l->merged + l->jobs)
			pthread_cond_wait(&l->cv, &l->mu);
		if (l->stop || l->next >= l->nshards)
			break;
		uint32_t s = l->next++;
		struct job *j = &l->jv[s % l->jobs];

		pthread_mutex_unlock(&l->mu);
		job_start(j, &l->sh[s], l->ndevs);
		build(j);
		pthread_mutex_lock(&l->mu);
		l->built[s % l->jobs] = true;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* Shard s, built in j, into acc; j's shard freed. */
static int merge_job(const struct shard_cfg *cfg, struct shard_trace *t,
		     struct report *acc, struct pending *p, struct job *j,
		     uint32_t s)
{
	int err = j->err;

	if (!err)
		err = take_requests(cfg, acc, p, &j->rep, j->r.sh,
				    s + 1 == t->nshards);
	if (!err && cfg->part)
		err = cfg->part(cfg->ctx, s, j->r.sh->from, &j->rep, &j->c);
	if (!err)
		err = report_merge(acc, &j->rep);
	for (size_t d = 0; !err && d < t->c.ndevs; d++) {
		t->on_cpu_ns[d] += j->on_cpu[d];
		t->intervals[d] += j->nivs[d];
	}
	report_free(&j->rep);
	unshare_base(&j->c);
	return err;
}

static int build_all(const struct shard_cfg *cfg, struct shard_trace *t,
		     struct report *acc, struct pending *p, struct job *jv,
		     const struct shard *sh, uint32_t jobs)
{
	pthread_t th[64];
	bool built[64] = { 0 };
	struct line l = { .jv = jv, .built = built, .sh = sh,
			  .ndevs = t->c.ndevs, .nshards = t->nshards,
			  .jobs = jobs };
	uint64_t done = 0;
	uint32_t nth = 0;
	int err = 0;

	if (cfg->progress)
		cfg->progress(cfg->progress_ctx, 0, t->nshards, 0, t->events);
	pthread_mutex_init(&l.mu, NULL);
	pthread_cond_init(&l.cv, NULL);
	while (jobs > 1 && nth < jobs &&
	       !pthread_create(&th[nth], NULL, builder, &l))
		nth++;
	for (uint32_t s = 0; !err && s < t->nshards; s++) {
		struct job *j = &jv[s % jobs];

		if (!nth) {
			job_start(j, &sh[s], t->c.ndevs);
			build(j);
		} else {
			pthread_mutex_lock(&l.mu);
			while (!built[s % jobs])
				pthread_cond_wait(&l.cv, &l.mu);
			pthread_mutex_unlock(&l.mu);
		}
		err = merge_job(cfg, t, acc, p, j, s);
		done += sh[s].events;
		if (!err && cfg->progress)
			cfg->progress(cfg->progress_ctx, s + 1, t->nshards,
				      done, t->events);
		if (!nth)
			continue;
		pthread_mutex_lock(&l.mu);
		built[s % jobs] = false;
		l.merged++;
		l.stop |= err != 0;
		pthread_cond_broadcast(&l.cv);
		pthread_mutex_unlock(&l.mu);
	}
	for (uint32_t i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	for (uint32_t i = 0; i < jobs; i++)
		if (built[i]) {		/* built after an error: dropped */
			report_free(&jv[i].rep);
			unshare_base(&jv[i].c);
		}
	pthread_cond_destroy(&l.cv);
	pthread_mutex_destroy(&l.mu);
	return err;
}

int shard_report(const struct shard_cfg *cfg, struct shard_trace *t,
		 struct report *out)
{
	FILE *log = cfg->log ? cfg->log : stderr;
	uint64_t max = cfg->max_events ? cfg->max_events : SHARD_EVENTS_DEFAULT;
	int jobs = cfg->jobs < 1 ? 1 : cfg->jobs > 64 ? 64 : cfg->jobs;
	struct collect_part tmpl = { .meta_only = true, .seen = scan_seen };
	struct scan sc = { 0 };
	struct pending pend = { 0 };
	struct shard *sh = NULL;
	struct job *jv = NULL;
	struct chain ch;
	size_t maxblocks = 1;
	int err;

	memset(t, 0, sizeof(*t));
	memset(out, 0, sizeof(*out));
	out->model_dev = SIZE_MAX;
	err = chain_open(&ch, cfg->paths, cfg->npaths, log);
	if (err)
		return err;
	t->nfiles = ch.nfiles;
	sc.f = calloc(ch.nfiles, sizeof(*sc.f));
	collect_init(&t->c);
	if (cfg->read_progress)
		tracefile_set_progress(cfg->read_progress, cfg->progress_ctx);
	err = sc.f ? chain_load_with(&ch, &t->c, chain_mono_of(&ch, cfg->from),
				     chain_mono_of(&ch, cfg->to), &t->hdr, log,
				     &tmpl, scan_file, &sc) : -ENOMEM;
	if (cfg->read_progress)
		tracefile_set_progress(NULL, NULL);
	if (!err && sc.oom)
		err = -ENOMEM;
	if (err)
		goto out;
	t->events = sc.events;
	if (sc.events <= max) {
		err = 1;
		goto out;
	}
	if (strcmp(t->c.compute, "cpu") && strcmp(t->c.compute, "cupti")) {
		/* every shard attributes the same devices */
		bool gpu = false;

		for (size_t i = 0; i < t->c.ndevs; i++)
			gpu |= t->c.devs[i].kind == TT_DEV_GPU;
		snprintf(t->c.compute, sizeof(t->c.compute), "%s",
			 gpu ? "cupti" : "cpu");
	}
	err = cut_shards(&sc, t->c.start_ns, t->c.end_ns, max,
			 chain_mono_of(&ch, cfg->from), &sh, &t->nshards);
	if (err)
		goto out;
	if (t->nshards < 2) {
		err = 1;
		goto out;
	}
	if (cfg->begin) {
		err = cfg->begin(cfg->ctx, t->c.start_ns, t->c.end_ns);
		if (err)
			goto out;
	}
	for (size_t i = 0; i < ch.nfiles; i++)
		maxblocks = sc.f[i].nb > maxblocks ? sc.f[i].nb : maxblocks;
	pend.nd = cfg->loaded_by_range ? 0 : loaded_devices(&t->c);
	pend.row = calloc(pend.nd + 1, sizeof(uint64_t));
	if (!pend.row ||
	    report_merge_init(out, (const char (*)[64])t->c.hosts,
			      t->c.nhosts, pend.nd)) {
		err = -ENOMEM;
		goto out;
	}
	if (cfg->marks) {
		t->marks.ndevs = pend.nd;
		t->marks.side = tmpfile();
		pend.marks = &t->marks;
		if (!t->marks.side) {
			err = -errno;
			fprintf(log, "tokentrace: report: no temporary file for "
				"the requests' loaded costs: %s\n",
				strerror(errno));
			goto out;
		}
	}
	t->on_cpu_ns = calloc(t->c.ndevs + 1, sizeof(uint64_t));
	t->intervals = calloc(t->c.ndevs + 1, sizeof(uint64_t));
	jv = calloc((size_t)jobs, sizeof(*jv));
	if (!t->on_cpu_ns || !t->intervals || !jv) {
		err = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < jobs; i++) {
		jv[i].r = (struct run){ cfg, &ch, &t->c, sc.f, NULL,
					malloc(maxblocks * sizeof(uint64_t)), 0,
					pend.nd };
		jv[i].on_cpu = calloc(t->c.ndevs + 1, sizeof(uint64_t));
		jv[i].nivs = calloc(t->c.ndevs + 1, sizeof(uint64_t));
		if (!jv[i].r.offs || !jv[i].on_cpu || !jv[i].nivs)
			err = -ENOMEM;
	}
	if (!err)
		err = build_all(cfg, t, out, &pend, jv, sh, (uint32_t)jobs);
	if (!err && pend.n) {
		fprintf(log, "tokentrace: report: %zu requests were left "
			"between shards\n", pend.n);
		err = -EPROTO;
	}
	if (!err)
		err = report_finish_merged(out);
	t->marks.usd_per_ns = out->loaded_usd_per_ns;
out:
	for (int i = 0; jv && i < jobs; i++) {
		free(jv[i].r.offs);
		free(jv[i].on_cpu);
		free(jv[i].nivs);
	}
	free(jv);
	free(pend.v);
	free(pend.ns);
	free(pend.row);
	free(sh);
	free(sc.per_s);
	free_files(sc.f, ch.nfiles);
	chain_free(&ch);
	if (err) {
		uint64_t events = t->events;

		report_free(out);
		shard_trace_free(t);
		t->events = events;	/* what the first reading counted */
	}
	return err;
}

/* ---- the end of a recording -------------------------------------------- */

struct json_out {
	FILE *f;		/* NULL: no summary */
	size_t n;
};

static int put_json(void *ctx, const struct report_request *q)
{
	struct json_out *o = ctx;

	if (!o->f)
		return 0;
	if (o->n++ && fputc(',', o->f) == EOF)
		return -EIO;
	return report_request_write_json(q, o->f);
}

static int write_summary(const struct shard_trace *t, const struct report *r,
			 FILE *requests, const char *path)
{
	cJSON *o = collect_report_json_shell_counted(&t->c, r, t->on_cpu_ns,
						     t->intervals);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 && !fchmod(fd, 0600) ? fdopen(fd, "w") : NULL;
	int err;

	if (!f) {
		err = -errno;
		if (fd >= 0)
			close(fd);
		cJSON_Delete(o);
		return err ? err : -EIO;
	}
	err = o ? report_print_json_from(o, requests, &t->marks, f) : -ENOMEM;
	if (fclose(f) && !err)
		err = -EIO;
	return err;
}

int shard_end_of_run(const char *path, const char *summary, FILE *text,
		     const char *cmd)
{
	char *paths[] = { (char *)path };
	FILE *req = summary ? tmpfile() : NULL;
	struct json_out o = { req, 0 };
	struct shard_cfg cfg = { .paths = paths, .npaths = 1, .log = stderr,
				 .request = put_json, .ctx = &o, .jobs = 1,
				 .marks = summary != NULL };
	const char *env = getenv("TOKENTRACE_SHARD_EVENTS");
	struct shard_trace t;
	struct report r;
	int err;

	cfg.max_events = env ? strtoull(env, NULL, 10) : 0;
	if (env && !cfg.max_events)
		cfg.max_events = UINT64_MAX;	/* 0: never */
	if (cfg.max_events == UINT64_MAX ||
	    shard_small(paths, 1, cfg.max_events) || (summary && !req)) {
		if (req)
			fclose(req);
		return 1;
	}
	err = shard_report(&cfg, &t, &r);
	if (err) {
		if (req)
			fclose(req);
		return err;
	}
	fprintf(text, "tokentrace %s: %llu events, reported in %u time "
		"ranges, each with its own steps and cost model\n", cmd,
		(unsigned long long)t.events, r.shards);
	err = report_write_text(&r, text);
	if (summary) {
		int e = write_summary(&t, &r, req, summary);

		if (e)
			fprintf(stderr, "tokentrace %s: cannot write the "
				"summary %s: %s\n", cmd, summary,
				strerror(-e));
		err = err ? err : e;
	}
	if (req)
		fclose(req);
	report_free(&r);
	shard_trace_free(&t);
	return err;
}

int shard_parse_jobs(const char *arg, int *jobs)
{
	char *end;
	long v = strtol(arg, &end, 10);

	if (*end || end == arg || v < 1 || v > 64) {
		fprintf(stderr, "tokentrace: --jobs '%s': give 1 to 64\n", arg);
		return -1;
	}
	*jobs = (int)v;
	return 0;
}

int shard_parse_events(const char *arg, uint64_t *max_events)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || *end || end == arg || *arg == '-') {
		fprintf(stderr, "tokentrace: --shard-events '%s': give a count "
			"(0: never)\n", arg);
		return -1;
	}
	*max_events = v ? v : UINT64_MAX;
	return 0;
}
