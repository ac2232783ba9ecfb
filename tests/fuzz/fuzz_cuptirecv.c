/*
 * fuzz_cuptirecv.c - libFuzzer target for cuptirecv_decode in
 * user/cuptirecv.c, the collector's reader of the record stream that the
 * injected CUPTI library sends (include/tokentrace/compute.h).
 *
 * In:  the input is the record stream, as a record file holds it.
 * Out: a crash on a memory error, a leak, an unterminated name, a device
 *      id 0 for a GPU, or a decode that neither succeeds nor says why.
 * Assumes: a fresh receiver per input (device ids are receiver-wide), no
 *      listener (path NULL).
 */
#include <errno.h>
#include <stdint.h>

#include <tokentrace/compute.h>

#include "../../user/cuptirecv.h"
#include "fuzz.h"

static void fuzz_device(void *ctx, const struct tt_device *d)
{
	(void)ctx;
	fuzz_check_str(d->name);
	fuzz_check_str(d->uuid);
	fuzz_check(d->kind != TT_DEV_GPU || d->id > 0, "GPU with id 0");
}

/* end < start is passed on: the timeline clips such intervals away */
static void fuzz_interval(void *ctx, const struct tt_interval *iv)
{
	uint64_t *sum = ctx;

	*sum += iv->end_ns - iv->start_ns + iv->device;
}

static void fuzz_name(void *ctx, uint32_t pid, uint32_t id, const char *name)
{
	(void)ctx;
	(void)pid;
	fuzz_check(id > 0, "name id 0");
	fuzz_check(strlen(name) < TTC_NAME_MAX, "name too long");
}

static void fuzz_losses(void *ctx, uint32_t pid,
			const struct tt_compute_losses *l)
{
	(void)ctx;
	(void)pid;
	(void)l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tt_compute_sink sink = {
		.device = fuzz_device, .interval = fuzz_interval,
		.name = fuzz_name, .losses = fuzz_losses,
	};
	struct cuptirecv_stats st;
	uint64_t sum = 0;
	struct cuptirecv *r;
	char *b;
	int n;

	sink.ctx = &sum;
	r = cuptirecv_open(NULL, &sink);
	fuzz_check(r != NULL, "cuptirecv_open(NULL) failed");
	b = fuzz_dup(data, size);
	n = cuptirecv_decode(r, b, size);
	cuptirecv_stats(r, &st);
	fuzz_check_str(st.last_error);
	fuzz_check(n >= 0 || (n == -EINVAL && st.last_error[0]),
		   "decode returned %d, last_error '%s'", n, st.last_error);
	fuzz_check(st.bytes <= size, "%llu bytes read of %zu",
		   (unsigned long long)st.bytes, size);
	cuptirecv_close(r);
	free(b);
	return 0;
}
