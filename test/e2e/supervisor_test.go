package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
)

// Restart supervision end to end: crash-loop backoff, restart policies, a
// vigil killed in the middle of a restart, a containerd restart, a rolling
// image change, manifest edits while running and image import. Backoff is
// shortened in each vigil's config so the schedules play out in seconds.
// The testapp's EXIT_AFTER and EXIT_CODE make a container end by itself.

// appSpec describes one workload of the test app for appManifest.
type appSpec struct {
	kind          string // Deployment (default) or Pod
	name          string
	replicas      int // Deployments only; default 1
	restartPolicy corev1.RestartPolicy
	image         string            // default localhost/vigil-testapp:latest
	env           map[string]string // besides POD_NAME and CONTAINER_NAME
	liveness      bool              // GET /health every second from 1s on, one failure kills
	readiness     bool              // GET /health every second
	service       bool              // a Service and an Ingress for host NAME.test
}

// appManifest renders s as YAML; every pod has one container "app" on port
// 8080 named http.
func appManifest(s appSpec) string {
	image := s.image
	if image == "" {
		image = "localhost/vigil-testapp:latest"
	}
	var env strings.Builder
	keys := make([]string, 0, len(s.env))
	for k := range s.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&env, "    - {name: %s, value: %q}\n", k, s.env[k])
	}
	container := fmt.Sprintf(`containers:
  - name: app
    image: %s
    ports: [{name: http, containerPort: 8080}]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - {name: CONTAINER_NAME, value: app}
%s`, image, env.String())
	if s.liveness {
		container += `    livenessProbe:
      httpGet: {path: /health, port: http}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 1
`
	}
	if s.readiness {
		container += `    readinessProbe:
      httpGet: {path: /health, port: http}
      periodSeconds: 1
      failureThreshold: 1
`
	}
	policy := s.restartPolicy
	if policy == "" {
		policy = corev1.RestartPolicyAlways
	}
	podSpec := fmt.Sprintf("restartPolicy: %s\nterminationGracePeriodSeconds: 2\n%s", policy, container)

	var out string
	if s.kind == "Pod" {
		out = fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {app: %[1]s}
spec:
%s`, s.name, indent(podSpec, "  "))
	} else {
		replicas := s.replicas
		if replicas == 0 {
			replicas = 1
		}
		out = fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
spec:
  replicas: %d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
%[3]s`, s.name, replicas, indent(podSpec, "      "))
	}
	if s.service {
		out += fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata:
  name: %s
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: %[1]s
spec:
  rules:
    - host: %[1]s.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: %[1]s, port: {number: 80}}}}
