/*
 * main.c - the refserver command: flags, then the engine thread and the
 * network loop, then the process line of the truth log.
 *
 * In:  command-line flags (see usage()).
 * Out: an OpenAI-compatible server until SIGINT/SIGTERM; exit 0 on a clean
 *      stop, 1 on a startup error, 2 on a usage error.
 * Assumes: nothing else in the process handles SIGINT, SIGTERM or SIGPIPE.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "engine.h"
#include "server.h"
#include "truth.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: refserver [options]\n"
"\n"
"A reference OpenAI-compatible inference server: a small transformer with\n"
"seeded random weights, continuous batching, streamed tokens, and a\n"
"ground-truth log of what it did.\n"
"\n"
"Endpoints: POST /v1/completions, POST /v1/chat/completions (\"stream\",\n"
"\"stream_options\":{\"include_usage\":true}, \"max_tokens\" or\n"
"\"max_completion_tokens\", \"model\", \"user\", \"temperature\", \"seed\"),\n"
"GET /v1/models, GET /health. Tenant: header X-Tenant-Id, else \"user\",\n"
"else \"default\". Exactly max_tokens tokens are generated (no stop token).\n"
"\n"
"Network:\n"
"  --host ADDR           address to listen on (default 127.0.0.1)\n"
"  --port N              TCP port (default 8000; 0 picks a free one)\n"
"  --port-file F         write the bound port to F once listening\n"
"  --chunked             send streams with Transfer-Encoding: chunked, one\n"
"                        HTTP chunk per SSE event, keeping the connection\n"
"                        open (as uvicorn does). Without it a stream is sent\n"
"                        with Connection: close and no Content-Length, and\n"
"                        the server closes the connection after\n"
"                        \"data: [DONE]\" (a close-delimited body).\n"
"                        Non-stream responses always carry Content-Length.\n"
"  --max-body N          largest request body in bytes (default 1048576;\n"
"                        larger ones get 413)\n"
"  --tls-cert F          PEM certificate: serve HTTPS (needs --tls-key)\n"
"  --tls-key F           PEM private key for --tls-cert\n"
"\n"
"Engine:\n"
"  --max-batch N         running batch size limit (default 16)\n"
"  --prefill-chunk N     prompt tokens per request per step (default 0 =\n"
"                        the whole prompt in one step)\n"
"  --step-delay-ms N     sleep N ms after each step while requests are\n"
"                        queued or running (idle bubbles on purpose)\n"
"  --prefix-cache        keep the keys and values of prompt prefixes in\n"
"                        blocks of 16 tokens and skip their prefill when a\n"
"                        prompt begins with blocks seen before (least\n"
"                        recently used blocks evicted; --device cpu)\n"
"  --prefix-cache-blocks N  the pool's size in blocks (default 1024)\n"
"  --report-cached-tokens  add usage.prompt_tokens_details.cached_tokens to\n"
"                        responses (as vLLM does when asked)\n"
"  --device cpu|cuda|sim where the model runs (default cpu; cuda needs a\n"
"                        build with 'make CUDA=1'; sim: simulated CUDA\n"
"                        devices whose records go to the collector that\n"
"                        `tokentrace run --compute cupti` announces)\n"
"\n"
"Simulated devices (--device sim; nothing is computed, each step's kernels\n"
"and copies are laid out on the devices by a hidden cost model with noise,\n"
"and the engine waits for them in real time):\n"
"  --gpus N              tensor parallel over N devices, 1..8 (default 1)\n"
"  --gpu-index K         host index of the first device (default 0): two\n"
"                        servers on one host take devices apart\n"
"  --graphs              launch decode-only steps as CUDA graphs\n"
"  --kernel-noise F      relative sd of each kernel's time (default 0.05)\n"
"  --sim-profile NAME    small (default: 8 layers, steps of a few ms) or\n"
"                        llama70b (80 layers, shaped like Llama-70B on 8\n"
"                        GPUs); --layers overrides the profile's layers\n"
"  --gpu-name NAME       the devices' model name (default: the profile's,\n"
"                        which says it is simulated), as prices match it\n"
"  --truth F             ground-truth log, JSON lines: step, request and\n"
"                        (at clean exit) process records, CLOCK_MONOTONIC ns\n"
"\n"
"Model (byte-level vocabulary of 256; a prompt's bytes are its tokens):\n"
"  --model-name NAME     served model name (default ref-tiny)\n"
"  --seed N              weight seed (default 1)\n"
"  --dim N               width (default 128)\n"
"  --layers N            transformer blocks (default 2)\n"
"  --heads N             attention heads, dividing --dim (default 4)\n"
"  --ffn N               MLP hidden width (default 512)\n"
"  --ctx N               max context: prompt + max_tokens (default 1024;\n"
"                        max_tokens, default 16, is capped at it)\n"
"\n"
"  --help                this text\n"
"\n"
"SIGINT or SIGTERM: stop accepting, close every connection (requests in\n"
"flight are logged as cancelled), write the process line, exit 0.\n");
}

struct opts {
	struct rs_server_cfg srv;
	struct rs_engine_cfg eng;
	const char *truth;
	const char *device;
	bool prefix_cache;
	int prefix_blocks;
	bool layers_given;
};

enum { O_HOST = 256, O_PORT, O_PORT_FILE, O_CHUNKED, O_MAX_BODY,
       O_TLS_CERT, O_TLS_KEY, O_MAX_BATCH, O_PREFILL_CHUNK, O_STEP_DELAY,
       O_DEVICE, O_TRUTH, O_MODEL_NAME, O_SEED, O_DIM, O_LAYERS, O_HEADS,
       O_FFN, O_CTX, O_PREFIX_CACHE, O_PREFIX_BLOCKS, O_REPORT_CACHED,
       O_GPUS, O_GPU_INDEX, O_GRAPHS, O_KERNEL_NOISE, O_SIM_PROFILE,
       O_GPU_NAME, O_HELP };

static const struct option long_opts[] = {
	{ "host", required_argument, NULL, O_HOST },
	{ "port", required_argument, NULL, O_PORT },
	{ "port-file", required_argument, NULL, O_PORT_FILE },
	{ "chunked", no_argument, NULL, O_CHUNKED },
	{ "max-body", required_argument, NULL, O_MAX_BODY },
	{ "tls-cert", required_argument, NULL, O_TLS_CERT },
	{ "tls-key", required_argument, NULL, O_TLS_KEY },
	{ "max-batch", required_argument, NULL, O_MAX_BATCH },
	{ "prefill-chunk", required_argument, NULL, O_PREFILL_CHUNK },
	{ "step-delay-ms", required_argument, NULL, O_STEP_DELAY },
	{ "device", required_argument, NULL, O_DEVICE },
	{ "truth", required_argument, NULL, O_TRUTH },
	{ "model-name", required_argument, NULL, O_MODEL_NAME },
	{ "seed", required_argument, NULL, O_SEED },
	{ "dim", required_argument, NULL, O_DIM },
	{ "layers", required_argument, NULL, O_LAYERS },
	{ "heads", required_argument, NULL, O_HEADS },
	{ "ffn", required_argument, NULL, O_FFN },
	{ "ctx", required_argument, NULL, O_CTX },
	{ "prefix-cache", no_argument, NULL, O_PREFIX_CACHE },
	{ "prefix-cache-blocks", required_argument, NULL, O_PREFIX_BLOCKS },
	{ "report-cached-tokens", no_argument, NULL, O_REPORT_CACHED },
	{ "gpus", required_argument, NULL, O_GPUS },
	{ "gpu-index", required_argument, NULL, O_GPU_INDEX },
	{ "graphs", no_argument, NULL, O_GRAPHS },
	{ "kernel-noise", required_argument, NULL, O_KERNEL_NOISE },
	{ "sim-profile", required_argument, NULL, O_SIM_PROFILE },
	{ "gpu-name", required_argument, NULL, O_GPU_NAME },
	{ "help", no_argument, NULL, O_HELP },
	{ 0 },
};

/* A whole non-negative number up to max, or -1. */
static long long num(const char *name, const char *v, long long max)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < 0 || n > max) {
		fprintf(stderr, "refserver: --%s %s: expected a whole number "
			"0..%lld\n", name, v, max);
		return -1;
	}
	return n;
}

