#!/bin/sh
# soak.sh - a long run of `tokentrace record` on a busy reference server
# (`make soak`): does the collector's memory stay flat and its fds fixed?
#
# In:  the binaries in build/ (run from anywhere). Environment:
#        SOAK_SECONDS        how long to drive load (default 1800)
#        SOAK_SLICE          seconds per loadgen run (default 5)
#        SOAK_CONCURRENCY    loadgen workers (default 8)
#        SOAK_RSS_GROWTH_KB  allowed RSS growth over the second half
#                            (default 8192)
# Out: figures on stdout: requests, req/s, the collector's RSS and open
#      fds at start, middle and end, one line a minute while it runs, a
#      `soak-result key=value ...` line last (tests/e2e/test_soak.c reads
#      it); exit 0 when memory and fds stayed flat and no request failed,
#      1 when not, 2 when it could not run (not root, missing binaries).
# Assumes: root (eBPF); loopback TCP; nothing else heavy running.
#
# The load turns through five kinds of traffic, one loadgen run each:
# streams on keep-alive connections; streams with a new connection each
# (--close: connection churn); non-streamed requests on keep-alive; streams
# cut by the client after their first token (--cancel-frac 0.3); and both
# churn and cuts. The server sends streams chunked (keep-alive, as uvicorn
# does). The collector's VmRSS (/proc/PID/status) and fd count
# (/proc/PID/fd) are sampled each second. "Flat" means: the highest RSS of
# the second half is at most SOAK_RSS_GROWTH_KB above the RSS at the middle,
# and the fd count at the end is no higher than at the middle, each taken
# as the lowest of three samples in a row: the collector opens a /proc
# file or folder now and then (finding the server behind --port), and a
# sample that falls on that moment is one fd higher without anything
# leaking, while a leak raises every sample.
set -eu

cd "$(dirname "$0")/.."
B=build
SECS=${SOAK_SECONDS:-1800}
SLICE=${SOAK_SLICE:-5}
CONC=${SOAK_CONCURRENCY:-8}
BOUND_KB=${SOAK_RSS_GROWTH_KB:-8192}
TMP=$(mktemp -d /tmp/tt-soak-XXXXXX)
SERVER_PID=""
REC_PID=""
LG_PID=""

stop_pid() {
	if [ -n "$1" ]; then
		kill "-$2" "$1" 2>/dev/null || true
		wait "$1" 2>/dev/null || true
	fi
}

cleanup() {
	stop_pid "$LG_PID" TERM
	stop_pid "$REC_PID" KILL
	stop_pid "$SERVER_PID" TERM
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
	echo "soak: needs root to load eBPF programs (run it with sudo)" >&2
	exit 2
fi
for f in "$B/tokentrace" "$B/refserver" "$B/loadgen"; do
	if [ ! -x "$f" ]; then
		echo "soak: $f missing: run make first" >&2
		exit 2
	fi
done

now_s() {
	awk '{ printf "%d\n", $1 }' /proc/uptime
}

# "rss_kb fds" of the collector
sample() {
	rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$REC_PID/status" \
		2>/dev/null || echo 0)
	fds=$(find "/proc/$REC_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null |
		wc -l)
	echo "${rss:-0} $fds"
}

wait_file() {
	i=0
	while [ ! -s "$1" ]; do
		i=$((i + 1))
		if [ $i -gt 400 ]; then
			echo "soak: $2 did not start:" >&2
			cat "$3" >&2
			exit 2
		fi
		sleep 0.05
	done
}

"$B/refserver" --host 127.0.0.1 --port 0 --port-file "$TMP/port" \
	--chunked --max-batch 32 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
wait_file "$TMP/port" refserver "$TMP/server.log"
PORT=$(cat "$TMP/port")

"$B/tokentrace" record --port "$PORT" -o "$TMP/soak.tt" \
	>"$TMP/rec.out" 2>"$TMP/rec.err" &
REC_PID=$!
i=0
until grep -q "tracing 1 process" "$TMP/rec.err" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 400 ] || ! kill -0 "$REC_PID" 2>/dev/null; then
		echo "soak: tokentrace record did not start:" >&2
		cat "$TMP/rec.err" >&2
		exit 2
	fi
	sleep 0.05
done

echo "soak: $SECS s of load on build/refserver --chunked --max-batch 32" \
	"(port $PORT), traced by: $B/tokentrace record --port $PORT -o FILE"
echo "soak: loadgen --concurrency $CONC --duration $SLICE per run, turning" \
	"through: stream keep-alive, stream --close, no stream, stream" \
	"--cancel-frac 0.3, stream --close --cancel-frac 0.3"

# loadgen flags of traffic kind k (0-4)
mode_flags() {
	case $1 in
	0) echo "--stream" ;;
	1) echo "--stream --close" ;;
	2) echo "" ;;
	3) echo "--stream --cancel-frac 0.3" ;;
	*) echo "--stream --close --cancel-frac 0.3" ;;
	esac
}

