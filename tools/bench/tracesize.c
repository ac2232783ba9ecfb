/*
 * tracesize.c - what one request and one compute record cost in a trace
 * file, for the trace size benchmark (tools/bench.sh, section trace size).
 *
 * In:  tracesize TRACE [TMPDIR] (TMPDIR default /tmp).
 * Out: on stdout "tracesize: R requests (T token times), I intervals,
 *      file B bytes; B/request X, B/interval Y, B/record Z": the requests
 *      and the intervals of TRACE written again, each kind alone, into
 *      trace files made the way `tokentrace record` makes them (zstd level
 *      1), less the bytes of an empty trace, divided by their count.
 * Assumes: TMPDIR is writable; the three files made there are removed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../user/collect.h"
#include "../../user/tracefile.h"

#define TS_ZSTD_LEVEL	1	/* as user/record.c writes */

struct ts {
	struct tracefile_writer *reqs, *ivs;
	uint64_t nreqs, ntok, nivs;
	int err;
};

static void ts_request(void *ctx, const struct tt_request *q)
{
	struct ts *t = ctx;

	t->nreqs++;
	t->ntok += q->token_ns_len;
	if (!t->err)
		t->err = tracefile_put_request(t->reqs, q);
}

static void ts_interval(void *ctx, const struct tt_interval *iv)
{
	struct ts *t = ctx;

	t->nivs++;
	if (!t->err)
		t->err = tracefile_put_interval(t->ivs, iv);
}

/* Bytes of the file w wrote, once closed. */
static long ts_close(struct tracefile_writer *w, const char *path)
{
	FILE *f;
	long n;

	if (tracefile_close(w))
		return -1;
	f = fopen(path, "r");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fclose(f);
	unlink(path);
	return n;
}

static long ts_file_bytes(const char *path)
{
	FILE *f = fopen(path, "r");
	long n;

	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 2 ? argv[2] : "/tmp";
	char preq[512], piv[512], pnone[512];
	struct tracefile_handlers h = { .request = ts_request,
					.interval = ts_interval };
	struct tt_hostinfo host = { 0 };
	struct tracefile_writer *none;
	struct tracefile_header hdr;
	struct tracefile_stats st;
	struct ts t = { 0 };
	long breq, biv, bnone, bfile;

	if (argc < 2) {
		fprintf(stderr, "usage: tracesize TRACE [TMPDIR]\n");
		return 2;
	}
	snprintf(preq, sizeof(preq), "%s/tracesize.%d.req", dir, getpid());
	snprintf(piv, sizeof(piv), "%s/tracesize.%d.iv", dir, getpid());
	snprintf(pnone, sizeof(pnone), "%s/tracesize.%d.none", dir, getpid());
	h.ctx = &t;
	h.log = stderr;
	/* the same (empty) host facts in all three: the header cancels out */
	if (tracefile_create(preq, &host, TS_ZSTD_LEVEL, true, &t.reqs) ||
	    tracefile_create(piv, &host, TS_ZSTD_LEVEL, true, &t.ivs) ||
	    tracefile_create(pnone, &host, TS_ZSTD_LEVEL, true, &none))
		return 1;	/* it said why */
	if (tracefile_read(argv[1], &h, &hdr, &st) || t.err) {
		fprintf(stderr, "tracesize: rewriting %s failed: %s\n",
			argv[1], strerror(t.err ? -t.err : EIO));
		return 1;
	}
	breq = ts_close(t.reqs, preq);
	biv = ts_close(t.ivs, piv);
	bnone = ts_close(none, pnone);
	bfile = ts_file_bytes(argv[1]);
	if (breq < 0 || biv < 0 || bnone < 0 || bfile < 0) {
		fprintf(stderr, "tracesize: could not measure the files in "
			"%s\n", dir);
		return 1;
	}
	printf("tracesize: %llu requests (%llu token times), %llu intervals, "
	       "file %ld bytes; B/request %.1f, B/interval %.1f, B/record "
	       "%.1f\n", (unsigned long long)t.nreqs,
	       (unsigned long long)t.ntok, (unsigned long long)t.nivs, bfile,
	       t.nreqs ? (double)(breq - bnone) / t.nreqs : 0,
	       t.nivs ? (double)(biv - bnone) / t.nivs : 0,
	       t.nreqs + t.nivs ? (double)bfile / (t.nreqs + t.nivs) : 0);
	return 0;
}
