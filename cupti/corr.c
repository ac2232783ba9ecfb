/*
 * corr.c - which host thread launched a GPU operation.
 *
 * In: (correlation id, thread id) notes from CUPTI API-enter callbacks on
 *     the server's launching threads; correlation ids from activity records.
 * Out: the launching thread of a kernel, copy, memset or graph launch.
 * Assumes: correlation ids grow by one per API call in the process, and a
 *     record is converted before TTC_CORR_SLOTS more launches happen.
 *
 * Why a callback and not CUPTI_ACTIVITY_KIND_RUNTIME/DRIVER records: those
 * add one activity record (about 40 bytes, buffer space, conversion) per
 * API call, every API call, not only launches; a callback on the launch,
 * copy and memset APIs alone costs one thread-local read and one relaxed
 * 64-bit store on the launching thread, with no lock and no allocation.
 *
 * The table is direct-mapped by correlation id; a slot holds id and tid
 * in one 64-bit word so a reader never sees a torn pair, and a slot
 * overwritten by a later launch simply reads as unknown (tid 0).
 * 2^18 slots (2 MiB) cover 260k launches between launch and conversion:
 * at 100k launches/s and a 100-200 ms flush period that is ample.
 */
#include <stdatomic.h>
#include <string.h>

#include "ttc.h"

#define TTC_CORR_SLOTS (1u << 18)

static _Atomic uint64_t corr_table[TTC_CORR_SLOTS];

void ttc_corr_note(uint32_t correlation, uint32_t tid)
{
	uint64_t v = ((uint64_t)correlation << 32) | tid;

	atomic_store_explicit(&corr_table[correlation & (TTC_CORR_SLOTS - 1)],
			      v, memory_order_relaxed);
}

uint32_t ttc_corr_tid(uint32_t correlation)
{
	uint64_t v = atomic_load_explicit(
		&corr_table[correlation & (TTC_CORR_SLOTS - 1)],
		memory_order_relaxed);

	if (correlation == 0 || (uint32_t)(v >> 32) != correlation)
		return 0;
	return (uint32_t)v;
}

/* Runtime and driver API names (as cuptiGetCallbackName gives them) that
 * put kernels, copies, memsets or graphs on a device. */
int ttc_corr_api_wanted(const char *name)
{
	static const char *const prefixes[] = {
		"cudaLaunch", "__cudaLaunch", "cudaGraphLaunch", "cudaMemcpy",
		"cudaMemset", "cuLaunch", "cuGraphLaunch", "cuMemcpy",
		"cuMemset",
	};

	if (!name || strstr(name, "HostFunc"))
		return 0;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return 1;
	return 0;
}
