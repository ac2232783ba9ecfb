#!/bin/sh
# bench.sh - tokentrace's benchmarks (`make bench`).
#
# In:  the binaries in build/ (run from anywhere; it works from the
#      repository root). Environment knobs are listed at each section.
# Out: figures on stdout: first the machine, then one block per section.
# Assumes: POSIX sh, loopback TCP, nothing else heavy running (the figures
#      are only as quiet as the machine). Every server it starts is stopped
#      on exit, whatever happens.
#
# Sections are shell functions named bench_*, run in the order listed in
# SECTIONS at the bottom (BENCH_SECTIONS="bench_x bench_y" runs only those).
# Those that load eBPF programs need root and say "skipped" otherwise. To add a benchmark, write a function that prints
# its own figures (use `section` for its title) and add it to SECTIONS.
set -eu

cd "$(dirname "$0")/.."
B=build
TMP=$(mktemp -d /tmp/tt-bench-XXXXXX)
SERVER_PID=""
REC_PID=""
OLD_BPF_STATS=""

cleanup() {
	if [ -n "$REC_PID" ]; then
		kill -INT "$REC_PID" 2>/dev/null || true
		wait "$REC_PID" 2>/dev/null || true
	fi
	if [ -n "$OLD_BPF_STATS" ]; then
		sysctl -qw kernel.bpf_stats_enabled="$OLD_BPF_STATS" || true
	fi
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() {
	printf '\n== %s ==\n' "$1"
}

need() {
	for f in "$@"; do
		if [ ! -x "$f" ]; then
			echo "bench: $f missing: run make first" >&2
			exit 1
		fi
	done
}

# median of the numbers on stdin, one a line
median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "nan"; exit }
		if (NR % 2) print v[(NR + 1) / 2]
		else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

machine() {
	section "machine"
	cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo \
		2>/dev/null || true)
	echo "cpus: $(nproc)"
	echo "cpu model: ${cpu:-unknown}"
	echo "kernel: $(uname -sr)"
	echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
}

# start_refserver FLAGS...: starts build/refserver on a free loopback port;
# sets SERVER_PID and PORT.
start_refserver() {
	rm -f "$TMP/port"
	"$B/refserver" --host 127.0.0.1 --port 0 --port-file "$TMP/port" \
		"$@" >"$TMP/server.log" 2>&1 &
	SERVER_PID=$!
	i=0
	while [ ! -s "$TMP/port" ]; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
			echo "bench: refserver did not start:" >&2
			cat "$TMP/server.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	PORT=$(cat "$TMP/port")
}

stop_refserver() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}

# ---- refserver throughput ---------------------------------------------------
#
# The reference server's completion tokens/s at concurrency 1, 8 and 32,
# median of 3 runs each, a fixed request count per run.
#   BENCH_REF_FLAGS   refserver flags (model size, batching), default below
#   BENCH_LG_FLAGS    loadgen flags (lengths), default below
#   BENCH_REQUESTS    requests per run at concurrency C: "C1 C8 C32"
#   BENCH_RUNS        runs per point (3)
bench_refserver_throughput() {
	section "refserver throughput (completion tokens/s)"
	need "$B/refserver" "$B/loadgen"
	ref_flags=${BENCH_REF_FLAGS:-"--max-batch 32"}
	lg_flags=${BENCH_LG_FLAGS:-"--stream --prompt-len 64 --max-tokens 64"}
	requests=${BENCH_REQUESTS:-"300 330 400"}
	runs=${BENCH_RUNS:-3}
	# shellcheck disable=SC2086
	start_refserver $ref_flags
	echo "server: $B/refserver --host 127.0.0.1 --port 0 $ref_flags"
	echo "client: $B/loadgen --url http://127.0.0.1:$PORT/v1/completions" \
		"$lg_flags --concurrency C --requests N (median of $runs runs)"
	printf '%-12s %-10s %-14s %-12s %s\n' concurrency requests tokens/s \
		"wall s" "runs (tokens/s)"
	set -- 1 8 32
	for c in "$@"; do
		n=$(echo "$requests" | awk -v i="$(idx_of "$c")" '{ print $i }')
		: >"$TMP/tps"
		: >"$TMP/wall"
		r=0
		while [ $r -lt "$runs" ]; do
			r=$((r + 1))
			# shellcheck disable=SC2086
			"$B/loadgen" --url "http://127.0.0.1:$PORT/v1/completions" \
				$lg_flags --concurrency "$c" --requests "$n" \
				--seed "$r" >"$TMP/lg.out" 2>&1 || {
				echo "bench: loadgen failed:" >&2
				cat "$TMP/lg.out" >&2
				exit 1
			}
			awk '/^throughput:/ { print $4 }' "$TMP/lg.out" >>"$TMP/tps"
			awk '/^wall:/ { print $2 }' "$TMP/lg.out" >>"$TMP/wall"
		done
		printf '%-12s %-10s %-14s %-12s %s\n' "$c" "$n" \
			"$(median <"$TMP/tps")" "$(median <"$TMP/wall")" \
			"$(tr '\n' ' ' <"$TMP/tps")"
	done
	stop_refserver
}

