/*
 * stepprobe.c - finding an engine's step function (see stepprobe.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hooks.h"
#include "stepprobe.h"

/* The step functions known by name, in the order they are looked for. */
static const char *const known[] = { "llama_decode", "rs_engine_step" };

int stepprobe_parse(const char *spec, struct stepprobe_site *s)
{
	const char *colon = spec ? strrchr(spec, ':') : NULL;
	size_t n;

	if (!colon || colon == spec || !colon[1])
		return -EINVAL;
	n = (size_t)(colon - spec);
	if (n >= sizeof(s->path) || strlen(colon + 1) >= sizeof(s->sym))
		return -EINVAL;
	memcpy(s->path, spec, n);
	s->path[n] = 0;
	snprintf(s->sym, sizeof(s->sym), "%s", colon + 1);
	return 0;
}

static bool table_defines(Elf *e, Elf_Scn *scn, const GElf_Shdr *sh,
			  const char *sym)
{
	Elf_Data *d = elf_getdata(scn, NULL);
	size_t n = sh->sh_entsize ? sh->sh_size / sh->sh_entsize : 0;

	for (size_t i = 0; d && i < n; i++) {
		GElf_Sym y;
		const char *name;

		if (!gelf_getsym(d, (int)i, &y) || y.st_shndx == SHN_UNDEF ||
		    GELF_ST_TYPE(y.st_info) != STT_FUNC)
			continue;
		name = elf_strptr(e, sh->sh_link, y.st_name);
		if (name && !strcmp(name, sym))
			return true;
	}
	return false;
}

bool stepprobe_defines(const char *path, const char *sym)
{
	bool found = false;
	Elf_Scn *scn = NULL;
	Elf *e;
	int fd;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	e = elf_begin(fd, ELF_C_READ, NULL);
	while (e && elf_kind(e) == ELF_K_ELF && !found &&
	       (scn = elf_nextscn(e, scn))) {
		GElf_Shdr sh;

		if (gelf_getshdr(scn, &sh) &&
		    (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM))
			found = table_defines(e, scn, &sh, sym);
	}
	if (e)
		elf_end(e);
	close(fd);
	return found;
}

static bool try_known(const char *path, struct stepprobe_site *s)
{
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (stepprobe_defines(path, known[i])) {
			snprintf(s->path, sizeof(s->path), "%s", path);
			snprintf(s->sym, sizeof(s->sym), "%s", known[i]);
			return true;
		}
	return false;
}

/* A mapped libllama*.so of pid that defines a known function. */
static bool known_in_llama(void *ctx, const char *file, const char *path)
{
	return !strncmp(strrchr(path, '/') + 1, "libllama", 8) &&
	       try_known(file, ctx);
}

static bool try_maps(pid_t pid, struct stepprobe_site *s)
{
	return hooks_each_mapped(pid, known_in_llama, s);
}

int stepprobe_find_mapped(pid_t pid, struct stepprobe_site *s)
{
	memset(s, 0, sizeof(*s));
	if (try_maps(pid, s))
		return 0;
	memset(s, 0, sizeof(*s));
	return -ENOENT;
}

int stepprobe_find(pid_t pid, const char *exe,
		   const struct stepprobe_site *want,
		   struct stepprobe_site *s)
{
	char self[64];

	memset(s, 0, sizeof(*s));
	if (want) {
		if (!stepprobe_defines(want->path, want->sym))
			return -ENOENT;
		*s = *want;
		return 0;
	}
	snprintf(self, sizeof(self), "/proc/%d/exe", (int)pid);
	if (try_known(exe ? exe : self, s) || try_maps(pid, s))
		return 0;
	memset(s, 0, sizeof(*s));
	return -ENOENT;
}
