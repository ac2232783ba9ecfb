/*
 * hooks.c - which hooks see a process's socket I/O.
 *
 * The syscall tracepoints see every read, write, accept... of a traced
 * process, whatever made it. Their price is paid by everyone: once
 * enabled, every process on the host enters them on those syscalls (about
 * +300 ns a read or write on the development VM), and the program's early
 * bail-out cannot remove the hook's own cost. Uprobes on the libc a process
 * maps, attached with its pid, cost only that process (a uprobe hit costs
 * it more than a tracepoint hit), and see the same I/O as long as it goes
 * through libc's functions. So `auto` takes libc hooks when the program
 * is dynamically linked, is not Go (whose runtime makes raw syscalls), and
 * takes a socket function (accept, recv, send, ...) from a shared library;
 * statically linked servers and the rest keep the tracepoints.
 *
 * In:  a pid (its /proc/PID/maps and exe) or the program it is about to
 *      exec; ELF files.
 * Out: TT_HOOKS_LIBC or TT_HOOKS_SYSCALLS, and why.
 * Assumes: glibc (libc.so.6) or musl (ld-musl-*.so.1) as the shared libc;
 *      io_uring I/O is seen by neither kind of hook.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gelf.h>
#include <libelf.h>

#include "hooks.h"

/* A process importing one of these does its socket I/O through libc. */
static const char *const io_funcs[] = {
	"accept", "accept4", "recv", "recvfrom", "recvmsg", "send", "sendto",
	"sendmsg",
};

int hooks_parse(const char *s, enum tt_hooks *out)
{
	static const char *const names[] = { "auto", "libc", "syscalls" };

	for (int i = 0; i < 3; i++)
		if (!strcmp(s, names[i])) {
			*out = (enum tt_hooks)i;
			return 0;
		}
	return -EINVAL;
}

enum tt_hooks hooks_default(void)
{
	const char *e = getenv("TOKENTRACE_HOOKS");
	enum tt_hooks h = TT_HOOKS_AUTO;

	if (e && *e && hooks_parse(e, &h))
		fprintf(stderr, "tokentrace: TOKENTRACE_HOOKS=%s is not auto, "
			"libc or syscalls: using auto\n", e);
	return h;
}

const char *hooks_name(enum tt_hooks h)
{
	return h == TT_HOOKS_LIBC ? "libc" :
	       h == TT_HOOKS_SYSCALLS ? "syscalls" : "auto";
}

static bool is_libc_path(const char *p)
{
	const char *b = strrchr(p, '/');

	b = b ? b + 1 : p;
	return !strncmp(b, "libc.so.6", 9) || !strncmp(b, "ld-musl-", 8) ||
	       (!strncmp(b, "libc-", 5) && strstr(b, ".so"));
}

int hooks_find_libc(pid_t pid, char *path, size_t len)
{
	char maps[64], line[PATH_MAX + 128];
	int found = -ENOENT;
	FILE *f;

	snprintf(maps, sizeof(maps), "/proc/%d/maps", (int)pid);
	f = fopen(maps, "r");
	if (!f)
		return -errno;
	while (found && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, '/');

		if (!p)
			continue;
		p[strcspn(p, "\n")] = 0;
		if (!is_libc_path(p) || strstr(p, " (deleted)"))
			continue;
		snprintf(path, len, "/proc/%d/root%s", (int)pid, p);
		found = 0;
	}
	fclose(f);
	return found;
}

static bool is_io_func(const char *name)
{
	for (size_t i = 0; i < sizeof(io_funcs) / sizeof(io_funcs[0]); i++)
		if (!strcmp(name, io_funcs[i]))
			return true;
	return false;
}

/* Undefined dynamic symbols of scn (a SHT_DYNSYM) include an io_func. */
static bool dynsym_imports_io(Elf *e, Elf_Scn *scn, const GElf_Shdr *sh)
{
	Elf_Data *d = elf_getdata(scn, NULL);
	size_t n = sh->sh_entsize ? sh->sh_size / sh->sh_entsize : 0;

	for (size_t i = 0; d && i < n; i++) {
		GElf_Sym sym;
		const char *name;

		if (!gelf_getsym(d, (int)i, &sym) || sym.st_shndx != SHN_UNDEF)
			continue;
		name = elf_strptr(e, sh->sh_link, sym.st_name);
		if (name && is_io_func(name))
			return true;
	}
	return false;
}

