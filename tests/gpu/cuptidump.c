/*
 * cuptidump.c - prints what the collector's receiver (user/cuptirecv.c)
 * makes of libtokentrace_cupti.so output, for tests/gpu/check.sh.
 *
 * In:  cuptidump FILE...             record files (TOKENTRACE_CUPTI_FILE)
 *      cuptidump --listen SOCK --out F   a collector socket, until SIGTERM
 * Out: JSON lines on stdout (or F): "device", "name", "interval",
 *      "losses", and last a "stats" line (records, malformed, ...).
 *      Exit 0, or 1 if any stream was malformed, 2 on usage or I/O error.
 * Assumes: built by check.sh with gcc -Iinclude against user/cuptirecv.c;
 *      not part of the regular build.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/cuptirecv.h"

static FILE *out;
static volatile sig_atomic_t stop;

static const char *const kinds[] = {
	"kernel", "memcpy", "memset", "cpu", "graph",
};

/* Names may hold quotes or backslashes (C++ templates). */
static void json_str(const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', out);
		if ((unsigned char)*s >= 0x20)
			fputc(*s, out);
	}
	fputc('"', out);
}

static void on_device(void *ctx, const struct tt_device *d)
{
	(void)ctx;
	fprintf(out, "{\"type\":\"device\",\"id\":%u,\"pid\":%u,"
		"\"ordinal\":%u,\"uuid\":\"%s\",\"sm_count\":%u,"
		"\"memory_bytes\":%llu,\"name\":", d->id, d->pid, d->ordinal,
		d->uuid, d->sm_count, (unsigned long long)d->memory_bytes);
	json_str(d->name);
	fputs("}\n", out);
}

static void on_interval(void *ctx, const struct tt_interval *iv)
{
	(void)ctx;
	fprintf(out, "{\"type\":\"interval\",\"kind\":\"%s\",\"pid\":%u,"
		"\"tid\":%u,\"device\":%u,\"stream\":%u,\"start_ns\":%llu,"
		"\"end_ns\":%llu,\"bytes\":%llu,\"copy_kind\":%u,"
		"\"name_id\":%u,\"correlation\":%u}\n",
		iv->kind < 5 ? kinds[iv->kind] : "other", iv->pid, iv->tid,
		iv->device, iv->stream, (unsigned long long)iv->start_ns,
		(unsigned long long)iv->end_ns,
		(unsigned long long)iv->bytes, iv->copy_kind, iv->name_id,
		iv->correlation);
}

static void on_name(void *ctx, uint32_t pid, uint32_t id, const char *name)
{
	(void)ctx;
	fprintf(out, "{\"type\":\"name\",\"pid\":%u,\"id\":%u,\"name\":",
		pid, id);
	json_str(name);
	fputs("}\n", out);
}

static void on_losses(void *ctx, uint32_t pid,
		      const struct tt_compute_losses *l)
{
	(void)ctx;
	fprintf(out, "{\"type\":\"losses\",\"pid\":%u,\"cupti_dropped\":%llu,"
		"\"lib_dropped\":%llu,\"zero_timestamps\":%llu}\n", pid,
		(unsigned long long)l->cupti_dropped,
		(unsigned long long)l->lib_dropped,
		(unsigned long long)l->zero_timestamps);
}

static void print_stats(struct cuptirecv *r)
{
	struct cuptirecv_stats st;

	cuptirecv_stats(r, &st);
	fprintf(out, "{\"type\":\"stats\",\"records\":%llu,\"bytes\":%llu,"
		"\"malformed\":%llu,\"connections\":%llu,"
		"\"unknown_types\":%llu,\"unknown_devices\":%llu,"
		"\"gpus\":%u}\n", (unsigned long long)st.records,
		(unsigned long long)st.bytes,
		(unsigned long long)st.malformed,
		(unsigned long long)st.connections,
		(unsigned long long)st.unknown_types,
		(unsigned long long)st.unknown_devices, st.gpus);
}

static int dump_file(struct cuptirecv *r, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;
	int ret;

	if (!f) {
		fprintf(stderr, "cuptidump: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
		fprintf(stderr, "cuptidump: cannot read %s\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	ret = cuptirecv_decode(r, buf, (size_t)(n > 0 ? n : 0));
	free(buf);
	return ret < 0 ? 1 : 0;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int listen_until_signal(struct cuptirecv *r)
{
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	while (!stop)
		cuptirecv_poll(r, 100);
	/* Take what is still in flight. */
	for (int i = 0; i < 10; i++)
		cuptirecv_poll(r, 20);
	return 0;
}

int main(int argc, char **argv)
{
	struct tt_compute_sink sink = {
		.device = on_device, .interval = on_interval,
		.name = on_name, .losses = on_losses,
	};
	struct cuptirecv *r;
	int bad = 0;

	out = stdout;
	if (argc >= 5 && !strcmp(argv[1], "--listen") &&
	    !strcmp(argv[3], "--out")) {
		out = fopen(argv[4], "w");
		if (!out || !(r = cuptirecv_open(argv[2], &sink)))
			return 2;
		listen_until_signal(r);
	} else if (argc >= 2 && argv[1][0] != '-') {
		if (!(r = cuptirecv_open(NULL, &sink)))
			return 2;
		for (int i = 1; i < argc; i++) {
			int e = dump_file(r, argv[i]);

			if (e < 0)
				return 2;
			bad |= e;
		}
	} else {
		fprintf(stderr, "usage: cuptidump FILE... | cuptidump --listen "
			"SOCK --out FILE\n");
		return 2;
	}
	print_stats(r);
	struct cuptirecv_stats st;

	cuptirecv_stats(r, &st);
	cuptirecv_close(r);
	if (out != stdout)
		fclose(out);
	return bad || st.malformed ? 1 : 0;
}
