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
# SECTIONS at the bottom. To add a benchmark, write a function that prints
# its own figures (use `section` for its title) and add it to SECTIONS.
set -eu

cd "$(dirname "$0")/.."
B=build
TMP=$(mktemp -d /tmp/tt-bench-XXXXXX)
SERVER_PID=""

cleanup() {
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
		else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
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

# ---- main ---------------------------------------------------------------------

SECTIONS=${BENCH_SECTIONS:-"bench_refserver_throughput"}

echo "tokentrace benchmarks: $0 $*"
machine
for s in $SECTIONS; do
	"$s"
done

# ==== BEGIN probe cost (socket tracing: bpf/sock.bpf.c) ========================
#
# Per-event cost of the socket probes, from the kernel's own BPF statistics
# (kernel.bpf_stats_enabled=1: run_time_ns and run_cnt of each program):
#  - traced: build/refserver under `tokentrace record --port`, driven by
#    build/loadgen (PROBE_REQUESTS streamed requests, default 200);
#  - filtered out: a process that is not traced doing PROBE_WRITES 64-byte
#    write()s to /dev/null (default 200000), where every program must leave
#    at the tgid lookup.
# Also the wall time per write() of that process with and without the probes
# attached: the cost of the tracepoint hook itself, which run_time_ns does
# not include. Needs root; prints why and skips otherwise. Runs after the
# sections above; BENCH_PROBE=0 skips it.

# "name run_time_ns run_cnt" of the newest loaded program of each name
probe_stats() {
	bpftool prog show --json | python3 -c '
import json, sys
newest = {}
for p in json.load(sys.stdin):
    n = p.get("name", "")
    if n.startswith(("enter_", "exit_", "ssl_", "on_")):
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

# wall ns per write() of PROBE_WRITES 64-byte writes to /dev/null
probe_write_ns() {
	python3 -c '
import os, sys, time
n = int(sys.argv[1]); fd = os.open("/dev/null", os.O_WRONLY); b = b"x" * 64
t = time.monotonic_ns()
for _ in range(n): os.write(fd, b)
print("%.0f" % ((time.monotonic_ns() - t) / n))' "$1"
}

bench_probe_cost() {
	section "probe cost (socket tracing)"
	if [ "$(id -u)" != 0 ]; then
		echo "skipped: needs root to load eBPF programs"
		return 0
	fi
	need "$B/tokentrace" "$B/refserver" "$B/loadgen"
	reqs=${PROBE_REQUESTS:-200}
	writes=${PROBE_WRITES:-200000}
	old_stats=$(sysctl -n kernel.bpf_stats_enabled)
	sysctl -qw kernel.bpf_stats_enabled=1
	bare_ns=$(probe_write_ns "$writes")

	"$B/refserver" --port 0 --port-file "$TMP/probe.port" \
		>"$TMP/probe.srv" 2>&1 &
	SERVER_PID=$!
	i=0
	while [ ! -s "$TMP/probe.port" ] && [ $i -lt 100 ]; do
		sleep 0.1; i=$((i + 1))
	done
	port=$(cat "$TMP/probe.port")
	"$B/tokentrace" record --port "$port" -o "$TMP/probe.jsonl" \
		2>"$TMP/probe.err" &
	tracer=$!
	i=0
	while ! grep -q "tracing" "$TMP/probe.err" && [ $i -lt 150 ]; do
		sleep 0.1; i=$((i + 1))
	done

	probe_stats >"$TMP/probe.s0"
	"$B/loadgen" --url "http://127.0.0.1:$port" --concurrency 4 \
		--requests "$reqs" --stream --max-tokens 16 --quiet \
		--out "$TMP/probe.lg" || echo "bench: loadgen failed" >&2
	probe_stats >"$TMP/probe.s1"
	traced_ns=$(probe_write_ns "$writes")
	probe_stats >"$TMP/probe.s2"

	echo "while a traced refserver served $reqs streamed requests" \
		"(its syscalls, and the untraced client's and host's):"
	probe_delta "$TMP/probe.s0" "$TMP/probe.s1"
	echo "process not traced ($writes writes of 64 bytes to /dev/null):"
	probe_delta "$TMP/probe.s1" "$TMP/probe.s2" | grep -E "_write |_close " || true
	echo "write() wall time of that process: ${bare_ns} ns without probes," \
		"${traced_ns} ns with them attached"

	kill -INT "$tracer" 2>/dev/null || true
	wait "$tracer" 2>/dev/null || true
	grep -E "lost events" "$TMP/probe.err" | sed 's/^tokentrace: /tracer: /' || true
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
	sysctl -qw kernel.bpf_stats_enabled="$old_stats"
}

if [ "${BENCH_PROBE:-1}" != 0 ]; then
	bench_probe_cost
fi
# ==== END probe cost ===========================================================
