/*
 * chain.c - several trace files read as one trace (see chain.h).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chain.h"

/* ---- --from / --to ------------------------------------------------------- */

int chain_parse_time(const char *s, struct chain_time *t)
{
	struct tm tm = { 0 };
	char *end;
	double v;

	memset(t, 0, sizeof(*t));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		end = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
	if (end) {
		time_t w;

		if (*end == 'Z')
			end++;
		w = timegm(&tm);
		if (*end || w < 0)
			return -EINVAL;
		t->set = t->wall = true;
		t->ns = (uint64_t)w * 1000000000ull;
		return 0;
	}
	v = strtod(s, &end);
	if (end == s || !(v >= 0) || !isfinite(v))
		return -EINVAL;
	if (!strcmp(end, "m"))
		v *= 60;
	else if (!strcmp(end, "h"))
		v *= 3600;
	else if (*end && strcmp(end, "s"))
		return -EINVAL;
	if (v > 1e9)
		return -EINVAL;
	t->set = true;
	t->ns = (uint64_t)llround(v * 1e9);
	return 0;
}

/* ---- the files ----------------------------------------------------------- */

void chain_free(struct chain *ch)
{
	for (size_t i = 0; i < ch->nfiles; i++)
		free(ch->files[i].path);
	free(ch->files);
	free(ch->hosts);
	memset(ch, 0, sizeof(*ch));
}

