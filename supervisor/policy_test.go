package supervisor

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/runtime"
)

// The restart policy as the kubelet applies it: a container that exits by
// itself restarts under Always, under OnFailure only on a non-zero code; a
// probe kill restarts under Always and OnFailure whatever the code; Never
// keeps every container down.
func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy  corev1.RestartPolicy
		code    int32
		killed  bool
		restart bool
	}{
		{corev1.RestartPolicyAlways, 0, false, true},
		{corev1.RestartPolicyAlways, 3, false, true},
		{corev1.RestartPolicyAlways, 0, true, true},
		{corev1.RestartPolicyOnFailure, 0, false, false},
		{corev1.RestartPolicyOnFailure, 3, false, true},
		{corev1.RestartPolicyOnFailure, 0, true, true},
		{corev1.RestartPolicyOnFailure, 137, true, true},
		{corev1.RestartPolicyNever, 0, false, false},
		{corev1.RestartPolicyNever, 3, false, false},
		{corev1.RestartPolicyNever, 137, true, false},
	}
	s := New(testOptions(t, newFakeRuntime()))
	for _, tt := range tests {
		wl := deployment("app", 1, tt.policy, "h")
		p, err := newPod(s, podParams{name: "p", namespace: "ns", uid: "u", workloadKind: "Deployment",
			template: wl.Template})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		c := p.containers[0]
		c.phase, c.killed = phaseExited, tt.killed
		c.term = &terminated{exitCode: tt.code, finishedAt: now, reason: "Error"}
		p.afterExit(c, now)
		if got := c.phase == phaseWaiting; got != tt.restart {
			t.Errorf("%s, exit %d, killed %v: restart %v, want %v", tt.policy, tt.code, tt.killed, got, tt.restart)
		}
	}
}

// fakeProber records the targets the supervisor adds.
type fakeProber struct {
	mu      sync.Mutex
	targets map[string]prober.Target // by container, the latest one
	added   []prober.Target          // every one, in order
}

func (f *fakeProber) Add(t prober.Target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.targets == nil {
		f.targets = map[string]prober.Target{}
	}
	f.targets[t.Container+"/"+kindLower(t.Kind)] = t
	f.added = append(f.added, t)
}

// all returns every target added so far.
func (f *fakeProber) all() []prober.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]prober.Target(nil), f.added...)
}

func (f *fakeProber) Remove(string, string) {}

func (f *fakeProber) target(key string) prober.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.targets[key]
}

// fail sends the supervisor a liveness failure that crosses the threshold.
func (f *fakeProber) fail(s *Supervisor, container string) {
	tg := f.target(container + "/liveness")
	s.ProbeResult(prober.Update{Target: &tg, Outcome: prober.Failure, Output: "HTTP probe failed with statuscode: 500",
		State: prober.Failure, Changed: true})
}

func withLiveness(wl *manifest.Workload, podGrace, probeGrace *int64) *manifest.Workload {
	spec := &wl.Template.Spec
	spec.TerminationGracePeriodSeconds = podGrace
	spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:                  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}},
		TerminationGracePeriodSeconds: probeGrace,
	}
	spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}
	wl.Template.Labels = map[string]string{"app": wl.Name}
	return wl
}

func ptr[T any](v T) *T { return &v }

// A liveness kill takes the pod out of the endpoints before StopContainer,
// which gets the probe's grace period (or the pod's, never under 2 s). Under
// OnFailure the container comes back; under Never it stays down and the
// Killing event does not promise a restart.
func TestLivenessKill(t *testing.T) {
	tests := []struct {
		name       string
		policy     corev1.RestartPolicy
		podGrace   *int64
		probeGrace *int64
		wantGrace  time.Duration
		restart    bool
	}{
		{"probe grace overrides", corev1.RestartPolicyOnFailure, ptr[int64](30), ptr[int64](5), 5 * time.Second, true},
		{"pod grace", corev1.RestartPolicyAlways, ptr[int64](7), nil, 7 * time.Second, true},
		{"two seconds at least", corev1.RestartPolicyNever, ptr[int64](0), ptr[int64](1), 2 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				testLivenessKill(t, tt.policy, tt.podGrace, tt.probeGrace, tt.wantGrace, tt.restart)
			})
		})
	}
}

