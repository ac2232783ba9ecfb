/*
 * hostinfo.c - read the host facts kept in a trace header.
 *
 * In:  the files named in hostinfo.h, under a root prefix ("" = this host).
 * Out: struct tt_hostinfo, every string NUL-terminated and trimmed.
 * Assumes: any file may be missing or unreadable (containers, no GPU, no
 *      cpufreq in a VM): such a fact stays "" or 0 and nothing fails.
 *
 * The GPU facts come from the NVIDIA driver's /proc files (model, driver)
 * and, where nvidia-smi is installed, its CSV query (model, driver and the
 * maximum SM and memory clocks). Only the first GPU is described: the
 * devices themselves are listed in the trace's device records.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "hostinfo.h"

static void trim(char *s)
{
	size_t n = strlen(s);
	char *p = s;

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = 0;
	while (*p == ' ' || *p == '\t')
		p++;
	memmove(s, p, strlen(p) + 1);
}

/* The first line of root/path into out; false if unreadable. */
static bool read_line(const char *root, const char *path, char *out,
		      size_t cap)
{
	char full[512];
	FILE *f;
	bool ok;

	snprintf(full, sizeof(full), "%s%s", root, path);
	f = fopen(full, "re");
	if (!f)
		return false;
	ok = fgets(out, (int)cap, f) != NULL;
	fclose(f);
	if (!ok)
		out[0] = 0;
	trim(out);
	return ok;
}

/* "model name : X" lines: the first model, and the processor count. */
static void read_cpuinfo(const char *root, struct tt_hostinfo *h)
{
	char full[512], line[512];
	FILE *f;

	snprintf(full, sizeof(full), "%s/proc/cpuinfo", root);
	f = fopen(full, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (!strncmp(line, "processor", 9))
			h->cpus++;
		else if (colon && !h->cpu_model[0] &&
			 (!strncmp(line, "model name", 10) ||
			  !strncmp(line, "Model", 5))) {
			snprintf(h->cpu_model, sizeof(h->cpu_model), "%s",
				 colon + 1);
			trim(h->cpu_model);
		}
	}
	fclose(f);
}

static void read_numa(const char *root, struct tt_hostinfo *h)
{
	char full[512];
	struct dirent *e;
	DIR *d;

	snprintf(full, sizeof(full), "%s/sys/devices/system/node", root);
	d = opendir(full);
	if (!d)
		return;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "node", 4) &&
		    e->d_name[4] >= '0' && e->d_name[4] <= '9')
			h->numa_nodes++;
	closedir(d);
}

/* "always [madvise] never": the bracketed word. */
static void read_thp(const char *root, struct tt_hostinfo *h)
{
	char line[256], *a, *b;

	if (!read_line(root, "/sys/kernel/mm/transparent_hugepage/enabled",
		       line, sizeof(line)))
		return;
	a = strchr(line, '[');
	b = a ? strchr(a, ']') : NULL;
	if (a && b) {
		*b = 0;
		snprintf(h->thp, sizeof(h->thp), "%s", a + 1);
	} else {
		snprintf(h->thp, sizeof(h->thp), "%.31s", line);
	}
}

/* "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  ...". */
static void read_nvidia_proc(const char *root, struct tt_hostinfo *h)
{
	char line[512], full[512], *p;
	struct dirent *e;
	DIR *d;

	if (read_line(root, "/proc/driver/nvidia/version", line,
		      sizeof(line)) && (p = strstr(line, "Module"))) {
		p += 6;
		while (*p == ' ')
			p++;
		snprintf(h->gpu_driver, sizeof(h->gpu_driver), "%.*s",
			 (int)strcspn(p, " "), p);
	}
	snprintf(full, sizeof(full), "%s/proc/driver/nvidia/gpus", root);
	d = opendir(full);
	if (!d)
		return;
	while (!h->gpu_model[0] && (e = readdir(d))) {
		char path[512];

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/driver/nvidia/gpus/%.200s/"
			 "information", e->d_name);
		if (read_line(root, path, line, sizeof(line)) &&
		    !strncmp(line, "Model:", 6)) {
			snprintf(h->gpu_model, sizeof(h->gpu_model), "%.127s",
				 line + 6);
			trim(h->gpu_model);
		}
	}
	closedir(d);
}

