/*
 * hostinfo.h - the host facts a tuning session changes, read once when a
 * trace starts and kept in its header, so that `tokentrace diff` can tie
 * a change in cost to a change in the host.
 *
 * In:  uname(2), /proc/cmdline, /proc/cpuinfo, cpu0's cpufreq governor,
 *      /sys/devices/system/node, transparent hugepages, and for GPUs
 *      /proc/driver/nvidia/version and nvidia-smi when they exist.
 * Out: struct tt_hostinfo (collect.h); a list of the fields that differ
 *      between two of them.
 * Assumes: nothing is required: a fact that cannot be read stays "" or 0.
 */
#ifndef TT_HOSTINFO_H
#define TT_HOSTINFO_H

#include <stddef.h>

#include "collect.h"

/* Fill h from the running host. Never fails: unknown facts stay empty. */
void hostinfo_read(struct tt_hostinfo *h);

/* Same, with the files read under root (a test's fake /proc and /sys);
 * root "" is the real host. nvidia-smi runs only when root is "". */
void hostinfo_read_at(struct tt_hostinfo *h, const char *root);

/* One host fact by name, for printing and comparing. */
struct hostinfo_field {
	const char *name;
	char value[512];
};

#define HOSTINFO_NFIELDS 11

/* The facts of h as (name, value) pairs, in a fixed order. */
void hostinfo_fields(const struct tt_hostinfo *h,
		     struct hostinfo_field out[HOSTINFO_NFIELDS]);

/* Write "name a -> b" for each differing fact, separated by "; ", into
 * buf (always terminated). Returns the number of facts that differ. */
int hostinfo_diff(const struct tt_hostinfo *a, const struct tt_hostinfo *b,
		  char *buf, size_t cap);

#endif