static void read_interp(Elf *e, int fd, char *interp, size_t len,
			bool *dynamic)
{
	size_t nph = 0;

	if (elf_getphdrnum(e, &nph))
		return;
	for (size_t i = 0; i < nph; i++) {
		GElf_Phdr ph;

		if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_INTERP)
			continue;
		*dynamic = true;
		if (interp && len) {
			size_t n = ph.p_filesz < len ? ph.p_filesz : len - 1;
			ssize_t r = pread(fd, interp, n, (off_t)ph.p_offset);

			interp[r > 0 ? (size_t)r : 0] = 0;
			interp[len - 1] = 0;
		}
	}
}

int hooks_elf_io(const char *path, bool *dynamic, bool *go, bool *imports,
		 char *interp, size_t interp_len)
{
	Elf_Scn *scn = NULL;
	size_t shstrndx;
	int fd, err = 0;
	Elf *e;

	*dynamic = *go = *imports = false;
	if (interp && interp_len)
		interp[0] = 0;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	e = elf_begin(fd, ELF_C_READ, NULL);
	if (!e || elf_kind(e) != ELF_K_ELF || elf_getshdrstrndx(e, &shstrndx)) {
		err = -ENOEXEC;
		goto out;
	}
	read_interp(e, fd, interp, interp_len, dynamic);
	while ((scn = elf_nextscn(e, scn))) {
		GElf_Shdr sh;
		const char *name;

		if (!gelf_getshdr(scn, &sh))
			continue;
		name = elf_strptr(e, shstrndx, sh.sh_name);
		if (name && (!strcmp(name, ".go.buildinfo") ||
			     !strcmp(name, ".note.go.buildid") ||
			     !strcmp(name, ".gopclntab")))
			*go = true;
		if (sh.sh_type == SHT_DYNSYM && !*imports)
			*imports = dynsym_imports_io(e, scn, &sh);
	}
out:
	if (e)
		elf_end(e);
	close(fd);
	return err;
}

/* The program a `#!` script runs, resolved like execvp: into out. */
static int script_interp(const char *path, char *out, size_t len)
{
	char line[PATH_MAX], *p, *arg;
	FILE *f = fopen(path, "r");
	bool ok;

	if (!f)
		return -errno;
	ok = fgets(line, sizeof(line), f) && !strncmp(line, "#!", 2);
	fclose(f);
	if (!ok)
		return -ENOEXEC;
	p = line + 2 + strspn(line + 2, " \t");
	p[strcspn(p, "\n")] = 0;
	arg = p + strcspn(p, " \t");
	if (*arg)
		*arg++ = 0;
	arg += strspn(arg, " \t");
	arg[strcspn(arg, " \t")] = 0;
	/* #!/usr/bin/env NAME: NAME from PATH */
	if (!strcmp(strrchr(p, '/') ? strrchr(p, '/') + 1 : p, "env") && *arg) {
		const char *dirs = getenv("PATH");
		char buf[PATH_MAX], *save = NULL, *d;

		snprintf(buf, sizeof(buf), "%s", dirs ? dirs : "/usr/bin:/bin");
		for (d = strtok_r(buf, ":", &save); d;
		     d = strtok_r(NULL, ":", &save)) {
			snprintf(out, len, "%s/%s", d, arg);
			if (access(out, X_OK) == 0)
				return 0;
		}
		return -ENOENT;
	}
	snprintf(out, len, "%s", p);
	return 0;
}

/* The hooks a program file calls for. */
static enum tt_hooks pick_exe(const char *exe, char *why, size_t n)
{
	char interp[PATH_MAX], own[PATH_MAX], file[PATH_MAX];
	bool dyn, go, imports, own_dyn, own_go, own_imp;

