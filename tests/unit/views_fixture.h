/*
 * views_fixture.h - a traced interval made by hand for the export, html
 * and metrics tests: the synthetic engine of steps_synth.h run over three
 * requests on a GPU, its output in a struct collect (with a kernel name
 * that needs escaping), and the report built from it.
 *
 * In:  nothing; vf_tenant renames a request's tenant before the report.
 * Out: struct vf with the collect and the built report; vf_free.
 * Assumes: steps_synth.h's engine (device 1 a GPU, stream 7, pid 42).
 */
#ifndef TT_VIEWS_FIXTURE_H
#define TT_VIEWS_FIXTURE_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/collect.h"
#include "../../user/report.h"
#include "steps_synth.h"

#define VF_NAME_ID	5
#define VF_KERNEL	"gemm<\"fp16\", 128>\\kernel"
#define VF_TAIL_NS	200000000ull
#define VF_PRICE	4.0

struct vf {
	struct sy_engine *g;
	struct collect c;
	struct collect_name name;
	struct report rep;
	struct report_price price;
};

/* Run the engine; the collect points into it. */
static inline void vf_engine(struct vf *v)
{
	struct sy_req r[SY_MAXR];
	struct sy_cfg cfg = sy_default();

	memset(v, 0, sizeof(*v));
	v->g = calloc(1, sizeof(*v->g));
	cr_assert_not_null(v->g);
	sy_run(v->g, &cfg, r, sy_three(r));
	for (size_t i = 0; i < v->g->nivs; i++)
		if (v->g->ivs[i].kind == TT_IV_KERNEL)
			v->g->ivs[i].name_id = VF_NAME_ID;
	v->name = (struct collect_name){ .pid = 42, .name_id = VF_NAME_ID,
					 .name = (char *)VF_KERNEL };
	v->c.start_ns = v->g->start_ns;
	v->c.end_ns = v->g->end_ns + VF_TAIL_NS;
	snprintf(v->c.compute, sizeof(v->c.compute), "cupti");
	snprintf(v->c.host.hostname, sizeof(v->c.host.hostname), "testhost");
	v->c.reqs = v->g->reqs;
	v->c.nreqs = v->g->nreqs;
	v->c.devs = v->g->devs;
	v->c.ndevs = 2;
	v->c.ivs = v->g->ivs;
	v->c.nivs = v->g->nivs;
	v->c.names = &v->name;
	v->c.nnames = 1;
	v->price = (struct report_price){ "NVIDIA H100", VF_PRICE };
}

static inline void vf_report(struct vf *v)
{
	struct report_input in = {
		.start_ns = v->c.start_ns, .end_ns = v->c.end_ns,
		.reqs = v->c.reqs, .nreqs = v->c.nreqs,
		.devs = v->c.devs, .ndevs = v->c.ndevs,
		.ivs = v->c.ivs, .nivs = v->c.nivs,
		.prices = &v->price, .nprices = 1,
		.default_usd_per_hour = 0.1, .compute = "cupti",
	};

	cr_assert_eq(report_build(&in, &v->rep), 0);
}

static inline void vf_init(struct vf *v)
{
	vf_engine(v);
	vf_report(v);
}

static inline void vf_free(struct vf *v)
{
	report_free(&v->rep);
	sy_free(v->g);
	free(v->g);
}

/* Everything f received, as a string (caller frees). */
static inline char *vf_capture(int (*fn)(struct vf *, FILE *), struct vf *v)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	cr_assert_not_null(m);
	cr_assert_eq(fn(v, m), 0);
	cr_assert_eq(fclose(m), 0);
	return buf;
}

#endif
