/*
 * html.c - the report as one self-contained HTML page with SVG charts.
 *
 * In:  a struct report (devices with busy/idle and steps, requests with
 *      their token times and costs, tenants, models, the cost model,
 *      findings, losses) and optionally the struct collect behind it.
 * Out: one HTML document on a FILE. The styles are inline, the charts are
 *      inline SVG drawn here from the numbers, and the one small script
 *      only writes each chart's rendered size into a data attribute (so a
 *      headless browser can show that layout happened); the page reads
 *      the same without it. Nothing is fetched from anywhere.
 * Assumes: strings from the trace are untrusted: all go through
 *      html_escape.
 *
 * A chart is a plot area of fixed size with a y axis (0, half, max), bars,
 * and a caption under it with the numbers that matter, so a reader who
 * cannot see the bars still gets the figures.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "export.h"
#include "html.h"
#include "quantile.h"
#include "steps.h"

#define W	720.0
#define H	220.0
#define ML	56.0		/* left margin: y labels */
#define MB	28.0		/* bottom margin: x labels */
#define MT	12.0
#define MR	12.0
#define PW	(W - ML - MR)	/* plot width */
#define PH	(H - MT - MB)	/* plot height */

void html_escape(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&#39;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* ---- chart frame --------------------------------------------------------- */

static void svg_open(FILE *f, const char *id, const char *title)
{
	fputs("<figure>\n<div class=\"ct\">", f);
	html_escape(f, title);
	fprintf(f, "</div>\n<svg id=\"%s\" class=\"chart\" "
		"xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %g %g\" "
		"width=\"%g\" height=\"%g\" role=\"img\" "
		"aria-labelledby=\"%s-title\">\n<title id=\"%s-title\">", id,
		W, H, W, H, id, id);
	html_escape(f, title);
	fputs("</title>\n", f);
}

/* Axes, with the y axis labelled 0, max/2 and max in unit. */
static void svg_axes(FILE *f, double ymax, const char *unit,
		     const char *xleft, const char *xright)
{
	for (int i = 0; ymax > 0 && i <= 2; i++) {
		double y = MT + PH - PH * i / 2.0;

		fprintf(f, "<line class=\"grid\" x1=\"%g\" y1=\"%.1f\" "
			"x2=\"%g\" y2=\"%.1f\"/>\n", ML, y, ML + PW, y);
		double v = ymax * i / 2.0;

		/* no exponents: 4120, not 4.12e+03 */
		fprintf(f, v >= 1000 ? "<text class=\"yl\" x=\"%g\" "
			"y=\"%.1f\">%.0f%s</text>\n" : "<text class=\"yl\" "
			"x=\"%g\" y=\"%.1f\">%.3g%s</text>\n", ML - 4, y + 4, v,
			unit);
	}
	fprintf(f, "<text class=\"xl\" x=\"%g\" y=\"%g\">", ML, H - 8);
	html_escape(f, xleft);
	fprintf(f, "</text>\n<text class=\"xl end\" x=\"%g\" y=\"%g\">",
		ML + PW, H - 8);
	html_escape(f, xright);
	fputs("</text>\n", f);
}

/* legend: "class:label,class:label" swatches, or NULL. */
static void svg_close(FILE *f, const char *caption, const char *legend)
{
	fputs("</svg>\n", f);
	if (legend)
		fprintf(f, "<div class=\"legend\">%s</div>\n", legend);
	fputs("<figcaption>", f);
	html_escape(f, caption);
	fputs("</figcaption>\n</figure>\n", f);
}

/* A swatch of a chart class's colour and its label. */
#define LEGEND(cls, label) \
	"<svg class=\"sw\" viewBox=\"0 0 10 10\"><rect class=\"" cls \
	"\" width=\"10\" height=\"10\"/></svg>" label " "

static void bar(FILE *f, const char *cls, double x, double y, double w,
		double h, const char *tip)
{
	fprintf(f, "<rect class=\"%s\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
		"height=\"%.2f\"><title>", cls, x, y, w > 0 ? w : 0,
		h > 0 ? h : 0);
	html_escape(f, tip);
	fputs("</title></rect>\n", f);
}

/* Vertical bars of v[0..n) scaled to ymax. */
static void bars(FILE *f, const double *v, size_t n, double ymax,
		 const char *cls, const char *const *tips)
{
	double bw = PW / (double)n;

	for (size_t i = 0; i < n; i++) {
		double h = ymax > 0 ? PH * v[i] / ymax : 0;

		bar(f, cls, ML + bw * i + 0.5, MT + PH - h, bw - 1, h,
		    tips ? tips[i] : "");
	}
}

static double max_of(const double *v, size_t n)
{
	double m = 0;

	for (size_t i = 0; i < n; i++)
		m = v[i] > m ? v[i] : m;
	return m;
}

/* ---- what the charts draw, whole or range by range ---------------------- */

void html_series_init(struct html_series *s, uint64_t start_ns,
		      uint64_t end_ns)
{
	memset(s, 0, sizeof(*s));
	s->start_ns = start_ns;
	s->window_ns = end_ns > start_ns ? end_ns - start_ns : 0;
}

static struct html_dev_series *series_dev(struct html_series *s, uint32_t id)
{
	struct html_dev_series *v;

	for (size_t i = 0; i < s->ndevs; i++)
		if (s->devs[i].id == id)
			return &s->devs[i];
	v = realloc(s->devs, (s->ndevs + 1) * sizeof(*v));
	if (!v)
		return NULL;
	s->devs = v;
	v = &s->devs[s->ndevs++];
	memset(v, 0, sizeof(*v));
	v->id = id;
	return v;
}

/* Bucket k's edges, [*a, *b), as offsets into the window. */
static void bucket_edges(const struct html_series *s, size_t k, uint64_t *a,
			 uint64_t *b)
{
	*a = (uint64_t)((unsigned __int128)s->window_ns * k / HTML_BUCKETS);
	*b = (uint64_t)((unsigned __int128)s->window_ns * (k + 1) /
			HTML_BUCKETS);
}

/* Busy spans of one range into the buckets they cross. */
static void add_spans(const struct html_series *s, struct html_dev_series *v,
		      const struct steps_span *sp, size_t n)
{
	for (size_t k = 0; k < HTML_BUCKETS; k++) {
		uint64_t a, b;

		bucket_edges(s, k, &a, &b);
		if (b > a)
			v->busy_ns[k] += (double)steps_busy_in(sp, n,
					s->start_ns + a, s->start_ns + b);
	}
}

/* The steps of one range into the batch buckets. */
static void add_steps(const struct html_series *s, struct html_dev_series *v,
		      const struct steps_result *st)
{
	for (uint32_t i = 0; i < st->nsteps && s->window_ns; i++) {
		const struct steps_step *x = &st->steps[i];
		uint64_t off = x->start_ns > s->start_ns ? x->start_ns -
			       s->start_ns : 0;
		size_t k = (size_t)((double)off / s->window_ns * HTML_BUCKETS);

		k = k < HTML_BUCKETS ? k : HTML_BUCKETS - 1;
		v->batch_sum[k] += x->n;
		v->batch_n[k]++;
		v->batch_max = x->n > v->batch_max ? x->n : v->batch_max;
		v->nsteps++;
		v->entries += x->n;
	}
}

int html_series_part(struct html_series *s, const struct report *r,
		     const struct collect *c)
{
	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];
		struct html_dev_series *v = series_dev(s, d->dev.id);
		struct steps_span *sp = NULL;
		size_t n = 0;
		uint64_t busy;

		if (!v)
			return -ENOMEM;
		if (d->attributed && d->steps.busy) {
			add_spans(s, v, d->steps.busy, d->steps.nbusy);
		} else if (c) {
			if (steps_union(c->ivs, c->nivs, d->dev.id, r->start_ns,
					r->end_ns, &sp, &n, &busy))
				return -ENOMEM;
			add_spans(s, v, sp, n);
			free(sp);
		}
		if (d->attributed)
			add_steps(s, v, &d->steps);
	}
	return 0;
}

