#!/usr/bin/env bash
# Benchmark vigil's ingress proxy against nginx as the same reverse proxy,
# with a direct-to-backend baseline, all in one run on 127.0.0.1.
#
# Fairness: each proxy gets the same workers on the same cores: by default one
# (nginx worker_processes 1, vigil GOMAXPROCS=1) pinned with taskset to CPU
# $PROXY_CPU, while the backend and wrk share CPU $LOAD_CPU. Both proxies keep connections to the backend alive
# (nginx upstream keepalive, vigil's idle pool), serve unlimited requests per
# client connection, log no access and add X-Forwarded-For/-Host/-Proto.
# Besides wrk's requests/s and latency, the script reports each proxy's CPU
# time per request (user+sys over the measured interval, from /proc): on a
# shared 2-core machine it is the steadier figure.
#
# Environment (defaults in brackets):
#   PROXY_BENCH_PORT_BASE [18080]  backend, vigil, nginx on base, +1, +2
#   DURATION [10s]  WARMUP [2s]  CONNECTIONS [32]  THREADS [1]
#   ROUNDS [1]      runs of vigil and nginx, interleaved
#   PROXY_CPU [0]   LOAD_CPU [1]   taskset CPU lists, e.g. PROXY_CPU=0,1
#   WORKERS [1]     nginx worker_processes and vigil's GOMAXPROCS
#   BODY_SIZE [1024] response bytes
#   CPUPROFILE      when set, vigil writes a CPU profile of its run there
#   OUT             directory for logs and binaries [a new temporary one]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

base=${PROXY_BENCH_PORT_BASE:-18080}
duration=${DURATION:-10s}
warmup=${WARMUP:-2s}
conns=${CONNECTIONS:-32}
threads=${THREADS:-1}
rounds=${ROUNDS:-1}
proxy_cpu=${PROXY_CPU:-0}
load_cpu=${LOAD_CPU:-1}
workers=${WORKERS:-1}
body_size=${BODY_SIZE:-1024}
out=${OUT:-$(mktemp -d /tmp/proxy-bench.XXXXXX)}
mkdir -p "$out"

backend_addr=127.0.0.1:$base
vigil_addr=127.0.0.1:$((base + 1))
nginx_addr=127.0.0.1:$((base + 2))

log() { printf '%s\n' "$*" >&2; }

