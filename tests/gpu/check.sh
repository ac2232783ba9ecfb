#!/bin/sh
# check.sh - the GPU check of libtokentrace_cupti.so, in one shot.
#
# In:  a machine with an NVIDIA GPU, its driver and the CUDA toolkit
#      (CUDA_HOME, default /usr/local/cuda); run from anywhere as
#      `sh tests/gpu/check.sh`. Optional env: OUT (a folder to copy the
#      results into), LOAD_SECONDS (default 12), CONCURRENCY (default 8),
#      CHECK_SKIP_BUILD=1 (use what build/ holds; for dry runs).
# Out: one line per check, "PASS name: numbers" or "FAIL name: numbers"
#      ("SKIP" when a check cannot run, with why), a final SUMMARY line,
#      and the recorded trace files under tests/data/gpu-STAMP/ (and $OUT).
#      Exit 0 when nothing failed, 1 otherwise.
# Assumes: POSIX sh, coreutils timeout, the project's binaries, python3
#      when present (checks needing it are SKIPped without it). Every
#      command has a timeout and every process started here is stopped
#      here (each server runs in its own process group). About 5 minutes
#      after the build.
#
# What runs:
#   1. make CUDA=1 all; nvidia-smi.
#   2. cuptiprobe (tests/gpu/cuptiprobe.cu): exactly known kernels, copies,
#      memsets and graph launches under the library -> exact record counts,
#      launching thread, zero drops; again with TOKENTRACE_CUPTI_GRAPHS=graph.
#   3. refserver --device cuda + loadgen, three times: without the
#      library (baseline throughput), with it writing a record file, with
#      it sending to a socket (tests/gpu/cuptidump as the collector).
#      The records are checked against the server's truth log: kernels
#      inside step windows, kernel time per step vs the step's gpu_ns
#      (within 5%), zero drops, throughput ratio with/without library.
#   4. `tokentrace run` if it exists: its summary must show a GPU device.

set -u

SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/../.." || { echo "FAIL setup: cannot cd to the repo"; exit 1; }

# Copy everything printed into $OUT/check.log as well.
if [ -n "${OUT:-}" ] && [ -z "${TT_CHECK_TEED:-}" ]; then
	mkdir -p "$OUT"
	TT_CHECK_TEED=1 sh "$SELF" "$@" > "$OUT/check.log" 2>&1 &
	child=$!
	tail -n +1 -f "$OUT/check.log" --pid="$child" 2>/dev/null
	wait "$child"
	exit $?
fi

ROOT=$(pwd)
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/ttgpu.XXXXXX)
DATA="tests/data/gpu-$STAMP"
LIB="$ROOT/build/libtokentrace_cupti.so"
LOAD_SECONDS=${LOAD_SECONDS:-12}
CONCURRENCY=${CONCURRENCY:-8}
NPASS=0
NFAIL=0
NSKIP=0
SPID=""
SRC=""
DPID=""
PY=""
command -v python3 >/dev/null 2>&1 && PY=python3

pass() { echo "PASS $*"; NPASS=$((NPASS + 1)); }
fail() { echo "FAIL $*"; NFAIL=$((NFAIL + 1)); }
skip() { echo "SKIP $*"; NSKIP=$((NSKIP + 1)); }
note() { echo "---- $*"; }
# T SECONDS CMD...: run with a hard limit (TERM, then KILL 5 s later).
T() { t=$1; shift; timeout -k 5 "$t" "$@"; }

# Stop the server group started by start_server; never leaves it behind.
stop_server() {
	[ -n "$SPID" ] || return 0
	kill -TERM "$SPID" 2>/dev/null
	i=0
	while kill -0 "$SPID" 2>/dev/null && [ $i -lt 40 ]; do
		sleep 0.5; i=$((i + 1))
	done
	if kill -0 "$SPID" 2>/dev/null; then
		echo "---- server $SPID ignored SIGTERM for 20 s: killing its group"
		kill -KILL -- "-$SPID" 2>/dev/null || kill -KILL "$SPID" 2>/dev/null
	fi
	wait "$SPID" 2>/dev/null
	SRC=$?
	SPID=""
	return 0
}