: >"$TMP/samples"
start=$(now_s)
ok=0 failed=0 cancelled=0 run=0 last_print=$start
while :; do
	t=$(($(now_s) - start))
	[ "$t" -ge "$SECS" ] && break
	left=$((SECS - t))
	dur=$SLICE
	[ "$left" -lt "$dur" ] && dur=$left
	mode=$(mode_flags $((run % 5)))
	run=$((run + 1))
	# shellcheck disable=SC2086
	"$B/loadgen" --url "http://127.0.0.1:$PORT/v1/completions" \
		--concurrency "$CONC" --duration "$dur" --prompt-len 16-64 \
		--max-tokens 4-16 --tenants a:2,b:1,c:1 --seed "$run" \
		--allow-errors --timeout 30 $mode >"$TMP/lg.out" 2>&1 &
	LG_PID=$!
	while kill -0 "$LG_PID" 2>/dev/null; do
		echo "$(($(now_s) - start)) $(sample)" >>"$TMP/samples"
		sleep 1
	done
	wait "$LG_PID" || true
	LG_PID=""
	counts=$(awk '/^requests:/ { print $2, $4, ($6 == "" ? 0 : $6) }' \
		"$TMP/lg.out")
	# shellcheck disable=SC2086
	set -- $counts 0 0 0
	ok=$((ok + $1)) failed=$((failed + $2)) cancelled=$((cancelled + $3))
	if [ $(($(now_s) - last_print)) -ge 60 ]; then
		last_print=$(now_s)
		echo "soak: $(($(now_s) - start)) s: $((ok + cancelled))" \
			"requests; collector RSS kB and fds: $(sample)"
	fi
done
elapsed=$(($(now_s) - start))
[ "$elapsed" -gt 0 ] || elapsed=1
echo "$elapsed $(sample)" >>"$TMP/samples"

kill -INT "$REC_PID"
rec_rc=0
wait "$REC_PID" || rec_rc=$?
REC_PID=""
recorded=$(awk '/request\(s\) recorded/ { print $2; exit }' "$TMP/rec.err")
trace_bytes=$(wc -c <"$TMP/soak.tt")
report_rc=0
"$B/tokentrace" report "$TMP/soak.tt" --format json >"$TMP/report.json" \
	2>"$TMP/report.err" || report_rc=$?

# start, middle (first sample at or past half time), end, and the highest
# RSS and fd count from the middle on; fds also as the lowest of the three
# samples from the middle and of the last three
awk -v half="$((elapsed / 2))" -v reqs="$((ok + cancelled + failed))" \
	-v el="$elapsed" -v ok="$ok" -v can="$cancelled" -v fl="$failed" \
	-v rec="${recorded:-0}" -v recrc="$rec_rc" -v reprc="$report_rc" \
	-v tb="$trace_bytes" -v bound="$BOUND_KB" '
	NR == 1 { rs = $2; fs = $3 }
	!mid && $1 >= half { mid = 1; rm = $2; fm = $3; fmlow = $3 }
	mid { if ($2 > rmax) rmax = $2; if ($3 > fmax) fmax = $3
	      if (++nmid <= 3 && $3 < fmlow) fmlow = $3 }
	{ re = $2; fe = $3; f3 = f2; f2 = f1; f1 = $3 }
	END {
		printf "soak: %d requests in %d s: %.1f req/s (%d ok, %d " \
		       "cancelled by the client, %d failed)\n", reqs, el,
		       reqs / el, ok, can, fl
		printf "soak: collector RSS start %d kB, middle %d kB, end %d " \
		       "kB, highest in the second half %d kB (+%d kB; bound " \
		       "%d kB)\n", rs, rm, re, rmax, rmax - rm, bound
		felow = f1
		if (f2 != "" && f2 < felow) felow = f2
		if (f3 != "" && f3 < felow) felow = f3
		printf "soak: collector fds start %d, middle %d, end %d, " \
		       "highest in the second half %d; lowest of three " \
		       "samples: middle %d, end %d\n", fs, fm, fe, fmax, fmlow,
		       felow
		printf "soak: %d requests recorded, trace %d bytes (%.0f " \
		       "bytes/request); record exit %d, report exit %d\n",
		       rec, tb, rec ? tb / rec : 0, recrc, reprc
		flat = rmax - rm <= bound && felow <= fmlow
		good = flat && fl == 0 && recrc == 0 && reprc == 0
		printf "soak-result requests=%d seconds=%d req_s=%.1f ok=%d " \
		       "cancelled=%d failed=%d recorded=%d rss_start_kb=%d " \
		       "rss_mid_kb=%d rss_end_kb=%d rss_max2_kb=%d " \
		       "fds_start=%d fds_mid=%d fds_end=%d fds_max2=%d " \
		       "fds_mid_low=%d fds_end_low=%d " \
		       "record_exit=%d report_exit=%d trace_bytes=%d " \
		       "verdict=%s\n", reqs, el, reqs / el, ok, can, fl, rec,
		       rs, rm, re, rmax, fs, fm, fe, fmax, fmlow, felow, recrc,
		       reprc, tb, good ? "flat" : "GREW"
		exit good ? 0 : 1
	}' "$TMP/samples"