static int latency_add(struct html_latency *l, uint64_t ns)
{
	l->max_ns = ns > l->max_ns ? ns : l->max_ns;
	l->sum_ns += ns;
	return quantile_add(&l->q, ns);
}

int html_series_request(struct html_series *s, const struct tt_request *q)
{
	if (q->ttft_ms >= 0 &&
	    latency_add(&s->ttft, (uint64_t)llround(q->ttft_ms * 1e6)))
		return -ENOMEM;
	for (uint32_t k = 1; q->token_ns && k < q->token_ns_len; k++)
		if (q->token_ns[k] >= q->token_ns[k - 1] &&
		    latency_add(&s->itl, q->token_ns[k] - q->token_ns[k - 1]))
			return -ENOMEM;
	return 0;
}

void html_series_free(struct html_series *s)
{
	free(s->devs);
	quantile_free(&s->ttft.q);
	quantile_free(&s->itl.q);
	memset(s, 0, sizeof(*s));
}

/* ---- device busy/idle over time ------------------------------------------ */

static void chart_busy(const struct report *r, size_t i,
		       const struct html_series *s, FILE *f)
{
	const struct report_device *d = &r->devs[i];
	const struct html_dev_series *v = NULL;
	double frac[HTML_BUCKETS], bw = PW / HTML_BUCKETS;
	char id[32], title[160], tip[96], cap[256];

	for (size_t j = 0; j < s->ndevs; j++)
		if (s->devs[j].id == d->dev.id)
			v = &s->devs[j];
	for (size_t k = 0; k < HTML_BUCKETS; k++) {
		uint64_t a, b;

		bucket_edges(s, k, &a, &b);
		frac[k] = v && b > a ? v->busy_ns[k] / (double)(b - a) : 0;
	}
	snprintf(id, sizeof(id), "chart-busy-%zu", i);
	snprintf(title, sizeof(title), "Device busy/idle over time: %s",
		 d->dev.name);
	svg_open(f, id, title);
	svg_axes(f, 100, "%", "0 s", "");
	for (size_t k = 0; k < HTML_BUCKETS; k++) {
		double hb = PH * frac[k];

		snprintf(tip, sizeof(tip), "bucket %zu: busy %.1f%%", k,
			 100 * frac[k]);
		bar(f, "idle", ML + bw * k + 0.5, MT, bw - 1, PH - hb, tip);
		bar(f, "busy", ML + bw * k + 0.5, MT + PH - hb, bw - 1, hb,
		    tip);
	}
	fprintf(f, "<text class=\"xl end\" x=\"%g\" y=\"%g\">%.3f s</text>\n",
		ML + PW, H - 8, r->window_ns / 1e9);
	snprintf(cap, sizeof(cap), "%s: busy %.3f s, idle %.3f s of %.3f s "
		 "(%.1f%% busy), %d buckets of %.3f s.", d->dev.name,
		 d->busy_ns / 1e9, d->idle_ns / 1e9, r->window_ns / 1e9,
		 r->window_ns ? 100.0 * d->busy_ns / r->window_ns : 0.0,
		 HTML_BUCKETS, r->window_ns / 1e9 / HTML_BUCKETS);
	svg_close(f, cap, LEGEND("busy", "busy") LEGEND("idle", "idle"));
}