func testLivenessKill(t *testing.T, policy corev1.RestartPolicy, podGrace, probeGrace *int64,
	wantGrace time.Duration, restart bool) {
	rt := newFakeRuntime()
	pm := &fakeProber{}
	sink := &fakeSink{log: func(s string) { rt.mu.Lock(); rt.calls = append(rt.calls, s); rt.mu.Unlock() }}
	opts := testOptions(t, rt)
	opts.Exits, opts.Prober, opts.Endpoints = rt, pm, sink
	s := New(opts)
	defer runSupervisor(s)()
	wl := withLiveness(deployment("app", 1, policy, "h"), podGrace, probeGrace)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}, Services: []*corev1.Service{svc}})
	time.Sleep(time.Second)
	synctest.Wait()

	pm.fail(s, "app")
	time.Sleep(time.Second)
	synctest.Wait()

	rt.mu.Lock()
	calls := append([]string(nil), rt.calls...)
	rt.mu.Unlock()
	// The latest publication before the first StopContainer has no endpoint.
	lastEPs, stopped := "", false
	for _, c := range calls {
		if strings.HasPrefix(c, "endpoints ") {
			lastEPs = c
		}
		if strings.HasPrefix(c, "StopContainer ") {
			stopped = true
			if !strings.HasSuffix(c, " "+wantGrace.String()) {
				t.Errorf("%s, want grace %s", c, wantGrace)
			}
			break
		}
	}
	if !stopped || lastEPs != "endpoints 0" {
		t.Errorf("want the endpoint out before StopContainer: %v", calls)
	}
	cs := s.PodList().Items[0].Status.ContainerStatuses[0]
	if restart && (cs.State.Running == nil || cs.RestartCount != 1) {
		t.Errorf("after the kill: %+v restartCount %d, want running again with 1", cs.State, cs.RestartCount)
	}
	if !restart && (cs.State.Terminated == nil || rt.callsOf("CreateContainer") != 1) {
		t.Errorf("after the kill under Never: %+v, want terminated and not restarted", cs.State)
	}
	for _, ev := range s.Recorder().List().Items {
		if ev.Reason == ReasonKilling && strings.Contains(ev.Message, "will be restarted") == !restart {
			t.Errorf("Killing event %q under %s", ev.Message, policy)
		}
	}
}

// A StopContainer that hangs is cut off at grace+StopMargin and retried
// with backoff; the next instance is created only once the first is
// confirmed stopped, and another pod restarts meanwhile as usual.
func TestHungStopRetriedWithoutDuplicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, faulty, pm, opts := faultyOptions(t)
		opts.StopMargin = 3 * time.Second
		s := New(opts)
		defer runSupervisor(s)()
		stuck := withLiveness(deployment("stuck", 1, corev1.RestartPolicyAlways, "h"), ptr[int64](2), nil)
		other := deployment("other", 1, corev1.RestartPolicyAlways, "h")
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{stuck, other}})
		time.Sleep(time.Second)
		synctest.Wait()

		faulty.HangStop(2)
		start := time.Now()
		pm.fail(s, "stuck")
		time.Sleep(time.Second)
		synctest.Wait()
		rt.exit("other", 1) // restarts at once though "stuck" is stuck
		synctest.Wait()
		if n := rt.running("other"); n != 1 || rt.callsOf("CreateContainer") != 3 {
			t.Errorf("other pod: %d running, %d creates, want its restart while the stop hangs",
				n, rt.callsOf("CreateContainer"))
		}
		if rt.running("stuck") != 1 {
			t.Errorf("stuck container not running while its stop hangs")
		}

		time.Sleep(time.Minute)
		synctest.Wait()
		if n := faulty.Calls(runtime.MethodStopContainer); n != 3 {
			t.Errorf("%d StopContainer calls, want 2 hung and 1 that worked", n)
		}
		if rt.dupes != 0 {
			t.Errorf("%d containers created while their previous copy still ran", rt.dupes)
		}
		cs := podStatus(s, "stuck-").Status.ContainerStatuses[0]
		if cs.State.Running == nil || cs.RestartCount != 1 {
			t.Errorf("stuck pod after the stop went through: %+v restartCount %d", cs.State, cs.RestartCount)
		}
		// Two hung calls of 2s+3s each and retry waits of 1s and 2s.
		if started := cs.State.Running.StartedAt.Sub(start); started < 13*time.Second || started > 14*time.Second {
			t.Errorf("restarted %s after the kill, want 13s", started)
		}
	})
}

