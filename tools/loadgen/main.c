/*
 * main.c - the loadgen command.
 *
 * In:  the command line (loadgen --help).
 * Out: the run's summary on stdout, per-request JSON lines in --out;
 *      exit 0 when every request succeeded (or --allow-errors), 1 when
 *      some failed or the run could not start, 2 on a usage error.
 * Assumes: nothing beyond libloadgen.a, which does the work.
 */
#include <stdio.h>

#include "loadgen.h"

int main(int argc, char **argv)
{
	struct lg_opts o;
	struct lg_summary s;
	char err[512] = "";
	int rc;

	rc = lg_opts_parse(&o, argc, argv, err, sizeof(err));
	if (rc == 1)
		return 0;
	if (rc < 0) {
		fprintf(stderr, "loadgen: %s\n", err);
		return 2;
	}
	if (lg_run(&o, &s, err, sizeof(err)) < 0) {
		fprintf(stderr, "loadgen: %s\n", err);
		return 1;
	}
	if (!o.quiet)
		lg_summary_print(stdout, &o, &s);
	if (s.failed && !o.allow_errors) {
		fprintf(stderr, "loadgen: %ld of %ld requests failed (see the "
			"error field in --out; --allow-errors to exit 0)\n",
			s.failed, s.ok + s.failed);
		return 1;
	}
	return 0;
}