/* ---- batch size over time ------------------------------------------------ */

/* The device whose steps are drawn: the one the cost model is of, else
 * the first with steps. */
static const struct html_dev_series *steps_dev(const struct report *r,
					       const struct html_series *s,
					       const char **name)
{
	const struct html_dev_series *pick = NULL;

	for (size_t j = 0; j < s->ndevs; j++) {
		const struct html_dev_series *v = &s->devs[j];

		if (!v->nsteps)
			continue;
		if (r->model_dev != SIZE_MAX &&
		    r->devs[r->model_dev].dev.id == v->id) {
			pick = v;
			break;
		}
		pick = pick ? pick : v;
	}
	for (size_t i = 0; pick && i < r->ndevs; i++)
		if (r->devs[i].dev.id == pick->id)
			*name = r->devs[i].dev.name;
	return pick;
}

static void chart_batch(const struct report *r, const struct html_series *s,
			FILE *f)
{
	const char *name = "";
	const struct html_dev_series *v = steps_dev(r, s, &name);
	double mean[HTML_BUCKETS], maxb = v ? v->batch_max : 0;
	char cap[256];

	for (size_t k = 0; k < HTML_BUCKETS; k++)
		mean[k] = v && v->batch_n[k] ? v->batch_sum[k] / v->batch_n[k]
					     : 0;
	svg_open(f, "chart-batch", "Batch size over time (mean per bucket)");
	svg_axes(f, maxb > 0 ? maxb : 1, "", "0 s", "");
	bars(f, mean, HTML_BUCKETS, maxb > 0 ? maxb : 1, "batch", NULL);
	fprintf(f, "<text class=\"xl end\" x=\"%g\" y=\"%g\">%.3f s</text>\n",
		ML + PW, H - 8, r->window_ns / 1e9);
	if (v)
		snprintf(cap, sizeof(cap), "%" PRIu64 " steps on %s: mean "
			 "batch %.2f, largest %.0f.", v->nsteps, name,
			 (double)v->entries / v->nsteps, maxb);
	else
		snprintf(cap, sizeof(cap), "No steps: no device was "
			 "attributed.");
	svg_close(f, cap, NULL);
}

/* ---- cost per tenant ----------------------------------------------------- */

#define HTML_TENANTS 12

static int by_loaded(const void *a, const void *b)
{
	const struct report_group *x = *(const struct report_group *const *)a;
	const struct report_group *y = *(const struct report_group *const *)b;

	return x->cost_loaded_usd < y->cost_loaded_usd ? 1 :
	       x->cost_loaded_usd > y->cost_loaded_usd ? -1 : 0;
}

static void tenant_row(FILE *f, const struct report_group *g, size_t i,
		       double rh, double xmax)
{
	double y = MT + rh * i, wb = PW * g->cost_usd / xmax;
	double wl = PW * g->cost_loaded_usd / xmax;
	char tip[160];

	fprintf(f, "<text class=\"yl\" x=\"%g\" y=\"%.1f\">", ML - 4,
		y + rh * 0.6);
	html_escape(f, g->name);
	fputs("</text>\n", f);
	snprintf(tip, sizeof(tip), "%s: loaded $%.6f", g->name,
		 g->cost_loaded_usd);
	bar(f, "loaded", ML, y + 2, wl, rh / 2 - 2, tip);
	snprintf(tip, sizeof(tip), "%s: busy $%.6f", g->name, g->cost_usd);
	bar(f, "busy", ML, y + rh / 2, wb, rh / 2 - 2, tip);
}

