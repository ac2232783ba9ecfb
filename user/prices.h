/*
 * prices.h - what a device-hour costs, as the user gives it on the
 * command line (--price, --price-file), for every command that prints $.
 *
 * In:  "--price 4.10" (every device), "--price NAME=USD,..." (per device
 *      name; "gpu" and "cpu" set the price of any GPU / the CPU device),
 *      and price files of lines "DEVICE NAME = USD" ('#' starts a comment).
 * Out: a struct collect_prices for collect_report_input.
 * Assumes: device names as the report shows them.
 */
#ifndef TT_PRICES_H
#define TT_PRICES_H

#include <stddef.h>

#include "collect.h"
#include "report.h"

#define PRICES_MAX	64

struct prices {
	struct report_price list[PRICES_MAX];
	char *names[PRICES_MAX];
	size_t n;
	double gpu, cpu;	/* < 0: the defaults */
};

void prices_init(struct prices *p);
void prices_free(struct prices *p);

/* --price's argument. 0, or -1 with a message on stderr. */
int prices_parse(struct prices *p, const char *arg);

/* --price-file's argument. 0, or -1 with a message naming file and line. */
int prices_read_file(struct prices *p, const char *path);

struct collect_prices prices_for_report(const struct prices *p);

#endif
