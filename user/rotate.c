/*
 * rotate.c - a trace file or a chain of them (see rotate.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain.h"
#include "rotate.h"
#include "tracefile.h"

int rotate_parse(const char *cmd, const char *s, struct rotate *r)
{
	static const char units[] = "KMG";
	struct chain_time t;
	char *end;
	double v = strtod(s, &end);
	const char *u = end != s && *end ? strchr(units, *end == 'k' ? 'K' :
						  *end) : NULL;

	if (u && (!end[1] || !strcmp(end + 1, "B") || !strcmp(end + 1, "iB"))) {
		double bytes = v * (double)(1ull << (10 * (u - units + 1)));

		if (bytes >= 65536 && bytes < 1e18) {
			r->bytes = (uint64_t)bytes;
			return 0;
		}
	} else if (!chain_parse_time(s, &t) && !t.wall &&
		   t.ns >= 1000000000ull) {
		r->every_ns = t.ns;
		return 0;
	}
	fprintf(stderr, "tokentrace %s: --rotate '%s': give a duration "
		"(90s, 15m, 1h; at least 1 s) or a size (500M, 2G; at least "
		"64K)\n", cmd, s);
	return -1;
}

int rotate_check(const char *cmd, struct rotate *r, const char *out_path,
		 bool jsonl, int zstd_level)
{
	r->path = out_path;
	r->zstd_level = zstd_level;
	if (rotate_on(r) && (!out_path || jsonl)) {
		fprintf(stderr, "tokentrace %s: --rotate needs -o DIR, the "
			"folder for the chain of trace files\n", cmd);
		return -1;
	}
	return 0;
}

static int open_folder(const char *dir)
{
	struct stat sb;
	char p[4096];

	if (mkdir(dir, 0700) && errno != EEXIST) {
		fprintf(stderr, "tokentrace: cannot make the folder %s: %s\n",
			dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "tokentrace: --rotate: %s is not a folder\n",
			dir);
		return -1;
	}
	snprintf(p, sizeof(p), "%s/trace-000000.tt", dir);
	if (!access(p, F_OK)) {
		fprintf(stderr, "tokentrace: %s already holds a chain of trace "
			"files (%s); choose another folder\n", dir, p);
		return -1;
	}
	return 0;
}

/* The next file of the chain (or the trace file), attached. 0 or -1. */
static int next_piece(struct rotate *r, struct collect *c, uint64_t now_ns)
{
	struct tracefile_writer *w;
	char p[4096];

	if (rotate_on(r))
		snprintf(p, sizeof(p), "%s/trace-%06u.tt", r->path,
			 r->piece++);
	else
		snprintf(p, sizeof(p), "%s", r->path);
	if (tracefile_create(p, &c->host, r->zstd_level, true, &w))
		return -1;		/* it named the file */
	r->piece_start_ns = now_ns;
	if (!c->writer)
		return collect_attach_writer(c, w) ? -1 : 0;
	return collect_rotate(c, w, now_ns) ? -1 : 0;
}

int rotate_open(struct rotate *r, struct collect *c, uint64_t now_ns)
{
	if (rotate_on(r) && open_folder(r->path))
		return -1;
	collect_set_spill(c, true);
	return next_piece(r, c, now_ns);
}

void rotate_tick(struct rotate *r, struct collect *c, uint64_t now_ns)
{
	if (!rotate_on(r) || !c->writer)
		return;
	if ((r->every_ns && now_ns - r->piece_start_ns >= r->every_ns) ||
	    (r->bytes && tracefile_bytes(c->writer) >= r->bytes))
		next_piece(r, c, now_ns);	/* errors: at collect_close */
}

static int load_chain(struct collect *n, const char *dir, FILE *log)
{
	char *paths[1] = { (char *)dir };
	struct tracefile_header h;

	return chain_read(n, paths, 1, NULL, NULL, &h, log, NULL);
}

int rotate_reload(const struct rotate *r, struct collect *c, FILE *log)
{
	return rotate_on(r) ? collect_reload_with(c, r->path, log, load_chain)
			    : collect_reload(c, r->path, log);
}