idx_of() {
	case "$1" in
	1) echo 1 ;;
	8) echo 2 ;;
	*) echo 3 ;;
	esac
}

# ---- probe cost (socket tracing: bpf/sock.bpf.c) -----------------------------
#
# Per-event cost of the socket probes, from the kernel's own BPF statistics
# (kernel.bpf_stats_enabled=1: run_time_ns and run_cnt of each program),
# for each kind of hook (`record --hooks syscalls`, `--hooks libc`):
#  - traced: build/refserver under `tokentrace record --port`, driven by
#    build/loadgen (PROBE_REQUESTS streamed requests, default 200);
#  - a process that is not traced: dd copying PROBE_BLOCKS (default
#    200000) blocks of 64 bytes from /dev/zero to /dev/null, a read and a
#    write a block, timed (median of 3) with no tracer, and with each kind
#    of hook attached to the server: the cost the hooks put on everyone
#    else, which run_time_ns does not show (the hook itself is most of it).
# Goal: dd with libc hooks attached at most 1.10x dd with no tracer.
# Needs root; prints why and skips otherwise.

# "name run_time_ns run_cnt" of the newest loaded program of each name
# (bpftool can fail while another program loads or unloads: tried again)
probe_stats() {
	for _ in 1 2 3 4 5; do
		out=$(probe_stats_once 2>/dev/null || true)
		if [ -n "$out" ]; then
			echo "$out"
			return 0
		fi
		sleep 0.2
	done
	echo "bench: bpftool prog show gave no statistics" >&2
}

probe_stats_once() {
	bpftool prog show --json | python3 -c '
import json, sys
newest = {}
for p in json.load(sys.stdin):
    n = p.get("name", "")
    if n.startswith(("enter_", "exit_", "ssl_", "on_", "libc_")):
        if n not in newest or p["id"] > newest[n]["id"]:
            newest[n] = p
for n, p in sorted(newest.items()):
    print(n, p.get("run_time_ns", 0), p.get("run_cnt", 0))
'
}

# prints ns/event per program between two probe_stats snapshots
probe_delta() {
	awk 'NR == FNR { t[$1] = $2; c[$1] = $3; next }
	     { dc = $3 - c[$1]; dt = $2 - t[$1]
	       if (dc > 0) printf "  %-18s %10d events %8.1f ns/event\n", $1, dc, dt / dc }' "$1" "$2"
}

# ns per block of an untraced dd (a read and a write of 64 bytes), one
# line for each of five runs
probe_dd_runs() {
	for _ in 1 2 3 4 5; do
		t0=$(date +%s%N)
		dd if=/dev/zero of=/dev/null bs=64 count="$1" 2>/dev/null
		t1=$(date +%s%N)
		awk -v a="$t0" -v b="$t1" -v n="$1" \
			'BEGIN { printf "%.0f\n", (b - a) / n }'
	done
}

bench_probe_cost() {
	section "probe cost (socket tracing)"
	if [ "$(id -u)" != 0 ]; then
		echo "skipped: needs root to load eBPF programs"
		return 0
	fi
	need "$B/tokentrace" "$B/refserver" "$B/loadgen"
	reqs=${PROBE_REQUESTS:-200}
	blocks=${PROBE_BLOCKS:-200000}
	old_stats=$(sysctl -n kernel.bpf_stats_enabled)
	OLD_BPF_STATS=$old_stats
	sysctl -qw kernel.bpf_stats_enabled=1
	echo "untraced dd, $blocks blocks of 64 bytes (a read and a write" \
		"each), five runs with the tracer attached against ten with no" \
		"tracer, five right before it starts and five after it stops"
	for kind in syscalls libc; do
		start_refserver
		echo "-- --hooks $kind: $B/tokentrace record --port $PORT" \
			"--hooks $kind -o FILE.jsonl on $B/refserver"
		probe_dd_runs "$blocks" >"$TMP/dd.bare"
		start_record "$TMP/probe.jsonl" --hooks "$kind"
		probe_stats >"$TMP/probe.s0"
		"$B/loadgen" --url "http://127.0.0.1:$PORT" --concurrency 4 \
			--requests "$reqs" --stream --max-tokens 16 --quiet \
			--out "$TMP/probe.lg" || echo "bench: loadgen failed" >&2
		probe_stats >"$TMP/probe.s1"
		dd_ns=$(probe_dd_runs "$blocks" | median)
		probe_stats >"$TMP/probe.s2"
		echo "while the traced refserver served $reqs streamed" \
			"requests (programs run by all processes):"
		probe_delta "$TMP/probe.s0" "$TMP/probe.s1"
		echo "while the untraced dd ran:"
		probe_delta "$TMP/probe.s1" "$TMP/probe.s2" |
			grep -E "_write |_read |libc_" || echo "  (none ran)"
		stop_record
		# no tracer again, after it: the baseline is the median of the
		# runs before and after, so a drift during the test cancels
		probe_dd_runs "$blocks" >>"$TMP/dd.bare"
		bare_ns=$(median <"$TMP/dd.bare")
		awk -v k="$kind" -v t="$dd_ns" -v b="$bare_ns" 'BEGIN {
			printf "untraced dd with %s hooks attached: %d ns a " \
			       "block against %d ns with no tracer: %.2fx%s\n",
			       k, t, b, t / b,
			       k == "libc" ? " (goal <= 1.10)" : "" }'
		grep -E "lost events" "$TMP/rec.err" |
			sed 's/^tokentrace: /tracer: /' || true
		stop_refserver
	done
	sysctl -qw kernel.bpf_stats_enabled="$old_stats"
	OLD_BPF_STATS=""
}