`, s.name)
	}
	return out
}

// fastBackoff is vigil config for a crash-loop backoff of initial, doubling
// to max.
func fastBackoff(initial, max time.Duration) string {
	return fmt.Sprintf("backoff:\n  initial: %s\n  max: %s\n", initial, max)
}

// instance is one container instance as the CRI reported it.
type instance struct {
	id                string
	pod               string
	created           time.Time
	started, finished time.Time
	exitCode          int32
	restartCount      int           // io.kubernetes.container.restartCount
	backoff           time.Duration // vigil.dev/backoff: what its exit waits
	state             cri.ContainerState
}

// instanceTracker polls the CRI for the containers vigil runs in a namespace
// and remembers every instance it saw, also those vigil has since removed
// (it keeps only the newest two per container).
type instanceTracker struct {
	t  *testing.T
	rt *runtime.CRI
	ns string

	mu   sync.Mutex
	seen map[string]*instance
}

func newInstanceTracker(t *testing.T, e env, ns string) *instanceTracker {
	return &instanceTracker{t: t, rt: criClient(t, e), ns: ns,
		seen: map[string]*instance{}}
}

// poll reads the current containers once.
func (tr *instanceTracker) poll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := tr.rt.ListContainers(ctx, &cri.ContainerFilter{
		LabelSelector: map[string]string{runtime.LabelPodNamespace: tr.ns},
	})
	if err != nil {
		tr.t.Logf("list containers: %v", err)
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range list {
		pod := c.Labels[runtime.LabelPodName]
		in := tr.seen[c.Id]
		if in != nil && in.state == cri.ContainerState_CONTAINER_EXITED {
			continue
		}
		st, err := tr.rt.ContainerStatus(ctx, c.Id)
		if err != nil {
			continue // removed meanwhile
		}
		if in == nil {
			in = &instance{id: c.Id, pod: pod, created: time.Unix(0, c.CreatedAt)}
			in.restartCount, _ = strconv.Atoi(c.Annotations["io.kubernetes.container.restartCount"])
			in.backoff, _ = time.ParseDuration(c.Annotations["vigil.dev/backoff"])
			tr.seen[c.Id] = in
		}
		in.state = st.State
		if st.StartedAt > 0 {
			in.started = time.Unix(0, st.StartedAt)
		}
		if st.FinishedAt > 0 {
			in.finished = time.Unix(0, st.FinishedAt)
		}
		in.exitCode = st.ExitCode
	}
}

// instances returns the instances of pods named with prefix, oldest first.
func (tr *instanceTracker) instances(prefix string) []instance {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []instance
	for _, in := range tr.seen {
		if strings.HasPrefix(in.pod, prefix) {
			out = append(out, *in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].created.Before(out[j].created) })
	return out
}

// overlaps lists the instances of pod that started before the one created
// before them had finished: two copies running at once. It goes by the
// runtime's start and finish times rather than by states listed together,
// since the CRI may still list an instance as running for a moment after
// its exit event, when vigil has rightly started the next one.
func (tr *instanceTracker) overlaps(pod string) []string {
	ins := tr.instances(pod)
	var out []string
	unknown := 0
	for i := 1; i < len(ins); i++ {
		prev, next := ins[i-1], ins[i]
		switch {
		case prev.finished.IsZero():
			unknown++
		case !next.started.IsZero() && next.started.Before(prev.finished):
			out = append(out, fmt.Sprintf("%s started at %s, before %s finished at %s", next.id[:12],
				next.started.Format(time.StampMilli), prev.id[:12], prev.finished.Format(time.StampMilli)))
		}
	}
	if unknown > 0 {
		tr.t.Logf("%s: %d of %d instances removed before their finish time was seen", pod, unknown, len(ins))
	}
	return out
}

// 1. A container that exits at once restarts at once, then after initial,
// 2x, 4x ... up to max, measured between the CRI's finish time of one
// instance and the start time of the next. /pods shows CrashLoopBackOff
// while it waits and a BackOff event is recorded.
func TestCrashLoopBackoffDelays(t *testing.T) {
	const ns = "e2e-crashloop"
	const initial, maxDelay = time.Second, 4 * time.Second
	v := newVigil(t, ns, map[string]string{"crash.yaml": appManifest(appSpec{
		name: "crash", env: map[string]string{"EXIT_AFTER": "0", "EXIT_CODE": "7"},
	})}, options{config: fastBackoff(initial, maxDelay)})
	v.start()

	// Delays of the restarts 1..6: immediate, 1s, 2s, 4s, 4s, 4s.
	want := []time.Duration{0, initial, 2 * initial, 4 * initial, maxDelay, maxDelay}
	tr := newInstanceTracker(t, v.env, ns)
	waiting := map[string]string{} // waiting reason -> a message seen with it
	var lastPod corev1.Pod
	v.waitFor(fmt.Sprintf("%d finished restarts", len(want)), 45*time.Second, func() bool {
		tr.poll()
		for _, p := range v.pods() {
			if !strings.HasPrefix(p.Name, "crash-") {
				continue
			}
			lastPod = p
			if w := containerStatus(p, "app").State.Waiting; w != nil {
				waiting[w.Reason] = w.Message
			}
		}
		ins := tr.instances("crash-")
		return len(ins) > len(want) && !ins[len(want)].finished.IsZero()
	})

	ins := tr.instances("crash-")
	for i, d := range want {
		prev, next := ins[i], ins[i+1]
		if prev.exitCode != 7 || prev.finished.IsZero() {
			t.Fatalf("instance %d: exit code %d finished %v, want an exit with 7", i, prev.exitCode, prev.finished)
		}
		if next.restartCount != i+1 {
			t.Errorf("instance %d has restartCount annotation %d, want %d", i+1, next.restartCount, i+1)
		}
		gap := next.started.Sub(prev.finished)
		t.Logf("restart %d: %s after the exit (want %s)", i+1, gap.Round(time.Millisecond), d)
		// Never early; late by at most the time a start takes on a busy host.
		if gap < d-50*time.Millisecond || gap > d+1500*time.Millisecond {
			t.Errorf("restart %d came %s after the exit, want %s", i+1, gap, d)
		}
	}
	if msg, ok := waiting["CrashLoopBackOff"]; !ok {
		t.Errorf("never saw waiting reason CrashLoopBackOff in /pods; saw %v", waiting)
	} else if !strings.Contains(msg, "back-off") || !strings.Contains(msg, "restarting failed container=app") {
		t.Errorf("CrashLoopBackOff message %q does not describe the back-off", msg)
	}
	if !hasEvent(v.events(), "BackOff", "Back-off restarting failed container app") {
		t.Errorf("no BackOff event")
	}
	if rc := containerStatus(lastPod, "app").RestartCount; rc < int32(len(want)) {
		t.Errorf("/pods restartCount %d, want at least %d", rc, len(want))
	}
	if n := len(sandboxes(t, v.env, ns)); n != 1 {
		t.Errorf("%d sandboxes for the crash-looping pod, want 1", n)
	}
}

// 2. Restart policies: exit 0 restarts under Always and completes under
// OnFailure; a failure restarts under OnFailure; under Never neither an exit
// nor a liveness kill restarts.
func TestRestartPolicies(t *testing.T) {
	const ns = "e2e-policy"
	exitSoon := func(code int) map[string]string {
		return map[string]string{"EXIT_AFTER": "1", "EXIT_CODE": strconv.Itoa(code)}
	}
	pods := map[string]appSpec{
		"always-ok":      {kind: "Pod", name: "always-ok", restartPolicy: corev1.RestartPolicyAlways, env: exitSoon(0)},
		"onfailure-ok":   {kind: "Pod", name: "onfailure-ok", restartPolicy: corev1.RestartPolicyOnFailure, env: exitSoon(0)},
		"onfailure-fail": {kind: "Pod", name: "onfailure-fail", restartPolicy: corev1.RestartPolicyOnFailure, env: exitSoon(2)},
		"never-exit":     {kind: "Pod", name: "never-exit", restartPolicy: corev1.RestartPolicyNever, env: exitSoon(3)},
		"never-killed": {kind: "Pod", name: "never-killed", restartPolicy: corev1.RestartPolicyNever,
			env: map[string]string{"FAIL_AFTER": "1"}, liveness: true},
	}
	files := map[string]string{}
	for name, s := range pods {
		files[name+".yaml"] = appManifest(s)
	}
	v := newVigil(t, ns, files, options{config: fastBackoff(time.Second, 2*time.Second)})
	v.start()
	tr := newInstanceTracker(t, v.env, ns)

	status := func(name string) corev1.ContainerStatus {
		p, _ := v.pod(name)
		return containerStatus(p, "app")
	}
	terminated := func(name string) *corev1.ContainerStateTerminated {
		return status(name).State.Terminated
	}
	v.waitFor("every pod to reach its end state", 40*time.Second, func() bool {
		tr.poll()
		return status("always-ok").RestartCount >= 2 &&
			status("onfailure-fail").RestartCount >= 2 &&
			terminated("onfailure-ok") != nil && terminated("never-exit") != nil &&
			terminated("never-killed") != nil
	})

	for name, want := range map[string]int32{"always-ok": 0, "onfailure-fail": 2} {
		last := status(name).LastTerminationState.Terminated
		if last == nil || last.ExitCode != want {
			t.Errorf("%s: lastState.terminated %+v, want exit code %d", name, last, want)
		}
	}
	if term := terminated("onfailure-ok"); term.ExitCode != 0 || term.Reason != "Completed" {
		t.Errorf("onfailure-ok: terminated %+v, want exit 0 Completed", term)
	}
	if term := terminated("never-exit"); term.ExitCode != 3 || term.Reason != "Error" {
		t.Errorf("never-exit: terminated %+v, want exit 3 Error", term)
	}
	if !hasEvent(v.events(), "Killing", "Container app failed liveness probe") {
		t.Errorf("no Killing event for never-killed's liveness failure")
	}
	for name, phase := range map[string]corev1.PodPhase{
		"onfailure-ok": corev1.PodSucceeded, "never-exit": corev1.PodFailed,
	} {
		if p, _ := v.pod(name); p.Status.Phase != phase {
			t.Errorf("%s: phase %s, want %s", name, p.Status.Phase, phase)
		}
	}

	// The ended ones stay down well past the backoff, and the runtime never
	// saw a second instance of them.
	down := []string{"onfailure-ok", "never-exit", "never-killed"}
	v.holdsFor("the ended pods staying down", 4*time.Second, func() bool {
		tr.poll()
		for _, name := range down {
			if cs := status(name); cs.RestartCount != 0 || cs.State.Terminated == nil {
				t.Logf("%s: %+v", name, cs)
				return false
			}
		}
		return true
	})
	for _, name := range down {
		if n := len(tr.instances(name)); n != 1 {
			t.Errorf("%s: the runtime ran %d instances, want 1", name, n)
		}
	}
}

// crictlIDs runs crictl with args (plus -q) and returns the ids it prints.
func crictlIDs(t *testing.T, e env, args ...string) []string {
	t.Helper()
	if e.crictl == "" {
		t.Fatal("VIGIL_CRICTL is not set")
	}
	args = append([]string{"--runtime-endpoint", e.endpoint}, append(args, "-q")...)
	out, err := exec.Command(e.crictl, args...).Output()
	if err != nil {
		t.Fatalf("crictl %v: %v: %s", args, err, out)
	}
	return strings.Fields(string(out))
}

// 3. vigil killed with SIGKILL while a container waits out its backoff, and
// again right after a restart: the next vigil adopts the pod without a
// second sandbox or container, keeps the restart count and the backoff.
func TestKilledVigilAdoptsCrashLoop(t *testing.T) {
	const ns = "e2e-sigkill"
	v := newVigil(t, ns, map[string]string{"crash.yaml": appManifest(appSpec{
		name: "crash", env: map[string]string{"EXIT_AFTER": "0.3", "EXIT_CODE": "1"},
	})}, options{config: fastBackoff(time.Second, 3*time.Second)})
	v.start()
	tr := newInstanceTracker(t, v.env, ns)

	var pod corev1.Pod
	v.waitFor("restartCount 2 and CrashLoopBackOff", 30*time.Second, func() bool {
		tr.poll()
		for _, p := range v.pods() {
			cs := containerStatus(p, "app")
			if strings.HasPrefix(p.Name, "crash-") && cs.RestartCount >= 2 && cs.State.Waiting != nil &&
				cs.State.Waiting.Reason == "CrashLoopBackOff" {
				pod = p
				return true
			}
		}
		return false
	})
	before := containerStatus(pod, "app").RestartCount
	v.stop(syscall.SIGKILL, 10*time.Second)
	killedAt := time.Now()
	tr.poll()
	t.Logf("killed vigil during the backoff at restartCount %d", before)

	checkRuntime := func(when string) {
		t.Helper()
		sbs := crictlIDs(t, v.env, "pods", "--namespace", ns, "--label", "app=crash", "--state", "ready")
		if len(sbs) != 1 {
			t.Fatalf("%s: crictl shows %d ready sandboxes for app=crash, want 1: %v", when, len(sbs), sbs)
		}
		ctrs := crictlIDs(t, v.env, "ps", "-a", "--label", "io.kubernetes.pod.namespace="+ns, "--name", "^app$")
		running := crictlIDs(t, v.env, "ps", "--label", "io.kubernetes.pod.namespace="+ns, "--name", "^app$")
		if len(ctrs) > 2 || len(running) > 1 {
			t.Fatalf("%s: crictl shows %d containers (%d running), want at most 2 (1 running)",
				when, len(ctrs), len(running))
		}
	}
	checkRuntime("after SIGKILL")
	sandbox := crictlIDs(t, v.env, "pods", "--namespace", ns, "--label", "app=crash")

	v.start()
	// The restart count carries on from where it was, never from zero.
	var rc int32
	v.waitFor("restarts to continue after adoption", 30*time.Second, func() bool {
		tr.poll()
		p, ok := v.pod(pod.Name)
		if !ok {
			return false
		}
		rc = containerStatus(p, "app").RestartCount
		if rc < before {
			t.Fatalf("restartCount went back from %d to %d after the restart of vigil", before, rc)
		}
		return rc > before
	})
	// The restart after adoption waited out the backoff vigil had reached:
	// the newest instance before the kill names the delay its exit owes.
	ins := tr.instances("crash-")
	var owed, next *instance
	for i := range ins {
		switch {
		case ins[i].created.Before(killedAt):
			owed = &ins[i]
		case next == nil:
			next = &ins[i]
		}
	}
	if owed == nil || next == nil || owed.backoff == 0 {
		t.Fatalf("cannot find the instances around the kill: %+v / %+v", owed, next)
	}
	if gap := next.started.Sub(owed.finished); gap < owed.backoff-50*time.Millisecond {
		t.Errorf("first restart after adoption came %s after the exit, want the owed back-off %s", gap, owed.backoff)
	} else {
		t.Logf("first restart after adoption: %s after the exit (owed %s)", gap, owed.backoff)
	}
	if next.restartCount != int(before)+1 {
		t.Errorf("first instance after adoption has restartCount %d, want %d", next.restartCount, before+1)
	}
	checkRuntime("after adoption")

	// Kill again right after a restart, while the new instance runs.
	v.waitFor("the next instance to run", 20*time.Second, func() bool {
		p, ok := v.pod(pod.Name)
		cs := containerStatus(p, "app")
		return ok && cs.State.Running != nil && cs.RestartCount > rc
	})
	rc = v.restarts(pod.Name)
	v.stop(syscall.SIGKILL, 10*time.Second)
	checkRuntime("after the second SIGKILL")
	v.start()
	v.waitFor("restarts to continue after the second adoption", 30*time.Second, func() bool {
		tr.poll()
		n := v.restarts(pod.Name)
		if n >= 0 && n < rc {
			t.Fatalf("restartCount went back from %d to %d", rc, n)
		}
		return n > rc
	})
	checkRuntime("after the second adoption")
	if now := crictlIDs(t, v.env, "pods", "--namespace", ns, "--label", "app=crash"); len(now) != 1 ||
		len(sandbox) != 1 || now[0] != sandbox[0] {
		t.Errorf("sandboxes %v after the restarts, want the original %v", now, sandbox)
	}
	if n := len(v.pods()); n != 1 {
		t.Errorf("/pods lists %d pods, want 1", n)
	}
	if o := tr.overlaps(pod.Name); len(o) > 0 {
		t.Errorf("two instances ran at once: %v", o)
	}
}

// 3b. vigil killed with SIGKILL right after it killed a container for its
// liveness probe: the next vigil restarts the container once, in the same
// sandbox, and the count is 1 whichever side of the stop the kill landed.
func TestKilledVigilAfterLivenessKill(t *testing.T) {
	const ns = "e2e-sigkill-live"
	v := newVigil(t, ns, map[string]string{"live.yaml": appManifest(appSpec{
		name: "live", liveness: true, readiness: true,
	})}, options{config: fastBackoff(time.Second, 2*time.Second)})
	v.start()
	pod := v.readyPods("live-", 1, 60*time.Second)[0]
	sandbox := crictlIDs(t, v.env, "pods", "--namespace", ns, "--label", "app=live")

	control(t, hostPort(t, pod, "app", 8080), "/control/fail")
	v.waitFor("the liveness kill", 20*time.Second, func() bool {
		return hasEvent(v.events(), "Killing", "failed liveness probe")
	})
	v.stop(syscall.SIGKILL, 10*time.Second)
	if running := crictlIDs(t, v.env, "ps", "--label", "io.kubernetes.pod.namespace="+ns); len(running) > 1 {
		t.Fatalf("%d containers running after SIGKILL, want at most 1", len(running))
	}

	v.start()
	v.waitFor("the pod ready after one restart", 30*time.Second, func() bool {
		p, ok := v.pod(pod.Name)
		return ok && podReady(p) && containerStatus(p, "app").RestartCount == 1
	})
	v.holdsFor("restartCount staying at 1", 3*time.Second, func() bool {
		return v.restarts(pod.Name) == 1
	})
	if now := crictlIDs(t, v.env, "pods", "--namespace", ns, "--label", "app=live"); len(now) != 1 || now[0] != sandbox[0] {
		t.Errorf("sandboxes %v after the restart of vigil, want the original %v", now, sandbox)
	}
	all := crictlIDs(t, v.env, "ps", "-a", "--label", "io.kubernetes.pod.namespace="+ns)
	running := crictlIDs(t, v.env, "ps", "--label", "io.kubernetes.pod.namespace="+ns)
	if len(all) != 2 || len(running) != 1 {
		t.Errorf("crictl shows %d containers, %d running; want the killed one and its replacement", len(all), len(running))
	}
}

// containerdDir is the directory of the containerd the tests may restart,
// from VIGIL_CTR_DIR (the Makefile sets it to the containerd `make test`
// starts). Without it the test skips: restarting a containerd that others
// use would break their pods' exit events and calls.
func containerdDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VIGIL_CTR_DIR")
	if dir == "" {
		t.Skip("set VIGIL_CTR_DIR to the directory of a containerd this test may restart " +
			"(test/scripts/containerd.sh; make test sets it)")
	}
	return dir
}

// containerdScript runs test/scripts/containerd.sh cmd on the containerd in dir.
func containerdScript(t *testing.T, dir, cmd string) {
	t.Helper()
	c := exec.Command("bash", filepath.Join("..", "scripts", "containerd.sh"), cmd)
	c.Env = append(os.Environ(), "CTR_DIR="+dir)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("containerd.sh %s: %v\n%s", cmd, err, out)
	}
}

// 4. containerd goes down under a running vigil and comes back: vigil keeps
// its pods (no duplicate, none lost), notices an exit that happened while
// the daemon was down, a crash-looping pod carries on with its count, and
// the proxy serves throughout.
func TestContainerdRestart(t *testing.T) {
	const ns = "e2e-ctrd-restart"
	dir := containerdDir(t)
	v := newVigil(t, ns, map[string]string{
		"web.yaml":   appManifest(appSpec{name: "web", replicas: 2, readiness: true, service: true}),
		"crash.yaml": appManifest(appSpec{name: "crash", env: map[string]string{"EXIT_AFTER": "0.5", "EXIT_CODE": "1"}}),
	}, options{config: fastBackoff(time.Second, 2*time.Second)})
	v.start()
	tr := newInstanceTracker(t, v.env, ns)
	before := v.readyPods("web-", 2, 60*time.Second)
	var crash string
	v.waitFor("the crash loop under way", 30*time.Second, func() bool {
		tr.poll()
		for _, p := range v.pods() {
			if strings.HasPrefix(p.Name, "crash-") && containerStatus(p, "app").RestartCount >= 1 {
				crash = p.Name
				return true
			}
		}
		return false
	})
	sbBefore := sandboxes(t, v.env, ns)
	if len(sbBefore) != 3 {
		t.Fatalf("%d sandboxes before the restart, want 3", len(sbBefore))
	}
	crashBefore := v.restarts(crash)

	containerdScript(t, dir, "stop")
	// While the daemon is down the containers keep running under their
	// shims; one of them exits, and no exit event can reach vigil.
	victim := before[0]
	control(t, hostPort(t, victim, "app", 8080), "/control/exit?code=5")
	time.Sleep(time.Second)
	if code, _, err := v.get("web.test", "/"); err != nil || code != 200 {
		t.Errorf("GET via the proxy while containerd is down: %d %v", code, err)
	}
	containerdScript(t, dir, "up")
	back := time.Now()
	v.waitFor("the exit noticed and the pod restarted", 30*time.Second, func() bool {
		return v.restarts(victim.Name) == 1
	})
	t.Logf("exit seen and restarted %s after containerd came back", time.Since(back).Round(time.Millisecond))
	v.waitFor("the crash loop to carry on", 30*time.Second, func() bool {
		tr.poll()
		n := v.restarts(crash)
		if n >= 0 && n < crashBefore {
			t.Fatalf("crash-looping pod's restartCount went back from %d to %d", crashBefore, n)
		}
		return n >= crashBefore+2
	})
	if o := tr.overlaps(crash); len(o) > 0 {
		t.Errorf("two instances of the crash-looping pod ran at once: %v", o)
	}

	p, _ := v.pod(victim.Name)
	if term := containerStatus(p, "app").LastTerminationState.Terminated; term == nil || term.ExitCode != 5 {
		t.Errorf("lastState.terminated %+v, want exit code 5", term)
	}
	after := v.readyPods("web-", 2, 30*time.Second)
	for _, p := range before {
		if _, ok := findPod(after, p.Name); !ok {
			t.Errorf("pod %s lost after the containerd restart; now %v", p.Name, names(after))
		}
	}
	if n := v.restarts(before[1].Name); n != 0 {
		t.Errorf("untouched pod %s restarted %d times", before[1].Name, n)
	}
	sbAfter := sandboxes(t, v.env, ns)
	if len(sbAfter) != 3 {
		t.Fatalf("%d sandboxes after the restart, want the same 3", len(sbAfter))
	}
	ids := map[string]bool{}
	for _, sb := range sbBefore {
		ids[sb.Id] = true
	}
	for _, sb := range sbAfter {
		if !ids[sb.Id] {
			t.Errorf("sandbox %s is new after the containerd restart", sb.Id)
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		code, s, err := v.get("web.test", "/")
		if err != nil || code != 200 {
			t.Fatalf("GET %d via the proxy after the restart: %d %v", i, code, err)
		}
		seen[s.Pod] = true
	}
	if len(seen) != 2 {
		t.Errorf("20 requests reached %v, want both pods", seen)
	}

	// The exit watcher reconnected, and an exit after the restart still
	// restarts the container.
	if !strings.Contains(readLog(t, v), "containerd event stream broke, reconnecting") {
		t.Errorf("vigil's log does not show the event stream reconnecting")
	}
	control(t, hostPort(t, before[1], "app", 8080), "/control/exit?code=6")
	v.waitFor("the second pod restarted", 20*time.Second, func() bool { return v.restarts(before[1].Name) == 1 })
}

func readLog(t *testing.T, v *vigil) string {
	t.Helper()
	data, err := os.ReadFile(v.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// endpointCount is how many ready endpoints /endpoints lists for the Service
// namespace/name.
func (v *vigil) endpointCount(namespace, name string) (int, error) {
	var eps []proxy.ServiceEndpoints
	if err := getJSON("http://"+v.admin+"/endpoints", &eps); err != nil {
		return 0, err
	}
	n := 0
	for _, se := range eps {
		if se.Namespace == namespace && se.Name == name {
			for _, list := range se.Ports {
				n += len(list)
			}
		}
	}
	return n, nil
}

// tagImage gives the image from a second name in the runtime's store and
// removes it when the test ends.
func tagImage(t *testing.T, e env, from, to string) {
	t.Helper()
	if e.containerd == "" {
		t.Fatal("VIGIL_CONTAINERD_ADDRESS is not set")
	}
	ctr := func(args ...string) ([]byte, error) {
		return exec.Command("ctr", append([]string{"-a", e.containerd, "-n", "k8s.io"}, args...)...).CombinedOutput()
	}
	_, _ = ctr("images", "rm", to)
	if out, err := ctr("images", "tag", from, to); err != nil {
		t.Fatalf("ctr images tag %s %s: %v\n%s", from, to, err, out)
	}
	t.Cleanup(func() { _, _ = ctr("images", "rm", to) })
}

// 6. A Deployment's image changes: with maxSurge 1 and maxUnavailable 0 it
// rolls one pod at a time, each new pod Ready before an old one stops;
// /endpoints never shows fewer ready endpoints than replicas, no request
// through the proxy fails and at most replicas+1 pods exist at once.
func TestRollingImageChange(t *testing.T) {
	const ns = "e2e-rollout"
	const v2 = "localhost/vigil-testapp:e2e-rollout-v2"
	const replicas = 2
	tagImage(t, needEnv(t), "localhost/vigil-testapp:latest", v2)
	spec := appSpec{name: "roll", replicas: replicas, readiness: true, service: true}
	v := newVigil(t, ns, map[string]string{"roll.yaml": appManifest(spec)}, options{})
	v.start()
	old := map[string]bool{}
	for _, p := range v.readyPods("roll-", replicas, 60*time.Second) {
		old[p.Name] = true
	}

	spec.image = v2
	v.writeManifest("roll.yaml", withNamespace(appManifest(spec), ns))

	stopping := map[string]int{} // old pod -> first sample showing it terminating or gone
	ready := map[string]int{}    // new pod -> first sample showing it Ready
	samples, mostPods := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for ; ; samples++ {
		if time.Now().After(deadline) {
			t.Fatalf("rollout not done within 60s: %d new pods ready, %d old ones stopping", len(ready), len(stopping))
		}
		n, err := v.endpointCount(ns, "roll")
		if err != nil {
			t.Fatalf("GET /endpoints: %v", err)
		}
		if n < replicas {
			t.Fatalf("sample %d: the Service has %d ready endpoints, want at least %d", samples, n, replicas)
		}
		code, served, err := v.get("roll.test", "/")
		if err != nil || code != 200 {
			t.Fatalf("sample %d: GET via the proxy: %d %v", samples, code, err)
		}
		pods := v.pods()
		mostPods = max(mostPods, len(pods))
		listed := map[string]bool{}
		for _, p := range pods {
			listed[p.Name] = true
			switch {
			case old[p.Name]:
				if _, ok := stopping[p.Name]; !ok && p.DeletionTimestamp != nil {
					stopping[p.Name] = samples
				}
			case podReady(p) && p.DeletionTimestamp == nil:
				if _, ok := ready[p.Name]; !ok {
					ready[p.Name] = samples
					if img := containerStatus(p, "app").Image; img != v2 {
						t.Errorf("new pod %s runs %s, want %s", p.Name, img, v2)
					}
				}
			}
		}
		for name := range old {
			if _, ok := stopping[name]; !ok && !listed[name] {
				stopping[name] = samples
			}
		}
		if len(stopping) > len(ready) {
			t.Fatalf("sample %d: %d old pods stopping but only %d new ones Ready (%v, %v)",
				samples, len(stopping), len(ready), stopping, ready)
		}
		if len(stopping) == replicas && len(ready) == replicas && !old[served.Pod] {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d samples of /endpoints, the proxy and /pods; new pods ready at %v, old ones stopping at %v",
		samples, ready, stopping)
	if mostPods > replicas+1 {
		t.Errorf("%d pods at once during the rollout, want at most %d (maxSurge 1)", mostPods, replicas+1)
	}
	v.waitFor("the old pods removed", 30*time.Second, func() bool {
		return len(v.pods()) == replicas && len(sandboxes(t, v.env, ns)) == replicas
	})
}

// 6b. vigil killed with SIGKILL, the Deployment's template changed while it
// is down, vigil started again: the adopted pods keep serving, are probed
// before the rollout decides anything, and it rolls as it does while vigil
// runs. No old pod stops before a new one is Ready; from the adoption on,
// the Service never has fewer than its replicas' endpoints and no request
// through the proxy fails.
func TestKilledVigilRollsChangedTemplate(t *testing.T) {
	const ns = "e2e-sigkill-roll"
	const replicas = 2
	spec := appSpec{name: "adoptroll", replicas: replicas, readiness: true, service: true,
		env: map[string]string{"VERSION": "1"}}
	v := newVigil(t, ns, map[string]string{"adoptroll.yaml": appManifest(spec)}, options{})
	v.start()
	old := map[string]bool{}
	for _, p := range v.readyPods("adoptroll-", replicas, 60*time.Second) {
		old[p.Name] = true
	}
	v.waitFor("the Service's endpoints", 10*time.Second, func() bool {
		n, err := v.endpointCount(ns, "adoptroll")
		return err == nil && n == replicas
	})
	v.stop(syscall.SIGKILL, 10*time.Second)

	spec.env = map[string]string{"VERSION": "2"}
	v.writeManifest("adoptroll.yaml", withNamespace(appManifest(spec), ns))
	v.start()
	restarted := time.Now()
	// The admin API answers before adoption is done; the samples below
	// take an old pod missing from /pods for one that was removed.
	v.waitFor("the old pods adopted", 10*time.Second, func() bool {
		adopted := 0
		for _, e := range v.events() {
			if e.Reason == "Adopted" && old[e.InvolvedObject.Name] {
				adopted++
			}
		}
		return adopted == replicas
	})
	// Adopted pods keep their endpoints: they are back as soon as the
	// pods' workers have published, long before any probe result.
	v.waitFor("the Service's endpoints after the adoption", time.Second, func() bool {
		n, err := v.endpointCount(ns, "adoptroll")
		return err == nil && n == replicas
	})

	stopping := map[string]int{} // old pod -> first sample showing it terminating or gone
	ready := map[string]int{}    // new pod -> first sample showing it Ready
	serving := -1                // first sample with replicas endpoints after the restart
	early := map[string]int{}    // failed GETs before that sample, by outcome
	samples, mostPods := 0, 0
	deadline := restarted.Add(60 * time.Second)
	for ; ; samples++ {
		if time.Now().After(deadline) {
			t.Fatalf("rollout not done within 60s: %d new pods ready, %d old ones stopping", len(ready), len(stopping))
		}
		n, err := v.endpointCount(ns, "adoptroll")
		if err != nil {
			t.Fatalf("GET /endpoints: %v", err)
		}
		switch {
		case serving < 0 && n >= replicas:
			serving = samples
			t.Logf("the Service has %d endpoints %s after the restart", n, time.Since(restarted).Round(time.Millisecond))
		case serving >= 0 && n < replicas:
			t.Fatalf("sample %d: the Service has %d ready endpoints, want at least %d", samples, n, replicas)
		case serving < 0 && time.Since(restarted) > 10*time.Second:
			t.Fatalf("the Service has %d endpoints 10s after the restart, want %d", n, replicas)
		}
		code, served, err := v.get("adoptroll.test", "/")
		if err != nil || code != 200 {
			if serving >= 0 {
				t.Fatalf("sample %d: GET via the proxy: %d %v", samples, code, err)
			}
			if err != nil {
				early[err.Error()]++
			} else {
				early[strconv.Itoa(code)]++
			}
		}
		pods := v.pods()
		mostPods = max(mostPods, len(pods))
		listed := map[string]bool{}
		for _, p := range pods {
			listed[p.Name] = true
			switch {
			case old[p.Name]:
				if _, ok := stopping[p.Name]; !ok && p.DeletionTimestamp != nil {
					stopping[p.Name] = samples
				}
			case podReady(p) && p.DeletionTimestamp == nil:
				if _, ok := ready[p.Name]; !ok {
					ready[p.Name] = samples
				}
			}
		}
		for name := range old {
			if _, ok := stopping[name]; !ok && !listed[name] {
				stopping[name] = samples
			}
		}
		if len(stopping) > len(ready) {
			t.Fatalf("sample %d: %d old pods stopping but only %d new ones Ready (%v, %v)",
				samples, len(stopping), len(ready), stopping, ready)
		}
		if len(stopping) == replicas && len(ready) == replicas && serving >= 0 && !old[served.Pod] {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d samples; new pods ready at %v, old ones stopping at %v", samples, ready, stopping)
	if len(early) > 0 {
		t.Errorf("failed GETs after the adoption: %v", early)
	}
	if mostPods > replicas+1 {
		t.Errorf("%d pods at once during the rollout, want at most %d (maxSurge 1)", mostPods, replicas+1)
	}
	for _, p := range v.pods() {
		if old[p.Name] {
			continue
		}
		if got := envValue(p, "app", "VERSION"); got != "2" {
			t.Errorf("new pod %s has VERSION=%q, want 2", p.Name, got)
		}
	}
	v.waitFor("the old pods removed", 30*time.Second, func() bool {
		return len(v.pods()) == replicas && len(sandboxes(t, v.env, ns)) == replicas
	})
}

// envValue is the value of the environment variable name in the spec of
// container c of p.
func envValue(p corev1.Pod, c, name string) string {
	for _, ctr := range p.Spec.Containers {
		if ctr.Name != c {
			continue
		}
		for _, e := range ctr.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

// 7. Manifests edited while vigil runs: a new file's pods start, replicas
// scale up and down, a removed file's pods go, and an edit that breaks a
// file is reported by file and field while its pods keep running.
func TestManifestChanges(t *testing.T) {
	const ns = "e2e-manifests"
	keep := appSpec{name: "keep", readiness: true}
	v := newVigil(t, ns, map[string]string{"keep.yaml": appManifest(keep)}, options{})
	v.start()
	kept := v.readyPods("keep-", 1, 60*time.Second)[0]
	sbCount := func(app string) int {
		return len(crictlIDs(t, v.env, "pods", "--namespace", ns, "--label", "app="+app, "--state", "ready"))
	}

	extra := appSpec{name: "extra", readiness: true}
	v.writeManifest("extra.yaml", withNamespace(appManifest(extra), ns))
	v.readyPods("extra-", 1, 30*time.Second)

	extra.replicas = 3
	v.writeManifest("extra.yaml", withNamespace(appManifest(extra), ns))
	three := v.readyPods("extra-", 3, 30*time.Second)
	if n := sbCount("extra"); n != 3 {
		t.Errorf("%d sandboxes after scaling to 3", n)
	}

	extra.replicas = 1
	v.writeManifest("extra.yaml", withNamespace(appManifest(extra), ns))
	v.waitFor("scale down to 1", 30*time.Second, func() bool {
		n := 0
		for _, p := range v.pods() {
			if strings.HasPrefix(p.Name, "extra-") {
				n++
			}
		}
		return n == 1 && sbCount("extra") == 1
	})
	if p := v.readyPods("extra-", 1, 10*time.Second)[0]; !containsPod(three, p.Name) {
		t.Errorf("scale down left %s, not one of the three running pods", p.Name)
	}

	if err := os.Remove(filepath.Join(v.manifests, "extra.yaml")); err != nil {
		t.Fatal(err)
	}
	v.waitFor("the removed file's pods gone", 30*time.Second, func() bool {
		for _, p := range v.pods() {
			if strings.HasPrefix(p.Name, "extra-") {
				return false
			}
		}
		return sbCount("extra") == 0
	})

	// Bad edits: a YAML syntax error, then a negative replica count. Each
	// is reported with the file (and the field) and the running version
	// stays.
	rejected := func(what string, subs ...string) {
		t.Helper()
		v.waitFor(what+" reported", 10*time.Second, func() bool {
			for _, line := range strings.Split(readLog(t, v), "\n") {
				if strings.Contains(line, "manifest rejected, the running version stays") &&
					strings.Contains(line, "keep.yaml") && containsAll(line, subs) {
					return true
				}
			}
			return false
		})
	}
	v.writeManifest("keep.yaml", strings.Replace(withNamespace(appManifest(keep), ns),
		"replicas: 1", "replicas: [1", 1))
	rejected("the syntax error")
	v.writeManifest("keep.yaml", strings.Replace(withNamespace(appManifest(keep), ns),
		"replicas: 1", "replicas: -2", 1))
	rejected("the negative replicas", "spec.replicas")
	v.holdsFor("the kept pod untouched", 3*time.Second, func() bool {
		ps := v.pods()
		p, ok := findPod(ps, kept.Name)
		return ok && len(ps) == 1 && podReady(p) && containerStatus(p, "app").RestartCount == 0
	})
	if n := sbCount("keep"); n != 1 {
		t.Errorf("%d sandboxes for the kept workload, want 1", n)
	}
}

func containsPod(pods []corev1.Pod, name string) bool {
	_, ok := findPod(pods, name)
	return ok
}

// retagArchive copies the OCI archive src to dst with its image named ref
// (the index's org.opencontainers.image.ref.name annotation).
func retagArchive(t *testing.T, src, dst, ref string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	renamed := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", src, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "index.json" {
			var idx map[string]any
			if err := json.Unmarshal(data, &idx); err != nil {
				t.Fatalf("%s: index.json: %v", src, err)
			}
			mans, _ := idx["manifests"].([]any)
			for _, m := range mans {
				if mm, ok := m.(map[string]any); ok {
					mm["annotations"] = map[string]any{"org.opencontainers.image.ref.name": ref}
					renamed++
				}
			}
			if data, err = json.Marshal(idx); err != nil {
				t.Fatal(err)
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if renamed == 0 {
		t.Fatalf("%s has no manifest in its index to rename", src)
	}
}

// 8. `vigil image import FILE` puts an archive into the runtime's store: a
// pod waiting for a missing image starts once it is imported. An archive in
// runtime.imagesDir is imported when vigil starts, before any pod.
func TestImageImport(t *testing.T) {
	const ns = "e2e-import"
	e := needEnv(t)
	imagesDir := os.Getenv("VIGIL_IMAGES_DIR")
	if imagesDir == "" {
		imagesDir = filepath.Join("..", "..", "build", "images")
	}
	stamp := time.Now().UnixNano()
	ref := fmt.Sprintf("localhost/vigil-testapp:e2e-import-%d", stamp)
	atStart := fmt.Sprintf("localhost/vigil-testapp:e2e-imagesdir-%d", stamp)
	archive := filepath.Join(t.TempDir(), "retagged.tar")
	retagArchive(t, filepath.Join(imagesDir, "testapp.tar"), archive, ref)
	startDir := t.TempDir()
	retagArchive(t, filepath.Join(imagesDir, "testapp.tar"), filepath.Join(startDir, "testapp.tar"), atStart)
	t.Cleanup(func() {
		for _, r := range []string{ref, atStart} {
			_ = exec.Command("ctr", "-a", e.containerd, "-n", "k8s.io", "images", "rm", r).Run()
		}
	})

	v := newVigil(t, ns, map[string]string{
		"imp.yaml": appManifest(appSpec{name: "imp", image: ref, readiness: true}),
		"dir.yaml": appManifest(appSpec{name: "dir", image: atStart, readiness: true}),
	}, options{config: fastBackoff(time.Second, 2*time.Second) + "runtime:\n  imagesDir: " + startDir + "\n"})
	v.start()
	v.waitFor("the pod waiting for its image", 20*time.Second, func() bool {
		for _, p := range v.pods() {
			if w := containerStatus(p, "app").State.Waiting; w != nil && w.Reason == "ErrImagePull" {
				return strings.Contains(w.Message, "vigil image import")
			}
		}
		return false
	})

	out, err := runVigil(t, e, "image", "import", "--config", v.config, archive)
	if err != nil {
		t.Fatalf("vigil image import: %v\n%s", err, out)
	}
	if !strings.Contains(out, ref) {
		t.Errorf("vigil image import printed %q, want the image name %s", out, ref)
	}
	if p := v.readyPods("dir-", 1, 30*time.Second)[0]; containerStatus(p, "app").RestartCount != 0 {
		t.Errorf("pod of the image from runtime.imagesDir: %+v", containerStatus(p, "app"))
	}
	if !strings.Contains(readLog(t, v), atStart) {
		t.Errorf("vigil's log does not name the image imported from runtime.imagesDir")
	}
	p := v.readyPods("imp-", 1, 30*time.Second)[0]
	if img := containerStatus(p, "app").Image; img != ref {
		t.Errorf("pod runs %s, want %s", img, ref)
	}
	if code, _, err := getDirect(hostPort(t, p, "app", 8080)); err != nil || code != 200 {
		t.Errorf("pod from the imported image does not serve: %d %v", code, err)
	}
}
