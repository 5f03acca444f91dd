package supervisor

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/runtime"
)

// onlyRunning fails the test unless the sandbox holds exactly one instance
// of name and it runs; it returns that instance's ID.
func onlyRunning(t *testing.T, rt *fakeRuntime, name string) string {
	t.Helper()
	list := rt.inSandbox(name)
	if len(list) != 1 || list[0].State != cri.ContainerState_CONTAINER_RUNNING {
		states := make([]string, 0, len(list))
		for _, c := range list {
			states = append(states, c.Id+" "+c.State.String())
		}
		t.Fatalf("instances of %s in the sandbox: %v, want exactly one, running", name, states)
	}
	return list[0].Id
}

// A CreateContainer that created the container but lost its reply, once or
// twice in a row: each following attempt removes what the lost one left
// before it creates another, so once the runtime answers again the sandbox
// holds exactly one instance of the container, running, and the failed
// attempts did not count as restarts.
func TestLostCreateReplyLeavesOneInstance(t *testing.T) {
	for _, lost := range []int{1, 2} {
		t.Run(fmt.Sprintf("lost%d", lost), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rt, faulty, _, opts := faultyOptions(t)
				opts.BackoffInitial, opts.BackoffMax = time.Second, 4*time.Second
				s := New(opts)
				defer runSupervisor(s)()
				faulty.Lose(runtime.MethodCreateContainer, lost, nil)
				s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
					deployment("app", 1, corev1.RestartPolicyAlways, "h"),
				}})
				time.Sleep(time.Minute)
				synctest.Wait()

				id := onlyRunning(t, rt, "app")
				if n := faulty.Calls(runtime.MethodCreateContainer); n != lost+1 {
					t.Errorf("%d CreateContainer calls, want %d lost and one answered", n, lost)
				}
				if n := faulty.Calls(runtime.MethodStartContainer); n != 1 {
					t.Errorf("%d StartContainer calls, want 1", n)
				}
				if n := faulty.Calls(runtime.MethodRemoveContainer); n != lost {
					t.Errorf("%d RemoveContainer calls, want one per lost create (%d)", n, lost)
				}
				cs := s.PodList().Items[0].Status.ContainerStatuses[0]
				if cs.State.Running == nil || cs.ContainerID != "containerd://"+id || cs.RestartCount != 0 {
					t.Errorf("status %+v id %s restartCount %d, want running %s with restartCount 0",
						cs.State, cs.ContainerID, cs.RestartCount, id)
				}
			})
		})
	}
}

// A lost create reply on a restart: the sweep before the next attempt takes
// only the stray instance, never the ended current instance nor the one
// before it, which lastState refers to.
func TestLostCreateSweepKeepsKnownInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, faulty, _, opts := faultyOptions(t)
		opts.BackoffInitial, opts.BackoffMax = time.Second, time.Second
		s := New(opts)
		defer runSupervisor(s)()
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			deployment("app", 1, corev1.RestartPolicyAlways, "h"),
		}})
		time.Sleep(time.Second)
		synctest.Wait()
		first := onlyRunning(t, rt, "app")
		rt.exit("app", 1)
		time.Sleep(time.Second)
		synctest.Wait()
		ids := map[string]bool{first: true}
		for _, c := range rt.inSandbox("app") {
			ids[c.Id] = true
		}
		if len(ids) != 2 || rt.running("app") != 1 {
			t.Fatalf("after the first exit: %d instances, %d running; want the first and a running second",
				len(ids), rt.running("app"))
		}

		// The second exit's restart loses its create reply; the retry goes
		// through.
		faulty.Lose(runtime.MethodCreateContainer, 1, nil)
		removedBefore := faulty.Calls(runtime.MethodRemoveContainer)
		rt.exit("app", 2)
		time.Sleep(time.Minute)
		synctest.Wait()

		if n := faulty.Calls(runtime.MethodRemoveContainer) - removedBefore; n != 2 {
			t.Errorf("%d RemoveContainer calls, want the stray instance and the first (stale) one", n)
		}
		var running, exited []string
		for _, c := range rt.inSandbox("app") {
			switch c.State {
			case cri.ContainerState_CONTAINER_RUNNING:
				running = append(running, c.Id)
			case cri.ContainerState_CONTAINER_EXITED:
				exited = append(exited, c.Id)
			default:
				t.Errorf("instance %s left %s", c.Id, c.State)
			}
		}
		if len(running) != 1 || len(exited) != 1 || !ids[exited[0]] || exited[0] == first {
			t.Fatalf("running %v exited %v, want one running and the second instance kept", running, exited)
		}
		cs := s.PodList().Items[0].Status.ContainerStatuses[0]
		last := cs.LastTerminationState.Terminated
		if cs.RestartCount != 2 || last == nil || last.ContainerID != "containerd://"+exited[0] || last.ExitCode != 2 {
			t.Errorf("restartCount %d lastState %+v, want 2 and the second instance's exit 2 (%s)",
				cs.RestartCount, last, exited[0])
		}
	})
}