static int chart_tenants(const struct report *r, FILE *f)
{
	size_t n = r->ntenants < HTML_TENANTS ? r->ntenants : HTML_TENANTS;
	const struct report_group **g = calloc(r->ntenants + 1, sizeof(*g));
	double xmax = 0, tb = 0, tl = 0;
	char cap[200], right[32];

	if (!g)
		return -ENOMEM;
	for (size_t i = 0; i < r->ntenants; i++) {
		g[i] = &r->tenants[i];
		tb += g[i]->cost_usd;
		tl += g[i]->cost_loaded_usd;
	}
	qsort(g, r->ntenants, sizeof(*g), by_loaded);
	xmax = n ? fmax(g[0]->cost_loaded_usd, g[0]->cost_usd) : 0;
	xmax = xmax > 0 ? xmax : 1e-9;
	svg_open(f, "chart-tenant-cost", "Cost per tenant: busy and loaded");
	snprintf(right, sizeof(right), "$%.3g", xmax);
	svg_axes(f, 0, "", "$0", right);
	for (size_t i = 0; i < n; i++)
		tenant_row(f, g[i], i, PH / (n ? n : 1), xmax);
	snprintf(cap, sizeof(cap), "%zu tenants (largest %zu shown): busy "
		 "$%.6f, loaded $%.6f (busy plus a share of idle time).",
		 r->ntenants, n, tb, tl);
	svg_close(f, cap, LEGEND("busy", "busy cost")
		  LEGEND("loaded", "loaded cost"));
	free(g);
	return 0;
}

/* ---- histograms ---------------------------------------------------------- */

static void histogram(FILE *f, const char *id, const char *title,
		      const struct html_latency *l, const char *what)
{
	double cnt[HTML_BINS], hi = l->max_ns / 1e6;
	uint64_t n = l->q.n;
	char right[32], cap[200], tips[HTML_BINS][64];
	const char *tp[HTML_BINS];

	hi = hi > 0 ? hi : 1;
	quantile_bins(&l->q, hi * 1e6, cnt, HTML_BINS);
	for (size_t k = 0; k < HTML_BINS; k++) {
		snprintf(tips[k], sizeof(tips[k]), "%.3f-%.3f ms: %.0f",
			 hi * k / HTML_BINS, hi * (k + 1) / HTML_BINS, cnt[k]);
		tp[k] = tips[k];
	}
	svg_open(f, id, title);
	snprintf(right, sizeof(right), "%.3f ms", hi);
	svg_axes(f, fmax(max_of(cnt, HTML_BINS), 1), "", "0 ms", right);
	bars(f, cnt, HTML_BINS, fmax(max_of(cnt, HTML_BINS), 1), "hist", tp);
	snprintf(cap, sizeof(cap), "%" PRIu64 " %s: mean %.3f ms, max %.3f "
		 "ms.", n, what, n ? (double)(l->sum_ns / n) / 1e6 : 0,
		 n ? hi : 0);
	svg_close(f, cap, NULL);
}

static int chart_latency(const struct html_series *s, FILE *f)
{
	if (s->ttft.q.oom || s->itl.q.oom)
		return -ENOMEM;
	histogram(f, "chart-ttft", "Time to first token (TTFT) distribution",
		  &s->ttft, "requests with a first token");
	histogram(f, "chart-itl", "Inter-token latency (ITL) distribution",
		  &s->itl, "gaps between tokens");
	return 0;
}

/* ---- tables -------------------------------------------------------------- */

static void cell(FILE *f, const char *s)
{
	fputs("<td>", f);
	html_escape(f, s);
	fputs("</td>", f);
}

static void table_devices(const struct report *r, FILE *f)
{
	fputs("<h2>Devices</h2>\n<table id=\"devices\"><tr><th>name</th>"
	      "<th>kind</th><th>busy s</th><th>idle s</th><th>busy %</th>"
	      "<th>$/hour</th><th>steps</th></tr>\n", f);
	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];

		fputs("<tr>", f);
		cell(f, d->dev.name);
		fprintf(f, "<td>%s</td><td>%.3f</td><td>%.3f</td><td>%.1f</td>"
			"<td>%.2f</td><td>%u</td></tr>\n",
			d->dev.kind == TT_DEV_CPU ? "cpu" : "gpu",
			d->busy_ns / 1e9, d->idle_ns / 1e9,
			r->window_ns ? 100.0 * d->busy_ns / r->window_ns : 0,
			d->usd_per_hour, d->attributed ? d->steps.nsteps : 0);
	}
	fputs("</table>\n", f);
}

/* A per-token figure, or "-" where there were no such tokens. */
static void per_tok(FILE *f, double v)
{
	if (v < 0)
		fputs("<td>-</td>", f);
	else
		fprintf(f, "<td>%.4f</td>", v);
}

static void table_groups(FILE *f, const char *id, const char *title,
			 const struct report_group *g, size_t n)
{
	fprintf(f, "<h2>%s</h2>\n<table id=\"%s\"><tr><th>name</th>"
		"<th>requests</th><th>prompt tokens</th><th>completion tokens"
		"</th><th>GPU s</th><th>GPU ms/prompt token</th>"
		"<th>GPU ms/completion token</th><th>busy $</th><th>loaded $</th>"
		"<th>$/1M prompt</th><th>$/1M completion</th></tr>\n", title,
		id);
	for (size_t i = 0; i < n; i++) {
		fputs("<tr>", f);
		cell(f, g[i].name);
		fprintf(f, "<td>%" PRIu64 "</td><td>%" PRIu64 "</td><td>%"
			PRIu64 "</td><td>%.6f</td>", g[i].requests,
			g[i].prompt_tokens, g[i].completion_tokens,
			g[i].gpu_ns / 1e9);
		per_tok(f, g[i].ms_per_prompt_token);
		per_tok(f, g[i].ms_per_completion_token);
		fprintf(f, "<td>%.6f</td><td>%.6f</td>", g[i].cost_usd,
			g[i].cost_loaded_usd);
		per_tok(f, g[i].usd_per_1m_prompt);
		per_tok(f, g[i].usd_per_1m_completion);
		fputs("</tr>\n", f);
	}
	fputs("</table>\n", f);
}

