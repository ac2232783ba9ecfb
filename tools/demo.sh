#!/bin/sh
# make demo: the reference inference server under `tokentrace run`, driven by
# the load generator with three tenants, then tokentrace's report of what it
# saw, and the client's own view of the same run to compare with.
#
# Needs root (eBPF). Everything lands in a fresh directory under /tmp that
# the script names at the end.
set -eu

B=${BUILD:-build}
DEMO_REQUESTS=${DEMO_REQUESTS:-200}
DEMO_CONCURRENCY=${DEMO_CONCURRENCY:-8}

if [ "$(id -u)" -ne 0 ]; then
	echo "make demo: tracing needs root (eBPF); run it as root" >&2
	exit 3
fi

dir=$(mktemp -d /tmp/tokentrace-demo.XXXXXX)
run_pid=""
cleanup() {
	[ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "== tokentrace demo (files in $dir)"
echo "== starting the reference server under tokentrace run"
"$B/tokentrace" run --compute auto --summary "$dir/report.json" \
	-o "$dir/trace.tt" -- \
	"$B/refserver" --port 0 --port-file "$dir/port" \
	--truth "$dir/truth.jsonl" --max-batch 16 \
	2>"$dir/tokentrace.log" &
run_pid=$!

i=0
while [ ! -s "$dir/port" ]; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$run_pid" 2>/dev/null; then
		echo "make demo: the server did not start; see $dir/tokentrace.log:" >&2
		cat "$dir/tokentrace.log" >&2
		exit 1
	fi
	sleep 0.1
done
port=$(cat "$dir/port")

echo "== load: $DEMO_REQUESTS streamed requests, concurrency $DEMO_CONCURRENCY, tenants acme:3 globex:2 initech:1"
"$B/loadgen" --url "http://127.0.0.1:$port/v1/completions" \
	--concurrency "$DEMO_CONCURRENCY" --requests "$DEMO_REQUESTS" --stream \
	--tenants acme:3,globex:2,initech:1 --prompt-len 16-256 \
	--max-tokens 8-64 --out "$dir/client.jsonl"

echo "== stopping the server"
kill -INT "$run_pid"
wait "$run_pid" || true
run_pid=""

echo
echo "== tokentrace's report (from the trace file, as 'tokentrace report' shows it)"
if [ -s "$dir/trace.tt" ]; then
	"$B/tokentrace" report "$dir/trace.tt"
else
	cat "$dir/tokentrace.log"
fi
echo
echo "files: $dir/{trace.tt,report.json,truth.jsonl,client.jsonl}"