# ---- the tracer ---------------------------------------------------------------

# start_record OUT [FLAGS...]: `tokentrace record --port $PORT -o OUT`,
# once it traces; sets REC_PID. Its stderr goes to $TMP/rec.err.
start_record() {
	out=$1
	shift
	"$B/tokentrace" record --port "$PORT" -o "$out" "$@" \
		>"$TMP/rec.out" 2>"$TMP/rec.err" &
	REC_PID=$!
	i=0
	until grep -q "tracing 1 process" "$TMP/rec.err" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 "$REC_PID" 2>/dev/null; then
			echo "bench: tokentrace record did not start:" >&2
			cat "$TMP/rec.err" >&2
			exit 1
		fi
		sleep 0.05
	done
}

stop_record() {
	kill -INT "$REC_PID" 2>/dev/null || true
	wait "$REC_PID" 2>/dev/null || true
	REC_PID=""
}

rss_kb() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# seconds (with ns) a command takes; its output is dropped
time_s() {
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1 || { echo "bench: $* failed" >&2; exit 1; }
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "skipped: needs root to load eBPF programs"
		return 1
	fi
}

# ---- overhead on the traced server ---------------------------------------------
#
# The reference server at saturation (loadgen --concurrency 16), without
# tracing and with `tokentrace record --port` attached with each kind of
# socket hook (--hooks syscalls, --hooks libc), runs rotating over the
# three kinds (the same seed for all in a round, the order turned each
# round, after one warm-up run), median of BENCH_OVH_RUNS (5) each:
# completion tokens/s and TTFT p50 as ratios traced / untraced.
# Goal: throughput >= 0.97 with libc hooks, TTFT p50 within 3%. The
# collector runs on the same cores as server and client: on a small
# machine its CPU time is part of what is measured.
# Prompt and completion lengths vary (BENCH_OVH_SHAPE), as real traffic's
# do: with one fixed shape the closed loop locks into step (16 clients in
# two cohorts of 8 whose requests end in the same step and come back
# together: exactly 8 prefills in each of 50 prefill steps untraced), and
# anything that spreads them, a uprobe's ~10 us on each write included,
# halves the prefill batches and lowers TTFT by 7-11% (5.8-6.9 prefills a
# step measured with libc hooks): a change of the load's phase, not of
# the server's cost.
#   BENCH_OVH_REQUESTS  requests per run (default 400)
#   BENCH_OVH_RUNS      runs of each kind (default 5)
#   BENCH_OVH_SHAPE     loadgen length flags (default --prompt-len 32-96
#                       --max-tokens 16-48; "--prompt-len 64 --max-tokens
#                       32" is the locked-step load)
ovh_load() {
	# shellcheck disable=SC2086
	"$B/loadgen" --url "http://127.0.0.1:$PORT/v1/completions" $lg_flags \
		--requests "$n" --seed "$2" >"$TMP/lg.out" 2>&1 || {
		echo "bench: loadgen failed:" >&2
		cat "$TMP/lg.out" >&2
		exit 1
	}
	awk '/^throughput:/ { print $4 }' "$TMP/lg.out" >>"$TMP/ovh.$1.tps"
	awk '/^ttft:/ { print $3 }' "$TMP/lg.out" >>"$TMP/ovh.$1.ttft"
}

# ovh_run KIND SEED: one run untraced (plain) or traced with KIND hooks
ovh_run() {
	if [ "$1" = plain ]; then
		ovh_load plain "$2"
		return
	fi
	start_record "$TMP/ovh.tt" --hooks "$1"
	ovh_load "$1" "$2"
	stop_record
	rm -f "$TMP/ovh.tt"
}

