package supervisor

import (
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/runtime"
)

// The status that confirms a liveness kill's stop is the one the exit is
// recorded from: the restart reads the stopped instance once, and its
// lastState is that instance's end.
func TestKillRecordsExitFromTheStopStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, faulty, pm, opts := faultyOptions(t)
		s := New(opts)
		defer runSupervisor(s)()
		wl := withLiveness(deployment("app", 1, corev1.RestartPolicyAlways, "h"), ptr[int64](2), nil)
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}})
		time.Sleep(time.Second)
		synctest.Wait()

		first := pm.target("app/liveness").ContainerID
		before := faulty.Calls(runtime.MethodContainerStatus)
		pm.fail(s, "app")
		time.Sleep(time.Second)
		synctest.Wait()

		// One read confirms the stop, one gives the new instance's start time.
		if n := faulty.Calls(runtime.MethodContainerStatus) - before; n != 2 {
			t.Errorf("%d ContainerStatus calls for a kill and restart, want 2", n)
		}
		cs := s.PodList().Items[0].Status.ContainerStatuses[0]
		last := cs.LastTerminationState.Terminated
		if cs.State.Running == nil || cs.RestartCount != 1 || last == nil {
			t.Fatalf("after the kill: state %+v restartCount %d lastState %+v, want running, 1, terminated",
				cs.State, cs.RestartCount, cs.LastTerminationState)
		}
		if last.ExitCode != 137 || last.Reason != "Error" || last.ContainerID != "containerd://"+first ||
			last.FinishedAt.IsZero() {
			t.Errorf("lastState %+v, want the killed instance %s: exit 137, Error, a finish time", last, first)
		}
	})
}

// The instance before the previous one is removed without holding up the
// new instance: with RemoveContainer hanging, each restart still has its
// probes added at once; once the runtime answers, the stale instance goes
// and the previous one stays for lastState.
func TestStaleInstanceRemovedOffTheRestartPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, faulty, pm, opts := faultyOptions(t)
		opts.BackoffInitial, opts.BackoffMax = time.Millisecond, time.Millisecond
		s := New(opts)
		defer runSupervisor(s)()
		wl := withLiveness(deployment("app", 1, corev1.RestartPolicyAlways, "h"), ptr[int64](2), nil)
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}})
		time.Sleep(time.Second)
		synctest.Wait()

		ids := []string{pm.target("app/liveness").ContainerID}
		kill := func() {
			t.Helper()
			pm.fail(s, "app")
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
			id := pm.target("app/liveness").ContainerID
			if id == ids[len(ids)-1] || rt.running("app") != 1 {
				t.Fatalf("kill %d: probes still on %s (%d running), want them on the new instance at once",
					len(ids), id, rt.running("app"))
			}
			ids = append(ids, id)
		}

		faulty.Hang(runtime.MethodRemoveContainer, -1)
		kill()
		kill()
		kill() // the second and third restarts have a stale instance to remove
		if n := faulty.Calls(runtime.MethodRemoveContainer); n != 2 {
			t.Errorf("%d RemoveContainer calls under way, want 2", n)
		}
		if cs := s.PodList().Items[0].Status.ContainerStatuses[0]; cs.RestartCount != 3 {
			t.Errorf("restartCount %d after three kills, want 3", cs.RestartCount)
		}

		faulty.Reset()
		kill()
		rt.mu.Lock()
		_, staleLeft := rt.containers[ids[2]]
		_, prevLeft := rt.containers[ids[3]]
		rt.mu.Unlock()
		if staleLeft || !prevLeft {
			t.Errorf("after the fourth restart: stale %s present %v, previous %s present %v; want only the previous",
				ids[2], staleLeft, ids[3], prevLeft)
		}
	})
}

// A runtime slow to report a new instance's status does not hold up its
// probes: they start from StartContainer's return.
func TestProbesStartBeforeTheStatusRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, faulty, pm, opts := faultyOptions(t)
		s := New(opts)
		defer runSupervisor(s)()
		faulty.Hang(runtime.MethodContainerStatus, 1)
		wl := withLiveness(deployment("app", 1, corev1.RestartPolicyAlways, "h"), ptr[int64](2), nil)
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}})
		start := time.Now()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()

		tg := pm.target("app/liveness")
		if tg.ContainerID == "" || rt.running("app") != 1 {
			t.Fatalf("probes not added while the status read hangs (target %+v)", tg)
		}
		if tg.StartedAt.Before(start) || tg.StartedAt.After(time.Now()) {
			t.Errorf("probe StartedAt %v, want the start's time (%v on)", tg.StartedAt, start)
		}
		if n := faulty.Calls(runtime.MethodContainerStatus); n != 1 {
			t.Errorf("%d ContainerStatus calls, want the one hanging", n)
		}
	})
}