cleanup() {
	stop_server
	[ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'echo "---- interrupted"; exit 1' INT TERM

# start_server LABEL [VAR=VALUE...] -- CMD...: background, own group;
# sets SPID and PORT (from --port-file LABEL.port, waited for 90 s).
start_server() {
	label=$1; shift
	rm -f "$WORK/$label.port"
	env "$@" > "$WORK/$label.server.log" 2>&1 &
	SPID=$!
	i=0
	PORT=""
	while [ $i -lt 180 ]; do
		if [ -s "$WORK/$label.port" ]; then
			PORT=$(cat "$WORK/$label.port"); break
		fi
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.5; i=$((i + 1))
	done
	if [ -z "$PORT" ]; then
		echo "---- $label: server did not come up; its log:"
		tail -n 30 "$WORK/$label.server.log"
		stop_server
		return 1
	fi
	echo "---- $label: server pid $SPID on port $PORT"
	return 0
}

SETSID=""
command -v setsid >/dev/null 2>&1 && SETSID=setsid

# refserver_cmd LABEL: the server command line, port and truth per label;
# split into words on purpose (paths here hold no spaces: mktemp, $ROOT).
refserver_cmd() {
	echo "$SETSID $ROOT/build/refserver --device cuda --port 0 --port-file $WORK/$1.port --truth $WORK/$1.truth.jsonl --max-batch 16"
}

# run_load LABEL: drive the server at $PORT for LOAD_SECONDS.
run_load() {
	T $((LOAD_SECONDS + 90)) "$ROOT/build/loadgen" \
		--url "http://127.0.0.1:$PORT/v1/completions" \
		--concurrency "$CONCURRENCY" --duration "$LOAD_SECONDS" \
		--prompt-len 32-256 --max-tokens 16-64 --stream --seed 7 \
		--allow-errors --out "$WORK/$1.load.jsonl" > "$WORK/$1.load.log" 2>&1
	rc=$?
	tail -n 5 "$WORK/$1.load.log"
	n=$(count '"status":200' "$WORK/$1.load.jsonl")
	echo "---- $1: loadgen exit $rc, $n requests with status 200"
	[ "$n" -gt 0 ]
}

# count_kind FILE KIND: intervals of that kind in cuptidump output.
count_kind() { count "\"kind\":\"$2\"" "$1"; }
# count PATTERN FILE: matching lines, 0 when none or no file.
count() { c=$(grep -c -- "$1" "$2" 2>/dev/null); echo "${c:-0}"; }

# last_losses FILE FIELD: the last cumulative value of a losses field.
last_losses() {
	v=$(grep '"type":"losses"' "$1" 2>/dev/null | tail -n 1 |
	    sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p")
	echo "${v:-missing}"
}

echo "==== tokentrace GPU check $STAMP in $ROOT (work dir $WORK)"
uname -a
date -u

# ---- 1. build and device -----------------------------------------------

if [ "${CHECK_SKIP_BUILD:-0}" = 1 ]; then
	skip "build: CHECK_SKIP_BUILD=1"
else
	note "make CUDA=1 all (log in $WORK/build.log)"
	T 420 make CUDA=1 all > "$WORK/build.log" 2>&1
	rc=$?
	tail -n 15 "$WORK/build.log"
	if [ $rc -eq 0 ]; then pass "build: make CUDA=1 all exit 0"
	else fail "build: make CUDA=1 all exit $rc (see above)"; fi
fi
for f in build/refserver build/loadgen build/libtokentrace_cupti.so; do
	[ -e "$f" ] || fail "build: $f missing"
done
if [ -e "$LIB" ]; then
	exported=$(nm -D --defined-only "$LIB" 2>/dev/null | awk '$2 == "T" {print $3}' | tr '\n' ' ')
	if [ "$exported" = "InitializeInjection " ]; then
		pass "library_exports: only InitializeInjection"
	else
		fail "library_exports: exports '$exported'"
	fi
fi

note "nvidia-smi"
if T 30 nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,utilization.gpu --format=csv; then
	pass "nvidia_smi: driver answers"
else
	fail "nvidia_smi: no answer (no driver or no GPU); the GPU checks below will fail"
fi

note "helpers: cuptidump (collector receiver) and cuptiprobe"
T 120 gcc -O2 -Wall -Wextra -std=gnu11 -D_GNU_SOURCE -Iinclude \
	tests/gpu/cuptidump.c user/cuptirecv.c -o "$WORK/cuptidump" &&
	pass "cuptidump built" || fail "cuptidump did not build"
T 300 "$CUDA_HOME/bin/nvcc" -O2 -o "$WORK/cuptiprobe" tests/gpu/cuptiprobe.cu &&
	pass "cuptiprobe built" || fail "cuptiprobe did not build"

# ---- 2. exact counts with the probe ---------------------------------------

# probe LABEL [VAR=VALUE...]: run cuptiprobe under the library to a file.
probe() {
	label=$1; shift
	rec="$WORK/$label.records.bin"
	T 120 env CUDA_INJECTION64_PATH="$LIB" TOKENTRACE_CUPTI_FILE="$rec" "$@" \
		"$WORK/cuptiprobe" 300 25 > "$WORK/$label.out" 2> "$WORK/$label.err"
	rc=$?
	cat "$WORK/$label.out"; tail -n 5 "$WORK/$label.err"
	T 60 "$WORK/cuptidump" "$rec" > "$WORK/$label.records.jsonl"
	drc=$?
	tail -n 1 "$WORK/$label.records.jsonl"
	[ $rc -eq 0 ] && [ $drc -eq 0 ]
}

expect_eq() { # NAME GOT WANT
	if [ "$2" = "$3" ]; then pass "$1: $2 (expected $3)"
	else fail "$1: $2 (expected $3)"; fi
}

if [ -x "$WORK/cuptiprobe" ] && [ -x "$WORK/cuptidump" ]; then
	note "cuptiprobe: 300 kernels/copies/memsets + 25 graph launches of 3 kernels"
	if probe probe; then pass "probe_run: exit 0, records decode cleanly"
	else fail "probe_run: probe or decode failed"; fi
	J="$WORK/probe.records.jsonl"
	expect_eq probe_kernels "$(count_kind "$J" kernel)" 375
	expect_eq probe_copies "$(count_kind "$J" memcpy)" 300
	expect_eq probe_memsets "$(count_kind "$J" memset)" 300
	expect_eq probe_cupti_dropped "$(last_losses "$J" cupti_dropped)" 0
	expect_eq probe_lib_dropped "$(last_losses "$J" lib_dropped)" 0
	echo "---- zero_timestamps: $(last_losses "$J" zero_timestamps)"
	tid=$(sed -n 's/.*"tid":\([0-9]*\).*/\1/p' "$WORK/probe.out")
	ktid=$(grep '"kind":"kernel"' "$J" | grep -c "\"tid\":${tid:-x},")
	ktid=${ktid:-0}
	expect_eq probe_launching_tid "$ktid" 375
	grep -q '"type":"device"' "$J" && pass "probe_device_record: $(grep '"type":"device"' "$J" | head -n 1)" ||
		fail "probe_device_record: none"

	note "cuptiprobe with TOKENTRACE_CUPTI_GRAPHS=graph"
	if probe probe_graph TOKENTRACE_CUPTI_GRAPHS=graph; then
		pass "probe_graph_run: exit 0"
	else fail "probe_graph_run: failed"; fi
	J="$WORK/probe_graph.records.jsonl"
	expect_eq probe_graph_kernels "$(count_kind "$J" kernel)" 300
	expect_eq probe_graph_records "$(count_kind "$J" graph)" 25

	note "library with no destination: must not disturb the program"
	T 120 env CUDA_INJECTION64_PATH="$LIB" "$WORK/cuptiprobe" 50 2 \
		> "$WORK/probe_nodest.out" 2> "$WORK/probe_nodest.err"
	rc=$?
	head -n 5 "$WORK/probe_nodest.err"
	expect_eq probe_without_destination_exit "$rc" 0
else
	skip "probe checks: cuptiprobe or cuptidump missing"
fi

# ---- 3. the reference server ---------------------------------------------

checker() { # LABEL RECORDS_JSONL [extra args]
	label=$1; rec=$2; shift 2
	if [ -z "$PY" ]; then
		skip "$label checks needing python3 (windows, gpu_ns, throughput): no python3"
		expect_eq "${label}_lib_dropped" "$(last_losses "$rec" lib_dropped)" 0
		expect_eq "${label}_cupti_dropped" "$(last_losses "$rec" cupti_dropped)" 0
		return
	fi
	T 300 $PY tests/gpu/check_trace.py --records "$rec" "$@" > "$WORK/$label.check" 2>&1
	sed "s/^\(PASS\|FAIL\) /\1 ${label}:/" "$WORK/$label.check"
	NPASS=$((NPASS + $(count '^PASS' "$WORK/$label.check")))
	NFAIL=$((NFAIL + $(count '^FAIL' "$WORK/$label.check")))
	[ -s "$WORK/$label.check" ] || fail "$label: checker printed nothing"
}

if [ -x build/refserver ] && [ -x build/loadgen ]; then
	note "refserver without the library (baseline)"
	if start_server base $(refserver_cmd base); then
		run_load base && pass "base_load: requests served" || fail "base_load: no request served"
		stop_server
		echo "---- base: server exit $SRC"
	else
		fail "base_server: refserver --device cuda did not start"
	fi

	note "refserver under the library, records to a file"
	if start_server lib CUDA_INJECTION64_PATH="$LIB" \
	    TOKENTRACE_CUPTI_FILE="$WORK/lib.records.bin" $(refserver_cmd lib); then
		run_load lib && pass "lib_load: requests served" || fail "lib_load: no request served"
		stop_server
		expect_eq lib_server_exit "$SRC" 0
		grep 'libtokentrace_cupti' "$WORK/lib.server.log" | head -n 5
		T 120 "$WORK/cuptidump" "$WORK/lib.records.bin" > "$WORK/lib.records.jsonl"
		echo "---- lib: cuptidump exit $?; $(tail -n 1 "$WORK/lib.records.jsonl")"
		checker lib "$WORK/lib.records.jsonl" --truth "$WORK/lib.truth.jsonl" \
			--load-base "$WORK/base.load.jsonl" --load-lib "$WORK/lib.load.jsonl"
	else
		fail "lib_server: refserver did not start under the library"
	fi

	note "refserver under the library, records to a socket (cuptidump listening)"
	SOCK="$WORK/cupti.sock"
	SOCK_UP=0
	"$WORK/cuptidump" --listen "$SOCK" --out "$WORK/sock.records.jsonl" &
	DPID=$!
	sleep 0.5
	if start_server sock CUDA_INJECTION64_PATH="$LIB" \
	    TOKENTRACE_CUPTI_SOCKET="$SOCK" $(refserver_cmd sock); then
		SOCK_UP=1
		run_load sock && pass "sock_load: requests served" || fail "sock_load: no request served"
		stop_server
		expect_eq sock_server_exit "$SRC" 0
	else
		fail "sock_server: refserver did not start under the library"
	fi
	sleep 1
	kill -TERM "$DPID" 2>/dev/null
	T 15 sh -c "while kill -0 $DPID 2>/dev/null; do sleep 0.2; done"
	wait "$DPID" 2>/dev/null
	echo "---- sock: cuptidump exit $?; $(tail -n 1 "$WORK/sock.records.jsonl" 2>/dev/null)"
	DPID=""
	[ $SOCK_UP = 1 ] &&
		checker sock "$WORK/sock.records.jsonl" --truth "$WORK/sock.truth.jsonl"
else
	skip "refserver checks: build/refserver or build/loadgen missing"
fi

# ---- 4. tokentrace run, when it exists ----------------------------------

if [ -x build/tokentrace ] && T 10 build/tokentrace run --help > /dev/null 2>&1; then
	note "tokentrace run -- refserver"
	if start_server tt $SETSID "$ROOT/build/tokentrace" run \
	    --summary "$WORK/tt.summary.json" -o "$WORK/tt.trace.tt" -- \
	    "$ROOT/build/refserver" --device cuda --port 0 \
	    --port-file "$WORK/tt.port" --truth "$WORK/tt.truth.jsonl"; then
		run_load tt && pass "tt_load: requests served" || fail "tt_load: no request served"
		stop_server
		echo "---- tt: tokentrace exit $SRC"
		tail -n 10 "$WORK/tt.server.log"
		if [ -n "$PY" ] && [ -s "$WORK/tt.summary.json" ]; then
			T 30 $PY - "$WORK/tt.summary.json" "$WORK/tt.truth.jsonl" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
gpus = [d for d in s.get("devices", []) if d.get("kind") == "gpu"]
truth = sum(json.loads(l).get("gpu_ns", 0) for l in open(sys.argv[2])
            if '"type":"step"' in l)
busy = sum(d.get("busy_ns", 0) for d in gpus)
ok = bool(gpus) and busy > 0
print("%s tt_summary_gpu: %d gpu devices, busy %.3f ms, truth gpu_ns %.3f ms, losses %s"
      % ("PASS" if ok else "FAIL", len(gpus), busy / 1e6, truth / 1e6,
         json.dumps(s.get("losses"))))
EOF
		else
			skip "tt_summary_gpu: no summary file or no python3"
		fi
		# The trace read back: the report conserves device time exactly.
		if [ -s "$WORK/tt.trace.tt" ] &&
		    T 60 build/tokentrace report "$WORK/tt.trace.tt" \
		    --format json -o "$WORK/tt.report.json"; then
			pass "tt_trace_report: the recorded trace reports"
		else
			fail "tt_trace_report: tokentrace report on the trace failed"
		fi
	else
		fail "tt_server: tokentrace run did not bring the server up"
	fi
else
	skip "tokentrace run: build/tokentrace run --help does not work yet"
fi

# ---- 5. keep the trace ---------------------------------------------------

note "saving results to $DATA"
mkdir -p "$DATA"
for f in "$WORK"/*; do
	case "$f" in
	*/cuptidump|*/cuptiprobe|*.sock|*.port) continue ;;
	esac
	[ -f "$f" ] || continue
	size=$(wc -c < "$f")
	if [ "$size" -gt 1048576 ] && command -v gzip > /dev/null 2>&1; then
		gzip -c "$f" > "$DATA/$(basename "$f").gz"
	else
		cp "$f" "$DATA/"
	fi
done
if [ -n "${OUT:-}" ]; then
	mkdir -p "$OUT/data" && cp -r "$DATA"/. "$OUT/data/"
fi
ls -la "$DATA"
echo "SUMMARY pass=$NPASS fail=$NFAIL skip=$NSKIP (results in $DATA)"
rm -rf "$WORK"
[ "$NFAIL" -eq 0 ]
