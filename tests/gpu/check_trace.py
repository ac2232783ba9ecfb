#!/usr/bin/env python3
"""check_trace.py - judges one GPU run of refserver under libtokentrace_cupti.

In:  --records  JSON lines from tests/gpu/cuptidump (what the collector's
                receiver decoded from the library's output)
     --truth    refserver's truth log (step lines: start_ns, end_ns, gpu_ns)
     --load-base, --load-lib  loadgen --out files of the same load without
                and with the library (optional: throughput ratio)
Out: one line per check, "PASS name: numbers" or "FAIL name: numbers"
     ("INFO" for figures that gate nothing), then a JSON summary line.
     Exit status: the number of FAILs (0 = all passed).
Assumes: Python 3 standard library only; all times CLOCK_MONOTONIC ns.
"""
import argparse
import bisect
import json
import sys

FAILS = []


def report(ok, name, text):
    word = "INFO" if ok is None else ("PASS" if ok else "FAIL")
    if ok is False:
        FAILS.append(name)
    print("%s %s: %s" % (word, name, text), flush=True)


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    print("INFO %s line %d is not JSON (%s)" % (path, n, e))
    except OSError as e:
        report(False, "read " + path, str(e))
    return out


def check_records(recs):
    kernels = [r for r in recs if r.get("type") == "interval"
               and r.get("kind") == "kernel"]
    copies = [r for r in recs if r.get("type") == "interval"
              and r.get("kind") == "memcpy"]
    graphs = [r for r in recs if r.get("type") == "interval"
              and r.get("kind") == "graph"]
    devices = [r for r in recs if r.get("type") == "device"]
    stats = [r for r in recs if r.get("type") == "stats"]
    losses = {}
    for r in recs:
        if r.get("type") == "losses":
            losses[r["pid"]] = r        # cumulative: the last one counts
    report(len(kernels) > 0 and len(copies) > 0, "records_arrived",
           "kernels=%d copies=%d graphs=%d devices=%d"
           % (len(kernels), len(copies), len(graphs), len(devices)))
    cd = sum(l["cupti_dropped"] for l in losses.values())
    ld = sum(l["lib_dropped"] for l in losses.values())
    zt = sum(l["zero_timestamps"] for l in losses.values())
    mal = sum(s.get("malformed", 0) for s in stats)
    report(cd == 0 and ld == 0 and mal == 0 and len(losses) > 0,
           "zero_drops", "cupti_dropped=%d lib_dropped=%d malformed=%d "
           "zero_timestamps=%d processes=%d" % (cd, ld, mal, zt, len(losses)))
    good = [d for d in devices if d.get("sm_count", 0) > 0
            and d.get("name") != "unknown GPU"]
    report(len(good) > 0, "device_described",
           "; ".join("%s sm=%d mem=%.1fGiB uuid=%s" % (
               d["name"], d["sm_count"], d["memory_bytes"] / 2**30,
               d["uuid"]) for d in good) or "no device record")
    bad = sum(1 for k in kernels + copies if k["end_ns"] < k["start_ns"])
    report(bad == 0, "end_after_start", "%d of %d intervals end before "
           "they start" % (bad, len(kernels) + len(copies)))
    if kernels:
        known = sum(1 for k in kernels if k.get("tid"))
        report(known >= 0.9 * len(kernels), "launching_thread_known",
               "%d of %d kernels (%.1f%%) carry their launching tid"
               % (known, len(kernels), 100.0 * known / len(kernels)))
    return kernels, copies


def steps_from(truth):
    steps = [t for t in truth if t.get("type") == "step"]
    steps.sort(key=lambda s: s["start_ns"])
    return steps


def check_windows(kernels, steps):
    if not steps or not kernels:
        report(False, "in_step_windows", "steps=%d kernels=%d: nothing to "
               "compare" % (len(steps), len(kernels)))
        return
    starts = [s["start_ns"] for s in steps]
    first, last = steps[0]["start_ns"], steps[-1]["end_ns"]
    during = [k for k in kernels if k["start_ns"] >= first
              and k["start_ns"] <= last]
    inside = 0
    for k in during:
        i = bisect.bisect_right(starts, k["start_ns"]) - 1
        if i >= 0 and k["end_ns"] <= steps[i]["end_ns"]:
            inside += 1
    before = sum(1 for k in kernels if k["start_ns"] < first)
    after = sum(1 for k in kernels if k["start_ns"] > last)
    frac = inside / len(during) if during else 0.0
    report(len(during) > 0 and frac >= 0.95, "in_step_windows",
           "%d of %d kernels during the run (%.2f%%) lie inside a step "
           "window; %d before the first step (warm-up), %d after the last"
           % (inside, len(during), 100 * frac, before, after))


