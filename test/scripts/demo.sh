#!/usr/bin/env bash
# demo.sh VIGIL: run the example manifests on the private containerd in the
# foreground. Ctrl-C (or SIGTERM) stops vigil, which removes the pods it made
# (pods.removeOnExit in configs/demo.yaml); the private containerd keeps
# running for the next demo or test (stop it with: make containerd-down).
set -euo pipefail
vigil=${1:?usage: demo.sh VIGIL}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

cat <<'MSG'
Vigil demo: the examples in configs/examples (Deployments web x2 and api,
their Services and an Ingress for host localhost) on a private containerd.

Try, in another terminal:
  curl -H 'Host: localhost' http://127.0.0.1:8080/        # a web pod
  curl -H 'Host: localhost' http://127.0.0.1:8080/api     # the api pod
  curl http://127.0.0.1:10249/pods                        # v1.PodList
  curl http://127.0.0.1:10249/events                      # v1.EventList
  curl http://127.0.0.1:10249/metrics                     # Prometheus
  open http://127.0.0.1:10249/ in a browser               # live status page
  bin/vigil get pods -o wide                              # kubectl-like table
Make a pod fail its liveness probe and watch it restart:
  curl -X POST http://127.0.0.1:<host port>/control/fail  # port: vigil get pods -o wide

Press Ctrl-C to stop; the demo's pods are removed.
MSG

"$vigil" run --config configs/demo.yaml --manifests configs/examples &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
# wait returns early when a trapped signal arrives: wait again for the exit.
while kill -0 "$pid" 2>/dev/null; do
	wait "$pid" || true
done
