/*
 * engine.c - the engine thread: one continuous-batching loop over the
 * model, talking to the network thread through two locked queues.
 *
 * In:  struct rs_msg from the network thread (rs_engine_post).
 * Out: struct rs_tok_ev for the network thread (rs_engine_take_events,
 *      signalled on an eventfd); truth lines for each step and request.
 * Assumes: only this thread touches the scheduler, the model scratch and
 *      the truth file once started. A step: plan (drop cancelled, admit,
 *      prefill chunks, decodes), run each request's share separately and
 *      time it, commit, hand the new tokens over, write the step line.
 *      With --step-delay-ms the thread then sleeps while work remains.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#ifdef REFSERVER_CUDA
#include "model_cuda.h"
#endif

uint64_t rs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct rs_req *rs_req_new(const struct rs_api_req *a, const char *id,
			  const char *tenant, const char *model)
{
	struct rs_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	snprintf(r->model, sizeof(r->model), "%s", model);
	r->max_tokens = a ? a->max_tokens : 0;
	r->temperature = a ? a->temperature : 0;
	r->status = "ok";
	r->fd = -1;
	if (a && a->prompt_len) {
		r->prompt = malloc(a->prompt_len);
		if (!r->prompt) {
			free(r);
			return NULL;
		}
		memcpy(r->prompt, a->prompt, a->prompt_len);
		r->prompt_len = a->prompt_len;
	}
	r->item.prompt_tokens = r->prompt_len;
	r->item.max_tokens = r->max_tokens;
	r->item.owner = r;
	return r;
}

void rs_req_free(struct rs_req *r)
{
	if (!r)
		return;
	rs_kv_free(r->kv);
#ifdef REFSERVER_CUDA
	rs_cuda_kv_free(r->cuda_kv);
#endif
	free(r->prompt);
	free(r);
}

/* ---- lifetime ----------------------------------------------------------- */

static void live_add(struct rs_engine *e, struct rs_req *r)
{
	r->live_prev = NULL;
	r->live_next = e->live;
	if (e->live)
		e->live->live_prev = r;
	e->live = r;
}

static void live_del(struct rs_engine *e, struct rs_req *r)
{
	if (r->live_prev)
		r->live_prev->live_next = r->live_next;
	else if (e->live == r)
		e->live = r->live_next;
	if (r->live_next)
		r->live_next->live_prev = r->live_prev;
}

static void log_request(struct rs_engine *e, const struct rs_req *r)
{
	struct rs_truth_request t = {
		.id = r->id, .tenant = r->tenant, .model = r->model,
		.arrival_ns = r->arrival_ns,
		.first_token_ns = r->first_token_ns, .end_ns = r->end_ns,
		.prompt_tokens = r->prompt_len,
		.completion_tokens = r->item.generated,
		.compute_ns = r->compute_ns, .status = r->status,
		.cached_tokens = r->cached_tokens,
	};

	if (!e->cfg.truth)
		return;
	e->line.len = 0;
	if (!rs_truth_fmt_request(&e->line, &t))
		rs_truth_write(e->cfg.truth, &e->line);
}

/* Frees r once both the engine and the network thread are done with it. */
static void maybe_finish(struct rs_engine *e, struct rs_req *r)
{
	if (!r->engine_done || !r->net_done)
		return;
	log_request(e, r);
	live_del(e, r);
	rs_req_free(r);
}

static void release_kv(struct rs_req *r)
{
	rs_kv_free(r->kv);
	r->kv = NULL;
#ifdef REFSERVER_CUDA
	rs_cuda_kv_free(r->cuda_kv);
	r->cuda_kv = NULL;
#endif
}

/* ---- the prefix cache ---------------------------------------------------- */

/*
 * At submission: the cached blocks that begin r's prompt are copied into
 * its KV cache (allocated now, not at admission) and its prefill starts
 * after them. Without memory for the KV cache it simply prefills all.
 */
static int ensure_kv(struct rs_engine *e, struct rs_req *r);

static void use_prefix(struct rs_engine *e, struct rs_req *r)
{
	if (!e->prefix || r->prompt_len < 2 || ensure_kv(e, r))
		return;
	r->cached_tokens = rs_prefix_match(e->prefix, r->prompt,
					   r->prompt_len, r->kv);
	r->item.cached = r->cached_tokens;
}

