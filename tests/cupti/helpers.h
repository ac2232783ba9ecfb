/*
 * helpers.h - shared by the tests in tests/cupti: a sink that keeps what
 * the collector's receiver (user/cuptirecv.c, built into this test binary
 * by recv_glue.c) delivers, and small helpers to build CUPTI records.
 */
#ifndef TTC_TEST_HELPERS_H
#define TTC_TEST_HELPERS_H

#include <stdint.h>

#include "../../cupti/ttc.h"
#include "../../user/compute.h"
#include "../../user/cuptirecv.h"

#define KEPT_MAX 4096

struct kept {
	struct tt_interval iv[KEPT_MAX];
	int niv;
	uint64_t total_iv;	/* all delivered, past KEPT_MAX too */
	uint64_t last_start_ns;
	uint64_t disorder;	/* start_ns not above the previous one */
	struct tt_device dev[16];
	int ndev;
	struct {
		uint32_t pid, id;
		char name[256];
	} names[64];
	int nnames;
	struct tt_compute_losses losses;
	int nlosses;
};

struct tt_compute_sink kept_sink(struct kept *k);
/* A fresh path under /tmp for a socket or file; caller frees. */
char *test_path(const char *what);
/* Reads a whole file; caller frees; *len its size. */
void *slurp(const char *path, size_t *len);

#endif
