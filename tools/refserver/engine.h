/*
 * engine.h - the engine thread: continuous batching over the model, and
 * the two queues that connect it to the network thread.
 *
 * In:  messages from the network thread (a new request; a response fully
 *      written; a client gone; a rejected request to log).
 * Out: token events for the network thread (through an eventfd and a
 *      locked queue); the ground-truth log (steps and requests).
 * Assumes: the network thread never touches a request's engine fields;
 *      a request is freed only when both sides are done with it: the
 *      engine has finished (or dropped) it, and the network thread has
 *      sent exactly one terminal message (DONE or CANCEL) for it.
 */
#ifndef RS_ENGINE_H
#define RS_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "api.h"
#include "http.h"
#include "model.h"
#include "prefix.h"
#include "sched.h"
#include "sim.h"
#include "truth.h"

#define RS_ID_MAX 64

struct rs_req {
	struct rs_sched_item item;	/* engine only */
	char id[RS_ID_MAX];
	char tenant[RS_TENANT_MAX];
	char model[RS_NAME_MAX];
	unsigned char *prompt;
	int prompt_len;
	int max_tokens;
	float temperature;
	uint64_t rng;
	/* engine only */
	struct rs_kv *kv;
	void *cuda_kv;
	int last_token;
	uint64_t compute_ns;
	int cached_tokens;	/* prompt tokens taken from the prefix cache */
	bool engine_done, net_done;
	const char *status;
	uint64_t arrival_ns, first_token_ns, end_ns;
	struct rs_req *live_next, *live_prev;
	/* routing of token events to the connection */
	int fd;
	uint32_t gen;
	uint64_t seq;
};

enum rs_msg_type {
	RS_MSG_SUBMIT = 0,	/* schedule req */
	RS_MSG_DONE,		/* response fully written */
	RS_MSG_CANCEL,		/* client gone or write failed */
	RS_MSG_LOG,		/* rejected before scheduling: log, free */
};

struct rs_msg {
	enum rs_msg_type type;
	struct rs_req *req;
	uint64_t first_token_ns, end_ns;
};

struct rs_tok_ev {
	int fd;
	uint32_t gen;
	uint64_t seq;
	int token;
	int index;		/* 1-based: completion tokens so far */
	bool last;
	int cached_tokens;	/* of the request's prompt */
};

struct rs_engine_cfg {
	struct rs_model_cfg model;
	int max_batch;
	int prefill_chunk;
	int step_delay_ms;
	int prefix_blocks;	/* prefix cache pool in blocks; 0: off */
	bool cuda;
	bool sim;		/* --device sim: simulated CUDA devices */
	struct rs_sim_cfg simcfg;
	FILE *truth;		/* may be NULL */
};

struct rs_engine {
	struct rs_engine_cfg cfg;
	struct rs_model *model;
	struct rs_sched sched;
	struct rs_plan plan;
	struct rs_truth_entry *entries;	/* [max_batch] */
	uint64_t step_no;
	struct rs_req *live;	/* every request not yet freed */
	struct rs_buf line;
	float logits[RS_VOCAB];
	struct rs_prefix *prefix;	/* NULL: no prefix cache */
	struct rs_sim *sim;		/* NULL unless --device sim */
	struct rs_sim_work *sim_work;	/* [max_batch] */
	struct rs_sim_step sim_step;	/* the last step's devices */

	pthread_mutex_t in_mu;
	pthread_cond_t in_cv;
	struct rs_msg *in;
	size_t nin, in_cap;
	bool stop;

	pthread_mutex_t out_mu;
	struct rs_tok_ev *out;
	size_t nout, out_cap;
	int efd;		/* eventfd: token events are waiting */

	pthread_t thread;
	bool started;
};

uint64_t rs_now_ns(void);

int rs_engine_init(struct rs_engine *e, const struct rs_engine_cfg *cfg,
		   char *err, size_t errlen);
/* Stops the thread (if started), logs what is left as cancelled, frees. */
void rs_engine_fini(struct rs_engine *e);
int rs_engine_start(struct rs_engine *e);

/* Network side: queue a message for the engine. */
int rs_engine_post(struct rs_engine *e, const struct rs_msg *m);
/* Network side: take every waiting token event; the caller frees *ev. */
size_t rs_engine_take_events(struct rs_engine *e, struct rs_tok_ev **ev);

/*
 * Engine side, for the thread and for tests: handle queued messages, then
 * run one step if anything is scheduled. Returns true if a step ran.
 */
bool rs_engine_poll(struct rs_engine *e);
/* One step's work (called by rs_engine_poll; the step probe's symbol). */
uint64_t rs_engine_step(struct rs_engine *e);
bool rs_engine_busy(struct rs_engine *e);

/* A new request, owned by the caller until posted. */
struct rs_req *rs_req_new(const struct rs_api_req *a, const char *id,
			  const char *tenant, const char *model);
void rs_req_free(struct rs_req *r);

#endif