static void table_model(const struct report *r, FILE *f)
{
	const struct report_device *d = r->model_dev == SIZE_MAX ? NULL
				      : &r->devs[r->model_dev];
	static const char *const label[CM_NTERMS] = {
		[CM_FIXED] = "fixed ms per step",
		[CM_PREFILL] = "ms per prefill token",
		[CM_DECODE] = "ms per decode token",
		[CM_CONTEXT] = "ms per context token",
		[CM_PREFILL_SQ] = "ms per prefill attention unit",
	};

	fputs("<h2>Step cost model</h2>\n", f);
	if (!d || !d->model.fitted) {
		fputs("<p id=\"cost-model\">Not fitted: too few steps, or no "
		      "device attributed; shares go by tokens processed.</p>\n",
		      f);
		return;
	}
	fputs("<table id=\"cost-model\"><tr><th>term</th><th>coefficient"
	      "</th></tr>\n", f);
	for (int t = 0; t < CM_NTERMS; t++)
		if (d->model.used[t])
			fprintf(f, "<tr><td>%s</td><td>%.6g</td></tr>\n",
				label[t], d->model.coef[t] / 1e6);
	fprintf(f, "<tr><td>R&#178;</td><td>%.4f</td></tr><tr><td>steps</td>"
		"<td>%u</td></tr>\n", d->model.r2, d->model.steps);
	if (d->model.drift_windows)
		fprintf(f, "<tr><td>step cost against its mean, per window of "
			"steps (host speed drift, taken out of the fit)</td>"
			"<td>%.3f to %.3f over %u windows</td></tr>\n",
			d->model.drift_min, d->model.drift_max,
			d->model.drift_windows);
	fputs("</table>\n<p>Fitted on ", f);
	html_escape(f, d->dev.name);
	fputs(".</p>\n", f);
}

static void evidence(FILE *f, const cJSON *ev)
{
	const cJSON *c;

	fputs("<dl class=\"evidence\">", f);
	cJSON_ArrayForEach(c, ev) {
		char *s = cJSON_IsString(c) || cJSON_IsNumber(c) ? NULL
			  : cJSON_PrintUnformatted(c);
		char num[32];

		snprintf(num, sizeof(num), "%.6g", c->valuedouble);
		fputs("<dt>", f);
		html_escape(f, c->string);
		fputs("</dt><dd>", f);
		html_escape(f, cJSON_IsString(c) ? c->valuestring
			       : cJSON_IsNumber(c) ? num : s);
		fputs("</dd>", f);
		free(s);
	}
	fputs("</dl>\n", f);
}

/* Each finding: severity and id, the summary, the evidence, the action. */
static void findings(const struct report *r, FILE *f)
{
	fputs("<h2>Findings</h2>\n<div id=\"findings\">\n", f);
	if (!r->findings.n)
		fputs("<p>None above their thresholds.</p>\n", f);
	for (size_t i = 0; i < r->findings.n; i++) {
		const struct finding *x = &r->findings.items[i];
		const char *sev = findings_severity_name(x->severity);

		fprintf(f, "<div class=\"finding sev-%s\"><p><span "
			"class=\"sev\">%s</span> <code>", sev, sev);
		html_escape(f, x->id);
		fputs("</code> ", f);
		html_escape(f, x->summary);
		fputs("</p>\n", f);
		evidence(f, x->evidence);
		fputs("<p class=\"action\">Action: ", f);
		html_escape(f, x->action);
		fputs("</p></div>\n", f);
	}
	fputs("</div>\n", f);
}

/* ---- the page ------------------------------------------------------------ */

