/*
 * opts.c - the load generator's command line.
 *
 * In:  argv (see lg_usage for every flag).
 * Out: a filled struct lg_opts, or an error message naming the flag and
 *      the value that was wrong.
 * Assumes: getopt_long may be re-run (optind is reset here), so tests can
 *      parse several command lines in one process.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen.h"

void lg_usage(FILE *f)
{
	fputs(
"usage: loadgen --url http(s)://HOST:PORT[/v1/completions] [options]\n"
"\n"
"Drives an OpenAI-compatible server and writes what the client saw.\n"
"\n"
"  --url URL            server URL; the path defaults to /v1/completions\n"
"                       (/v1/chat/completions with --chat)\n"
"  --chat               send chat requests (messages) instead of prompts\n"
"  --concurrency N      closed loop: N workers, each with a keep-alive\n"
"                       connection (default 1); with --rate, the most\n"
"                       requests in flight (default 64)\n"
"  --rate R             open loop: Poisson arrivals, R requests per second\n"
"  --requests N         send N requests (default 100)\n"
"  --duration S         send for S seconds instead of a request count\n"
"  --tenants LIST       name:weight,... each request's tenant drawn by\n"
"                       weight, sent as X-Tenant-Id and JSON user\n"
"                       (default: default:1)\n"
"  --prompt-len L       prompt bytes: N or LO-HI uniform (default 64)\n"
"  --max-tokens L       max_tokens: N or LO-HI uniform (default 32)\n"
"  --stream             stream tokens (SSE), asking for usage\n"
"  --model NAME         model field (default: ref-tiny)\n"
"  --api-key KEY        sent as Authorization: Bearer KEY (default:\n"
"                       $OPENAI_API_KEY when set)\n"
"  --insecure           TLS without certificate verification\n"
"  --seed N             seed for tenants, lengths, prompts, arrivals (1)\n"
"  --timeout S          per-request timeout in seconds (default 60)\n"
"  --out FILE           one JSON line per request\n"
"  --allow-errors       exit 0 even when requests failed\n"
"  --close              close the connection after each response (no\n"
"                       keep-alive: a new connection per request)\n"
"  --cancel-frac F      cut this fraction of streams (0-1) after their\n"
"                       first token by closing the connection; counted as\n"
"                       cancelled, not failed (\"cancelled\":true in --out)\n"
"  --shared-prefix N    every prompt of a tenant begins with that tenant's\n"
"                       own N bytes (the same in each of its prompts);\n"
"                       name:N,... gives each tenant its own N (others 0)\n"
"  --turns K            conversations of K requests: each turn resends the\n"
"                       earlier turns (with a stand-in for each answer)\n"
"                       before its own bytes, and is sent when the turn\n"
"                       before it has been answered (\"conversation\" and\n"
"                       \"turn\" in --out)\n"
"  --quiet              no summary\n"
"  --help               this text\n"
"\n"
"Exit status: 0 when every request succeeded, 1 when some failed, 2 on a\n"
"usage error.\n", f);
}

static int parse_long(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end)
		return -1;
	*out = v;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end)
		return -1;
	*out = v;
	return 0;
}

int lg_parse_range(const char *s, struct lg_range *r)
{
	const char *dash = strchr(s, '-');
	char lo[32];
	long a, b;

	if (!dash)
		return parse_long(s, &a) < 0 || a < 0 ? -1 :
		       (r->lo = r->hi = a, 0);
	if ((size_t)(dash - s) >= sizeof(lo) || dash == s)
		return -1;
	memcpy(lo, s, (size_t)(dash - s));
	lo[dash - s] = '\0';
	if (parse_long(lo, &a) < 0 || parse_long(dash + 1, &b) < 0 ||
	    a < 0 || b < a)
		return -1;
	r->lo = a;
	r->hi = b;
	return 0;
}

static int add_tenant(struct lg_opts *o, const char *item, size_t n,
		      char *err, size_t errlen)
{
	const char *colon = memchr(item, ':', n);
	size_t name_len = colon ? (size_t)(colon - item) : n;
	struct lg_tenant *t;
	char w[32];

	if (!name_len || name_len >= LG_NAME_MAX) {
		snprintf(err, errlen, "--tenants: empty or too long tenant name "
			 "in '%.*s' (1 to %d characters)", (int)n, item,
			 LG_NAME_MAX - 1);
		return -1;
	}
	if (o->n_tenants == LG_MAX_TENANTS) {
		snprintf(err, errlen, "--tenants: more than %d tenants",
			 LG_MAX_TENANTS);
		return -1;
	}
	t = &o->tenants[o->n_tenants];
	memcpy(t->name, item, name_len);
	t->name[name_len] = '\0';
	t->weight = 1;
	if (colon) {
		size_t wl = n - name_len - 1;

		if (!wl || wl >= sizeof(w))
			goto bad_weight;
		memcpy(w, colon + 1, wl);
		w[wl] = '\0';
		if (parse_double(w, &t->weight) < 0 || !(t->weight > 0))
			goto bad_weight;
	}
	o->n_tenants++;
	return 0;
bad_weight:
	snprintf(err, errlen, "--tenants: bad weight in '%.*s': want "
		 "name:weight with a weight > 0", (int)n, item);
	return -1;
}

int lg_parse_tenants(const char *s, struct lg_opts *o, char *err,
		     size_t errlen)
{
	o->n_tenants = 0;
	while (*s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);

		if (add_tenant(o, s, n, err, errlen) < 0)
			return -1;
		s += n;
		if (*s == ',')
			s++;
	}
	if (!o->n_tenants) {
		snprintf(err, errlen, "--tenants: empty list: want name:weight,...");
		return -1;
	}
	return 0;
}

int lg_parse_url(const char *s, struct lg_opts *o, char *err, size_t errlen)
{
	const char *host, *end, *path, *colon;
	size_t hl;

	if (!strncmp(s, "http://", 7)) {
		o->tls = false;
		host = s + 7;
	} else if (!strncmp(s, "https://", 8)) {
		o->tls = true;
		host = s + 8;
	} else {
		goto bad;
	}
	path = strchr(host, '/');
	end = path ? path : host + strlen(host);
	if (*host == '[') {		/* [v6addr]:port */
		const char *rb = memchr(host, ']', (size_t)(end - host));

		if (!rb)
			goto bad;
		colon = rb[1] == ':' ? rb + 1 : NULL;
		hl = (size_t)(rb - host - 1);
		host++;
	} else {
		colon = memchr(host, ':', (size_t)(end - host));
		hl = (size_t)((colon ? colon : end) - host);
	}
	if (!hl || hl >= sizeof(o->host))
		goto bad;
	memcpy(o->host, host, hl);
	o->host[hl] = '\0';
	if (colon) {
		size_t pl = (size_t)(end - colon - 1);

		if (!pl || pl >= sizeof(o->port))
			goto bad;
		memcpy(o->port, colon + 1, pl);
		o->port[pl] = '\0';
	} else {
		snprintf(o->port, sizeof(o->port), "%s", o->tls ? "443" : "80");
	}
	o->path_given = path && path[1];
	if (o->path_given)
		snprintf(o->path, sizeof(o->path), "%s", path);
	return 0;
