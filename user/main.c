/*
 * main.c - the `tokentrace` command: finds the subcommand and hands it the
 * rest of the arguments. Each subcommand lives in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct command commands[] = {
	{ "record", cmd_record, "trace running servers: request records, a trace file, the report" },
	{ "top", cmd_top, "live view of running servers, per tenant and per model" },
	{ "run", cmd_run, "start a server under tracing until it exits, then summarise" },
	{ "report", cmd_report, "the report of a trace file (text or JSON), offline" },
	{ "diff", cmd_diff, "two trace files side by side, with what changed" },
	{ "export", cmd_export, "a trace file as Perfetto, OTLP/JSON or JSON lines" },
	{ "plan", cmd_plan, "what another load would give, and the GPUs a forecast needs" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: tokentrace COMMAND [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'tokentrace COMMAND --help' describes each one.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return TT_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return TT_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "tokentrace: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return TT_EXIT_USAGE;
}