/* A relative noise 0..0.3, or -1. */
static int noise_arg(const char *v, double *out)
{
	char *end;
	double x;

	errno = 0;
	x = strtod(v, &end);
	if (errno || end == v || *end || !(x >= 0 && x <= 0.3)) {
		fprintf(stderr, "refserver: --kernel-noise %s: expected a "
			"relative sd 0..0.3 (0.05 is 5%%)\n", v);
		return -1;
	}
	*out = x;
	return 0;
}

static void defaults(struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->srv.host = "127.0.0.1";
	o->srv.port = 8000;
	o->srv.max_body = 1 << 20;
	o->srv.model_name = "ref-tiny";
	o->srv.default_max_tokens = 16;
	o->eng.max_batch = 16;
	rs_model_cfg_default(&o->eng.model);
	o->device = "cpu";
	o->prefix_blocks = 1024;
	rs_sim_cfg_default(&o->eng.simcfg);
}

static int set_num(int id, const char *v, struct opts *o)
{
	const char *name = long_opts[id - O_HOST].name;
	long long n = num(name, v, id == O_SEED ? LLONG_MAX :
			  id == O_MAX_BODY ? 1LL << 30 : INT_MAX);

	if (n < 0)
		return -1;
	switch (id) {
	case O_PORT: o->srv.port = (int)n; return n > 65535 ? -1 : 0;
	case O_MAX_BODY: o->srv.max_body = n; return 0;
	case O_MAX_BATCH: o->eng.max_batch = (int)n; return n ? 0 : -1;
	case O_PREFILL_CHUNK: o->eng.prefill_chunk = (int)n; return 0;
	case O_STEP_DELAY: o->eng.step_delay_ms = (int)n; return 0;
	case O_SEED: o->eng.model.seed = n; return 0;
	case O_DIM: o->eng.model.dim = (int)n; return 0;
	case O_LAYERS:
		o->eng.model.layers = o->eng.simcfg.layers = (int)n;
		o->layers_given = true;
		return 0;
	case O_GPUS: o->eng.simcfg.gpus = (int)n; return 0;
	case O_GPU_INDEX: o->eng.simcfg.gpu_index = (int)n; return 0;
	case O_HEADS: o->eng.model.heads = (int)n; return 0;
	case O_FFN: o->eng.model.ffn = (int)n; return 0;
	case O_CTX: o->eng.model.ctx = (int)n; return 0;
	case O_PREFIX_BLOCKS: o->prefix_blocks = (int)n; return n ? 0 : -1;
	}
	return -1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	int c;

	defaults(o);
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		switch (c) {
		case O_HOST: o->srv.host = optarg; break;
		case O_PORT_FILE: o->srv.port_file = optarg; break;
		case O_CHUNKED: o->srv.chunked = true; break;
		case O_PREFIX_CACHE: o->prefix_cache = true; break;
		case O_REPORT_CACHED: o->srv.report_cached = true; break;
		case O_TLS_CERT: o->srv.tls_cert = optarg; break;
		case O_TLS_KEY: o->srv.tls_key = optarg; break;
		case O_DEVICE: o->device = optarg; break;
		case O_TRUTH: o->truth = optarg; break;
		case O_MODEL_NAME: o->srv.model_name = optarg; break;
		case O_GRAPHS: o->eng.simcfg.graphs = true; break;
		case O_SIM_PROFILE: o->eng.simcfg.profile = optarg; break;
		case O_GPU_NAME: o->eng.simcfg.gpu_name = optarg; break;
		case O_KERNEL_NOISE:
			if (noise_arg(optarg, &o->eng.simcfg.noise))
				return -1;
			break;
		case O_HELP: usage(stdout); exit(0);
		case '?': return -1;
		default:
			if (set_num(c, optarg, o))
				return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "refserver: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	if (!o->srv.tls_cert != !o->srv.tls_key) {
		fprintf(stderr, "refserver: --tls-cert and --tls-key go "
			"together\n");
		return -1;
	}
	if (strcmp(o->device, "cpu") && strcmp(o->device, "cuda") &&
	    strcmp(o->device, "sim")) {
		fprintf(stderr, "refserver: --device %s: expected cpu, cuda or "
			"sim\n", o->device);
		return -1;
	}
	o->eng.cuda = !strcmp(o->device, "cuda");
	o->eng.sim = !strcmp(o->device, "sim");
	if (!o->layers_given)
		o->eng.simcfg.layers = 0;	/* the profile's */
	o->eng.simcfg.seed = o->eng.model.seed;
	o->eng.prefix_blocks = o->prefix_cache ? o->prefix_blocks : 0;
	o->srv.ctx = o->eng.model.ctx;
	return 0;
}

