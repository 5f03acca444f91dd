package supervisor

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/manifest"
)

// The backoff itself, step by step: an immediate first restart, then 10 s
// doubling to the 300 s cap, measured from each exit.
func TestBackoffSequence(t *testing.T) {
	b := newBackoff(0, 0, 0) // the defaults: 10s, 300s, 10m
	exit := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	want := []time.Duration{0, 10, 20, 40, 80, 160, 300, 300, 300}
	for i, w := range want {
		w *= time.Second
		if got := b.wait("k", exit, exit); got != w {
			t.Fatalf("exit %d: wait %s, want %s", i, got, w)
		}
		// Half-way through the wait, half is left.
		if got := b.wait("k", exit, exit.Add(w/2)); got != w-w/2 {
			t.Errorf("exit %d: wait half-way %s, want %s", i, got, w-w/2)
		}
		b.step("k", exit)
		exit = exit.Add(w + time.Second) // restarted, then failed a second later
	}
	// Ten minutes and a bit without an exit: the entry has expired.
	exit = exit.Add(DefaultBackoffReset + time.Second)
	if got := b.wait("k", exit, exit); got != 0 {
		t.Errorf("after the quiet period: wait %s, want 0", got)
	}
	if got := b.step("k", exit); got != DefaultBackoffInitial {
		t.Errorf("after the quiet period: next delay %s, want %s", got, DefaultBackoffInitial)
	}
}

func TestBackoffRestoreAndForget(t *testing.T) {
	b := newBackoff(time.Second, 8*time.Second, time.Minute)
	now := time.Now()
	b.restore("pod/a", time.Hour, now) // clamped to max
	if d, since := b.state("pod/a"); d != 8*time.Second || !since.Equal(now) {
		t.Errorf("restored state %s %s", d, since)
	}
	b.restore("pod/b", 0, now) // nothing to restore
	if d, _ := b.state("pod/b"); d != 0 {
		t.Errorf("zero delay restored as %s", d)
	}
	b.forget("pod/")
	if d, _ := b.state("pod/a"); d != 0 {
		t.Errorf("forget left %s", d)
	}
}

// startTimes records when the fake runtime started each container.
type startTimes struct {
	mu    sync.Mutex
	times []time.Time
}

func (s *startTimes) add() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.times = append(s.times, time.Now())
	return len(s.times)
}

func (s *startTimes) gaps() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(s.times); i++ {
		out = append(out, s.times[i].Sub(s.times[i-1]).Round(time.Millisecond))
	}
	return out
}

// A container that exits as soon as it starts is restarted by the whole
// supervisor (worker, exit events, backoff) after exactly 0, 10, 20, 40, 80,
// 160, 300 and 300 s; once it has run for ten minutes, an exit restarts it
// at once and the next waits 10 s again. Virtual time: the test takes
// milliseconds.
func TestCrashLoopDelaysVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		var starts startTimes
		crashes := 9
		rt.onStart = func(string) (int32, bool) { return 1, starts.add() <= crashes }
		opts := testOptions(t, rt)
		opts.Exits = rt
		s := New(opts)
		defer runSupervisor(s)()
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			deployment("app", 1, corev1.RestartPolicyAlways, "h1"),
		}})

		time.Sleep(time.Hour)
		synctest.Wait()
		want := []time.Duration{0, 10, 20, 40, 80, 160, 300, 300, 300}
		got := starts.gaps()
		if len(got) != len(want) {
			t.Fatalf("restart gaps %v, want %v (in seconds)", got, want)
		}
		for i := range want {
			if got[i] != want[i]*time.Second {
				t.Errorf("gap %d = %s, want %s (all: %v)", i, got[i], want[i]*time.Second, got)
			}
		}
		pod := s.PodList().Items[0]
		if rc := pod.Status.ContainerStatuses[0].RestartCount; rc != 9 {
			t.Errorf("restartCount %d, want 9", rc)
		}

		// It has now run for an hour: the next exit restarts at once, the
		// one after waits the initial delay again.
		rt.mu.Lock()
		crashes = 11
		rt.mu.Unlock()
		exitAt := time.Now()
		rt.exit("app", 2)
		time.Sleep(time.Hour)
		synctest.Wait()
		starts.mu.Lock()
		after := starts.times[len(want)+1:]
		starts.mu.Unlock()
		if len(after) != 2 || !after[0].Equal(exitAt) || after[1].Sub(after[0]) != 10*time.Second {
			t.Errorf("starts after the quiet hour at %v (exit at %v), want at once, then 10s later",
				after, exitAt)
		}
	})
}

// While a restart waits, /pods shows the container waiting in
// CrashLoopBackOff with the delay, and a BackOff event is recorded.
func TestCrashLoopBackOffStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		var starts startTimes
		rt.onStart = func(string) (int32, bool) { return 1, starts.add() <= 2 }
		opts := testOptions(t, rt)
		opts.Exits = rt
		s := New(opts)
		defer runSupervisor(s)()
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			deployment("app", 1, corev1.RestartPolicyAlways, "h1"),
		}})
		time.Sleep(5 * time.Second) // two starts; the third waits 10 s
		synctest.Wait()
		cs := s.PodList().Items[0].Status.ContainerStatuses[0]
		if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" {
			t.Fatalf("state %+v, want waiting CrashLoopBackOff", cs.State)
		}
		if want := "back-off 10s restarting failed container=app"; !contains(cs.State.Waiting.Message, want) {
			t.Errorf("waiting message %q, want it to contain %q", cs.State.Waiting.Message, want)
		}
		if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 {
			t.Errorf("lastState %+v, want terminated with exit code 1", cs.LastTerminationState)
		}
		found := false
		for _, ev := range s.Recorder().List().Items {
			found = found || ev.Reason == ReasonBackOff && ev.Type == corev1.EventTypeWarning
		}
		if !found {
			t.Errorf("no BackOff event")
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if cs := s.PodList().Items[0].Status.ContainerStatuses[0]; cs.State.Running == nil || cs.RestartCount != 2 {
			t.Errorf("after the backoff: %+v restartCount %d, want running with 2", cs.State, cs.RestartCount)
		}
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// runSupervisor runs s and returns the function that stops it and waits.
func runSupervisor(s *Supervisor) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	return func() { cancel(); <-done }
}
