/*
 * stepprobe.h - where an engine's step function is, for the step probe
 * (bpf/sock.bpf.c step_enter/step_exit): each call of it is one step of
 * the engine, its window exact.
 *
 * In:  a process (its executable and the files it maps), or a
 *      PATH:SYMBOL the user names (--step-probe).
 * Out: the file and the function to put the two uprobes on.
 * Assumes: the function runs one step and returns before the step's
 *      tokens are written to the clients (llama.cpp's llama_decode, the
 *      reference server's rs_engine_step); a function that also writes
 *      them still gives its windows, and the tokens written inside one
 *      are counted in the step before.
 *
 * Found by itself: llama_decode in the executable or in a mapped
 * libllama*.so (llama-server, static or not); rs_engine_step in the
 * executable (the reference server).
 */
#ifndef TT_STEPPROBE_H
#define TT_STEPPROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define STEPPROBE_SYM_MAX	128

/* What to probe: path and function; empty path: nothing found. */
struct stepprobe_site {
	char path[4096];
	char sym[STEPPROBE_SYM_MAX];
};

/* "PATH:SYMBOL" (the last ':' splits) into s. 0, or -EINVAL. */
int stepprobe_parse(const char *spec, struct stepprobe_site *s);

/* Whether the ELF file at path defines a function named sym (.symtab or
 * .dynsym). */
bool stepprobe_defines(const char *path, const char *sym);

/*
 * The site of pid's step function: want (a parsed --step-probe; NULL:
 * look for the known ones) when its file defines the function, else the
 * known functions in exe (NULL: /proc/PID/exe) and in the libraries pid
 * maps. 0 with *s filled, -ENOENT when there is none.
 */
int stepprobe_find(pid_t pid, const char *exe,
		   const struct stepprobe_site *want,
		   struct stepprobe_site *s);

/* Only the libraries pid maps now (a libllama*.so the dynamic loader
 * mapped after the exec, or one loaded later): 0 with *s, or -ENOENT. */
int stepprobe_find_mapped(pid_t pid, struct stepprobe_site *s);

/* Help text of --step-probe. */
#define STEPPROBE_HELP \
"  --step-probe PATH:SYMBOL  the engine's step function, for exact step\n" \
"                     windows (found by itself: llama.cpp's llama_decode,\n" \
"                     the reference server's rs_engine_step)\n"

#endif
