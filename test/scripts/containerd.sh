#!/usr/bin/env bash
# containerd.sh install|up|down|stop|restart|env|status: a private containerd + runc CRI
# endpoint for vigil's tests and demo.
#
# Everything lives under CTR_DIR (default /var/lib/vigil-test/containerd):
# config.toml, root/, state/, runc/ (runc's state), containerd.sock,
# containerd.pid and containerd.log.
#
#   install  apt-get install containerd and runc when they are missing.
#   up       start the daemon unless it already answers, then import
#            IMAGES_DIR/*.tar (default build/images) into namespace k8s.io.
#   down     stop and remove every pod sandbox, stop the daemon, remove the
#            empty cgroup directories left under CGROUP_PARENT.
#   stop     stop the daemon only: pods keep running under their shims and
#            the next up or restart finds them again (tests use it to take
#            containerd away from a running vigil).
#   restart  stop then start the daemon, keeping its pods and images.
#   env      print the VIGIL_* variables the integration tests read.
#   status   exit 0 when the daemon answers.
#
# Pods should use a cgroup_parent under /vigil (CGROUP_PARENT): containerd
# does not remove a pod's cgroup_parent directories, and `down` cleans there.
set -euo pipefail

CTR_DIR=${CTR_DIR:-/var/lib/vigil-test/containerd}
SOCK=$CTR_DIR/containerd.sock
PIDFILE=$CTR_DIR/containerd.pid
LOG=$CTR_DIR/containerd.log
CONFIG=$CTR_DIR/config.toml
NS=k8s.io
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGES_DIR=${IMAGES_DIR:-$ROOT_DIR/build/images}
CGROUP_PARENT=${CGROUP_PARENT:-/vigil}
GO=${GO:-go}

log() { echo "containerd.sh: $*" >&2; }

install() {
	if command -v containerd >/dev/null && command -v runc >/dev/null &&
		command -v ctr >/dev/null && command -v containerd-shim-runc-v2 >/dev/null; then
		return
	fi
	log "installing containerd and runc"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends containerd runc >/dev/null
}

# answering: the daemon at SOCK answers a version request.
answering() {
	[[ -S $SOCK ]] || return 1
	timeout 5 ctr -a "$SOCK" version >/dev/null 2>&1
}

# daemon_pid prints the pid of this instance's containerd: the one in PIDFILE
# when that process is ours, else one found by its command line (the pid file
# may be stale or lost).
daemon_pid() {
	local pid d
	if [[ -f $PIDFILE ]]; then
		pid=$(<"$PIDFILE")
		if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid"; then
			echo "$pid"
			return
		fi
	fi
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		if is_ours "$pid"; then
			echo "$pid" >"$PIDFILE"
			echo "$pid"
			return
		fi
	done
	return 1
}

# is_ours PID: the process is containerd running with this instance's config.
is_ours() {
	local cmd
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ $cmd == "containerd --config $CONFIG " ]]
}

write_config() {
	mkdir -p "$CTR_DIR"/{root,state,runc,opt,cni/bin,cni/conf}
	cat >"$CONFIG.tmp" <<EOF
# Written by test/scripts/containerd.sh; changes are overwritten by "up".
version = 2
root = "$CTR_DIR/root"
state = "$CTR_DIR/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTR_DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/vigil-pause:latest"
  # root here lacks CAP_SYS_RESOURCE: without this, runc fails every sandbox.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc keeps its state apart from any other containerd on the host.
        Root = "$CTR_DIR/runc"

  # Host-network pods need no CNI; these folders stay empty.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CTR_DIR/cni/bin"
    conf_dir = "$CTR_DIR/cni/conf"
EOF
	mv "$CONFIG.tmp" "$CONFIG"
}

start_daemon() {
	local pid i
	write_config
	rm -f "$SOCK" "$SOCK.ttrpc"
	log "starting containerd (log: $LOG)"
	setsid containerd --config "$CONFIG" >>"$LOG" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$PIDFILE"
	for ((i = 0; i < 100; i++)); do # 10 s
		if answering; then
			log "containerd $pid answers on $SOCK"
			return
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			log "containerd exited; last log lines:"
			tail -n 20 "$LOG" >&2
			return 1
		fi
		sleep 0.1
	done
	log "containerd did not answer within 10s; last log lines:"
	tail -n 20 "$LOG" >&2
	return 1
}

