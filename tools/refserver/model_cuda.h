/*
 * model_cuda.h - the CUDA backend of the reference model (make CUDA=1).
 *
 * In:  the host model (its weights are uploaded once); per step, the
 *      entries of the plan in order: input tokens, positions, whether a
 *      token is sampled and with what temperature and uniform draw.
 * Out: sampled token ids (one device-to-host copy per step), the step's
 *      device time and each entry's device time from CUDA events.
 * Assumes: one thread (the engine) calls everything, on one stream.
 */
#ifndef RS_MODEL_CUDA_H
#define RS_MODEL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

int rs_cuda_init(const struct rs_model *m, char *err, size_t errlen);
void rs_cuda_fini(void);
void *rs_cuda_kv_new(int cap);
void rs_cuda_kv_free(void *kv);
/* Starts a step of nentries entries. */
int rs_cuda_step_begin(int nentries);
/*
 * Queues one entry: tokens[0..n) at positions pos..pos+n-1; slot >= 0
 * samples a token into that slot with temperature (<= 0: argmax) and the
 * uniform draw u in [0, 1).
 */
int rs_cuda_entry(void *kv, const unsigned char *tokens, int n, int pos,
		  int slot, float temperature, float u);
/* Waits for the step; ids[0..nslots), the step's and each entry's ns. */
int rs_cuda_step_end(int *ids, int nslots, uint64_t *gpu_ns,
		     uint64_t *entry_ns);

#ifdef __cplusplus
}
#endif
#endif