func podStatus(s *Supervisor, prefix string) corev1.Pod {
	for _, p := range s.PodList().Items {
		if strings.HasPrefix(p.Name, prefix) {
			return p
		}
	}
	return corev1.Pod{}
}

// context for tests that call scale directly: workers end at once.
func cancelledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// A result that takes a container out of rotation reaches the endpoints at
// once, even while the pod's worker is stuck in a runtime call; the kill
// that follows waits for the worker.
func TestOutOfRotationWhileWorkerStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		faulty := &runtime.Faulty{Runtime: rt}
		pm := &fakeProber{}
		sink := &fakeSink{}
		opts := testOptions(t, faulty)
		opts.Exits, opts.Prober, opts.Endpoints = rt, pm, sink
		opts.ResyncPeriod = time.Second
		opts.CallTimeout = 30 * time.Second
		s := New(opts)
		defer runSupervisor(s)()
		wl := withLiveness(deployment("app", 1, corev1.RestartPolicyAlways, "h"), ptr[int64](2), nil)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
		}
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}, Services: []*corev1.Service{svc}})
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		if n := sink.count(); n != 1 {
			t.Fatalf("%d endpoints before the failure, want 1", n)
		}

		// The next resync's first call hangs for the call timeout.
		faulty.Hang(runtime.MethodPodSandboxStatus, 1)
		time.Sleep(time.Second)
		synctest.Wait()
		if faulty.Calls(runtime.MethodPodSandboxStatus) == 0 {
			t.Fatal("the worker did not enter the hanging call")
		}
		pm.fail(s, "app")
		synctest.Wait()
		if n := sink.count(); n != 0 {
			t.Errorf("%d endpoints right after the liveness failure, want 0 though the worker is stuck", n)
		}
		if n := rt.callsOf("StopContainer"); n != 0 {
			t.Errorf("%d StopContainer calls while the worker is stuck, want none yet", n)
		}

		// Once the call times out, the kill and restart follow, and the new
		// instance is back in rotation.
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := rt.callsOf("StopContainer"); n == 0 {
			t.Errorf("no StopContainer after the worker came free")
		}
		if n := sink.count(); n != 1 {
			t.Errorf("%d endpoints after the restart, want 1", n)
		}
	})
}

// An exit event can arrive before the runtime's status shows the exit. The
// exit is then taken from the event, and a code of 0 is Completed: under
// OnFailure the container stays down instead of reading as an Error.
func TestExitEventAheadOfStatus(t *testing.T) {
	rt := newFakeRuntime()
	s := New(testOptions(t, rt))
	wl := deployment("app", 1, corev1.RestartPolicyOnFailure, "h")
	p, err := newPod(s, podParams{name: "p", namespace: "ns", uid: "u", workloadKind: "Deployment",
		template: wl.Template})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.createSandbox(ctx); err != nil {
		t.Fatal(err)
	}
	c := p.containers[0]
	p.startContainer(ctx, c)
	if c.phase != phaseRunning {
		t.Fatalf("container not running after start: phase %d", c.phase)
	}
	// The fake still reports the container running.
	p.noteExit(ctx, c, &runtime.Exit{ContainerID: c.id, ExitCode: 0, ExitedAt: time.Now()})
	if c.phase != phaseExited || c.term.reason != "Completed" || c.term.exitCode != 0 {
		t.Fatalf("after an exit event with code 0: phase %d, term %+v, want exited Completed", c.phase, c.term)
	}
	p.afterExit(c, time.Now())
	if c.phase != phaseTerminated {
		t.Errorf("OnFailure restarted a container that completed: phase %d", c.phase)
	}
}

