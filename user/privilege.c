/*
 * privilege.c - whether this process may load and attach eBPF programs,
 * and how a failure to do so becomes the exit code commands.h documents.
 *
 * In:  the process's credentials; a negative errno from a loader.
 * Out: true/false; an enum tt_exit.
 * Assumes: Linux >= 5.8, where CAP_BPF and CAP_PERFMON exist; before that
 *      CAP_SYS_ADMIN stands for both.
 */
#include <errno.h>
#include <linux/capability.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "commands.h"

#define TT_CAP_PERFMON	38
#define TT_CAP_BPF	39

bool tt_bpf_privileged(void)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = {};
	uint64_t eff;

	if (geteuid() == 0)
		return true;
	if (syscall(SYS_capget, &hdr, data))
		return false;
	eff = data[0].effective | ((uint64_t)data[1].effective << 32);
	if (eff & (1ull << CAP_SYS_ADMIN))
		return true;
	return (eff & (1ull << TT_CAP_BPF)) && (eff & (1ull << TT_CAP_PERFMON));
}

int tt_exit_of_errno(int err)
{
	switch (err) {
	case -EPERM:
	case -EACCES:
		return TT_EXIT_PRIV;
	case -ENOENT:
	case -ENODEV:
	case -EOPNOTSUPP:
		return TT_EXIT_KERNEL;
	case -EINVAL:
		return TT_EXIT_USAGE;
	default:
		return TT_EXIT_FAIL;
	}
}
