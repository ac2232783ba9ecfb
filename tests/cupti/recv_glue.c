/*
 * recv_glue.c - builds the collector's receiver into the CUPTI test
 * binary (which links the library's objects, not libtt.a), so the tests
 * can check records end to end, and the helpers of helpers.h.
 */
#include "../../user/cuptirecv.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static void kept_device(void *ctx, const struct tt_device *d)
{
	struct kept *k = ctx;

	if (k->ndev < 16)
		k->dev[k->ndev++] = *d;
}

static void kept_interval(void *ctx, const struct tt_interval *iv)
{
	struct kept *k = ctx;

	if (k->niv < KEPT_MAX)
		k->iv[k->niv++] = *iv;
	k->disorder += k->total_iv && iv->start_ns <= k->last_start_ns;
	k->last_start_ns = iv->start_ns;
	k->total_iv++;
}

static void kept_name(void *ctx, uint32_t pid, uint32_t id, const char *name)
{
	struct kept *k = ctx;

	if (k->nnames >= 64)
		return;
	k->names[k->nnames].pid = pid;
	k->names[k->nnames].id = id;
	snprintf(k->names[k->nnames].name, 256, "%s", name);
	k->nnames++;
}

static void kept_losses(void *ctx, uint32_t pid,
			const struct tt_compute_losses *l)
{
	struct kept *k = ctx;

	(void)pid;
	k->losses = *l;
	k->nlosses++;
}

struct tt_compute_sink kept_sink(struct kept *k)
{
	return (struct tt_compute_sink){
		.device = kept_device, .interval = kept_interval,
		.name = kept_name, .losses = kept_losses, .ctx = k,
	};
}

char *test_path(const char *what)
{
	static int n;
	char *p = NULL;

	if (asprintf(&p, "/tmp/ttc-test-%d-%d-%s", (int)getpid(), n++,
		     what) < 0)
		return NULL;
	unlink(p);
	return p;
}

void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	*len = 0;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = buf ? (size_t)n : 0;
	return buf;
}
