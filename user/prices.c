/*
 * prices.c - prices per device-hour from the command line and price files.
 *
 * In:  the arguments of --price and --price-file.
 * Out: struct prices, handed to the report as struct collect_prices.
 * Assumes: nothing; every bad value is refused with the text that was
 *      wrong, so a typo never turns into a silent default.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prices.h"

void prices_init(struct prices *p)
{
	memset(p, 0, sizeof(*p));
	p->gpu = p->cpu = -1;
}

void prices_free(struct prices *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->names[i]);
	p->n = 0;
}

struct collect_prices prices_for_report(const struct prices *p)
{
	return (struct collect_prices){ p->list, p->n, p->gpu, p->cpu };
}

static int add_price(struct prices *p, const char *name, size_t len,
		     const char *usd)
{
	char *end;
	double v = strtod(usd, &end);

	while (*end == ' ' || *end == '\t' || *end == '\n')
		end++;
	while (len && (name[len - 1] == ' ' || name[len - 1] == '\t'))
		len--;
	while (len && (*name == ' ' || *name == '\t'))
		name++, len--;
	if (end == usd || *end || v < 0 || !isfinite(v) || !len) {
		fprintf(stderr, "tokentrace: price '%.*s=%s': use NAME=USD "
			"with a number of USD per hour >= 0\n", (int)len,
			name, usd);
		return -1;
	}
	if (len == 3 && !strncmp(name, "gpu", 3)) {
		p->gpu = v;
		return 0;
	}
	if (len == 3 && !strncmp(name, "cpu", 3)) {
		p->cpu = v;
		return 0;
	}
	if (p->n == PRICES_MAX) {
		fprintf(stderr, "tokentrace: more than %d prices\n",
			PRICES_MAX);
		return -1;
	}
	p->names[p->n] = strndup(name, len);
	if (!p->names[p->n])
		return -1;
	p->list[p->n].device_name = p->names[p->n];
	p->list[p->n++].usd_per_hour = v;
	return 0;
}

/* "4.10", or "NAME=USD,NAME=USD". */
int prices_parse(struct prices *p, const char *s)
{
	char *end, *copy, *item, *save = NULL;
	double v = strtod(s, &end);
	int err = 0;

	if (end != s && !*end) {
		if (v < 0 || !isfinite(v)) {
			fprintf(stderr, "tokentrace: --price %s: not a price "
				">= 0\n", s);
			return -1;
		}
		p->gpu = p->cpu = v;
		return 0;
	}
	copy = strdup(s);
	for (item = copy ? strtok_r(copy, ",", &save) : NULL; item && !err;
	     item = strtok_r(NULL, ",", &save)) {
		char *eq = strrchr(item, '=');

		if (!eq) {
			fprintf(stderr, "tokentrace: --price '%s': expected "
				"a number or NAME=USD,...\n", item);
			err = -1;
		} else {
			err = add_price(p, item, eq - item, eq + 1);
		}
	}
	free(copy);
	return copy ? err : -1;
}

int prices_read_file(struct prices *p, const char *path)
{
	FILE *f = fopen(path, "re");
	char line[512];
	int err = 0, n = 0;

	if (!f) {
		fprintf(stderr, "tokentrace: --price-file %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	while (!err && fgets(line, sizeof(line), f)) {
		char *eq, *hash = strchr(line, '#');

		n++;
		if (hash)
			*hash = 0;
		if (strspn(line, " \t\r\n") == strlen(line))
			continue;
		eq = strrchr(line, '=');
		if (!eq) {
			fprintf(stderr, "tokentrace: %s line %d: expected "
				"'DEVICE NAME = USD'\n", path, n);
			err = -1;
		} else {
			line[strcspn(line, "\r")] = 0;
			err = add_price(p, line, eq - line, eq + 1);
		}
	}
	fclose(f);
	return err;
}