import_images() {
	local f out
	shopt -s nullglob
	local files=("$IMAGES_DIR"/*.tar)
	shopt -u nullglob
	if ((${#files[@]} == 0)); then
		log "no image archives in $IMAGES_DIR (run: make images)"
		return
	fi
	for f in "${files[@]}"; do
		out=$(ctr -a "$SOCK" -n "$NS" images import --snapshotter overlayfs "$f" 2>&1) || {
			echo "$out" >&2
			return 1
		}
		log "imported $(basename "$f")"
	done
	out=$(ctr -a "$SOCK" -n "$NS" images ls -q)
	if ! grep -qx 'localhost/vigil-pause:latest' <<<"$out"; then
		log "warning: sandbox image localhost/vigil-pause:latest is missing"
	fi
}

up() {
	install
	if ! answering; then
		local pid
		if pid=$(daemon_pid); then
			log "containerd $pid runs but does not answer; restarting it"
			stop_daemon
		fi
		start_daemon
	fi
	import_images
}

# our_shims lists the pids of runc shims serving this instance.
our_shims() {
	local d cmd
	for d in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
		if [[ $cmd == *containerd-shim*"-address $SOCK "* ]]; then
			echo "${d#/proc/}"
		fi
	done
}

remove_pods() {
	local bin=$CTR_DIR/crireset
	(cd "$ROOT_DIR" && CGO_ENABLED=0 "$GO" build -o "$bin" ./test/tools/crireset)
	"$bin" -endpoint "unix://$SOCK" -timeout 60s

	# Containers made outside the CRI (e.g. with ctr) in this private
	# instance have shims too.
	local ids id
	ids=$(ctr -a "$SOCK" -n "$NS" containers ls -q)
	for id in $ids; do
		timeout 20 ctr -a "$SOCK" -n "$NS" tasks delete --force "$id" >/dev/null 2>&1 || true
		ctr -a "$SOCK" -n "$NS" containers delete "$id" >/dev/null 2>&1 ||
			log "warning: could not delete container $id"
	done
}

stop_daemon() {
	local pid i
	pid=$(daemon_pid) || {
		rm -f "$PIDFILE"
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do # 10 s
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "containerd $pid ignored SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"
	log "stopped containerd $pid"
}

# clean_cgroups removes empty cgroup directories under CGROUP_PARENT, deepest
# first; rmdir refuses the ones still in use.
clean_cgroups() {
	local ctl dir
	for ctl in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		dir=${ctl%/}$CGROUP_PARENT
		[[ -d $dir ]] || continue
		find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
}

down() {
	[[ -d $CTR_DIR ]] || return 0
	if ! answering; then
		local shims
		shims=$(our_shims)
		if [[ -n $shims && -f $CONFIG ]]; then
			# Only the daemon can stop its pods cleanly: bring it back for that.
			log "shims of this instance outlived the daemon; restarting it to clean up"
			stop_daemon
			start_daemon
		fi
	fi
	if answering; then
		remove_pods || log "warning: could not remove every pod sandbox"
	fi
	stop_daemon
	clean_cgroups
}

print_env() {
	echo "export VIGIL_CRI_ENDPOINT=unix://$SOCK"
	echo "export VIGIL_CONTAINERD_ADDRESS=$SOCK"
	echo "export VIGIL_IMAGES_DIR=$IMAGES_DIR"
	echo "export VIGIL_CTR_DIR=$CTR_DIR"
}

case ${1:-} in
install) install ;;
up) up ;;
down) down ;;
stop) stop_daemon ;;
restart)
	stop_daemon
	start_daemon
	;;
env) print_env ;;
status) answering ;;
*)
	echo "usage: $0 install|up|down|stop|restart|env|status" >&2
	exit 2
	;;
esac