bench_overhead() {
	section "overhead on the traced server (refserver at saturation)"
	need_root || return 0
	need "$B/tokentrace" "$B/refserver" "$B/loadgen"
	ref_flags="--max-batch 16"
	shape=${BENCH_OVH_SHAPE:-"--prompt-len 32-96 --max-tokens 16-48"}
	lg_flags="--stream $shape --concurrency 16"
	n=${BENCH_OVH_REQUESTS:-400}
	runs=${BENCH_OVH_RUNS:-5}
	kinds="plain syscalls libc"
	# shellcheck disable=SC2086
	start_refserver $ref_flags
	echo "server: $B/refserver --host 127.0.0.1 --port 0 $ref_flags"
	echo "client: $B/loadgen --url http://127.0.0.1:$PORT/v1/completions" \
		"$lg_flags --requests $n --seed R"
	echo "traced: $B/tokentrace record --port $PORT --hooks KIND -o" \
		"FILE.tt attached for the traced runs; one warm-up run, then" \
		"$runs runs of each kind, the order rotating each round"
	for k in $kinds; do
		: >"$TMP/ovh.$k.tps"
		: >"$TMP/ovh.$k.ttft"
	done
	ovh_load warmup 0
	r=0
	while [ $r -lt "$runs" ]; do
		r=$((r + 1))
		case $((r % 3)) in
		1) order="plain syscalls libc" ;;
		2) order="syscalls libc plain" ;;
		*) order="libc plain syscalls" ;;
		esac
		for k in $order; do
			ovh_run "$k" "$r"
		done
	done
	stop_refserver
	printf '%-10s %-12s %-14s %s\n' kind tokens/s "ttft p50 ms" \
		"runs (tokens/s | ttft p50 ms)"
	for k in $kinds; do
		printf '%-10s %-12s %-14s %s| %s\n' "$k" \
			"$(median <"$TMP/ovh.$k.tps")" \
			"$(median <"$TMP/ovh.$k.ttft")" \
			"$(tr '\n' ' ' <"$TMP/ovh.$k.tps")" \
			"$(tr '\n' ' ' <"$TMP/ovh.$k.ttft")"
	done
	# Also each round's traced run against that round's plain one
	# (neighbours in time, so the machine's slow drifts cancel): median.
	for k in syscalls libc; do
		pr_t=$(paste "$TMP/ovh.$k.tps" "$TMP/ovh.plain.tps" |
			awk '{ printf "%.4f\n", $1 / $2 }' | median)
		pr_f=$(paste "$TMP/ovh.$k.ttft" "$TMP/ovh.plain.ttft" |
			awk '{ printf "%.4f\n", $1 / $2 }' | median)
		awk -v k="$k" -v pt="$(median <"$TMP/ovh.plain.tps")" \
		    -v tt="$(median <"$TMP/ovh.$k.tps")" \
		    -v pf="$(median <"$TMP/ovh.plain.ttft")" \
		    -v tf="$(median <"$TMP/ovh.$k.ttft")" \
		    -v prt="$pr_t" -v prf="$pr_f" 'BEGIN {
			printf "ratio %s/plain: throughput %.3f (goal >= 0.97), " \
			       "ttft p50 %.3f (goal 0.97-1.03); paired by " \
			       "round: throughput %.3f, ttft p50 %.3f\n", k,
			       tt / pt, tf / pf, prt, prf }'
	done
}

# ---- collector: replay speed ----------------------------------------------------
#
# A trace of millions of events made by build/bench/gentrace (one GPU,
# continuous batching: requests with their token times, kernels and copies),
# then `tokentrace report` on it pinned to one core (taskset -c 0), median
# of 3 runs: events (requests + token times + intervals) per second over
# the whole command (read, attribution, findings, text report). Goal: >= 2M
# events/s. The same with --format json (every request written out) once.
#   BENCH_GEN_REQUESTS  requests in the trace (default 100000)
#   BENCH_GEN_TOKENS    tokens per request (default 32)
bench_collector() {
	section "collector: replaying a large trace, one core"
	need "$B/tokentrace" "$B/bench/gentrace"
	reqs=${BENCH_GEN_REQUESTS:-100000}
	toks=${BENCH_GEN_TOKENS:-32}
	"$B/bench/gentrace" "$TMP/big.tt" "$reqs" "$toks" 16 >"$TMP/gen.out"
	events=$(awk '/^gentrace:/ { print $9 }' "$TMP/gen.out")
	echo "trace: $B/bench/gentrace FILE $reqs $toks 16 ->" \
		"$(sed 's/^gentrace: //' "$TMP/gen.out")"
	echo "command: taskset -c 0 $B/tokentrace report FILE (median of 3)"
	: >"$TMP/rep.s"
	for r in 1 2 3; do
		time_s taskset -c 0 "$B/tokentrace" report "$TMP/big.tt" \
			>>"$TMP/rep.s"
	done
	med=$(median <"$TMP/rep.s")
	json_s=$(time_s taskset -c 0 "$B/tokentrace" report "$TMP/big.tt" \
		--format json)
	rss=0
	if [ -x /usr/bin/time ]; then
		/usr/bin/time -f '%M' -o "$TMP/rss.out" taskset -c 0 \
			"$B/tokentrace" report "$TMP/big.tt" >/dev/null 2>&1
		rss=$(tail -1 "$TMP/rss.out")
	fi
	awk -v e="$events" -v m="$med" -v runs="$(tr '\n' ' ' <"$TMP/rep.s")" \
	    -v j="$json_s" -v rss="$rss" 'BEGIN {
		printf "text report: %.3f s (runs %s): %.2f M events/s " \
		       "(goal >= 2)\n", m, runs, e / m / 1e6
		printf "json report: %.3f s: %.2f M events/s\n", j, e / j / 1e6
		printf "peak RSS of the text report: %d kB (%.0f bytes/event)\n",
		       rss, rss * 1024 / e }'
	rm -f "$TMP/big.tt"
}