bad:
	snprintf(err, errlen, "--url '%s': want http://HOST:PORT/PATH or "
		 "https://HOST:PORT/PATH", s);
	return -1;
}

void lg_opts_defaults(struct lg_opts *o)
{
	const char *key = getenv("OPENAI_API_KEY");

	memset(o, 0, sizeof(*o));
	o->concurrency = 0;
	o->requests = 0;
	o->timeout_s = 60;
	o->prompt_len.lo = o->prompt_len.hi = 64;
	o->max_tokens.lo = o->max_tokens.hi = 32;
	snprintf(o->model, sizeof(o->model), "ref-tiny");
	snprintf(o->tenants[0].name, LG_NAME_MAX, "default");
	o->tenants[0].weight = 1;
	o->n_tenants = 1;
	o->seed = 1;
	o->api_key = key && *key ? key : NULL;
}

enum {
	OPT_URL = 256, OPT_CHAT, OPT_CONC, OPT_RATE, OPT_REQS, OPT_DUR,
	OPT_TEN, OPT_PLEN, OPT_MAXT, OPT_STREAM, OPT_MODEL, OPT_KEY,
	OPT_INSECURE, OPT_SEED, OPT_TIMEOUT, OPT_OUT, OPT_ALLOW, OPT_QUIET,
	OPT_CLOSE, OPT_CANCEL, OPT_SHARED, OPT_TURNS, OPT_HELP,
};