static uint64_t tv_ns(struct timeval tv)
{
	return (uint64_t)tv.tv_sec * 1000000000ull + tv.tv_usec * 1000ull;
}

static void write_process_line(FILE *truth)
{
	struct rusage ru;
	struct rs_buf b = { 0 };

	if (!truth || getrusage(RUSAGE_SELF, &ru))
		return;
	if (!rs_truth_fmt_process(&b, getpid(), tv_ns(ru.ru_utime),
				  tv_ns(ru.ru_stime)))
		rs_truth_write(truth, &b);
	rs_buf_free(&b);
}

int main(int argc, char **argv)
{
	struct opts o;
	struct rs_engine eng;
	char err[512] = "";
	int rc = 1;

	if (parse_args(argc, argv, &o)) {
		fprintf(stderr, "refserver: see --help\n");
		return 2;
	}
	if (o.truth && !(o.eng.truth = fopen(o.truth, "w"))) {
		fprintf(stderr, "refserver: --truth %s: %s\n", o.truth,
			strerror(errno));
		return 1;
	}
	if (rs_server_block_signals()) {
		fprintf(stderr, "refserver: cannot block SIGINT/SIGTERM\n");
		goto out;
	}
	if (rs_engine_init(&eng, &o.eng, err, sizeof(err))) {
		fprintf(stderr, "refserver: %s\n", err);
		rs_engine_fini(&eng);
		goto out;
	}
	if (rs_engine_start(&eng)) {
		fprintf(stderr, "refserver: cannot start the engine thread\n");
		rs_engine_fini(&eng);
		goto out;
	}
	rc = rs_server_run(&o.srv, &eng) ? 1 : 0;
	rs_engine_fini(&eng);
	if (!rc)
		write_process_line(o.eng.truth);
out:
	if (o.eng.truth)
		fclose(o.eng.truth);
	return rc;
}