/* Requests whose prompt is now wholly in their KV cache keep its blocks. */
static void keep_prefixes(struct rs_engine *e)
{
	for (int i = 0; e->prefix && i < e->plan.n; i++) {
		const struct rs_plan_entry *pe = &e->plan.entry[i];
		struct rs_req *r = pe->item->owner;

		if (pe->phase == RS_PHASE_PREFILL && pe->samples && r->kv)
			rs_prefix_insert(e->prefix, r->prompt, r->prompt_len,
					 r->kv);
	}
}

/* ---- messages ----------------------------------------------------------- */

static void handle_msg(struct rs_engine *e, const struct rs_msg *m)
{
	struct rs_req *r = m->req;

	switch (m->type) {
	case RS_MSG_SUBMIT:
		live_add(e, r);
		use_prefix(e, r);
		rs_sched_submit(&e->sched, &r->item);
		return;
	case RS_MSG_LOG:
		r->status = "error";
		r->end_ns = m->end_ns;
		log_request(e, r);
		rs_req_free(r);
		return;
	case RS_MSG_CANCEL:
		r->status = "cancelled";
		if (rs_sched_cancel(&e->sched, &r->item) && !r->engine_done) {
			r->engine_done = true;
			release_kv(r);
		}
		break;
	case RS_MSG_DONE:
		break;
	}
	r->net_done = true;
	r->first_token_ns = m->first_token_ns;
	r->end_ns = m->end_ns;
	maybe_finish(e, r);
}

static void take_messages(struct rs_engine *e, struct rs_msg **msgs,
			  size_t *n)
{
	*msgs = e->in;
	*n = e->nin;
	e->in = NULL;
	e->nin = e->in_cap = 0;
}

static void handle_messages(struct rs_engine *e)
{
	struct rs_msg *msgs;
	size_t n;

	pthread_mutex_lock(&e->in_mu);
	take_messages(e, &msgs, &n);
	pthread_mutex_unlock(&e->in_mu);
	for (size_t i = 0; i < n; i++)
		handle_msg(e, &msgs[i]);
	free(msgs);
}

int rs_engine_post(struct rs_engine *e, const struct rs_msg *m)
{
	int rc = 0;

	pthread_mutex_lock(&e->in_mu);
	if (e->nin == e->in_cap) {
		size_t cap = e->in_cap ? e->in_cap * 2 : 64;
		struct rs_msg *p = realloc(e->in, cap * sizeof(*p));

		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		e->in = p;
		e->in_cap = cap;
	}
	e->in[e->nin++] = *m;
	pthread_cond_signal(&e->in_cv);
out:
	pthread_mutex_unlock(&e->in_mu);
	return rc;
}

/* ---- token events ------------------------------------------------------- */

static void push_event(struct rs_engine *e, const struct rs_req *r)
{
	struct rs_tok_ev ev = {
		.fd = r->fd, .gen = r->gen, .seq = r->seq,
		.token = r->last_token, .index = r->item.generated,
		.last = r->item.generated >= r->max_tokens,
		.cached_tokens = r->cached_tokens,
	};

	if (e->nout == e->out_cap) {
		size_t cap = e->out_cap ? e->out_cap * 2 : 64;
		struct rs_tok_ev *p = realloc(e->out, cap * sizeof(*p));

		if (!p)
			return;	/* the client times out; nothing else breaks */
		e->out = p;
		e->out_cap = cap;
	}
	e->out[e->nout++] = ev;
}

static void hand_over_tokens(struct rs_engine *e)
{
	uint64_t one = 1;
	bool any = false;

	pthread_mutex_lock(&e->out_mu);
	for (int i = 0; i < e->plan.n; i++) {
		if (e->plan.entry[i].samples) {
			push_event(e, e->plan.entry[i].item->owner);
			any = true;
		}
	}
	pthread_mutex_unlock(&e->out_mu);
	if (any && e->efd >= 0 && write(e->efd, &one, sizeof(one)) < 0) {
		/* eventfd full means it is already signalled */
	}
}

size_t rs_engine_take_events(struct rs_engine *e, struct rs_tok_ev **ev)
{
	size_t n;

	pthread_mutex_lock(&e->out_mu);
	*ev = e->out;
	n = e->nout;
	e->out = NULL;
	e->nout = e->out_cap = 0;
	pthread_mutex_unlock(&e->out_mu);
	return n;
}

/* ---- the step ------------------------------------------------------------ */

static int ensure_kv(struct rs_engine *e, struct rs_req *r)
{
	int cap = r->prompt_len + r->max_tokens;

	if (e->cfg.sim)
		return 0;	/* nothing is computed */
	if (e->cfg.cuda) {
#ifdef REFSERVER_CUDA
		if (!r->cuda_kv)
			r->cuda_kv = rs_cuda_kv_new(cap);
		return r->cuda_kv ? 0 : -ENOMEM;
#endif
	}
	if (!r->kv)
		r->kv = rs_kv_new(e->model, cap);
	return r->kv ? 0 : -ENOMEM;
}

