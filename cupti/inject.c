/*
 * inject.c - libtokentrace_cupti.so's entry point and every CUPTI call.
 *
 * In: the CUDA driver loads this library (CUDA_INJECTION64_PATH) and
 *     calls InitializeInjection() once, inside the first cuInit(), on the
 *     server's thread. Environment: TOKENTRACE_CUPTI_SOCKET (collector's
 *     unix socket), or TOKENTRACE_CUPTI_FILE (write records to a file;
 *     "%p" in it becomes the pid, for servers of several processes),
 *     TOKENTRACE_CUPTI_GRAPHS=graph (one record per graph launch).
 * Out: CUPTI activity records of kernels, copies, memsets, graphs and
 *     devices, converted (convert.c) and shipped (transport.c).
 * Assumes: CUPTI from CUDA 13 (CUpti_ActivityKernel10 and friends); the
 *     server must keep running whatever happens here, so every failure is
 *     logged once ("libtokentrace_cupti: ...") and tracing stops or goes
 *     on without the failed part; nothing exits, aborts or blocks the
 *     server's threads on I/O.
 *
 * Threads: CUPTI calls buffer_requested/buffer_completed from its own
 * threads (and from whoever flushes); the API callback runs on the
 * server's launching threads and only notes (correlation id, tid); the
 * library thread flushes every TTC_FLUSH_MS and pumps the transport.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cupti.h>

#include "ttc.h"

/*
 * 8 MiB buffers: a CUpti_ActivityKernel10 record is about 200 bytes, so
 * one buffer holds some 40k kernels, more than a busy server launches in
 * one 100 ms flush period; CUPTI asks for another when one fills. At most
 * 16 buffers (128 MiB) may be out at once: past that CUPTI drops records
 * and counts them, rather than this library growing without bound inside
 * the server. 8-byte alignment is what CUPTI requires.
 */
#define TTC_BUF_SIZE		(8u << 20)
#define TTC_BUF_MAX		16
#define TTC_FLUSH_MS		100
/* 32 MiB of wire records (~400k kernels) wait for a late collector. */
#define TTC_BACKLOG_MAX		(32u << 20)
#define TTC_RECONNECT_NS	(500ull * 1000000ull)
#define TTC_EXIT_DRAIN_MS	2000

static struct {
	pthread_mutex_t conv_lock;	/* one converter at a time */
	struct ttc_names *names;
	struct ttc_tx *tx;
	CUpti_SubscriberHandle sub;
	pthread_t thread;
	int thread_started;
	atomic_int stop;
	atomic_int buffers_out;
	atomic_int flush_failed_logged;
	atomic_int walk_failed_logged;
	atomic_int dropped_failed_logged;
} g = { .conv_lock = PTHREAD_MUTEX_INITIALIZER };

static __thread uint32_t my_tid;

static void log_cupti(const char *what, CUptiResult r)
{
	const char *s = NULL;

	if (cuptiGetResultString(r, &s) != CUPTI_SUCCESS || !s)
		s = "unknown error";
	fprintf(stderr, "libtokentrace_cupti: %s failed: %s (%d); GPU "
		"records from this process will be missing or incomplete, "
		"the server keeps running\n", what, s, (int)r);
}

static uint64_t CUPTIAPI timestamp_ns(void)
{
	return ttc_now_ns();
}

/* ---- activity buffers ---------------------------------------------------- */

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size,
				      size_t *max_records)
{
	*max_records = 0;
	*size = TTC_BUF_SIZE;
	*buffer = NULL;
	if (atomic_fetch_add(&g.buffers_out, 1) >= TTC_BUF_MAX) {
		atomic_fetch_sub(&g.buffers_out, 1);
		return;
	}
	*buffer = aligned_alloc(8, TTC_BUF_SIZE);
	if (!*buffer)
		atomic_fetch_sub(&g.buffers_out, 1);
}