static const char style[] =
	"body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;"
	"max-width:960px}\n"
	"h1{font-size:22px}h2{font-size:17px;margin-top:28px}\n"
	"table{border-collapse:collapse;margin:8px 0}\n"
	"td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\n"
	"td:first-child,th:first-child{text-align:left}\n"
	"figure{margin:12px 0}figcaption{color:#555;font-size:13px}\n"
	".chart text{font-size:11px;fill:#444}.yl{text-anchor:end}"
	".end{text-anchor:end}\n"
	".grid{stroke:#e4e4e4}.busy{fill:#2b7bb9}.idle{fill:#e8e8e8}"
	".loaded{fill:#f0a04b}.batch{fill:#4a9d5b}.hist{fill:#7a5fb0}\n"
	".finding{border-left:4px solid #888;padding:2px 12px;margin:10px 0;"
	"overflow-wrap:anywhere}"
	".sev-critical{border-color:#b00020}.sev-warning{border-color:#e08a00}"
	".sev-info{border-color:#2b7bb9}\n"
	".sev{font-weight:bold;text-transform:uppercase;font-size:12px}"
	".action{color:#333}\n"
	".legend{font-size:12px;color:#444}.sw{display:inline-block;"
	"width:10px;height:10px;margin:0 4px 0 10px}\n"
	"dl{margin:0}dt{font-weight:bold;display:inline}dd{display:inline;"
	"margin:0 8px 0 4px}\n.ct{font-weight:600;margin:4px 0}\n"
	".ln{fill:none;stroke-width:2}.ttft50{stroke:#2b7bb9}"
	".ttft99{stroke:#b00020}.itl99{stroke:#4a9d5b}.tput{stroke:#f0a04b}"
	"\n.slo{stroke:#b00020;stroke-dasharray:6 4}.sat{stroke:#888;"
	"stroke-dasharray:6 4}.today{stroke:#222;stroke-dasharray:2 3}"
	".pt{fill:#222}\nrect.ttft50{fill:#2b7bb9}rect.ttft99{fill:#b00020}"
	"rect.itl99{fill:#4a9d5b}\n";

/* Writes each chart's laid-out size into data-rendered. */
static const char script[] =
	"<script>document.querySelectorAll('svg.chart').forEach(function(s)"
	"{var b=s.getBoundingClientRect();s.setAttribute('data-rendered',"
	"Math.round(b.width)+'x'+Math.round(b.height));});</script>\n";

static void page_head(const struct report *r, const struct collect *c,
		      FILE *f)
{
	fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
		"<meta charset=\"utf-8\">\n<title>tokentrace report</title>\n"
		"<style>\n%s</style>\n</head>\n<body>\n<h1>tokentrace report"
		"</h1>\n<p id=\"summary\">Window %.3f s, %zu requests, %zu "
		"devices, compute source ", style, r->window_ns / 1e9,
		r->shards ? (size_t)r->streamed_requests : r->nreqs, r->ndevs);
	html_escape(f, r->compute);
	if (c && c->host.hostname[0]) {
		fputs(", host ", f);
		html_escape(f, c->host.hostname);
	}
	fprintf(f, ". Busy %.3f s attributed to requests, %.3f s "
		"unattributed.</p>\n", (r->busy_ns - r->unattributed_ns) / 1e9,
		r->unattributed_ns / 1e9);
}

static void page_losses(const struct report *r, FILE *f)
{
	const struct report_losses *l = &r->losses;

	fprintf(f, "<h2>Losses</h2>\n<p id=\"losses\">Events lost: CPU %"
		PRIu64 ", sockets %" PRIu64 " (%" PRIu64 " bytes), CUPTI %"
		PRIu64 ".</p>\n", l->cpu_events, l->sock_events, l->sock_bytes,
		l->cupti_records);
}

int html_write(const struct report *r, const struct html_series *s,
	       const struct collect *c, FILE *f)
{
	int err = 0;

	page_head(r, c, f);
	fputs("<h2>Device busy and idle over time</h2>\n", f);
	for (size_t i = 0; i < r->ndevs; i++)
		chart_busy(r, i, s, f);
	fputs("<h2>Batch size over time</h2>\n", f);
	chart_batch(r, s, f);
	fputs("<h2>Cost per tenant</h2>\n", f);
	err = chart_tenants(r, f);
	fputs("<h2>Latency</h2>\n", f);
	if (!err)
		err = chart_latency(s, f);
	findings(r, f);
	table_devices(r, f);
	table_groups(f, "tenants", "Tenants", r->tenants, r->ntenants);
	table_groups(f, "models", "Models", r->models, r->nmodels);
	table_model(r, f);
	page_losses(r, f);
	fprintf(f, "%s</body>\n</html>\n", script);
	if (err)
		return err;
	return ferror(f) ? -EIO : 0;
}

int html_write_report(const struct report *r, const struct collect *c,
		      FILE *f)
{
	struct html_series s;
	int err;

	html_series_init(&s, r->start_ns, r->end_ns);
	err = html_series_part(&s, r, c);
	for (size_t i = 0; !err && i < r->nreqs; i++)
		err = html_series_request(&s, &r->reqs[i].req);
	if (!err)
		err = html_write(r, &s, c, f);
	html_series_free(&s);
	return err;
}

/* ---- the plan ------------------------------------------------------------ */

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static double pct_of(const cJSON *o, const char *k, const char *p)
{
	return num(cJSON_GetObjectItemCaseSensitive(o, k), p);
}

static double px(double x, double xmax)
{
	return ML + (xmax > 0 ? PW * fmin(x, xmax) / xmax : 0);
}

static double py(double y, double ymax)
{
	return MT + PH - (ymax > 0 ? PH * fmin(fmax(y, 0), ymax) / ymax : 0);
}