// A StartContainer whose reply is lost may still have started the
// container. Until the runtime confirms that instance is gone, no other is
// created: with the removal failing too, the next attempt waits for it
// instead of running a second copy.
func TestLostStartReplyNoDuplicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		faulty := &runtime.Faulty{Runtime: rt}
		opts := testOptions(t, faulty)
		opts.Exits = rt
		opts.BackoffInitial = time.Second
		s := New(opts)
		defer runSupervisor(s)()
		faulty.Lose(runtime.MethodStartContainer, 1, nil)
		faulty.Fail(runtime.MethodRemoveContainer, 2, nil)
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			deployment("app", 1, corev1.RestartPolicyAlways, "h"),
		}})
		time.Sleep(time.Minute)
		synctest.Wait()
		if rt.dupes != 0 {
			t.Errorf("%d containers created while their previous copy still ran", rt.dupes)
		}
		if n := rt.running("app"); n != 1 {
			t.Errorf("%d copies of the container run, want 1", n)
		}
		if cs := podStatus(s, "app-").Status.ContainerStatuses[0]; cs.State.Running == nil {
			t.Errorf("container state %+v, want running", cs.State)
		}
	})
}

// A failed early readiness retry records no event; the same failure on the
// grid does.
func TestEarlyReadinessFailureNoEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		pm := &fakeProber{}
		opts := testOptions(t, rt)
		opts.Exits, opts.Prober = rt, pm
		s := New(opts)
		defer runSupervisor(s)()
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			withLiveness(deployment("app", 1, corev1.RestartPolicyAlways, "h"), nil, nil)}})
		time.Sleep(time.Second)
		synctest.Wait()

		tg := pm.target("app/liveness")
		tg.Kind = prober.Readiness
		unhealthy := func() int {
			n := 0
			for _, ev := range s.Recorder().List().Items {
				if ev.Reason == ReasonUnhealthy {
					n++
				}
			}
			return n
		}
		for _, early := range []bool{true, false} {
			s.ProbeResult(prober.Update{Target: &tg, Outcome: prober.Failure, State: prober.Failure,
				Output: "dial tcp: connection refused", Early: early})
			synctest.Wait()
		}
		if n := unhealthy(); n != 1 {
			t.Errorf("%d Unhealthy events for one early and one on-grid failure, want 1", n)
		}
	})
}

// A replica that finds no free host port is retried at each reconcile and
// shows as one FailedScheduling event whose count grows, not as a new pod
// name each time.
func TestNoFreePortOneEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		opts := testOptions(t, rt)
		opts.Exits, opts.Prober = rt, &fakeProber{}
		opts.HostNetwork, opts.PortRange = true, [2]int{45990, 45991}
		opts.ResyncPeriod = time.Second
		s := New(opts)
		s.ports.probe = func(int) bool { return true } // whatever else listens on this host
		defer runSupervisor(s)()
		wl := withLiveness(deployment("app", 3, corev1.RestartPolicyAlways, "h"), nil, nil)
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}})
		time.Sleep(5 * time.Second)
		synctest.Wait()

		if placed, pending := listed(t, s); len(placed) != 2 || len(pending) != 1 {
			t.Errorf("%d pods and %d pending replicas, want the 2 that have ports and 1", len(placed), len(pending))
		}
		var evs []corev1.Event
		for _, ev := range s.Recorder().List().Items {
			if ev.Reason == ReasonFailedScheduling {
				evs = append(evs, ev)
			}
		}
		if len(evs) != 1 || evs[0].InvolvedObject.Name != "app-h" || evs[0].Count < 2 {
			t.Fatalf("FailedScheduling events %+v, want one for app-h counted at each retry", evs)
		}
		if !strings.Contains(evs[0].Message, "Deployment app") {
			t.Errorf("event message %q does not name the Deployment", evs[0].Message)
		}
	})
}
