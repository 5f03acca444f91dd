package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/runtime"
)

// The integration tests here run a Supervisor in-process on a real
// containerd, with runtime.Faulty between them to inject what a real
// runtime does only on a bad day. They need the variables of
// test/scripts/containerd.sh env (VIGIL_CRI_ENDPOINT, VIGIL_CONTAINERD_ADDRESS)
// and skip without them unless VIGIL_REQUIRE_INTEGRATION=1. Host ports come
// from VIGIL_E2E_PORT_BASE+4000 up (default 25000-25099).

type integrationEnv struct{ endpoint, address string }

func needIntegration(t *testing.T) integrationEnv {
	t.Helper()
	e := integrationEnv{endpoint: os.Getenv("VIGIL_CRI_ENDPOINT"), address: os.Getenv("VIGIL_CONTAINERD_ADDRESS")}
	if e.endpoint == "" || e.address == "" {
		msg := "VIGIL_CRI_ENDPOINT and VIGIL_CONTAINERD_ADDRESS are not set " +
			"(bash test/scripts/containerd.sh up && eval \"$(bash test/scripts/containerd.sh env)\")"
		if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return e
}

func integrationPortRange(t *testing.T) [2]int {
	base := 21000
	if s := os.Getenv("VIGIL_E2E_PORT_BASE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("VIGIL_E2E_PORT_BASE=%q: %v", s, err)
		}
		base = n
	}
	return [2]int{base + 4000, base + 4099}
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// liveDeployment is a Deployment of the test app whose liveness probe
// fails once /health does.
func liveDeployment(ns, name string) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: localhost/vigil-testapp:latest
          ports: [{name: http, containerPort: 8080}]
          livenessProbe:
            httpGet: {path: /health, port: http}
            initialDelaySeconds: 1
            periodSeconds: 1
            failureThreshold: 1
          readinessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 1
`, name, ns)
}

// Timing of the supervisors under test: a hung StopContainer is cut off at
// the least grace period plus itMargin.
const itGrace, itMargin = 2 * time.Second, time.Second

// startIntegration runs a Supervisor with the given manifests (YAML) on the
// real runtime behind a Faulty, until the test ends, when its pods are
// removed. The supervisor's log is shown when the test fails.
func startIntegration(t *testing.T, ns, manifests string) (*Supervisor, *runtime.Faulty, *runtime.CRI) {
	t.Helper()
	env := needIntegration(t)
	rt, err := runtime.NewCRI(env.endpoint, runtime.CRIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctrd, err := runtime.NewContainerd(env.address, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrd.Close() })
	t.Cleanup(func() { removeNamespace(t, rt, ns) })

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs.String())
		}
	})
	faulty := &runtime.Faulty{Runtime: rt}
	var s *Supervisor
	pm := prober.NewManager(prober.Options{OnUpdate: func(u prober.Update) { s.ProbeResult(u) }, Logger: log})
	t.Cleanup(pm.Stop)
	s = New(Options{
		Runtime: faulty, Exits: ctrd, Prober: pm, Logger: log, NodeName: "node",
		HostNetwork: true, PortRange: integrationPortRange(t), LogDir: t.TempDir(),
		BackoffInitial: time.Second, BackoffMax: 2 * time.Second, ResyncPeriod: 2 * time.Second,
		StopMargin: itMargin, RemovePodsOnExit: true,
	})

	set := loadManifests(t, manifests)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	s.SetManifests(set)
	return s, faulty, rt
}

// loadManifests loads manifests, written to a file, as the watcher would.
func loadManifests(t *testing.T, manifests string) *manifest.Set {
	t.Helper()
	file := filepath.Join(t.TempDir(), "apps.yaml")
	if err := os.WriteFile(file, []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := manifest.LoadFile(file)
	if err != nil || len(set.Errors) > 0 {
		t.Fatalf("load manifests: %v %v", err, set.Errors)
	}
	return set
}

// A StopContainer that hangs on the real runtime is cut off at grace plus
// StopMargin and retried with backoff. The container keeps running meanwhile
// and no second copy is created until it has stopped; another pod restarts
// as usual while the stop hangs.
func TestIntegrationHungStop(t *testing.T) {
	const ns = "it-hungstop"
	s, faulty, cri1 := startIntegration(t, ns, liveDeployment(ns, "stuck")+"---"+liveDeployment(ns, "other"))
	const grace, margin = itGrace, itMargin

	pod := func(prefix string) (corev1.Pod, corev1.ContainerStatus) {
		for _, p := range s.PodList().Items {
			if strings.HasPrefix(p.Name, prefix) && len(p.Status.ContainerStatuses) == 1 {
				return p, p.Status.ContainerStatuses[0]
			}
		}
		return corev1.Pod{}, corev1.ContainerStatus{}
	}
	waitUntil(t, "both pods ready", 60*time.Second, func() bool {
		_, a := pod("stuck-")
		_, b := pod("other-")
		return a.Ready && b.Ready
	})
	stuck, _ := pod("stuck-")
	other, _ := pod("other-")

	// Every instance of the stuck pod the runtime holds, polled from here on.
	type seen struct{ created, finished time.Time }
	instances := map[string]*seen{}
	maxRunning := 0
	poll := func() {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		list, err := cri1.ListContainers(pctx, &cri.ContainerFilter{
			LabelSelector: map[string]string{runtime.LabelPodName: stuck.Name},
		})
		if err != nil {
			t.Logf("list containers: %v", err)
			return
		}
		running := 0
		for _, c := range list {
			in := instances[c.Id]
			if in == nil {
				in = &seen{created: time.Unix(0, c.CreatedAt)}
				instances[c.Id] = in
			}
			if c.State == cri.ContainerState_CONTAINER_RUNNING {
				running++
			} else if in.finished.IsZero() {
				if st, err := cri1.ContainerStatus(pctx, c.Id); err == nil && st.FinishedAt > 0 {
					in.finished = time.Unix(0, st.FinishedAt)
				}
			}
		}
		maxRunning = max(maxRunning, running)
	}

	faulty.HangStop(2)
	failedAt := time.Now()
	post(t, hostAddr(t, stuck), "/control/fail")
	waitUntil(t, "the first stop to hang", 10*time.Second, func() bool {
		poll()
		return faulty.Calls(runtime.MethodStopContainer) >= 1
	})

	// While the stop hangs, the other pod's exit is handled at once.
	post(t, hostAddr(t, other), "/control/exit?code=1")
	waitUntil(t, "the other pod restarted", 10*time.Second, func() bool {
		poll()
		_, cs := pod("other-")
		return cs.RestartCount == 1 && cs.Ready
	})
	if n := faulty.Calls(runtime.MethodStopContainer); n >= 3 {
		t.Errorf("the stuck pod's stop went through (%d calls) before the other pod restarted; "+
			"the test proves nothing about independence", n)
	}
	if _, cs := pod("stuck-"); cs.State.Running == nil || cs.RestartCount != 0 {
		t.Errorf("stuck container while its stop hangs: %+v restartCount %d, want still running",
			cs.State, cs.RestartCount)
	}

	var restarted corev1.ContainerStatus
	waitUntil(t, "the stuck pod restarted", 40*time.Second, func() bool {
		poll()
		_, restarted = pod("stuck-")
		return restarted.RestartCount == 1 && restarted.State.Running != nil
	})
	took := restarted.State.Running.StartedAt.Sub(failedAt)
	t.Logf("stuck pod restarted %s after /health failed", took.Round(time.Millisecond))
	// Two hung calls of grace+margin each and a retry wait of 1s between
	// them, then 2s before the third call.
	if least := 2*(grace+margin) + 3*time.Second; took < least-time.Second {
		t.Errorf("restarted %s after the failure, want at least about %s", took, least)
	}
	if n := faulty.Calls(runtime.MethodStopContainer); n != 3 {
		t.Errorf("%d StopContainer calls, want 2 hung and 1 that went through", n)
	}
	if maxRunning > 1 {
		t.Errorf("saw %d instances of the stuck pod running at once", maxRunning)
	}
	var first, second *seen
	for _, in := range instances {
		if first == nil || in.created.Before(first.created) {
			first, second = in, first
		} else if second == nil || in.created.Before(second.created) {
			second = in
		}
	}
	if first == nil || second == nil || first.finished.IsZero() {
		t.Fatalf("did not see both instances of the stuck pod: %d seen", len(instances))
	}
	if !second.created.After(first.finished) {
		t.Errorf("the new instance was created at %s, before the old one finished at %s",
			second.created.Format(time.StampMilli), first.finished.Format(time.StampMilli))
	}
	found := false
	for _, e := range s.Recorder().List().Items {
		if e.Reason == ReasonFailedStop && e.InvolvedObject.Name == stuck.Name {
			found = true
		}
	}
	if !found {
		t.Errorf("no %s event for the stuck pod", ReasonFailedStop)
	}
	if _, cs := pod("other-"); cs.RestartCount != 1 || !cs.Ready {
		t.Errorf("other pod after the stuck one recovered: restartCount %d ready %v", cs.RestartCount, cs.Ready)
	}
}

// A StartContainer whose reply is lost, with the first removals of that
// instance failing too, on the real runtime: the instance that did start is
// removed (the runtime stops it) before another is created, so the two never
// run at once, and the pod then runs one instance.
func TestIntegrationLostStartReply(t *testing.T) {
	const ns = "it-loststart"
	// No manifests yet, so the faults are in place before the first start.
	s, faulty, rt := startIntegration(t, ns, "")
	faulty.Lose(runtime.MethodStartContainer, 1, nil)
	faulty.Fail(runtime.MethodRemoveContainer, 2, nil)
	s.SetManifests(loadManifests(t, liveDeployment(ns, "app")))

	// RemoveContainer returns once the runtime has stopped and removed the
	// instance, so two instances listed running together ran at once.
	ids := map[string]bool{}
	mostRunning := 0
	poll := func() {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		list, err := rt.ListContainers(pctx, &cri.ContainerFilter{
			LabelSelector: map[string]string{runtime.LabelPodNamespace: ns},
		})
		if err != nil {
			return
		}
		running := 0
		for _, c := range list {
			ids[c.Id] = true
			if c.State == cri.ContainerState_CONTAINER_RUNNING {
				running++
			}
		}
		mostRunning = max(mostRunning, running)
	}
	var cs corev1.ContainerStatus
	waitUntil(t, "the pod ready", 40*time.Second, func() bool {
		poll()
		for _, p := range s.PodList().Items {
			if len(p.Status.ContainerStatuses) == 1 {
				cs = p.Status.ContainerStatuses[0]
			}
		}
		return cs.Ready
	})
	if n := faulty.Calls(runtime.MethodRemoveContainer); n < 3 {
		t.Errorf("%d RemoveContainer calls, want 2 failed and 1 that went through", n)
	}
	if n := faulty.Calls(runtime.MethodStartContainer); n != 2 {
		t.Errorf("%d StartContainer calls, want the lost one and one more", n)
	}
	if len(ids) != 2 {
		t.Errorf("saw %d instances, want the lost start's and its successor", len(ids))
	}
	if mostRunning > 1 {
		t.Errorf("saw %d instances running at once", mostRunning)
	}
	list, err := rt.ListContainers(context.Background(), &cri.ContainerFilter{
		State:         &cri.ContainerStateValue{State: cri.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{runtime.LabelPodNamespace: ns},
	})
	if err != nil || len(list) != 1 {
		t.Errorf("%d running containers (%v), want 1", len(list), err)
	}
	if cs.RestartCount != 0 {
		t.Errorf("restartCount %d after a failed start, want 0", cs.RestartCount)
	}
}

// CreateContainer replies lost twice on the real runtime, after containerd
// created each container: every attempt removes what the one before left,
// which also frees the name and attempt containerd reserves for it, so the
// pod comes up with exactly one instance of its container, running.
func TestIntegrationLostCreateReply(t *testing.T) {
	const ns = "it-lostcreate"
	// No manifests yet, so the fault is in place before the first create.
	s, faulty, rt := startIntegration(t, ns, "")
	faulty.Lose(runtime.MethodCreateContainer, 2, nil)
	s.SetManifests(loadManifests(t, liveDeployment(ns, "app")))

	var cs corev1.ContainerStatus
	waitUntil(t, "the pod ready", 40*time.Second, func() bool {
		for _, p := range s.PodList().Items {
			if len(p.Status.ContainerStatuses) == 1 {
				cs = p.Status.ContainerStatuses[0]
			}
		}
		return cs.Ready
	})
	if n := faulty.Calls(runtime.MethodCreateContainer); n != 3 {
		t.Errorf("%d CreateContainer calls, want 2 lost and 1 answered", n)
	}
	if n := faulty.Calls(runtime.MethodStartContainer); n != 1 {
		t.Errorf("%d StartContainer calls, want 1", n)
	}
	list, err := rt.ListContainers(context.Background(), &cri.ContainerFilter{
		LabelSelector: map[string]string{runtime.LabelPodNamespace: ns, runtime.LabelContainerName: "app"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].State != cri.ContainerState_CONTAINER_RUNNING ||
		cs.ContainerID != "containerd://"+list[0].Id {
		states := make([]string, 0, len(list))
		for _, c := range list {
			states = append(states, shortID(c.Id)+" "+c.State.String())
		}
		t.Errorf("instances of app: %v; status shows %s; want exactly that one, running", states, cs.ContainerID)
	}
	if cs.RestartCount != 0 {
		t.Errorf("restartCount %d after failed creates, want 0", cs.RestartCount)
	}
}

func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostAddr is the loopback address of the host port vigil gave the pod's
// app/8080.
func hostAddr(t *testing.T, p corev1.Pod) string {
	t.Helper()
	var ports map[string]int
	if err := json.Unmarshal([]byte(p.Annotations[AnnotationHostPorts]), &ports); err != nil || ports["app/8080"] == 0 {
		t.Fatalf("pod %s: no host port for app/8080 in %q: %v", p.Name, p.Annotations[AnnotationHostPorts], err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports["app/8080"])
}

func post(t *testing.T, addr, path string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post("http://"+addr+path, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s%s: %v", addr, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s%s: status %d", addr, path, resp.StatusCode)
	}
}

// removeNamespace removes every sandbox left in ns.
func removeNamespace(t *testing.T, rt *runtime.CRI, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := rt.ListPodSandboxes(ctx, &cri.PodSandboxFilter{
		LabelSelector: map[string]string{runtime.LabelPodNamespace: ns},
	})
	if err != nil {
		t.Logf("cleanup %s: %v", ns, err)
		return
	}
	for _, sb := range list {
		_ = rt.StopPodSandbox(ctx, sb.Id)
		_ = rt.RemovePodSandbox(ctx, sb.Id)
	}
}