# ---- collector: memory per connection and per request in flight -----------------
#
# `tokentrace record` on a refserver that holds requests (--step-delay-ms
# 200, --max-batch 4); a client opens BENCH_CONNS (8000) idle connections,
# then sends a streamed request on each (all in flight: a few running, the
# rest queued). The collector's VmRSS before, with the idle connections, and
# with the requests in flight, divided by the count. Needs root.
#   BENCH_CONNS   connections (default 8000; the fd limit is raised to fit)
bench_collector_memory() {
	section "collector: memory per open connection and per request in flight"
	need_root || return 0
	need "$B/tokentrace" "$B/refserver" "$B/bench/gentrace"
	nc=${BENCH_CONNS:-8000}
	# shellcheck disable=SC3045
	ulimit -n $((nc + 256)) 2>/dev/null || true
	start_refserver --step-delay-ms 200 --max-batch 4
	start_record "$TMP/mem.tt"
	echo "server: $B/refserver --step-delay-ms 200 --max-batch 4;" \
		"tracer: $B/tokentrace record --port $PORT -o FILE.tt;" \
		"client: $nc connections (python3)"
	python3 - "$PORT" "$nc" "$TMP" <<'PY' &
import os, resource, socket, sys, time
port, n, tmp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, n + 64))
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
open(tmp + "/conns.ready", "w").close()
while not os.path.exists(tmp + "/conns.go"):
    time.sleep(0.05)
body = b'{"model":"ref-tiny","prompt":"hello world","max_tokens":100000,' \
       b'"stream":true,"user":"mem"}'
req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
       % len(body)) + body
for s in socks:
    s.sendall(req)
open(tmp + "/conns.sent", "w").close()
time.sleep(600)
PY
	py=$!
	sleep 1
	r0=$(rss_kb "$REC_PID")
	i=0
	while [ ! -e "$TMP/conns.ready" ] && [ $i -lt 600 ]; do
		sleep 0.05; i=$((i + 1))
	done
	sleep 2
	r1=$(rss_kb "$REC_PID")
	touch "$TMP/conns.go"
	i=0
	while [ ! -e "$TMP/conns.sent" ] && [ $i -lt 600 ]; do
		sleep 0.05; i=$((i + 1))
	done
	sleep 2
	r2=$(rss_kb "$REC_PID")
	kill "$py" 2>/dev/null || true
	wait "$py" 2>/dev/null || true
	stop_record
	stop_refserver
	awk -v n="$nc" -v a="$r0" -v b="$r1" -v c="$r2" 'BEGIN {
		printf "collector RSS: %d kB before, %d kB with %d idle " \
		       "connections, %d kB with a request in flight on each\n",
		       a, b, n, c
		printf "per open connection: %.0f bytes; per request in " \
		       "flight: %.0f bytes more (RSS is counted in pages, " \
		       "and memory malloc already holds is not counted: " \
		       "+-%.0f bytes)\n", (b - a) * 1024 / n,
		       (c - b) * 1024 / n, 4096 / n }'
	"$B/bench/gentrace" --sizes 2>/dev/null || true
}

# ---- trace size -----------------------------------------------------------------
#
# A real run: refserver under `tokentrace record --port P --compute cpu -o
# FILE.tt` (its CPU slices are the compute records), BENCH_SIZE_REQUESTS
# (300) streamed requests of 32 tokens. Bytes per request and per compute
# record from build/bench/tracesize (each kind written again alone, zstd
# as record writes it). Needs root.
bench_trace_size() {
	section "trace size (a real run's trace)"
	need_root || return 0
	need "$B/tokentrace" "$B/refserver" "$B/loadgen" "$B/bench/tracesize"
	n=${BENCH_SIZE_REQUESTS:-300}
	start_refserver --max-batch 16
	start_record "$TMP/size.tt" --compute cpu
	echo "tracer: $B/tokentrace record --port $PORT --compute cpu -o" \
		"FILE.tt; client: $B/loadgen --stream --max-tokens 32" \
		"--prompt-len 64 --concurrency 8 --requests $n"
	"$B/loadgen" --url "http://127.0.0.1:$PORT/v1/completions" --stream \
		--max-tokens 32 --prompt-len 64 --concurrency 8 --requests "$n" \
		--quiet || echo "bench: loadgen failed" >&2
	stop_record
	stop_refserver
	"$B/bench/tracesize" "$TMP/size.tt" "$TMP" | sed 's/^tracesize: //'
}