static void convert_buffer(uint8_t *buffer, size_t valid)
{
	CUpti_Activity *rec = NULL;
	CUptiResult r;

	pthread_mutex_lock(&g.conv_lock);
	while ((r = cuptiActivityGetNextRecord(buffer, valid, &rec)) ==
	       CUPTI_SUCCESS)
		ttc_conv_record(g.names, g.tx, rec);
	pthread_mutex_unlock(&g.conv_lock);
	if (r != CUPTI_ERROR_MAX_LIMIT_REACHED &&
	    !atomic_exchange(&g.walk_failed_logged, 1))
		log_cupti("cuptiActivityGetNextRecord", r);
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream,
				      uint8_t *buffer, size_t size,
				      size_t valid)
{
	size_t dropped = 0;
	CUptiResult r;

	(void)size;
	if (buffer && valid)
		convert_buffer(buffer, valid);
	r = cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped);
	if (r == CUPTI_SUCCESS && dropped)
		ttc_tx_count(g.tx, TTC_CNT_CUPTI_DROPPED, dropped);
	else if (r != CUPTI_SUCCESS &&
		 !atomic_exchange(&g.dropped_failed_logged, 1))
		log_cupti("cuptiActivityGetNumDroppedRecords", r);
	if (buffer) {
		free(buffer);
		atomic_fetch_sub(&g.buffers_out, 1);
	}
}

static void flush(uint32_t flag)
{
	CUptiResult r = cuptiActivityFlushAll(flag);

	if (r != CUPTI_SUCCESS && !atomic_exchange(&g.flush_failed_logged, 1))
		log_cupti("cuptiActivityFlushAll", r);
}

/* ---- API callbacks: who launched what ------------------------------------ */

static void CUPTIAPI on_api(void *userdata, CUpti_CallbackDomain domain,
			    CUpti_CallbackId cbid, const void *data)
{
	const CUpti_CallbackData *cb = data;

	(void)userdata;
	if (cb->callbackSite != CUPTI_API_ENTER)
		return;
	if (domain == CUPTI_CB_DOMAIN_RUNTIME_API &&
	    cbid == CUPTI_RUNTIME_TRACE_CBID_cudaDeviceReset_v3020) {
		/* The reset frees what the pending records refer to. */
		flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
		return;
	}
	if (!my_tid)
		my_tid = (uint32_t)syscall(SYS_gettid);
	ttc_corr_note(cb->correlationId, my_tid);
}

static int enable_domain(CUpti_CallbackDomain domain, uint32_t ncbid)
{
	int n = 0;

	for (uint32_t cbid = 1; cbid < ncbid; cbid++) {
		const char *name = NULL;

		if (cuptiGetCallbackName(domain, cbid, &name) != CUPTI_SUCCESS ||
		    !ttc_corr_api_wanted(name))
			continue;
		if (cuptiEnableCallback(1, g.sub, domain, cbid) == CUPTI_SUCCESS)
			n++;
	}
	return n;
}

/* Without the subscriber records still flow, with tid 0. */
static void subscribe_launches(void)
{
	CUptiResult r = cuptiSubscribe(&g.sub, on_api, NULL);

	if (r != CUPTI_SUCCESS) {
		log_cupti("cuptiSubscribe (launching threads will be unknown)",
			  r);
		return;
	}
	enable_domain(CUPTI_CB_DOMAIN_RUNTIME_API,
		      CUPTI_RUNTIME_TRACE_CBID_SIZE);
	enable_domain(CUPTI_CB_DOMAIN_DRIVER_API, CUPTI_DRIVER_TRACE_CBID_SIZE);
	r = cuptiEnableCallback(1, g.sub, CUPTI_CB_DOMAIN_RUNTIME_API,
				CUPTI_RUNTIME_TRACE_CBID_cudaDeviceReset_v3020);
	if (r != CUPTI_SUCCESS)
		log_cupti("cuptiEnableCallback(cudaDeviceReset)", r);
}

/* ---- the library thread -------------------------------------------------- */