# install_missing installs the Debian packages whose command is absent.
install_missing() {
	local pkgs=()
	command -v wrk >/dev/null || pkgs+=(wrk)
	command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
	((${#pkgs[@]} == 0)) && return
	log "installing ${pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT

# wait_http waits up to 10 s for a 200 from addr.
wait_http() {
	local addr=$1 i
	for ((i = 0; i < 100; i++)); do
		if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$addr/" 2>/dev/null) == 200 ]]; then
			return 0
		fi
		sleep 0.1
	done
	log "no 200 from $addr within 10s"
	return 1
}

# cpu_ticks prints the user+sys clock ticks of the processes listed.
cpu_ticks() {
	local pid sum=0
	for pid in ${1//,/ }; do
		sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$sum"
}

# to_ms converts a wrk duration (850.00us, 1.20ms, 2.00s) to milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000
		printf "%.3f", n
	}'
}

# measure runs wrk against addr and prints "rps p50_ms p99_ms cpu_us_per_req";
# pid lists the processes whose CPU is counted, comma-separated ("-": none).
measure() {
	local name=$1 addr=$2 pid=$3 file=$out/wrk-$1-$4.txt t0=0 t1=0
	taskset -c "$load_cpu" wrk -t"$threads" -c"$conns" -d"$warmup" "http://$addr/" >/dev/null
	[[ $pid != - ]] && t0=$(cpu_ticks "$pid")
	taskset -c "$load_cpu" wrk -t"$threads" -c"$conns" -d"$duration" --latency "http://$addr/" >"$file"
	[[ $pid != - ]] && t1=$(cpu_ticks "$pid")
	if grep -q -e 'Non-2xx' -e 'Socket errors' "$file"; then
		log "$name: wrk saw errors:"
		cat "$file" >&2
	fi
	local rps p50 p99 reqs
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$file")
	reqs=$(awk '/requests in/ {print $1}' "$file")
	p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
	p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
	local cpu=-
	if [[ $pid != - ]]; then
		cpu=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" \
			'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
	fi
	echo "$rps $p50 $p99 $cpu"
}

install_missing

log "building into $out"
(cd "$root" && go build -o "$out/backend" ./test/bench/proxy/backend &&
	go build -o "$out/vigilproxy" ./test/bench/proxy/vigilproxy)

cat >"$out/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $out/nginx.pid;
error_log $out/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $out/nginx-body;
	proxy_temp_path $out/nginx-proxy;
	fastcgi_temp_path $out/nginx-fastcgi;
	uwsgi_temp_path $out/nginx-uwsgi;
	scgi_temp_path $out/nginx-scgi;
	keepalive_requests 1000000;
	keepalive_timeout 120s;
	upstream backend {
		server $backend_addr;
		keepalive 1024;
		keepalive_requests 1000000;
		keepalive_timeout 60s;
	}
	server {
		listen $nginx_addr;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$http_host;
			proxy_set_header X-Forwarded-For \$remote_addr;
			proxy_set_header X-Forwarded-Host \$http_host;
			proxy_set_header X-Forwarded-Proto \$scheme;
		}
	}
}
EOF

GOMAXPROCS=1 taskset -c "$load_cpu" "$out/backend" -addr "$backend_addr" -size "$body_size" \
	2>"$out/backend.log" &
pids+=($!)
profile=()
[[ -n ${CPUPROFILE:-} ]] && profile=(-cpuprofile "$CPUPROFILE")
GOMAXPROCS=$workers taskset -c "$proxy_cpu" "$out/vigilproxy" -listen "$vigil_addr" \
	-upstream "$backend_addr" "${profile[@]}" 2>"$out/vigil.log" &
vigil_pid=$!
pids+=($vigil_pid)
taskset -c "$proxy_cpu" nginx -c "$out/nginx.conf" -p "$out" 2>"$out/nginx.log" &
nginx_pid=$!
pids+=($nginx_pid)

wait_http "$backend_addr"
wait_http "$vigil_addr"
wait_http "$nginx_addr"
# A 200 from a port that another program holds would measure that program.
for pid in "${pids[@]}"; do
	if ! kill -0 "$pid" 2>/dev/null; then
		log "a server exited at start (port in use?); logs in $out"
		exit 1
	fi
done
# With daemon off the master stays in the foreground and forks the workers;
# theirs is the CPU that counts.
nginx_workers=$(pgrep -P "$nginx_pid" | paste -sd,)

log "wrk -t$threads -c$conns, ${warmup} warm-up + ${duration} each; proxies with $workers" \
	"worker(s) on CPU $proxy_cpu, backend and wrk on CPU $load_cpu; $body_size-byte responses"
printf '%-8s %5s %10s %9s %9s %12s\n' target round req/s p50_ms p99_ms cpu_us/req
read -r d_rps d_p50 d_p99 _ < <(measure direct "$backend_addr" - 1)
printf '%-8s %5s %10s %9s %9s %12s\n' direct 1 "$d_rps" "$d_p50" "$d_p99" -
sum() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }
v_rps=0 v_p50=0 v_p99=0 v_cpu=0 n_rps=0 n_p50=0 n_p99=0 n_cpu=0
for ((r = 1; r <= rounds; r++)); do
	read -r rps p50 p99 cpu < <(measure vigil "$vigil_addr" "$vigil_pid" "$r")
	printf '%-8s %5s %10s %9s %9s %12s\n' vigil "$r" "$rps" "$p50" "$p99" "$cpu"
	v_rps=$(sum "$v_rps" "$rps") v_p50=$(sum "$v_p50" "$p50") v_p99=$(sum "$v_p99" "$p99")
	v_cpu=$(sum "$v_cpu" "$cpu")
	read -r rps p50 p99 cpu < <(measure nginx "$nginx_addr" "$nginx_workers" "$r")
	printf '%-8s %5s %10s %9s %9s %12s\n' nginx "$r" "$rps" "$p50" "$p99" "$cpu"
	n_rps=$(sum "$n_rps" "$rps") n_p50=$(sum "$n_p50" "$p50") n_p99=$(sum "$n_p99" "$p99")
	n_cpu=$(sum "$n_cpu" "$cpu")
done

awk -v vr="$v_rps" -v nr="$n_rps" -v v50="$v_p50" -v n50="$n_p50" -v v99="$v_p99" \
	-v n99="$n_p99" -v vc="$v_cpu" -v nc="$n_cpu" -v k="$rounds" 'BEGIN {
	printf "mean over %d round(s): vigil %.0f req/s p50 %.3f ms p99 %.3f ms %.1f us/req;", \
		k, vr / k, v50 / k, v99 / k, vc / k
	printf " nginx %.0f req/s p50 %.3f ms p99 %.3f ms %.1f us/req\n", nr / k, n50 / k, n99 / k, nc / k
	printf "vigil/nginx: req/s %.2f, p50 %.2f, p99 %.2f (%+.3f ms), cpu/req %.2f\n", \
		vr / nr, v50 / n50, v99 / n99, (v99 - n99) / k, vc / nc
}'
log "logs and wrk output in $out"
