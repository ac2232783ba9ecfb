#!/bin/sh
# fuzz.sh - runs the libFuzzer targets built by `make fuzz-build`, one after
# another, each for SECONDS.
#
# In:  fuzz.sh SECONDS TARGET... (targets by name: http sse api ...); the
#      binaries build/fuzz/fuzz_TARGET and the seeds tests/fuzz/corpus/TARGET.
#      FUZZ_RUNS=N instead runs each target for exactly N inputs from a
#      fixed seed, starting from the checked-in seeds alone (`make test`'s
#      smoke run: every seed replayed, then mutations from seed 1 whatever
#      an earlier campaign found; libFuzzer's coverage feedback can still
#      steer them a little differently from run to run, and an input that
#      fails there is a real bug, saved; SECONDS is then ignored).
# Out: one line per target with runs, exec/s and coverage; new inputs kept
#      in build/fuzz/corpus/TARGET (the seeds are only read; with FUZZ_RUNS
#      in a folder removed afterwards); a crash saved as
#      build/fuzz/crashes/TARGET-crash-*, its log as
#      build/fuzz/logs/TARGET.log. Exit status 1 if any target failed.
# Assumes: run from the repository root; one target at a time, since the
#      machine is shared.
set -u

if [ $# -lt 2 ]; then
	echo "usage: tools/fuzz.sh SECONDS TARGET..." >&2
	exit 2
fi
secs=$1
shift
failed=""
for t in "$@"; do
	bin=build/fuzz/fuzz_$t
	if [ ! -x "$bin" ]; then
		echo "fuzz: no $bin: build it with make fuzz-build" >&2
		failed="$failed $t"
		continue
	fi
	mkdir -p "build/fuzz/corpus/$t" build/fuzz/crashes build/fuzz/logs
	log=build/fuzz/logs/$t.log
	if [ -n "${FUZZ_RUNS:-}" ]; then
		scratch=$(mktemp -d build/fuzz/smoke.XXXXXX)
		"$bin" -runs="$FUZZ_RUNS" -seed=1 -timeout=10 \
			-rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix="build/fuzz/crashes/$t-" \
			"$scratch" "tests/fuzz/corpus/$t" >"$log" 2>&1
		rc=$?
		rm -rf "$scratch"
	else
		"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 \
			-artifact_prefix="build/fuzz/crashes/$t-" \
			"build/fuzz/corpus/$t" "tests/fuzz/corpus/$t" \
			>"$log" 2>&1
		rc=$?
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
	if [ $rc -ne 0 ]; then
		echo "fuzz: $t FAILED (exit $rc) after ${runs:-?} runs;" \
			"log $log:"
		grep -E 'ERROR|fuzz check|SUMMARY|Test unit written' "$log" |
			head -n 8 | awk '{ print }'
		failed="$failed $t"
	else
		echo "fuzz: $t ok: ${FUZZ_RUNS:+fixed seed, }${runs:-?} runs," \
			"${eps:-?} exec/s, ${cov:-cov ?}"
	fi
done
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed (reproduce: build/fuzz/fuzz_TARGET FILE)" >&2
	exit 1
fi
echo "fuzz: all $# targets ok"