static const struct option long_opts[] = {
	{ "url", required_argument, NULL, OPT_URL },
	{ "chat", no_argument, NULL, OPT_CHAT },
	{ "concurrency", required_argument, NULL, OPT_CONC },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "requests", required_argument, NULL, OPT_REQS },
	{ "duration", required_argument, NULL, OPT_DUR },
	{ "tenants", required_argument, NULL, OPT_TEN },
	{ "prompt-len", required_argument, NULL, OPT_PLEN },
	{ "max-tokens", required_argument, NULL, OPT_MAXT },
	{ "stream", no_argument, NULL, OPT_STREAM },
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "api-key", required_argument, NULL, OPT_KEY },
	{ "insecure", no_argument, NULL, OPT_INSECURE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "out", required_argument, NULL, OPT_OUT },
	{ "allow-errors", no_argument, NULL, OPT_ALLOW },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "close", no_argument, NULL, OPT_CLOSE },
	{ "cancel-frac", required_argument, NULL, OPT_CANCEL },
	{ "shared-prefix", required_argument, NULL, OPT_SHARED },
	{ "turns", required_argument, NULL, OPT_TURNS },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* One option with its argument; returns 0, 1 for help, -1 on error. */
static int apply(struct lg_opts *o, int c, const char *arg, bool *url,
		 char *err, size_t errlen)
{
	long l;

	switch (c) {
	case OPT_URL:
		*url = true;
		return lg_parse_url(arg, o, err, errlen);
	case OPT_CHAT: o->chat = true; return 0;
	case OPT_STREAM: o->stream = true; return 0;
	case OPT_INSECURE: o->insecure = true; return 0;
	case OPT_ALLOW: o->allow_errors = true; return 0;
	case OPT_QUIET: o->quiet = true; return 0;
	case OPT_CLOSE: o->close_each = true; return 0;
	case OPT_CANCEL:
		if (parse_double(arg, &o->cancel_frac) < 0 ||
		    !(o->cancel_frac >= 0 && o->cancel_frac <= 1))
			break;
		return 0;
	case OPT_OUT: o->out_path = arg; return 0;
	case OPT_SHARED: o->shared_prefix = arg; return 0;
	case OPT_TURNS:
		if (parse_long(arg, &l) < 0 || l < 1 || l > 1000)
			break;
		o->turns = (int)l;
		return 0;
	case OPT_KEY: o->api_key = arg; return 0;
	case OPT_HELP: lg_usage(stdout); return 1;
	case OPT_MODEL:
		if (strlen(arg) >= sizeof(o->model) || !*arg)
			break;
		snprintf(o->model, sizeof(o->model), "%s", arg);
		return 0;
	case OPT_TEN:
		return lg_parse_tenants(arg, o, err, errlen);
	case OPT_PLEN:
		return lg_parse_range(arg, &o->prompt_len) ? (
			snprintf(err, errlen, "--prompt-len '%s': want N or "
				 "LO-HI with 0 <= LO <= HI", arg), -1) : 0;
	case OPT_MAXT:
		return lg_parse_range(arg, &o->max_tokens) ? (
			snprintf(err, errlen, "--max-tokens '%s': want N or "
				 "LO-HI with 0 <= LO <= HI", arg), -1) : 0;
	case OPT_CONC:
		if (parse_long(arg, &l) < 0 || l < 1 || l > 10000)
			break;
		o->concurrency = (int)l;
		return 0;
	case OPT_REQS:
		if (parse_long(arg, &o->requests) < 0 || o->requests < 1)
			break;
		return 0;
	case OPT_SEED:
		if (parse_long(arg, &l) < 0)
			break;
		o->seed = (uint64_t)l;
		return 0;
	case OPT_RATE:
		if (parse_double(arg, &o->rate) < 0 || !(o->rate > 0))
			break;
		return 0;
	case OPT_DUR:
		if (parse_double(arg, &o->duration_s) < 0 || !(o->duration_s > 0))
			break;
		return 0;
	case OPT_TIMEOUT:
		if (parse_double(arg, &o->timeout_s) < 0 || !(o->timeout_s > 0))
			break;
		return 0;
	default:
		snprintf(err, errlen, "unknown option: see loadgen --help");
		return -1;
	}
	snprintf(err, errlen, "bad value '%s' for --%s: see loadgen --help",
		 arg ? arg : "", long_opts[c - OPT_URL].name);
	return -1;
}