/* Runs one request's share of the step on the CPU; returns its ns. */
/*
 * One request's part of a step on the CPU. Its cost is the engine thread's
 * CPU time, not wall time: a preempted engine would otherwise charge the
 * wait to whichever request it was computing, and the truth would depend
 * on what else the host runs.
 */
static uint64_t run_entry_cpu(struct rs_engine *e,
			      const struct rs_plan_entry *pe)
{
	struct rs_req *r = pe->item->owner;
	uint64_t t0 = thread_cpu_ns();

	for (int i = 0; i < pe->tokens; i++) {
		int pos = pe->pos + i;
		int tok = pe->phase == RS_PHASE_PREFILL ? r->prompt[pos] :
			r->last_token;
		bool last = i == pe->tokens - 1 && pe->samples;

		rs_model_forward(e->model, r->kv, tok, pos,
				 last ? e->logits : NULL);
	}
	if (pe->samples)
		r->last_token = rs_sample(e->logits, r->temperature, &r->rng);
	return thread_cpu_ns() - t0;
}

#ifdef REFSERVER_CUDA
static uint64_t run_entries_cuda(struct rs_engine *e)
{
	uint64_t gpu_ns = 0, ns[e->plan.n ? e->plan.n : 1];
	int ids[e->plan.n ? e->plan.n : 1], slot = 0;

	rs_cuda_step_begin(e->plan.n);
	for (int i = 0; i < e->plan.n; i++) {
		const struct rs_plan_entry *pe = &e->plan.entry[i];
		struct rs_req *r = pe->item->owner;
		unsigned char tok = (unsigned char)r->last_token;
		const unsigned char *in = pe->phase == RS_PHASE_PREFILL ?
			r->prompt + pe->pos : &tok;

		rs_cuda_entry(r->cuda_kv, in, pe->tokens, pe->pos,
			      pe->samples ? slot++ : -1, r->temperature,
			      (float)rs_rand_unit(&r->rng));
	}
	rs_cuda_step_end(ids, slot, &gpu_ns, ns);
	slot = 0;
	for (int i = 0; i < e->plan.n; i++) {
		struct rs_req *r = e->plan.entry[i].item->owner;

		e->entries[i].ns = ns[i];
		r->compute_ns += ns[i];
		if (e->plan.entry[i].samples)
			r->last_token = ids[slot++];
	}
	return gpu_ns;
}
#endif

/*
 * The step on simulated devices: each entry's true device time is the
 * simulator's, summed over its devices; the sampled token is drawn from
 * the request's own generator (nothing is computed, so no logits).
 */
static uint64_t run_entries_sim(struct rs_engine *e)
{
	for (int i = 0; i < e->plan.n; i++) {
		const struct rs_plan_entry *pe = &e->plan.entry[i];

		e->sim_work[i] = (struct rs_sim_work){
			.prefill = pe->phase == RS_PHASE_PREFILL,
			.pos = pe->pos, .tokens = pe->tokens,
			.samples = pe->samples,
		};
	}
	uint64_t ns[e->plan.n ? e->plan.n : 1];

	rs_sim_run(e->sim, e->sim_work, e->plan.n, ns, &e->sim_step);
	for (int i = 0; i < e->plan.n; i++) {
		struct rs_req *r = e->plan.entry[i].item->owner;

		e->entries[i].ns = ns[i];
		r->compute_ns += ns[i];
		if (e->plan.entry[i].samples)
			r->last_token = 'a' + (int)(rs_rand_unit(&r->rng) * 26);
	}
	return e->sim_step.total_ns;
}

static void fill_entry(struct rs_truth_entry *te, const struct rs_plan_entry *pe)
{
	struct rs_req *r = pe->item->owner;

	te->id = r->id;
	te->phase = pe->phase;
	te->tokens = pe->tokens;
	te->context = pe->context;
	/* the cached tokens go with the first chunk computed after them */
	te->cached = pe->phase == RS_PHASE_PREFILL &&
		pe->pos == r->cached_tokens ? r->cached_tokens : 0;
	te->ns = 0;
}