/* A line through the curve's points of one figure (k, within p). */
static void plan_line(FILE *f, const cJSON *curve, const char *k,
		      const char *p, double xmax, double ymax, const char *cls)
{
	const cJSON *pt;

	fprintf(f, "<polyline class=\"ln %s\" points=\"", cls);
	cJSON_ArrayForEach(pt, curve) {
		double y = p ? pct_of(pt, k, p) : num(pt, k);

		if (isfinite(y))
			fprintf(f, "%.1f,%.1f ", px(num(pt,
				"offered_requests_per_s"), xmax), py(y, ymax));
	}
	fputs("\"/>\n", f);
}

/* The load of today's trace and of the prediction, as vertical lines. */
static void plan_marks(FILE *f, const cJSON *plan, double xmax, double ymax,
		       double pred_y)
{
	double today = num(cJSON_GetObjectItem(plan, "assumptions"),
			   "trace_requests_per_s");
	const cJSON *pred = cJSON_GetObjectItem(plan, "predicted");
	double at = num(pred, "requests_per_s") / fmax(num(plan, "replicas"),
						       1);

	if (isfinite(today) && today > 0)
		fprintf(f, "<line class=\"today\" x1=\"%.1f\" y1=\"%g\" "
			"x2=\"%.1f\" y2=\"%g\"><title>today's trace: %.2f "
			"requests/s</title></line>\n", px(today, xmax), MT,
			px(today, xmax), MT + PH, today);
	if (isfinite(at) && isfinite(pred_y))
		fprintf(f, "<circle class=\"pt\" cx=\"%.1f\" cy=\"%.1f\" "
			"r=\"4\"><title>the prediction: %.2f requests/s a "
			"replica</title></circle>\n", px(at, xmax),
			py(pred_y, ymax), at);
}

static void plan_latency(FILE *f, const cJSON *plan, double xmax)
{
	static const char *const lim[] = { "ttft_p50", "ttft_p90", "ttft_p99",
					   "itl_p50", "itl_p90", "itl_p99" };
	const cJSON *curve = cJSON_GetObjectItem(plan, "curve");
	const cJSON *slo = cJSON_GetObjectItem(plan, "slo"), *pt;
	const cJSON *pred = cJSON_GetObjectItem(plan, "predicted");
	double ymax = 0;
	char xr[64], cap[256];

	/* the scale: the points up to 85% of the curve's last load (nearer
	 * saturation the queue's tail grows without bound) and half as much
	 * again as the limits; what is above is clipped at the top */
	cJSON_ArrayForEach(pt, curve)
		if (num(pt, "offered_requests_per_s") <= 0.85 * xmax)
			ymax = fmax(ymax, 1.2 * fmax(pct_of(pt, "ttft_ms",
							    "p99"),
						     pct_of(pt, "itl_ms",
							    "p99")));
	for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++)
		ymax = fmax(ymax, 1.5 * num(cJSON_GetObjectItem(slo, lim[i]),
					    "limit_ms"));
	if (!(ymax > 0))
		ymax = 1;
	snprintf(xr, sizeof(xr), "%.1f requests/s a replica", xmax);
	svg_open(f, "chart-plan-latency", "Latency against load (open loop, "
		 "a replica)");
	svg_axes(f, ymax, " ms", "0", xr);
	for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
		double l = num(cJSON_GetObjectItem(slo, lim[i]), "limit_ms");

		if (isfinite(l))
			fprintf(f, "<line class=\"slo\" x1=\"%g\" y1=\"%.1f\" "
				"x2=\"%g\" y2=\"%.1f\"><title>limit %s = %g ms"
				"</title></line>\n", ML, py(l, ymax), ML + PW,
				py(l, ymax), lim[i], l);
	}
	plan_line(f, curve, "ttft_ms", "p50", xmax, ymax, "ttft50");
	plan_line(f, curve, "ttft_ms", "p99", xmax, ymax, "ttft99");
	plan_line(f, curve, "itl_ms", "p99", xmax, ymax, "itl99");
	plan_marks(f, plan, xmax, ymax, pct_of(pred, "ttft_ms", "p99"));
	snprintf(cap, sizeof(cap), "Predicted at the load asked: TTFT p50 "
		 "%.1f ms, p99 %.1f ms; ITL p99 %.1f ms. Dashed red: the "
		 "limits; dotted: today's trace's load; the dot: the "
		 "prediction.", pct_of(pred, "ttft_ms", "p50"),
		 pct_of(pred, "ttft_ms", "p99"), pct_of(pred, "itl_ms", "p99"));
	svg_close(f, cap, LEGEND("ttft50", "TTFT p50")
		  LEGEND("ttft99", "TTFT p99") LEGEND("itl99", "ITL p99"));
}