// A runtime that stops answering after a lost create reply: the sweep fails
// at each attempt, no further container is created meanwhile, and the
// attempts follow the backoff rather than spin. Once the runtime answers,
// the pod runs one instance.
func TestLostCreateSweepBacksOffWhileTheRuntimeFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, faulty, _, opts := faultyOptions(t)
		opts.BackoffInitial, opts.BackoffMax = time.Second, 8*time.Second
		s := New(opts)
		defer runSupervisor(s)()
		faulty.Lose(runtime.MethodCreateContainer, 1, nil)
		faulty.Fail(runtime.MethodListContainers, -1, nil)
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			deployment("app", 1, corev1.RestartPolicyAlways, "h"),
		}})
		time.Sleep(time.Minute)
		synctest.Wait()

		// Attempts after 1, 2, 4, 8, 8, ... seconds: 9 or so in a minute.
		if n := faulty.Calls(runtime.MethodListContainers); n < 3 || n > 12 {
			t.Errorf("%d ListContainers calls in a minute of failures, want a backed-off few", n)
		}
		if n := faulty.Calls(runtime.MethodCreateContainer); n != 1 {
			t.Errorf("%d CreateContainer calls while the sweep fails, want only the lost one", n)
		}
		cs := s.PodList().Items[0].Status.ContainerStatuses[0]
		if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CreateContainerError" {
			t.Errorf("state %+v while the sweep fails, want waiting with CreateContainerError", cs.State)
		}

		faulty.Reset()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		onlyRunning(t, rt, "app")
		if n := faulty.Calls(runtime.MethodCreateContainer); n != 2 {
			t.Errorf("%d CreateContainer calls, want the lost one and one after the sweep", n)
		}
	})
}

// The sweep removes only a created-but-unknown instance of the container in
// the pod's sandbox: never the current or previous instance, even while it
// is in CONTAINER_CREATED, nor another container's, another sandbox's or
// another vigil instance's.
func TestRemoveLostCreatesTakesOnlyStrays(t *testing.T) {
	rt := newFakeRuntime()
	s := New(testOptions(t, rt))
	wl := deployment("app", 1, corev1.RestartPolicyAlways, "h")
	wl.Template.Spec.Containers = append(wl.Template.Spec.Containers, corev1.Container{Name: "side", Image: "img"})
	p, err := newPod(s, podParams{name: "app-1", namespace: "ns", uid: "u1", template: wl.Template})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	p.sandboxCfg = p.sandboxConfig()
	p.sandboxID, _ = rt.RunPodSandbox(ctx, p.sandboxCfg)
	otherSandbox, _ := rt.RunPodSandbox(ctx, p.sandboxCfg)
	app, side := p.containers[0], p.containers[1]

	create := func(sandbox string, c *container, attempt int32, edit func(*cri.ContainerConfig)) string {
		t.Helper()
		cfg := p.containerConfig(c, attempt, 0, time.Time{})
		if edit != nil {
			edit(cfg)
		}
		id, err := rt.CreateContainer(ctx, sandbox, cfg, p.sandboxCfg)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	app.prevID = create(p.sandboxID, app, 0, nil)
	app.id = create(p.sandboxID, app, 1, nil)
	stray := create(p.sandboxID, app, 2, nil)
	keep := []string{
		app.prevID, app.id,
		create(p.sandboxID, side, 0, nil),
		create(otherSandbox, app, 2, nil),
		create(p.sandboxID, app, 3, func(cfg *cri.ContainerConfig) { cfg.Labels[LabelInstance] = "other" }),
	}
	running := create(p.sandboxID, app, 4, nil)
	if err := rt.StartContainer(ctx, running); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, running)

	if err := p.removeLostCreates(ctx, app); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if _, ok := rt.containers[stray]; ok {
		t.Errorf("stray instance %s not removed", stray)
	}
	for _, id := range keep {
		if _, ok := rt.containers[id]; !ok {
			t.Errorf("instance %s removed, want it kept", id)
		}
	}
}