static int finish(struct lg_opts *o, bool url, char *err, size_t errlen)
{
	if (!url) {
		snprintf(err, errlen, "--url is required, e.g. --url "
			 "http://127.0.0.1:8000/v1/completions");
		return -1;
	}
	if (!o->path_given)
		snprintf(o->path, sizeof(o->path), "%s", o->chat ?
			 "/v1/chat/completions" : "/v1/completions");
	if (o->requests && o->duration_s) {
		snprintf(err, errlen, "--requests and --duration: give one");
		return -1;
	}
	if (!o->requests && !o->duration_s)
		o->requests = 100;
	if (!o->concurrency)
		o->concurrency = o->rate > 0 ? 64 : 1;
	return o->shared_prefix ? lg_parse_shared_prefix(o->shared_prefix, o,
							 err, errlen) : 0;
}

int lg_parse_shared_prefix(const char *s, struct lg_opts *o, char *err,
			   size_t errlen)
{
	char *end;
	long n;

	if (!strchr(s, ':')) {
		if (parse_long(s, &n) < 0 || n < 0 || n > (1L << 24))
			goto bad;
		for (int i = 0; i < o->n_tenants; i++)
			o->tenants[i].shared_prefix = n;
		return 0;
	}
	while (*s) {
		const char *colon = strchr(s, ':');
		size_t len = colon ? (size_t)(colon - s) : 0;
		int t = -1;

		if (!colon)
			goto bad;
		for (int i = 0; i < o->n_tenants; i++)
			if (strlen(o->tenants[i].name) == len &&
			    !strncmp(o->tenants[i].name, s, len))
				t = i;
		if (t < 0) {
			snprintf(err, errlen, "--shared-prefix: no tenant "
				 "'%.*s' in --tenants", (int)len, s);
			return -1;
		}
		errno = 0;
		n = strtol(colon + 1, &end, 10);
		if (errno || end == colon + 1 || n < 0 || n > (1L << 24) ||
		    (*end && *end != ','))
			goto bad;
		o->tenants[t].shared_prefix = n;
		s = *end ? end + 1 : end;
	}
	return 0;
bad:
	snprintf(err, errlen, "--shared-prefix '%s': want N or name:N,...",
		 o->shared_prefix);
	return -1;
}

int lg_opts_parse(struct lg_opts *o, int argc, char **argv,
		  char *err, size_t errlen)
{
	bool url = false;
	int c, rc;

	lg_opts_defaults(o);
	optind = 0;		/* GNU: full re-initialisation */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		if (c == '?' || c == ':') {
			snprintf(err, errlen, "unknown option or missing value "
				 "near '%s': see loadgen --help",
				 argv[optind - 1]);
			return -1;
		}
		rc = apply(o, c, optarg, &url, err, errlen);
		if (rc)
			return rc;
	}
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument '%s': see loadgen "
			 "--help", argv[optind]);
		return -1;
	}
	return finish(o, url, err, errlen);
}