/* Runs every entry of the plan; returns the step's device ns (0 on CPU). */
static uint64_t run_entries(struct rs_engine *e)
{
	for (int i = 0; i < e->plan.n; i++)
		fill_entry(&e->entries[i], &e->plan.entry[i]);
	if (e->sim)
		return run_entries_sim(e);
#ifdef REFSERVER_CUDA
	if (e->cfg.cuda)
		return run_entries_cuda(e);
#endif
	for (int i = 0; i < e->plan.n; i++) {
		struct rs_req *r = e->plan.entry[i].item->owner;

		e->entries[i].ns = run_entry_cpu(e, &e->plan.entry[i]);
		r->compute_ns += e->entries[i].ns;
	}
	return 0;
}

static void drop_from_plan(struct rs_engine *e)
{
	for (int i = 0; i < e->plan.ndropped; i++) {
		struct rs_req *r = e->plan.dropped[i]->owner;

		r->engine_done = true;
		release_kv(r);
		maybe_finish(e, r);
	}
}

/* Requests whose memory could not be had are cancelled, not crashed on. */
static void plan_memory(struct rs_engine *e)
{
	int n = 0;

	for (int i = 0; i < e->plan.n; i++) {
		struct rs_req *r = e->plan.entry[i].item->owner;

		if (ensure_kv(e, r)) {
			fprintf(stderr, "refserver: no memory for the KV cache "
				"of %s (%d positions); dropping it at the next "
				"step\n", r->id, r->prompt_len + r->max_tokens);
			r->item.cancelled = true;
			r->status = "error";
			continue;
		}
		e->plan.entry[n++] = e->plan.entry[i];
	}
	e->plan.n = n;
}

static void write_step(struct rs_engine *e, uint64_t t0, uint64_t t1,
		       uint64_t cpu_ns, uint64_t gpu_ns)
{
	struct rs_truth_step s = {
		.step = e->step_no, .start_ns = t0, .end_ns = t1,
		.cpu_ns = cpu_ns, .gpu_ns = gpu_ns,
		.entry = e->entries, .n = e->plan.n,
		.dev_busy_ns = e->sim ? e->sim_step.busy_ns : NULL,
		.dev_comm_ns = e->sim ? e->sim_step.comm_ns : NULL,
		.ndev = e->sim ? e->sim_step.ndev : 0,
	};

	if (!e->cfg.truth)
		return;
	e->line.len = 0;
	if (!rs_truth_fmt_step(&e->line, &s))
		rs_truth_write(e->cfg.truth, &e->line);
}

static void finish_plan(struct rs_engine *e)
{
	for (int i = 0; i < e->plan.nfinished; i++) {
		struct rs_req *r = e->plan.finished[i]->owner;

		r->engine_done = true;
		release_kv(r);
		maybe_finish(e, r);
	}
}

/*
 * The step's work: every entry run, the schedule moved on. A function of
 * its own, exported and never inlined, so that tokentrace's step probe
 * sees each step's window (it returns before the step's tokens are handed
 * to the streams, as llama.cpp's llama_decode does).
 */
__attribute__((noinline, visibility("default")))
uint64_t rs_engine_step(struct rs_engine *e)
{
	uint64_t gpu_ns = run_entries(e);

	rs_sched_commit(&e->sched, &e->plan);
	__asm__ volatile("" ::: "memory");	/* a call, not folded away */
	return gpu_ns;
}

static bool run_step(struct rs_engine *e)
{
	uint64_t t0 = rs_now_ns(), c0 = thread_cpu_ns(), gpu_ns;

	rs_sched_plan(&e->sched, &e->plan);
	drop_from_plan(e);
	plan_memory(e);
	if (e->plan.n == 0)
		return false;
	gpu_ns = rs_engine_step(e);
	keep_prefixes(e);
	hand_over_tokens(e);
	write_step(e, t0, rs_now_ns(), thread_cpu_ns() - c0, gpu_ns);
	e->step_no++;
	finish_plan(e);
	return true;
}

bool rs_engine_busy(struct rs_engine *e)
{
	return rs_sched_busy(&e->sched);
}

bool rs_engine_poll(struct rs_engine *e)
{
	handle_messages(e);
	if (!rs_sched_busy(&e->sched))
		return false;
	return run_step(e);
}