def per_step_sums(intervals, steps):
    """Interval time clipped to each step window, by step index."""
    starts = [s["start_ns"] for s in steps]
    sums = [0] * len(steps)
    for k in intervals:
        i = bisect.bisect_right(starts, k["start_ns"]) - 1
        if i < 0:
            continue
        s = steps[i]
        lo, hi = max(k["start_ns"], s["start_ns"]), min(k["end_ns"],
                                                          s["end_ns"])
        if hi > lo:
            sums[i] += hi - lo
    return sums


def check_gpu_time(kernels, copies, steps):
    withgpu = [i for i, s in enumerate(steps) if s.get("gpu_ns", 0) > 0]
    if not withgpu:
        report(False, "gpu_time_matches_truth", "no step has gpu_ns > 0 "
               "in the truth log: was --device cuda in use?")
        return
    ks = per_step_sums(kernels, steps)
    kcs = per_step_sums(kernels + copies, steps)
    truth = sum(steps[i]["gpu_ns"] for i in withgpu)
    ksum = sum(ks[i] for i in withgpu)
    kcsum = sum(kcs[i] for i in withgpu)
    err = abs(ksum - truth) / truth
    report(err <= 0.05, "gpu_time_matches_truth",
           "summed kernel time %.3f ms vs truth gpu_ns %.3f ms over %d "
           "steps: %.2f%% apart (kernels+copies %.3f ms)"
           % (ksum / 1e6, truth / 1e6, len(withgpu), 100 * err,
              kcsum / 1e6))
    ratios = sorted(ks[i] / steps[i]["gpu_ns"] for i in withgpu)
    within = sum(1 for r in ratios if abs(r - 1) <= 0.05)
    report(within >= 0.8 * len(ratios), "gpu_time_per_step",
           "%d of %d steps (%.1f%%) within 5%%; kernel/truth ratio "
           "p10=%.3f median=%.3f p90=%.3f"
           % (within, len(ratios), 100.0 * within / len(ratios),
              ratios[len(ratios) // 10], ratios[len(ratios) // 2],
              ratios[(9 * len(ratios)) // 10]))


def throughput(path):
    reqs = [r for r in read_jsonl(path) if r.get("status") == 200]
    if not reqs:
        return None, 0
    toks = sum(r.get("completion_tokens", 0) or 0 for r in reqs)
    span = max(r["end_ns"] for r in reqs) - min(r["sent_ns"] for r in reqs)
    return (toks * 1e9 / span if span > 0 else None), len(reqs)


def check_overhead(base, lib):
    tb, nb = throughput(base)
    tl, nl = throughput(lib)
    if not tb or not tl:
        report(False, "throughput_ratio", "cannot compute: base %s tok/s "
               "(%d ok requests), with library %s tok/s (%d)"
               % (tb, nb, tl, nl))
        return
    ratio = tl / tb
    report(ratio >= 0.90, "throughput_ratio",
           "with library %.1f tok/s, without %.1f tok/s: ratio %.3f "
           "(requests %d / %d)" % (tl, tb, ratio, nl, nb))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--load-base")
    ap.add_argument("--load-lib")
    a = ap.parse_args()
    kernels, copies = check_records(read_jsonl(a.records))
    steps = steps_from(read_jsonl(a.truth))
    report(None, "truth", "%d steps" % len(steps))
    check_windows(kernels, steps)
    check_gpu_time(kernels, copies, steps)
    if a.load_base and a.load_lib:
        check_overhead(a.load_base, a.load_lib)
    print(json.dumps({"checker": "check_trace", "fails": FAILS}))
    return min(len(FAILS), 100)


if __name__ == "__main__":
    sys.exit(main())