static void plan_throughput(FILE *f, const cJSON *plan, double xmax)
{
	const cJSON *curve = cJSON_GetObjectItem(plan, "curve");
	double sat = num(plan, "saturation_tok_s_per_replica");
	double ymax = isfinite(sat) ? 1.1 * sat : 1;
	const cJSON *pt;
	char xr[64], cap[160];

	cJSON_ArrayForEach(pt, curve)
		ymax = fmax(ymax, 1.1 * num(pt, "throughput_tok_s"));
	snprintf(xr, sizeof(xr), "%.1f requests/s a replica", xmax);
	svg_open(f, "chart-plan-throughput", "Throughput against load (a "
		 "replica)");
	svg_axes(f, ymax, "", "0", xr);
	if (isfinite(sat))
		fprintf(f, "<line class=\"sat\" x1=\"%g\" y1=\"%.1f\" "
			"x2=\"%g\" y2=\"%.1f\"><title>saturation: %.0f "
			"tokens/s</title></line>\n", ML, py(sat, ymax),
			ML + PW, py(sat, ymax), sat);
	plan_line(f, curve, "throughput_tok_s", NULL, xmax, ymax, "tput");
	plan_marks(f, plan, xmax, ymax, NAN);
	snprintf(cap, sizeof(cap), "Completion tokens/s; a replica "
		 "saturates at %.0f (dashed).", sat);
	svg_close(f, cap, NULL);
}

static void plan_table(FILE *f, const cJSON *plan)
{
	const cJSON *pt;

	fputs("<h2>The curve</h2>\n<table id=\"curve\"><tr><th>requests/s"
	      "</th><th>tokens/s</th><th>TTFT p50 ms</th><th>TTFT p99 ms</th>"
	      "<th>ITL p50 ms</th><th>ITL p99 ms</th><th>busy</th><th>batch"
	      "</th><th></th></tr>\n", f);
	cJSON_ArrayForEach(pt, cJSON_GetObjectItem(plan, "curve"))
		fprintf(f, "<tr><td>%.2f</td><td>%.0f</td><td>%.1f</td>"
			"<td>%.1f</td><td>%.2f</td><td>%.2f</td><td>%.0f%%</td>"
			"<td>%.1f</td><td>%s</td></tr>\n",
			num(pt, "offered_requests_per_s"),
			num(pt, "throughput_tok_s"),
			pct_of(pt, "ttft_ms", "p50"),
			pct_of(pt, "ttft_ms", "p99"),
			pct_of(pt, "itl_ms", "p50"), pct_of(pt, "itl_ms", "p99"),
			100 * num(pt, "busy_fraction"), num(pt, "mean_batch"),
			cJSON_IsTrue(cJSON_GetObjectItem(pt, "saturated")) ?
			"saturated" : "");
	fputs("</table>\n", f);
}

/* The plan's assumptions, every one as given (strings escaped). */
static void plan_assumptions(FILE *f, const cJSON *plan)
{
	const cJSON *x;

	fputs("<h2>Assumptions</h2>\n<dl id=\"assumptions\">", f);
	cJSON_ArrayForEach(x, cJSON_GetObjectItem(plan, "assumptions")) {
		fputs("<dt>", f);
		html_escape(f, x->string);
		fputs("</dt><dd>", f);
		if (cJSON_IsString(x))
			html_escape(f, x->valuestring);
		else if (cJSON_IsNumber(x))
			fprintf(f, "%.6g", x->valuedouble);
		fputs("</dd><br>\n", f);
	}
	fputs("</dl>\n", f);
}

int html_write_plan(const cJSON *plan, FILE *f)
{
	const cJSON *curve = cJSON_GetObjectItem(plan, "curve"), *pt;
	const cJSON *pred = cJSON_GetObjectItem(plan, "predicted");
	double xmax = 0;

	if (!cJSON_GetArraySize(curve) || !pred)
		return -EINVAL;
	cJSON_ArrayForEach(pt, curve)
		xmax = fmax(xmax, num(pt, "offered_requests_per_s"));
	fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
		"<meta charset=\"utf-8\">\n<title>tokentrace plan</title>\n"
		"<style>\n%s</style>\n</head>\n<body>\n<h1>tokentrace plan"
		"</h1>\n<p id=\"summary\">Predicted: %.0f completion tokens/s,"
		" %.2f requests/s; TTFT p50 %.1f ms, p99 %.1f ms; ITL p50 %.2f "
		"ms, p99 %.2f ms; busy %.0f%%, batch %.1f, on %g replica(s).",
		style, num(pred, "throughput_tok_s"),
		num(pred, "requests_per_s"), pct_of(pred, "ttft_ms", "p50"),
		pct_of(pred, "ttft_ms", "p99"), pct_of(pred, "itl_ms", "p50"),
		pct_of(pred, "itl_ms", "p99"), 100 * num(pred, "busy_fraction"),
		num(pred, "mean_batch"), num(plan, "replicas"));
	if (isfinite(num(plan, "devices_needed")))
		fprintf(f, " The forecast needs %g devices.",
			num(plan, "devices_needed"));
	if (isfinite(num(plan, "usd_per_1m_completion")))
		fprintf(f, " USD per 1M tokens: prompt %.4f, completion %.4f "
			"(loaded).", num(plan, "usd_per_1m_prompt"),
			num(plan, "usd_per_1m_completion"));
	fputs("</p>\n", f);
	plan_latency(f, plan, xmax);
	plan_throughput(f, plan, xmax);
	plan_table(f, plan);
	plan_assumptions(f, plan);
	fprintf(f, "%s</body>\n</html>\n", script);
	return ferror(f) ? -EIO : 0;
}
