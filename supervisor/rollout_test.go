package supervisor

import (
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
)

// withReadiness gives the workload's container an HTTP readiness probe.
func withReadiness(wl *manifest.Workload) *manifest.Workload {
	c := &wl.Template.Spec.Containers[0]
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}},
	}
	c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}
	wl.Template.Labels = map[string]string{"app": wl.Name}
	return wl
}

// readinessResults sends a thresholded readiness result for every readiness
// target pm has that is not in done yet, and marks them done.
func readinessResults(s *Supervisor, pm *fakeProber, done map[string]bool, state prober.Result) {
	for _, tg := range pm.all() {
		if tg.Kind != prober.Readiness || done[tg.ContainerID] {
			continue
		}
		done[tg.ContainerID] = true
		s.ProbeResult(prober.Update{Target: &tg, Outcome: state, State: state, Changed: true})
	}
}

// rolloutState counts the pods of s by template hash: ready and not
// terminating, terminating, and all listed.
type rolloutState struct{ ready, terminating, listed map[string]int }

func rolloutNow(s *Supervisor) rolloutState {
	st := rolloutState{ready: map[string]int{}, terminating: map[string]int{}, listed: map[string]int{}}
	for _, p := range s.PodList().Items {
		h := p.Labels[LabelTemplateHash]
		st.listed[h]++
		switch {
		case p.DeletionTimestamp != nil:
			st.terminating[h]++
		case podIsReady(p):
			st.ready[h]++
		}
	}
	return st
}

func podIsReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// startAdopted runs a first supervisor until both replicas of wl are ready,
// then stops it the way a killed vigil leaves things: the pods keep running
// on rt for the next supervisor to adopt.
func startAdopted(t *testing.T, rt *fakeRuntime, wl *manifest.Workload) {
	t.Helper()
	pm := &fakeProber{}
	opts := testOptions(t, rt)
	opts.Exits, opts.Prober = rt, pm
	s := New(opts)
	stop := runSupervisor(s)
	s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}})
	time.Sleep(time.Second)
	synctest.Wait()
	readinessResults(s, pm, map[string]bool{}, prober.Success)
	synctest.Wait()
	if st := rolloutNow(s); st.ready[wl.Hash] != int(wl.Replicas) {
		t.Fatalf("first supervisor: %d pods ready, want %d", st.ready[wl.Hash], wl.Replicas)
	}
	stop()
}

// A template changed while vigil was down rolls after the restart as it
// does while vigil runs (maxSurge 1, maxUnavailable 0): the adopted pods,
// not probed yet by the new supervisor, are neither removed as unhealthy nor
// counted as ready; once their first readiness results are in, each old pod
// goes only after a new one is ready, and ready pods never drop below the
// replica count.
func TestAdoptedPodsRollAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		s, pm, stop := restartChanged(t, rt)
		defer stop()

		// Adopted, not probed yet: nothing is removed, one new pod surges.
		st := rolloutNow(s)
		if st.terminating["h1"] != 0 || st.listed["h1"] != 2 {
			t.Fatalf("before any probe result: %d of %d old pods terminating, want 0 of 2",
				st.terminating["h1"], st.listed["h1"])
		}
		if st.listed["h2"] != 1 {
			t.Fatalf("before any probe result: %d new pods, want 1 (maxSurge)", st.listed["h2"])
		}
		if n := rt.callsOf("StopContainer"); n != 0 {
			t.Fatalf("%d StopContainer calls before the old pods were probed, want 0", n)
		}

		// Each round the prober finds every instance it has ready, one at
		// a time in the order they were added: the adopted ones first.
		done := map[string]bool{}
		for round := 0; ; round++ {
			if round == 10 {
				t.Fatalf("rollout not done after %d rounds: %+v", round, rolloutNow(s))
			}
			readinessResults(s, pm, done, prober.Success)
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
			st := rolloutNow(s)
			if got := st.ready["h1"] + st.ready["h2"]; got < 2 {
				t.Fatalf("round %d: %d pods ready (%+v), want at least 2", round, got, st)
			}
			if total := st.listed["h1"] + st.listed["h2"]; total > 3 {
				t.Fatalf("round %d: %d pods at once, want at most 3", round, total)
			}
			if st.listed["h1"] == 0 && st.ready["h2"] == 2 {
				break
			}
		}
		if n := rt.running("app"); n != 2 {
			t.Errorf("%d containers running after the rollout, want 2", n)
		}
	})
}