# ---- the GPU path at the seed's scale: 8 simulated GPUs ----------------------
#
# The reference server on 8 simulated devices shaped like Llama-70B in
# tensor parallel (--sim-profile llama70b: 80 layers, about 800 kernel and
# copy records per device and step) under `tokentrace run --compute cupti`,
# loaded for BENCH_GPU_S (10) seconds at BENCH_GPU_CONC (256) streams. It
# prints what was served (completion tokens/s), the device records the
# server sent and what the collector lost, records/s, and the collector's
# CPU time (user + system, from /proc while the load ran) per second and
# per 1,000 tokens/s served, and its peak RSS; once with the report kept in
# memory, once writing a trace file. Needs root.
gpu_sim_run() {
	mode=$1
	flags="--device sim --sim-profile llama70b --gpus 8 --graphs --max-batch $conc --ctx 2048"
	lg="--stream --quiet --prompt-len 32-256 --max-tokens 64-512"
	out=""
	[ "$mode" = trace ] && out="-o $TMP/gpu.tt"
	rm -f "$TMP/gpu.port" "$TMP/gpu.truth" "$TMP/gpu.jsonl" "$TMP/gpu.json"
	: >"$TMP/gpu.tt"
	echo "-- $mode: $B/tokentrace run --compute cupti ${out:+-o FILE }-- $B/refserver $flags"
	# shellcheck disable=SC2086
	"$B/tokentrace" run --compute cupti --summary "$TMP/gpu.json" $out -- \
		"$B/refserver" $flags --port 0 --port-file "$TMP/gpu.port" \
		--truth "$TMP/gpu.truth" >"$TMP/gpu.log" 2>&1 &
	REC_PID=$!
	i=0
	while [ ! -s "$TMP/gpu.port" ] && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	port=$(cat "$TMP/gpu.port")
	c0=$(awk '{ print $14 + $15 }' "/proc/$REC_PID/stat")
	t0=$(date +%s%N)
	# shellcheck disable=SC2086
	"$B/loadgen" --url "http://127.0.0.1:$port/v1/completions" $lg \
		--concurrency "$conc" --duration "$secs" --out "$TMP/gpu.jsonl" \
		--allow-errors >/dev/null 2>&1 || true
	t1=$(date +%s%N)
	c1=$(awk '{ print $14 + $15 }' "/proc/$REC_PID/stat")
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$REC_PID/status")
	kill -TERM "$REC_PID"
	wait "$REC_PID" || true
	REC_PID=""
	hz=$(getconf CLK_TCK)
	toks=$(awk -F'"completion_tokens":' 'NF > 1 { split($2, a, /[,}]/);
		s += a[1] } END { print s + 0 }' "$TMP/gpu.jsonl")
	sent=$(sed -n 's/.*sim: \([0-9]*\) device records sent, \([0-9]*\) dropped.*/\1 \2/p' \
		"$TMP/gpu.log")
	lost=$(tr -d ' \n' <"$TMP/gpu.json" | sed -n \
		's/.*"cupti":{"events":\([0-9]*\).*/\1/p')
	notkept=$(tr -d ' \n' <"$TMP/gpu.json" | sed -n \
		's/.*"intervals_not_kept":\([0-9]*\).*/\1/p')
	# steady state: tokens of the steps that began from 2 s after the
	# first to the end of the sending (the server's own log)
	steady=$(awk -v secs="$secs" -F'"start_ns":' '/"type":"step"/ {
		split($2, a, ","); t = a[1] / 1e9
		if (!t0) t0 = t
		if (t >= t0 + 2 && t <= t0 + secs) {
			n += gsub(/"phase":/, "&"); if (!f) f = t; l = t } }
		END { printf "%.0f", (l > f) ? n / (l - f) : 0 }' "$TMP/gpu.truth")
	awk -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$hz" \
	    -v toks="$toks" -v sent="$sent" -v lost="${lost:-?}" \
	    -v steady="$steady" -v hwm="$hwm" -v notkept="${notkept:-?}" \
	    -v tsize="$(wc -c <"$TMP/gpu.tt")" 'BEGIN {
		split(sent, s, " "); w = (t1 - t0) / 1e9
		cpu = (c1 - c0) / hz
		printf "served: %.0f tokens/s in steady state (goal: about " \
		       "25000); %.0f completion tokens/s over the whole %.1f s " \
		       "with the drain\n", steady, toks / w, w
		printf "device records: %d sent (%.0f /s), %d dropped by the " \
		       "server, %s lost by the collector\n", s[1], s[1] / w,
		       s[2], lost
		printf "collector CPU: %.2f s per s (%.1f%% of a core), " \
		       "%.3f CPU s per 1,000 tokens/s served\n", cpu / w,
		       100 * cpu / w, cpu / w / (toks / w / 1000)
		printf "collector peak RSS %d kB; intervals not kept %s", hwm,
		       notkept
		if (tsize > 0)
			printf "; trace %.1f MB (%.1f B per record)", tsize / 1e6,
			       tsize / s[1]
		printf "\n" }'
}