static void *library_thread(void *arg)
{
	sigset_t all;
	uint64_t next_flush = 0;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!atomic_load(&g.stop)) {
		uint64_t now = ttc_now_ns();

		if (now >= next_flush) {
			flush(0);
			next_flush = now + TTC_FLUSH_MS * 1000000ull;
		}
		ttc_tx_pump(g.tx, ttc_now_ns());
		struct timespec ts = { 0, 20 * 1000000L };

		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void at_exit(void)
{
	struct timespec deadline;

	if (!g.thread_started)
		return;
	atomic_store(&g.stop, 1);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	if (pthread_timedjoin_np(g.thread, NULL, &deadline)) {
		fprintf(stderr, "libtokentrace_cupti: library thread did not "
			"stop at exit; the last records are lost\n");
		return;
	}
	flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
	if (ttc_tx_drain(g.tx, TTC_EXIT_DRAIN_MS))
		fprintf(stderr, "libtokentrace_cupti: collector did not take "
			"the last records within %d ms at exit\n",
			TTC_EXIT_DRAIN_MS);
}

/* ---- set-up -------------------------------------------------------------- */

/* TOKENTRACE_CUPTI_FILE with its first "%p" replaced by the pid. */
static const char *file_path(char *buf, size_t len)
{
	const char *file = getenv("TOKENTRACE_CUPTI_FILE");
	const char *p = file ? strstr(file, "%p") : NULL;

	if (!p)
		return file;
	snprintf(buf, len, "%.*s%d%s", (int)(p - file), file, (int)getpid(),
		 p + 2);
	return buf;
}

static int open_transport(void)
{
	const char *sock = getenv("TOKENTRACE_CUPTI_SOCKET");
	char path[4096];
	const char *file = file_path(path, sizeof(path));
	struct ttc_tx_config cfg = {
		.socket_path = sock,
		.file_path = file,
		.backlog_max = TTC_BACKLOG_MAX,
		.reconnect_ns = TTC_RECONNECT_NS,
		.pid = (uint32_t)getpid(),
	};

	if ((!sock || !*sock) && (!file || !*file))
		fprintf(stderr, "libtokentrace_cupti: neither "
			"TOKENTRACE_CUPTI_SOCKET nor TOKENTRACE_CUPTI_FILE is "
			"set: GPU records are counted and dropped; run the "
			"server with `tokentrace run` or set one of them\n");
	g.tx = ttc_tx_new(&cfg);
	if (!g.tx) {
		/* File could not be opened (logged): count and drop. */
		cfg.file_path = cfg.socket_path = NULL;
		g.tx = ttc_tx_new(&cfg);
	}
	g.names = ttc_names_new();
	if (!g.tx || !g.names) {
		fprintf(stderr, "libtokentrace_cupti: out of memory at start; "
			"GPU tracing is off\n");
		return -ENOMEM;
	}
	return 0;
}

static int enable_kind(CUpti_ActivityKind kind, const char *what)
{
	CUptiResult r = cuptiActivityEnable(kind);

	if (r != CUPTI_SUCCESS) {
		log_cupti(what, r);
		return -1;
	}
	return 0;
}

static int start_activity(void)
{
	const char *graphs = getenv("TOKENTRACE_CUPTI_GRAPHS");
	CUptiResult r;

	/* The clock first: records made before it would use CUPTI's own. */
	r = cuptiActivityRegisterTimestampCallback(timestamp_ns);
	if (r != CUPTI_SUCCESS) {
		log_cupti("cuptiActivityRegisterTimestampCallback", r);
		return -1;
	}
	r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
	if (r != CUPTI_SUCCESS) {
		log_cupti("cuptiActivityRegisterCallbacks", r);
		return -1;
	}
	if (enable_kind(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
			"cuptiActivityEnable(CONCURRENT_KERNEL)"))
		return -1;
	enable_kind(CUPTI_ACTIVITY_KIND_MEMCPY, "cuptiActivityEnable(MEMCPY)");
	enable_kind(CUPTI_ACTIVITY_KIND_MEMSET, "cuptiActivityEnable(MEMSET)");
	enable_kind(CUPTI_ACTIVITY_KIND_DEVICE, "cuptiActivityEnable(DEVICE)");
	if (graphs && strcmp(graphs, "graph") == 0)
		enable_kind(CUPTI_ACTIVITY_KIND_GRAPH_TRACE,
			    "cuptiActivityEnable(GRAPH_TRACE)");
	return 0;
}

/*
 * Returns 1 always: a failure here must never fail the server's cuInit;
 * it only means this process is not traced (and says so on stderr).
 */
__attribute__((visibility("default"))) int InitializeInjection(void)
{
	static atomic_int done;

	if (atomic_exchange(&done, 1))
		return 1;
	if (open_transport() || start_activity())
		return 1;
	subscribe_launches();
	if (pthread_create(&g.thread, NULL, library_thread, NULL)) {
		fprintf(stderr, "libtokentrace_cupti: cannot start the library "
			"thread: %s; records stay in CUPTI's buffers\n",
			strerror(errno));
		return 1;
	}
	g.thread_started = 1;
	atexit(at_exit);
	return 1;
}