// An adopted pod whose first readiness result after the restart is a
// failure is not ready by the prober's own finding: the rollout removes it
// first, as the Deployment controller scales down unhealthy old replicas,
// while the healthy one stays until a new pod is ready.
func TestAdoptedUnreadyPodRemovedFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		s, pm, stop := restartChanged(t, rt)
		defer stop()

		old := map[string]bool{}
		for _, p := range s.PodList().Items {
			old[p.Name] = p.Labels[LabelTemplateHash] == "h1"
		}
		var adopted []prober.Target
		for _, tg := range pm.all() {
			if tg.Kind == prober.Readiness && old[tg.Pod] {
				adopted = append(adopted, tg)
			}
		}
		if len(adopted) != 2 {
			t.Fatalf("%d readiness targets for the adopted pods, want 2", len(adopted))
		}
		s.ProbeResult(prober.Update{Target: &adopted[0], Outcome: prober.Failure, State: prober.Failure})
		s.ProbeResult(prober.Update{Target: &adopted[1], Outcome: prober.Success, State: prober.Success, Changed: true})
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()

		names := map[string]bool{}
		for _, p := range s.PodList().Items {
			if p.Labels[LabelTemplateHash] == "h1" && p.DeletionTimestamp == nil {
				names[p.Name] = true
			}
		}
		if names[adopted[0].Pod] || !names[adopted[1].Pod] {
			t.Errorf("old pods left %v, want only the ready one %s (the unready %s removed)",
				names, adopted[1].Pod, adopted[0].Pod)
		}
	})
}

// Restarting vigil takes no pod out of rotation: an adopted, started
// container keeps its endpoint until its first readiness result, and a
// first result that fails takes it out.
func TestAdoptedPodKeepsServingUntilProbed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		wl := withReadiness(deployment("app", 2, corev1.RestartPolicyAlways, "h"))
		startAdopted(t, rt, wl)

		pm := &fakeProber{}
		sink := &fakeSink{}
		opts := testOptions(t, rt)
		opts.Exits, opts.Prober, opts.Endpoints = rt, pm, sink
		s := New(opts)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
		}
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}, Services: []*corev1.Service{svc}})
		defer runSupervisor(s)()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if n := sink.count(); n != 2 {
			t.Fatalf("%d endpoints after adoption, before any probe result, want both pods'", n)
		}

		// One pod's first readiness run fails (the prober's state stays
		// at its initial Failure, so the update does not say Changed).
		tgs := pm.all()
		var first prober.Target
		for _, tg := range tgs {
			if tg.Kind == prober.Readiness {
				first = tg
				break
			}
		}
		s.ProbeResult(prober.Update{Target: &first, Outcome: prober.Failure, State: prober.Failure})
		synctest.Wait()
		if n := sink.count(); n != 1 {
			t.Errorf("%d endpoints after one pod's first readiness run failed, want 1", n)
		}
	})
}

// restartChanged leaves two adopted pods of Deployment "app" on rt, as a
// supervisor that stopped left them, and starts a new supervisor whose
// manifest changed the template meanwhile. It returns once the new one has
// settled; the caller defers stop.
func restartChanged(t *testing.T, rt *fakeRuntime) (*Supervisor, *fakeProber, func()) {
	t.Helper()
	startAdopted(t, rt, withReadiness(deployment("app", 2, corev1.RestartPolicyAlways, "h1")))
	changed := withReadiness(deployment("app", 2, corev1.RestartPolicyAlways, "h2"))
	changed.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "VERSION", Value: "2"}}
	pm := &fakeProber{}
	opts := testOptions(t, rt)
	opts.Exits, opts.Prober = rt, pm
	s := New(opts)
	s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{changed}})
	stop := runSupervisor(s)
	time.Sleep(100 * time.Millisecond)
	synctest.Wait()
	return s, pm, stop
}