bench_gpu_sim() {
	section "GPU path: 8 simulated GPUs shaped like Llama-70B"
	need_root || return 0
	need "$B/tokentrace" "$B/refserver" "$B/loadgen"
	secs=${BENCH_GPU_S:-10}
	conc=${BENCH_GPU_CONC:-256}
	if "$B/refserver" --device sim --gpus 0 2>&1 | grep -q "built without"; then
		echo "skipped: refserver built without the CUPTI headers"
		return 0
	fi
	echo "client: $B/loadgen --stream --prompt-len 32-256 --max-tokens" \
		"64-512 --concurrency $conc --duration $secs"
	# the report kept in memory (8 s: 10 M intervals are kept by default,
	# what comes beyond is counted as not kept), then everything written
	# to a trace file (zstd on the collector's core)
	secs=${BENCH_GPU_MEM_S:-8}
	gpu_sim_run memory
	secs=${BENCH_GPU_S:-10}
	gpu_sim_run trace
}

# ---- plan: an hour of traffic --------------------------------------------------
#
# `tokentrace plan` on a generated trace of one hour at 36,000 tokens/s
# (build/bench/gentrace: one GPU, batch 360, 10 ms steps, 4.05 M requests
# of 32 tokens) and on one of a quarter of that: wall time (median of 3)
# and peak RSS. A long trace is sampled (8 windows spread over it), so the
# time should not grow with the trace. Goal: under 5 s for the hour.
#   BENCH_PLAN_WHOLE=1  also plan the quarter hour with --whole (every
#                       record read and reported: minutes, GBs)
bench_plan() {
	section "plan: an hour-long trace at 36,000 tokens/s"
	need "$B/tokentrace" "$B/bench/gentrace"
	for q in 4 1; do
		reqs=$((4050000 / q))
		"$B/bench/gentrace" "$TMP/plan.tt" "$reqs" 32 360 >"$TMP/gen.out"
		echo "trace: $B/bench/gentrace FILE $reqs 32 360 ->" \
			"$(sed 's/^gentrace: //' "$TMP/gen.out")"
		: >"$TMP/plan.s"
		for r in 1 2 3; do
			time_s "$B/tokentrace" plan "$TMP/plan.tt" >>"$TMP/plan.s"
		done
		rss=0
		if [ -x /usr/bin/time ]; then
			/usr/bin/time -f '%M' -o "$TMP/rss.out" \
				"$B/tokentrace" plan "$TMP/plan.tt" >/dev/null 2>&1
			rss=$(tail -1 "$TMP/rss.out")
		fi
		awk -v m="$(median <"$TMP/plan.s")" -v q="$q" -v rss="$rss" \
		    -v runs="$(tr '\n' ' ' <"$TMP/plan.s")" 'BEGIN {
			printf "plan of %s: %.2f s (runs %s)%s, peak RSS %d " \
			       "kB\n", q == 1 ? "the hour" : "a quarter hour", m,
			       runs, q == 1 ? " (goal < 5 s)" : "", rss }'
		if [ "$q" = 4 ] && [ "${BENCH_PLAN_WHOLE:-0}" = 1 ]; then
			w=$(time_s "$B/tokentrace" plan "$TMP/plan.tt" --whole)
			echo "plan --whole of a quarter hour: $w s"
		fi
	done
	rm -f "$TMP/plan.tt"
}

