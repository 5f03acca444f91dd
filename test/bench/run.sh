#!/usr/bin/env bash
# run.sh: vigil's benchmarks in sequence, each under its own time bound, then
# a summary of their figures. `make bench` runs it after `build` and
# `containerd-up`.
#
#   probes   test/bench/probes: PROBE_TARGETS HTTP targets on loopback at a
#            1 s period for 60 s; probes/s, CPU per 1,000 probes, lateness,
#            TIME_WAIT
#   restart  test/bench/restart: RESTARTS liveness restarts of the test app on
#            the private containerd; latency from the failing probe result to
#            the new instance passing readiness, with a per-step breakdown
#   proxy    test/bench/proxy/run.sh when present: vigil's proxy against nginx
#
# Environment (defaults in brackets):
#   BENCH_ONLY             benchmarks to run, space or comma separated
#                          [probes restart proxy]
#   PROBE_TARGETS [10000]  PROBE_DURATION [60s]  PROBE_MODE [reuse]
#   RESTARTS [20]          RESTART_PERIOD [20ms]  (liveness/readiness period)
#   PROXY_ROUNDS [4]       interleaved vigil/nginx rounds of 10 s; one round
#                          on a shared VM swings by 10%, their mean much less
#   VIGIL_BENCH_PORT_BASE  first host port the benchmarks may use; the restart
#                          bench takes base..base+9, the proxy bench base+10..
#                          [$VIGIL_E2E_PORT_BASE, else 20900]
#   VIGIL_CRI_ENDPOINT, VIGIL_CONTAINERD_ADDRESS  [the private containerd's]
#   OUT [build/bench]      logs and binaries
#
# The figures depend on the machine and on what else runs on it; the summary
# says what each run was given.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GO=${GO:-go}
out=${OUT:-$root/build/bench}
only=${BENCH_ONLY:-probes restart proxy}
only=${only//,/ }
ctr_sock=${CTR_DIR:-/var/lib/vigil-test/containerd}/containerd.sock
export VIGIL_CRI_ENDPOINT=${VIGIL_CRI_ENDPOINT:-unix://$ctr_sock}
export VIGIL_CONTAINERD_ADDRESS=${VIGIL_CONTAINERD_ADDRESS:-$ctr_sock}
port_base=${VIGIL_BENCH_PORT_BASE:-${VIGIL_E2E_PORT_BASE:-20900}}
probe_targets=${PROBE_TARGETS:-10000}
probe_duration=${PROBE_DURATION:-60s}
probe_mode=${PROBE_MODE:-reuse}
restarts=${RESTARTS:-20}
restart_period=${RESTART_PERIOD:-20ms}

mkdir -p "$out"
log() { printf 'bench: %s\n' "$*" >&2; }

for b in $only; do
	case $b in
	probes | restart | proxy) ;;
	*) log "unknown benchmark '$b' in BENCH_ONLY (want probes, restart, proxy)"; exit 2 ;;
	esac
done
wanted() { [[ " $only " == *" $1 "* ]]; }

declare -A status=()

# bounded NAME SECONDS CMD...: runs CMD under a time limit, its output both
# shown and kept in $out/NAME.log, and records how it ended.
bounded() {
	local name=$1 limit=$2
	shift 2
	log "$name: $* (at most ${limit}s)"
	local start=$SECONDS rc
	timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.log"
	rc=${PIPESTATUS[0]}
	case $rc in
	0) status[$name]="ok in $((SECONDS - start))s" ;;
	124 | 137) status[$name]="TIMED OUT after ${limit}s" ;;
	*) status[$name]="FAILED (exit $rc) after $((SECONDS - start))s" ;;
	esac
	log "$name: ${status[$name]}"
}

# Build first, so compile time does not count against the bounds.
if wanted probes || wanted restart; then
	log "building the benchmark programs into $out"
	(cd "$root" && "$GO" build -o "$out/probes-bench" ./test/bench/probes &&
		"$GO" build -o "$out/restart-bench" ./test/bench/restart) || { log "build failed"; exit 1; }
fi

if wanted probes; then
	# 60 s measured plus the warm-up, the children's start and the teardown.
	bounded probes 180 "$out/probes-bench" -targets "$probe_targets" -period 1s \
		-duration "$probe_duration" -mode "$probe_mode"
fi

if wanted restart; then
	bounded restart 240 "$out/restart-bench" -restarts "$restarts" -period "$restart_period" \
		-ports "$port_base-$((port_base + 9))" -endpoint "$VIGIL_CRI_ENDPOINT" \
		-containerd "$VIGIL_CONTAINERD_ADDRESS"
fi

if wanted proxy; then
	if [[ -x $root/test/bench/proxy/run.sh ]]; then
		PROXY_BENCH_PORT_BASE=$((port_base + 10)) OUT="$out/proxy" \
			ROUNDS=${PROXY_ROUNDS:-4} bounded proxy 240 "$root/test/bench/proxy/run.sh"
	else
		status[proxy]="skipped: test/bench/proxy/run.sh is not there"
		log "proxy: ${status[proxy]}"
	fi
fi

# The summary repeats each benchmark's own result lines.
echo
echo "==================== benchmark summary ===================="
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
for b in $only; do
	echo
	echo "--- $b: ${status[$b]:-not run}"
	[[ -f $out/$b.log && ${status[$b]:-} != skipped* ]] || continue
	case $b in
	probes)
		grep -E '^(mode=|probes:|prober CPU|lateness:|memory at end|TIME_WAIT at end)' "$out/probes.log"
		;;
	restart)
		grep -E '^config:' "$out/restart.log"
		sed -n '/^restart latency over/,/^RESULT/p' "$out/restart.log"
		;;
	proxy)
		tail -n 25 "$out/proxy.log"
		;;
	esac
done
echo
echo "full logs in $out"

for b in $only; do
	[[ ${status[$b]:-} == ok* || ${status[$b]:-} == skipped* ]] || exit 1
done