/* Add path with its header; a path already there is not added twice. */
static int add_file(struct chain *ch, const char *path,
		    const struct tracefile_header *h)
{
	char real[PATH_MAX];
	struct chain_file *p;

	if (!realpath(path, real))
		snprintf(real, sizeof(real), "%s", path);
	for (size_t i = 0; i < ch->nfiles; i++)
		if (!strcmp(ch->files[i].path, real))
			return 0;
	p = realloc(ch->files, (ch->nfiles + 1) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	ch->files = p;
	p = &p[ch->nfiles];
	memset(p, 0, sizeof(*p));
	p->path = strdup(real);
	if (!p->path)
		return -ENOMEM;
	p->hdr = *h;
	ch->nfiles++;
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every trace file in the folder dir, by name. */
static int add_folder(struct chain *ch, const char *dir, FILE *log)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, found = 0, skipped = 0;
	int err = 0;

	if (!d) {
		err = -errno;
		fprintf(log, "tokentrace: cannot read the folder %s: %s\n",
			dir, strerror(-err));
		return err;
	}
	while ((e = readdir(d))) {
		char **p;

		if (e->d_name[0] == '.')
			continue;
		p = realloc(names, (n + 1) * sizeof(*p));
		if (!p || asprintf(&p[n], "%s/%s", dir, e->d_name) < 0) {
			names = p ? p : names;
			err = -ENOMEM;
			break;
		}
		names = p;
		n++;
	}
	closedir(d);
	if (!err)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; !err && i < n; i++) {
		struct tracefile_header h;
		struct stat sb;

		if (stat(names[i], &sb) || !S_ISREG(sb.st_mode))
			continue;
		if (tracefile_read_header(names[i], &h, NULL)) {
			skipped++;
			continue;
		}
		err = add_file(ch, names[i], &h);
		found++;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	ch->skipped += skipped;
	if (!err && skipped)
		fprintf(log, "tokentrace: %s: %zu file%s skipped: not %s\n",
			dir, skipped, skipped > 1 ? "s" : "",
			skipped > 1 ? "trace files" : "a trace file");
	if (!err && !found) {
		fprintf(log, "tokentrace: the folder %s holds no trace file\n",
			dir);
		err = -ENOENT;
	}
	return err;
}

static int by_start(const void *a, const void *b)
{
	const struct chain_file *x = a, *y = b;

	if (x->hdr.wall_ns != y->hdr.wall_ns)
		return x->hdr.wall_ns < y->hdr.wall_ns ? -1 : 1;
	return strcmp(x->path, y->path);
}

static const char *host_key(const struct chain_file *f)
{
	return f->hdr.host.hostname[0] ? f->hdr.host.hostname : f->hdr.boot_id;
}

/* Hosts in the order they first start; each file's host and shift. */
static int assign(struct chain *ch)
{
	const struct tracefile_header *base = &ch->files[0].hdr;

	for (size_t i = 0; i < ch->nfiles; i++) {
		struct chain_file *f = &ch->files[i];
		const struct tracefile_header *ref = &f->hdr;
		size_t k;

		for (k = 0; k < ch->nhosts && strcmp(ch->hosts[k], host_key(f));
		     k++)
			;
		if (k == ch->nhosts) {
			char (*p)[64] = realloc(ch->hosts,
						(k + 1) * sizeof(*p));

			if (!p)
				return -ENOMEM;
			ch->hosts = p;
			snprintf(p[k], sizeof(p[k]), "%s", host_key(f));
			ch->nhosts++;
		}
		f->host = (uint32_t)k;
		/* the clock of the boot's first file */
		for (size_t j = 0; j < i; j++)
			if (!strcmp(ch->files[j].hdr.boot_id, f->hdr.boot_id)) {
				ref = &ch->files[j].hdr;
				break;
			}
		f->shift_ns = !strcmp(ref->boot_id, base->boot_id) ? 0 :
			      (int64_t)(ref->wall_ns - base->wall_ns) -
			      (int64_t)(ref->mono_ns - base->mono_ns);
	}
	return 0;
}

int chain_open(struct chain *ch, char *const *args, int nargs, FILE *log)
{
	int err = 0;

	memset(ch, 0, sizeof(*ch));
	log = log ? log : stderr;
	for (int i = 0; !err && i < nargs; i++) {
		struct tracefile_header h;
		struct stat sb;

		if (stat(args[i], &sb)) {
			err = -errno;
			fprintf(log, "tokentrace: cannot read %s: %s\n",
				args[i], strerror(-err));
		} else if (S_ISDIR(sb.st_mode)) {
			err = add_folder(ch, args[i], log);
		} else {
			err = tracefile_read_header(args[i], &h, log);
			if (err && err != -EBADMSG)
				fprintf(log, "tokentrace: cannot read trace "
					"file %s: %s\n", args[i],
					strerror(-err));
			if (!err)
				err = add_file(ch, args[i], &h);
		}
	}
	if (!err && !ch->nfiles)
		err = -ENOENT;
	if (!err) {
		qsort(ch->files, ch->nfiles, sizeof(*ch->files), by_start);
		err = assign(ch);
	}
	if (err)
		chain_free(ch);
	return err;
}

/* ---- reading ------------------------------------------------------------- */

/* t on the first file's monotonic clock. */
static uint64_t mono_of(const struct chain *ch, const struct chain_time *t)
{
	const struct tracefile_header *b = &ch->files[0].hdr;
	int64_t v;

	if (!t->wall)
		return b->mono_ns + t->ns;
	v = (int64_t)b->mono_ns + ((int64_t)t->ns - (int64_t)b->wall_ns);
	return v > 0 ? (uint64_t)v : 1;
}

/* Whether every record of file i was written before t: the next file of
 * its host began (its header's moment) before t. */
static bool all_before(const struct chain *ch, size_t i, uint64_t t)
{
	for (size_t j = i + 1; j < ch->nfiles; j++) {
		const struct chain_file *f = &ch->files[j];

		if (f->host != ch->files[i].host)
			continue;
		int64_t at = (int64_t)f->hdr.mono_ns + f->shift_ns;

		return at > 0 && (uint64_t)at < t;
	}
	return false;
}

uint64_t chain_mono_of(const struct chain *ch, const struct chain_time *t)
{
	return t && t->set ? mono_of(ch, t) : 0;
}

int chain_load(const struct chain *ch, struct collect *c,
	       const struct chain_time *from, const struct chain_time *to,
	       struct tracefile_header *first, FILE *log)
{
	return chain_load_with(ch, c, chain_mono_of(ch, from),
			       chain_mono_of(ch, to), first, log, NULL,
			       NULL, NULL);
}

int chain_load_with(const struct chain *ch, struct collect *c,
		    uint64_t from_ns, uint64_t to_ns,
		    struct tracefile_header *first, FILE *log,
		    const struct collect_part *tmpl,
		    int (*each)(void *ctx, size_t file, struct collect_part *p),
		    void *ctx)
{
	struct collect_part p = { 0 };
	int err = 0;

	log = log ? log : stderr;
	p.from_ns = from_ns;
	p.to_ns = to_ns;
	if (p.to_ns && p.to_ns <= p.from_ns) {
		fprintf(log, "tokentrace: --to is not after --from\n");
		return -EINVAL;
	}
	for (size_t i = 0; !err && i < ch->nfiles; i++) {
		const struct chain_file *f = &ch->files[i];

		if (p.from_ns && all_before(ch, i, p.from_ns))
			continue;
		if (tmpl) {
			p = *tmpl;
			p.from_ns = from_ns;
			p.to_ns = to_ns;
		}
		p.shift_ns = f->shift_ns;
		p.host = f->host;
		if (each && (err = each(ctx, i, &p)) != 0) {
			if (err < 0)
				break;
			err = 0;	/* nothing of it is wanted */
			continue;
		}
		err = collect_load_part(c, f->path, log, NULL, &p);
	}
	if (err)
		return err;
	if (first)
		*first = ch->files[0].hdr;
	c->host = ch->files[0].hdr.host;
	if (ch->nhosts > 1 && !c->hosts) {
		c->hosts = malloc(ch->nhosts * sizeof(*c->hosts));
		if (!c->hosts)
			return -ENOMEM;
		memcpy(c->hosts, ch->hosts, ch->nhosts * sizeof(*c->hosts));
		c->nhosts = ch->nhosts;
	}
	if (p.from_ns > c->start_ns)
		c->start_ns = p.from_ns;
	if (p.to_ns && p.to_ns < c->end_ns)
		c->end_ns = p.to_ns;
	if ((p.from_ns || p.to_ns) && c->end_ns <= c->start_ns) {
		fprintf(log, "tokentrace: the range asked for holds nothing of "
			"the trace\n");
		return -EINVAL;
	}
	return 0;
}

int chain_read(struct collect *c, char *const *paths, int n,
	       const struct chain_time *from, const struct chain_time *to,
	       struct tracefile_header *hdr, FILE *log, size_t *nfiles)
{
	struct chain ch;
	struct stat sb;
	int err;

	if (nfiles)
		*nfiles = 1;
	if (n == 1 && !(from && from->set) && !(to && to->set) &&
	    !stat(paths[0], &sb) && S_ISREG(sb.st_mode))
		return collect_load(c, paths[0], log, hdr);
	err = chain_open(&ch, paths, n, log);
	if (err)
		return err;
	if (nfiles)
		*nfiles = ch.nfiles;
	err = chain_load(&ch, c, from, to, hdr, log);
	chain_free(&ch);
	return err;
}