# ---- report: an hour and a day of traffic -------------------------------------
#
# `tokentrace report` on generated traces at 36,000 tokens/s (gentrace: one
# GPU, batch 360, 10 ms steps, 32-token requests): a quarter hour and an
# hour on one core (taskset -c 0; the report is read in time ranges of
# --shard-events, 1.5 M by default), the hour with --jobs 2, and a day with
# --jobs 2. Wall time (the median of BENCH_REPORT_RUNS runs, 3 by default;
# the day runs once) and peak RSS (the most of those runs) of each; the
# hour's report with --jobs 2 must be the
# one of one job, byte for byte. Goals: peak RSS of the hour <= 256 MB and
# within 10% of the quarter's; >= 3 M events/s on one core; --jobs 2 at
# least 1.7 times that; the day completes. Then `export` of the quarter
# and the hour in its three formats (to /dev/null), once each: time and
# peak RSS, which must not grow with the trace either.
#   BENCH_REPORT_DAY=0   leave the day out (it takes minutes and 1 GB)
bench_report_scale() {
	section "report: a quarter hour, an hour and a day at 36,000 tokens/s"
	need "$B/tokentrace" "$B/bench/gentrace"
	[ -x /usr/bin/time ] || { echo "skipped: needs /usr/bin/time"; return 0; }
	runs=${BENCH_REPORT_RUNS:-3}
	scale_one() {	# name requests jobs cpus; the median of $runs runs
		[ "$(cat "$TMP/scale.n" 2>/dev/null)" = "$2" ] || {
			"$B/bench/gentrace" "$TMP/scale.tt" "$2" 32 360 \
				>"$TMP/gen.out"
			echo "$2" >"$TMP/scale.n"; }
		ev=$(awk '/^gentrace:/ { print $9 }' "$TMP/gen.out")
		: >"$TMP/scale.runs"
		for _ in $(seq "$runs"); do
			/usr/bin/time -f '%e %M' -o "$TMP/scale.out" \
				taskset -c "$4" "$B/tokentrace" report \
				"$TMP/scale.tt" --jobs "$3" \
				>"$TMP/scale.$1.txt" 2>"$TMP/scale.err" ||
				{ echo "bench: report of the $1 failed:" >&2;
				  cat "$TMP/scale.err" >&2; exit 1; }
			cat "$TMP/scale.out" >>"$TMP/scale.runs"
		done
		wall=$(sort -n "$TMP/scale.runs" | awk '{ a[NR] = $1 }
			END { print a[int((NR + 1) / 2)] }')
		rss=$(sort -k2n "$TMP/scale.runs" | awk 'END { print $2 }')
		awk -v n="$1" -v e="$ev" -v w="$wall" -v r="$rss" -v j="$3" \
		    -v k="$runs" \
		    'BEGIN { printf "%-8s %11d events  --jobs %d  %8.1f s  " \
			     "%6.2f M events/s  peak RSS %7d kB  (median " \
			     "of %d)\n", n, e, j, w, e / w / 1e6, r, k }'
		echo "$1 $ev $wall $rss" >>"$TMP/scale.sum"
	}
	: >"$TMP/scale.sum"
	echo "trace: $B/bench/gentrace FILE REQUESTS 32 360; command:" \
		"taskset -c CPUS $B/tokentrace report FILE --jobs N"
	scale_one quarter 1012500 1 0
	scale_one hour 4050000 1 0
	scale_one hour-j2 4050000 2 0,1
	if cmp -s "$TMP/scale.hour.txt" "$TMP/scale.hour-j2.txt"; then
		echo "the hour's report with --jobs 2 is the one of one job"
	else
		echo "bench: the hour's report differs with --jobs 2" >&2
		exit 1
	fi
	awk '{ w[$1] = $3; r[$1] = $4; e[$1] = $2 } END {
		grow = 100 * (r["hour"] - r["quarter"]) / r["quarter"]
		rate = e["hour"] / w["hour"] / 1e6
		printf "hour: peak RSS %.0f MB (goal <= 256), %+.1f%% against " \
		       "the quarter (goal within 10%%); %.2f M events/s on " \
		       "one core (goal >= 3); --jobs 2 %.2fx (goal >= 1.7)\n",
		       r["hour"] / 1024, grow, rate, w["hour"] / w["hour-j2"] }' \
		"$TMP/scale.sum"
	# export of the quarter and the hour in the three formats (to
	# /dev/null: the hour's would be some 40 GB), once each, one core
	for n in quarter:1012500 hour:4050000; do
		"$B/bench/gentrace" "$TMP/scale.tt" "${n#*:}" 32 360 >/dev/null
		echo "${n#*:}" >"$TMP/scale.n"
		/usr/bin/time -f '%e %M' -o "$TMP/scale.out" taskset -c 0 \
			"$B/tokentrace" export "$TMP/scale.tt" --perfetto \
			/dev/null --otlp /dev/null --jsonl /dev/null \
			2>"$TMP/scale.err" ||
			{ echo "bench: export of the ${n%%:*} failed:" >&2;
			  cat "$TMP/scale.err" >&2; exit 1; }
		read -r wall rss <"$TMP/scale.out"
		echo "export ${n%%:*}: $wall s, peak RSS $rss kB" \
			"(--perfetto, --otlp and --jsonl)"
	done
	if [ "${BENCH_REPORT_DAY:-1}" != 0 ]; then
		runs=1
		scale_one day 97200000 2 0,1
	fi
	rm -f "$TMP/scale.tt" "$TMP/scale.n"
}

# ---- main ---------------------------------------------------------------------

SECTIONS=${BENCH_SECTIONS:-"bench_refserver_throughput bench_overhead \
bench_probe_cost bench_collector bench_collector_memory bench_trace_size \
bench_gpu_sim bench_plan bench_report_scale"}

echo "tokentrace benchmarks: $0 $*"
machine
for s in $SECTIONS; do
	"$s"
done