static void delay(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void *engine_main(void *arg)
{
	struct rs_engine *e = arg;

	for (;;) {
		pthread_mutex_lock(&e->in_mu);
		while (!e->stop && !e->nin && !rs_sched_busy(&e->sched))
			pthread_cond_wait(&e->in_cv, &e->in_mu);
		if (e->stop) {
			pthread_mutex_unlock(&e->in_mu);
			break;
		}
		pthread_mutex_unlock(&e->in_mu);
		if (rs_engine_poll(e) && e->cfg.step_delay_ms > 0 &&
		    rs_sched_busy(&e->sched))
			delay(e->cfg.step_delay_ms);
	}
	return NULL;
}

/* ---- setup -------------------------------------------------------------- */

int rs_engine_init(struct rs_engine *e, const struct rs_engine_cfg *cfg,
		   char *err, size_t errlen)
{
	memset(e, 0, sizeof(*e));
	e->cfg = *cfg;
	e->efd = -1;
	pthread_mutex_init(&e->in_mu, NULL);
	pthread_cond_init(&e->in_cv, NULL);
	pthread_mutex_init(&e->out_mu, NULL);
	e->model = rs_model_new(&cfg->model, err, errlen);
	if (!e->model)
		return -EINVAL;
	if (rs_sched_init(&e->sched, cfg->max_batch, cfg->prefill_chunk) ||
	    rs_plan_init(&e->plan, cfg->max_batch)) {
		snprintf(err, errlen, "engine: bad --max-batch %d or "
			 "--prefill-chunk %d (need >= 1 and >= 0), or out of "
			 "memory", cfg->max_batch, cfg->prefill_chunk);
		return -EINVAL;
	}
	if (cfg->prefix_blocks > 0 && (cfg->cuda || cfg->sim)) {
		snprintf(err, errlen, "--prefix-cache works with --device cpu "
			 "only");
		return -EINVAL;
	}
	if (cfg->prefix_blocks > 0 &&
	    !(e->prefix = rs_prefix_new(e->model, cfg->prefix_blocks))) {
		snprintf(err, errlen, "--prefix-cache: no memory for %d "
			 "blocks", cfg->prefix_blocks);
		return -ENOMEM;
	}
	e->entries = calloc(cfg->max_batch, sizeof(*e->entries));
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!e->entries || e->efd < 0) {
		snprintf(err, errlen, "engine: eventfd or memory: %s",
			 strerror(errno));
		return -ENOMEM;
	}
	if (cfg->sim) {
		struct rs_sim_cfg sc = cfg->simcfg;

		sc.max_batch = cfg->max_batch;
		e->sim_work = calloc(cfg->max_batch, sizeof(*e->sim_work));
		if (!e->sim_work) {
			snprintf(err, errlen, "engine: out of memory");
			return -ENOMEM;
		}
		e->sim = rs_sim_new(&sc, cfg->truth, err, errlen);
		if (!e->sim)
			return -ENODEV;
	}
#ifdef REFSERVER_CUDA
	if (cfg->cuda && rs_cuda_init(e->model, err, errlen))
		return -ENODEV;
#else
	if (cfg->cuda) {
		snprintf(err, errlen, "--device cuda: this refserver was built "
			 "without CUDA; rebuild with 'make CUDA=1' or use "
			 "--device cpu");
		return -ENODEV;
	}
#endif
	return 0;
}

int rs_engine_start(struct rs_engine *e)
{
	int rc = pthread_create(&e->thread, NULL, engine_main, e);

	e->started = rc == 0;
	return -rc;
}

/* Whatever is still alive at exit is logged as cancelled. */
static void drain_live(struct rs_engine *e)
{
	while (e->live) {
		struct rs_req *r = e->live;

		if (!r->net_done) {
			r->status = "cancelled";
			r->end_ns = rs_now_ns();
		}
		r->engine_done = r->net_done = true;
		maybe_finish(e, r);
	}
}

void rs_engine_fini(struct rs_engine *e)
{
	if (e->started) {
		pthread_mutex_lock(&e->in_mu);
		e->stop = true;
		pthread_cond_signal(&e->in_cv);
		pthread_mutex_unlock(&e->in_mu);
		pthread_join(e->thread, NULL);
		e->started = false;
	}
	handle_messages(e);
	drain_live(e);
	free(e->out);
	free(e->entries);
	rs_plan_fini(&e->plan);
	rs_sched_fini(&e->sched);
#ifdef REFSERVER_CUDA
	if (e->cfg.cuda)
		rs_cuda_fini();
#endif
	rs_prefix_free(e->prefix);
	rs_sim_free(e->sim);
	free(e->sim_work);
	rs_model_free(e->model);
	rs_buf_free(&e->line);
	if (e->efd >= 0)
		close(e->efd);
	pthread_mutex_destroy(&e->in_mu);
	pthread_cond_destroy(&e->in_cv);
	pthread_mutex_destroy(&e->out_mu);
	memset(e, 0, sizeof(*e));
	e->efd = -1;
}