/* nvidia-smi's CSV: name, driver, max SM clock, max memory clock. */
static void read_nvidia_smi(struct tt_hostinfo *h)
{
	char line[512], *f[4] = { 0 }, *save = NULL, *tok;
	FILE *p;
	int n = 0;

	if (access("/usr/bin/nvidia-smi", X_OK) &&
	    access("/usr/local/bin/nvidia-smi", X_OK))
		return;
	p = popen("nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,"
		  "clocks.max.mem --format=csv,noheader 2>/dev/null", "re");
	if (!p)
		return;
	if (fgets(line, sizeof(line), p))
		for (tok = strtok_r(line, ",", &save); tok && n < 4;
		     tok = strtok_r(NULL, ",", &save)) {
			trim(tok);
			f[n++] = tok;
		}
	pclose(p);
	if (n < 2)
		return;
	snprintf(h->gpu_model, sizeof(h->gpu_model), "%s", f[0]);
	snprintf(h->gpu_driver, sizeof(h->gpu_driver), "%s", f[1]);
	if (n == 4)
		snprintf(h->gpu_clocks, sizeof(h->gpu_clocks), "sm %s, mem %s",
			 f[2], f[3]);
}

void hostinfo_read_at(struct tt_hostinfo *h, const char *root)
{
	struct utsname u;

	memset(h, 0, sizeof(*h));
	if (!root[0] && uname(&u) == 0) {
		snprintf(h->hostname, sizeof(h->hostname), "%.63s", u.nodename);
		snprintf(h->kernel, sizeof(h->kernel), "%.60s %.60s",
			 u.release, u.version);
	} else if (root[0]) {
		char rel[64] = "", ver[64] = "";

		read_line(root, "/proc/sys/kernel/hostname", h->hostname,
			  sizeof(h->hostname));
		read_line(root, "/proc/sys/kernel/osrelease", rel, sizeof(rel));
		read_line(root, "/proc/sys/kernel/version", ver, sizeof(ver));
		snprintf(h->kernel, sizeof(h->kernel), "%s %s", rel, ver);
		trim(h->kernel);
	}
	read_line(root, "/proc/cmdline", h->cmdline, sizeof(h->cmdline));
	read_cpuinfo(root, h);
	read_line(root, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
		  h->governor, sizeof(h->governor));
	read_numa(root, h);
	read_thp(root, h);
	read_nvidia_proc(root, h);
	if (!root[0])
		read_nvidia_smi(h);
}

void hostinfo_read(struct tt_hostinfo *h)
{
	hostinfo_read_at(h, "");
}

void hostinfo_fields(const struct tt_hostinfo *h,
		     struct hostinfo_field out[HOSTINFO_NFIELDS])
{
	static const char *names[HOSTINFO_NFIELDS] = {
		"hostname", "kernel", "cmdline", "cpu_model", "cpus",
		"governor", "numa_nodes", "thp", "gpu_model", "gpu_driver",
		"gpu_clocks",
	};
	const char *s[HOSTINFO_NFIELDS] = {
		h->hostname, h->kernel, h->cmdline, h->cpu_model, NULL,
		h->governor, NULL, h->thp, h->gpu_model, h->gpu_driver,
		h->gpu_clocks,
	};

	for (int i = 0; i < HOSTINFO_NFIELDS; i++) {
		out[i].name = names[i];
		if (s[i])
			snprintf(out[i].value, sizeof(out[i].value), "%s",
				 s[i]);
	}
	snprintf(out[4].value, sizeof(out[4].value), "%u", h->cpus);
	snprintf(out[6].value, sizeof(out[6].value), "%u", h->numa_nodes);
}

int hostinfo_diff(const struct tt_hostinfo *a, const struct tt_hostinfo *b,
		  char *buf, size_t cap)
{
	struct hostinfo_field fa[HOSTINFO_NFIELDS], fb[HOSTINFO_NFIELDS];
	size_t len = 0;
	int n = 0;

	hostinfo_fields(a, fa);
	hostinfo_fields(b, fb);
	if (cap)
		buf[0] = 0;
	for (int i = 0; i < HOSTINFO_NFIELDS; i++) {
		if (!strcmp(fa[i].value, fb[i].value))
			continue;
		if (len < cap)
			len += snprintf(buf + len, cap - len, "%s%s %s -> %s",
					n ? "; " : "", fa[i].name,
					fa[i].value[0] ? fa[i].value : "(none)",
					fb[i].value[0] ? fb[i].value : "(none)");
		n++;
	}
	return n;
}
