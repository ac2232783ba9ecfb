/*
 * test_hostinfo.c - host facts (user/hostinfo.c) from a fake /proc and
 * /sys, from nothing at all, from this host; and which facts differ.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../user/hostinfo.h"

static char root[64];

static void setup(void)
{
	snprintf(root, sizeof(root), "/tmp/tt_hostinfo.XXXXXX");
	cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", root);
}

/* Write text to root/rel, making the folders. */
static void put(const char *rel, const char *text)
{
	char path[512], cmd[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
	cr_assert_eq(system(cmd), 0);
	f = fopen(path, "w");
	cr_assert_not_null(f, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
}

TestSuite(hostinfo, .init = setup, .fini = teardown);

Test(hostinfo, facts_come_from_proc_and_sys)
{
	struct tt_hostinfo h;

	put("proc/sys/kernel/hostname", "gpu-node-3\n");
	put("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
	put("proc/sys/kernel/version", "#1 SMP Debian\n");
	put("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 "
	    "intel_pstate=disable\n");
	put("proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC 9654 "
	    "96-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC "
	    "9654 96-Core Processor\n\n");
	put("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
	    "performance\n");
	put("sys/devices/system/node/node0/cpulist", "0\n");
	put("sys/devices/system/node/node1/cpulist", "1\n");
	put("sys/devices/system/node/possible", "0-1\n");
	put("sys/kernel/mm/transparent_hugepage/enabled",
	    "always [madvise] never\n");
	put("proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 "
	    "Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n");
	put("proc/driver/nvidia/gpus/0000:17:00.0/information",
	    "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ: 16\n");
	hostinfo_read_at(&h, root);
	cr_expect_str_eq(h.hostname, "gpu-node-3");
	cr_expect_str_eq(h.kernel, "6.1.0-18-amd64 #1 SMP Debian");
	cr_expect_str_eq(h.cmdline, "BOOT_IMAGE=/vmlinuz root=/dev/sda1 "
			 "intel_pstate=disable");
	cr_expect_str_eq(h.cpu_model, "AMD EPYC 9654 96-Core Processor");
	cr_expect_eq(h.cpus, 2);
	cr_expect_str_eq(h.governor, "performance");
	cr_expect_eq(h.numa_nodes, 2);
	cr_expect_str_eq(h.thp, "madvise");
	cr_expect_str_eq(h.gpu_model, "NVIDIA H100 80GB HBM3");
	cr_expect_str_eq(h.gpu_driver, "550.54.15");
}

Test(hostinfo, nothing_readable_leaves_facts_empty_without_failing)
{
	struct tt_hostinfo h;

	memset(&h, 0x5a, sizeof(h));
	hostinfo_read_at(&h, root);	/* an empty folder */
	cr_expect_str_eq(h.cmdline, "");
	cr_expect_str_eq(h.cpu_model, "");
	cr_expect_eq(h.cpus, 0);
	cr_expect_str_eq(h.governor, "");
	cr_expect_eq(h.numa_nodes, 0);
	cr_expect_str_eq(h.gpu_model, "");
	cr_expect_str_eq(h.gpu_driver, "");
}

Test(hostinfo, this_host_has_a_kernel_and_cpus)
{
	struct tt_hostinfo h;
	char rel[128];
	FILE *f = fopen("/proc/sys/kernel/osrelease", "r");

	cr_assert_not_null(f);
	cr_assert_not_null(fgets(rel, sizeof(rel), f));
	fclose(f);
	rel[strcspn(rel, "\n")] = 0;
	hostinfo_read(&h);
	cr_expect_eq(strncmp(h.kernel, rel, strlen(rel)), 0, "kernel '%s' "
		     "does not start with '%s'", h.kernel, rel);
	cr_expect_eq(h.cpus, (uint32_t)sysconf(_SC_NPROCESSORS_CONF));
	cr_expect_neq(h.cmdline[0], 0);
}

Test(hostinfo, diff_names_each_changed_fact_once)
{
	struct tt_hostinfo a = { .cpus = 4, .numa_nodes = 1 }, b;
	char buf[512];

	snprintf(a.governor, sizeof(a.governor), "performance");
	snprintf(a.kernel, sizeof(a.kernel), "6.1.0");
	b = a;
	cr_expect_eq(hostinfo_diff(&a, &b, buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, "");
	snprintf(b.governor, sizeof(b.governor), "powersave");
	b.numa_nodes = 2;
	cr_expect_eq(hostinfo_diff(&a, &b, buf, sizeof(buf)), 2);
	cr_expect_str_eq(buf, "governor performance -> powersave; "
			 "numa_nodes 1 -> 2");
}