	snprintf(file, sizeof(file), "%s", exe);
	for (int depth = 0; depth < 4; depth++) {
		if (hooks_elf_io(file, &dyn, &go, &imports, interp,
				 sizeof(interp)) == 0)
			break;
		if (script_interp(file, interp, sizeof(interp))) {
			snprintf(why, n, "%s is neither ELF nor a script", exe);
			return TT_HOOKS_SYSCALLS;
		}
		snprintf(file, sizeof(file), "%s", interp);
		dyn = false;
	}
	if (!dyn || go) {
		snprintf(why, n, "%s is %s", file, go ? "a Go program" :
			 "statically linked");
		return TT_HOOKS_SYSCALLS;
	}
	/* the libc probed is this process's: the same only with the same
	 * dynamic loader */
	if (hooks_elf_io("/proc/self/exe", &own_dyn, &own_go, &own_imp, own,
			 sizeof(own)) || strcmp(own, interp)) {
		snprintf(why, n, "%s loads with %s, not %s", file, interp,
			 own);
		return TT_HOOKS_SYSCALLS;
	}
	snprintf(why, n, "%s links libc dynamically", file);
	return TT_HOOKS_LIBC;
}

bool hooks_each_mapped(pid_t pid,
		       bool (*fn)(void *ctx, const char *file,
				  const char *path),
		       void *ctx)
{
	char maps[64], line[PATH_MAX + 128], last[PATH_MAX] = "";
	bool found = false;
	FILE *f;

	snprintf(maps, sizeof(maps), "/proc/%d/maps", (int)pid);
	f = fopen(maps, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, '/'), file[PATH_MAX + 32];

		if (!p)
			continue;
		p[strcspn(p, "\n")] = 0;
		if (!strcmp(p, last) || strstr(p, " (deleted)"))
			continue;
		snprintf(last, sizeof(last), "%s", p);
		snprintf(file, sizeof(file), "/proc/%d/root%s", (int)pid, p);
		found = fn(ctx, file, p);
	}
	fclose(f);
	return found;
}

static bool imports_io(void *ctx, const char *file, const char *path)
{
	bool dyn, go, imports;

	(void)ctx;
	return !is_libc_path(path) &&
	       !hooks_elf_io(file, &dyn, &go, &imports, NULL, 0) && imports;
}

/* Whether an object pid maps (other than libc) imports a socket function. */
static bool maps_import_io(pid_t pid)
{
	return hooks_each_mapped(pid, imports_io, NULL);
}

enum tt_hooks hooks_pick(enum tt_hooks want, pid_t pid, const char *exe,
			 bool cpu_compute, char *why, size_t why_len)
{
	char libc[PATH_MAX], self[64];
	bool dyn, go, imports;

	if (want != TT_HOOKS_AUTO) {
		snprintf(why, why_len, "--hooks %s", hooks_name(want));
		return want;
	}
	if (cpu_compute) {
		snprintf(why, why_len, "its on-CPU time is the compute measured,"
			 " and a uprobe's trap would count in it");
		return TT_HOOKS_SYSCALLS;
	}
	if (exe)
		return pick_exe(exe, why, why_len);
	if (hooks_find_libc(pid, libc, sizeof(libc))) {
		snprintf(why, why_len, "pid %d maps no shared libc", (int)pid);
		return TT_HOOKS_SYSCALLS;
	}
	snprintf(self, sizeof(self), "/proc/%d/exe", (int)pid);
	if (!hooks_elf_io(self, &dyn, &go, &imports, NULL, 0) && go) {
		snprintf(why, why_len, "pid %d is a Go program", (int)pid);
		return TT_HOOKS_SYSCALLS;
	}
	if (!maps_import_io(pid)) {
		snprintf(why, why_len, "nothing pid %d maps takes a socket "
			 "function from libc", (int)pid);
		return TT_HOOKS_SYSCALLS;
	}
	snprintf(why, why_len, "pid %d does its socket I/O through libc",
		 (int)pid);
	return TT_HOOKS_LIBC;
}
