/*
 * Prices per device-hour from --price and --price-file.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../user/prices.h"

Test(prices, one_number_prices_every_device)
{
	struct prices p;

	prices_init(&p);
	cr_assert_eq(prices_parse(&p, "4.10"), 0);
	cr_expect_float_eq(p.gpu, 4.10, 1e-12);
	cr_expect_float_eq(p.cpu, 4.10, 1e-12);
	cr_expect_eq(p.n, 0);
	prices_free(&p);
}

Test(prices, names_and_kinds_in_one_list)
{
	struct prices p;

	prices_init(&p);
	cr_assert_eq(prices_parse(&p, "NVIDIA H100 80GB HBM3=4.5,cpu=0.2"), 0);
	cr_assert_eq(p.n, 1);
	cr_expect_str_eq(p.list[0].device_name, "NVIDIA H100 80GB HBM3");
	cr_expect_float_eq(p.list[0].usd_per_hour, 4.5, 1e-12);
	cr_expect_float_eq(p.cpu, 0.2, 1e-12);
	cr_expect_lt(p.gpu, 0, "the GPU default must stay untouched");
	struct collect_prices cp = prices_for_report(&p);
	cr_expect_eq(cp.n, 1);
	cr_expect_eq(cp.list, p.list);
	prices_free(&p);
}

Test(prices, bad_values_are_refused)
{
	struct prices p;

	prices_init(&p);
	cr_expect_eq(prices_parse(&p, "-1"), -1);
	cr_expect_eq(prices_parse(&p, "gpu=abc"), -1);
	cr_expect_eq(prices_parse(&p, "=3"), -1);
	cr_expect_eq(prices_parse(&p, "H100"), -1);
	cr_expect_eq(prices_parse(&p, "x=nan"), -1);
	cr_expect_eq(p.n, 0);
	prices_free(&p);
}

Test(prices, file_with_comments_and_blank_lines)
{
	char path[] = "/tmp/tt-prices-XXXXXX";
	int fd = mkstemp(path);
	struct prices p;

	cr_assert_geq(fd, 0);
	FILE *f = fdopen(fd, "w");
	fputs("# on-demand prices\n\nNVIDIA A10G = 1.01  # cheap\n"
	      "gpu = 2.5\r\n", f);
	fclose(f);
	prices_init(&p);
	cr_expect_eq(prices_read_file(&p, path), 0);
	cr_assert_eq(p.n, 1);
	cr_expect_str_eq(p.list[0].device_name, "NVIDIA A10G");
	cr_expect_float_eq(p.list[0].usd_per_hour, 1.01, 1e-12);
	cr_expect_float_eq(p.gpu, 2.5, 1e-12);
	prices_free(&p);

	f = fopen(path, "w");
	fputs("NVIDIA A10G 1.01\n", f);
	fclose(f);
	prices_init(&p);
	cr_expect_eq(prices_read_file(&p, path), -1);
	prices_free(&p);
	unlink(path);
}
