package prober

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fakeExec is an exec probe whose runs are scripted: run n takes took(n)
// and exits with code(n) (-1: the runtime fails, an Unknown). It records
// when each run started and how many ran at once.
type fakeExec struct {
	took func(n int) time.Duration
	code func(n int) int32

	mu          sync.Mutex
	starts      []time.Time
	inflight    int
	maxInflight int
	aborted     []error
}

func (f *fakeExec) exec(ctx context.Context, _ []string, _ time.Duration) (int32, []byte, error) {
	f.mu.Lock()
	n := len(f.starts)
	f.starts = append(f.starts, time.Now())
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inflight--; f.mu.Unlock() }()

	if f.took != nil {
		select {
		case <-time.After(f.took(n)):
		case <-ctx.Done():
			f.mu.Lock()
			f.aborted = append(f.aborted, ctx.Err())
			f.mu.Unlock()
			return -1, nil, ctx.Err()
		}
	}
	if f.code == nil {
		return 0, nil, nil
	}
	if c := f.code(n); c >= 0 {
		return c, nil, nil
	}
	return 0, nil, errors.New("runtime unavailable")
}

func (f *fakeExec) runs() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.starts...)
}

// updates collects OnUpdate calls.
type updates struct {
	mu   sync.Mutex
	list []Update
}

func (u *updates) add(up Update) { u.mu.Lock(); u.list = append(u.list, up); u.mu.Unlock() }

func (u *updates) get() []Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Update(nil), u.list...)
}

func execTarget(kind Kind, f *fakeExec, spec Spec) Target {
	spec.Handler = corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}
	return Target{Namespace: "ns", Pod: "web", PodUID: "uid-1", Container: "app",
		ContainerID: "c1", Kind: kind, Spec: spec, StartedAt: time.Now(), Exec: f.exec}
}

func newTestManager(u *updates, reg prometheus.Registerer) *Manager {
	return NewManager(Options{OnUpdate: u.add, Registerer: reg,
		Logger: slog.New(slog.DiscardHandler)})
}

func TestFirstRunAtInitialDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		f := &fakeExec{}
		tg := execTarget(Readiness, f, Spec{InitialDelay: 5 * time.Second, Period: 10 * time.Second})
		tg.StartedAt = start.Add(-2 * time.Second) // the delay ends 3 s from now

		past := &fakeExec{}
		tp := execTarget(Liveness, past, Spec{InitialDelay: 5 * time.Second, Period: 10 * time.Second})
		tp.StartedAt = start.Add(-time.Hour)

		m := newTestManager(&updates{}, nil)
		defer m.Stop()
		m.Add(tg)
		m.Add(tp)
		time.Sleep(25 * time.Second)
		synctest.Wait()

		want := []time.Time{start.Add(3 * time.Second), start.Add(13 * time.Second), start.Add(23 * time.Second)}
		if got := f.runs(); !equalTimes(got, want) {
			t.Errorf("runs at %v, want %v", offsets(start, got), offsets(start, want))
		}
		want = []time.Time{start, start.Add(10 * time.Second), start.Add(20 * time.Second)}
		if got := past.runs(); !equalTimes(got, want) {
			t.Errorf("delay already past: runs at %v, want %v", offsets(start, got), offsets(start, want))
		}
	})
}

func TestGridDoesNotDrift(t *testing.T) {
	for _, period := range []time.Duration{time.Second, 50 * time.Millisecond} {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			// Each run takes 30% of the period: a "now + period" loop would
			// drift by 30 periods over 100.
			f := &fakeExec{took: func(int) time.Duration { return period * 3 / 10 }}
			m := newTestManager(&updates{}, nil)
			defer m.Stop()
			m.Add(execTarget(Liveness, f, Spec{Period: period, Timeout: period}))
			time.Sleep(100*period + period/2)
			synctest.Wait()

			got := f.runs()
			if len(got) != 101 {
				t.Fatalf("period %v: %d runs in 100.5 periods, want 101", period, len(got))
			}
			for k, at := range got {
				if want := start.Add(time.Duration(k) * period); !at.Equal(want) {
					t.Fatalf("period %v: run %d at %v, want %v", period, k, at.Sub(start), want.Sub(start))
				}
			}
		})
	}
}

func TestOneRunInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		// Timeout 5 s > period 1 s; each run takes 2.5 s.
		f := &fakeExec{took: func(int) time.Duration { return 2500 * time.Millisecond }}
		u := &updates{}
		m := newTestManager(u, nil)
		defer m.Stop()
		m.Add(execTarget(Readiness, f, Spec{Period: time.Second, Timeout: 5 * time.Second}))
		time.Sleep(10 * time.Second)
		synctest.Wait()

		if f.maxInflight != 1 {
			t.Errorf("%d runs in flight at once, want 1", f.maxInflight)
		}
		// Runs end at 2.5, 5.5, 8.5: the next slots on the 1 s grid are 3, 6, 9.
		want := []time.Time{start, start.Add(3 * time.Second), start.Add(6 * time.Second),
			start.Add(9 * time.Second)}
		if got := f.runs(); !equalTimes(got, want) {
			t.Errorf("runs at %v, want %v", offsets(start, got), offsets(start, want))
		}
		for _, up := range u.get() {
			if up.Duration != 2500*time.Millisecond || !up.Ran.Equal(up.Scheduled) {
				t.Errorf("update: duration %v, lateness %v", up.Duration, up.Ran.Sub(up.Scheduled))
			}
		}
	})
}

func TestSpreadFirstRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		const n, period = 200, 10 * time.Second
		m := newTestManager(&updates{}, nil)
		defer m.Stop()
		spread := make([]*fakeExec, n)
		herd := make([]*fakeExec, n)
		for i := range n {
			spread[i], herd[i] = &fakeExec{}, &fakeExec{}
			ts := execTarget(Liveness, spread[i], Spec{Period: period})
			ts.PodUID, ts.StartedAt, ts.Spread = "s"+strconv.Itoa(i), start.Add(-time.Hour), true
			m.Add(ts)
			th := execTarget(Liveness, herd[i], Spec{Period: period})
			th.PodUID, th.StartedAt = "h"+strconv.Itoa(i), start.Add(-time.Hour)
			m.Add(th)
		}
		time.Sleep(period - time.Nanosecond)
		synctest.Wait()

		var lo, hi time.Duration = period, 0
		seen := map[time.Duration]bool{}
		for i := range n {
			if r := herd[i].runs(); len(r) != 1 || !r[0].Equal(start) {
				t.Fatalf("without Spread, target %d ran at %v, want once at 0", i, offsets(start, r))
			}
			r := spread[i].runs()
			if len(r) != 1 {
				t.Fatalf("spread target %d ran %d times within the first period, want 1", i, len(r))
			}
			d := r[0].Sub(start)
			lo, hi = min(lo, d), max(hi, d)
			seen[d/(period/10)] = true
		}
		if len(seen) < 9 || hi-lo < period*8/10 {
			t.Errorf("first runs span %v..%v over %d of 10 tenths of the period, want spread over it",
				lo, hi, len(seen))
		}
	})
}

func TestStartupGates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		// Startup fails twice, then succeeds at 2 s (period 1 s).
		startup := &fakeExec{code: func(n int) int32 { return map[bool]int32{true: 1}[n < 2] }}
		live, ready := &fakeExec{}, &fakeExec{}
		u := &updates{}
		m := newTestManager(u, nil)
		defer m.Stop()
		m.Add(execTarget(Startup, startup, Spec{Period: time.Second, FailureThreshold: 10}))
		m.Add(execTarget(Liveness, live, Spec{Period: 10 * time.Second}))
		m.Add(execTarget(Readiness, ready, Spec{Period: 10 * time.Second}))
		time.Sleep(15 * time.Second)
		synctest.Wait()

		if got := startup.runs(); len(got) != 3 {
			t.Errorf("startup ran %d times, want 3 (it stops once it succeeded)", len(got))
		}
		opened := start.Add(2 * time.Second)
		want := []time.Time{opened, opened.Add(10 * time.Second)}
		for name, f := range map[string]*fakeExec{"liveness": live, "readiness": ready} {
			if got := f.runs(); !equalTimes(got, want) {
				t.Errorf("%s ran at %v, want %v (from startup's success)", name,
					offsets(start, got), offsets(start, want))
			}
		}
	})
}

func TestStartupFailureKeepsGateShut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		startup := &fakeExec{code: func(int) int32 { return 1 }}
		live := &fakeExec{}
		m := newTestManager(&updates{}, nil)
		defer m.Stop()
		m.Add(execTarget(Startup, startup, Spec{Period: time.Second, FailureThreshold: 3}))
		m.Add(execTarget(Liveness, live, Spec{Period: time.Second}))
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if n := len(startup.runs()); n != 3 {
			t.Errorf("startup ran %d times, want 3 then hold", n)
		}
		if n := len(live.runs()); n != 0 {
			t.Errorf("liveness ran %d times behind a failed startup, want 0", n)
		}
	})
}

func TestThresholds(t *testing.T) {
	// S S F F U F S S: success threshold 2, failure threshold 3.
	script := []int32{0, 0, 1, 1, -1, 1, 0, 0}
	wantState := []Result{Failure, Success, Success, Success, Success, Failure, Failure, Success}
	wantChanged := []bool{false, true, false, false, false, true, false, true}
	wantOutcome := []Result{Success, Success, Failure, Failure, Unknown, Failure, Success, Success}

	synctest.Test(t, func(t *testing.T) {
		f := &fakeExec{code: func(n int) int32 { return script[n%len(script)] }}
		u := &updates{}
		reg := prometheus.NewPedanticRegistry()
		m := newTestManager(u, reg)
		defer m.Stop()
		m.Add(execTarget(Readiness, f, Spec{Period: time.Second, SuccessThreshold: 2, FailureThreshold: 3}))
		time.Sleep(time.Duration(len(script)-1)*time.Second + time.Millisecond)
		synctest.Wait()

		got := u.get()
		if len(got) != len(script) {
			t.Fatalf("%d updates, want %d", len(got), len(script))
		}
		for i, up := range got {
			if up.Outcome != wantOutcome[i] || up.State != wantState[i] || up.Changed != wantChanged[i] {
				t.Errorf("run %d: outcome %v state %v changed %v; want %v %v %v", i,
					up.Outcome, up.State, up.Changed, wantOutcome[i], wantState[i], wantChanged[i])
			}
		}
		if got[4].Output != `exec probe command ["true"]: runtime unavailable` {
			t.Errorf("unknown output = %q", got[4].Output)
		}

		for result, want := range map[string]float64{"successful": 4, "failed": 3, "unknown": 1} {
			c := m.metrics.total.WithLabelValues("Readiness", result, "app", "web", "ns", "uid-1")
			if v := testutil.ToFloat64(c); v != want {
				t.Errorf("prober_probe_total{result=%q} = %v, want %v", result, v, want)
			}
		}
		// Every run is timed, failures included.
		if n := testutil.CollectAndCount(reg, "prober_probe_duration_seconds"); n != 1 {
			t.Errorf("%d duration series, want 1", n)
		}
	})
}

func TestLivenessHoldsUntilNewInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeExec{code: func(int) int32 { return 1 }}
		u := &updates{}
		m := newTestManager(u, nil)
		defer m.Stop()
		tg := execTarget(Liveness, f, Spec{Period: time.Second, FailureThreshold: 2})
		m.Add(tg)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := len(f.runs()); n != 2 {
			t.Fatalf("liveness ran %d times, want 2 then hold", n)
		}
		if last := u.get()[1]; last.State != Failure || !last.Changed {
			t.Fatalf("second update %+v, want a change to Failure", last)
		}

		m.Add(tg) // the same instance again: still held
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := len(f.runs()); n != 2 {
			t.Fatalf("re-adding the same instance restarted probing: %d runs", n)
		}

		tg.ContainerID, tg.StartedAt = "c2", time.Now()
		m.Add(tg)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		ups := u.get()
		if len(ups) != 4 {
			t.Fatalf("%d updates, want 2 more for the new instance", len(ups))
		}
		// Counters start from zero: the first failure of c2 does not flip.
		if ups[2].Target.ContainerID != "c2" || ups[2].State != Success || ups[3].State != Failure {
			t.Errorf("new instance updates: %+v %+v", ups[2], ups[3])
		}
	})
}

func TestRemoveAbortsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeExec{took: func(int) time.Duration { return time.Hour }}
		u := &updates{}
		reg := prometheus.NewPedanticRegistry()
		m := newTestManager(u, reg)
		defer m.Stop()
		m.Add(execTarget(Liveness, f, Spec{Period: time.Second, Timeout: time.Hour}))
		m.Add(execTarget(Readiness, &fakeExec{}, Spec{Period: time.Second}))
		other := execTarget(Readiness, &fakeExec{}, Spec{Period: time.Second})
		other.PodUID = "uid-2"
		m.Add(other)
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()

		m.Remove("uid-1", "app")
		synctest.Wait()
		f.mu.Lock()
		aborted := append([]error(nil), f.aborted...)
		f.mu.Unlock()
		if len(aborted) != 1 || !errors.Is(aborted[0], context.Canceled) {
			t.Fatalf("in-flight run ended with %v, want context.Canceled", aborted)
		}
		before := len(u.get())
		time.Sleep(10 * time.Second)
		synctest.Wait()
		for _, up := range u.get()[before:] {
			if up.Target.PodUID == "uid-1" {
				t.Fatalf("update after Remove: %+v", up)
			}
		}
		for _, up := range u.get() {
			if up.Target.Kind == Liveness {
				t.Fatalf("the aborted liveness run was reported: %+v", up)
			}
		}
		if n := len(f.runs()); n != 1 {
			t.Errorf("liveness ran %d times, want 1", n)
		}
		// Only uid-2's series remain.
		if n := testutil.CollectAndCount(reg, "prober_probe_total"); n != 3 {
			t.Errorf("%d prober_probe_total series after Remove, want 3 (uid-2's)", n)
		}
		m.Remove("uid-1", "app") // safe twice
		if m.Len() != 1 {
			t.Errorf("%d targets left, want 1", m.Len())
		}
	})
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func offsets(start time.Time, ts []time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(start)
	}
	return out
}

func TestNoGoroutinePerTargetBetweenRuns(t *testing.T) {
	m := newTestManager(&updates{}, nil)
	defer m.Stop()
	before := runtime.NumGoroutine()
	for i := range 1000 {
		tg := execTarget(Liveness, &fakeExec{}, Spec{Period: time.Hour, InitialDelay: time.Hour})
		tg.PodUID = "uid-" + strconv.Itoa(i)
		m.Add(tg)
	}
	if n := runtime.NumGoroutine() - before; n > 10 {
		t.Errorf("1000 targets waiting for their first run hold %d goroutines, want none of their own", n)
	}
	m.Stop()
	if m.Len() != 0 {
		t.Errorf("%d targets after Stop", m.Len())
	}
}

func TestHoldClosesKeptConnection(t *testing.T) {
	s := newConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	u := &updates{}
	m := NewManager(Options{OnUpdate: u.add, Logger: slog.New(slog.DiscardHandler)})
	defer m.Stop()
	m.Add(Target{Namespace: "ns", Pod: "web", PodUID: "uid-1", Container: "app", ContainerID: "c1",
		Kind: Liveness, Host: s.host, StartedAt: time.Now(),
		Spec: Spec{Period: 20 * time.Millisecond, FailureThreshold: 3, Handler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt(s.port)}}}})

	// Three failures reach the threshold; liveness then holds and its kept
	// connection has nothing left to do.
	waitFor(t, "the kept connection to close", func() bool { return s.closed.Load() == 1 })
	ups := u.get()
	if len(ups) != 3 || ups[2].State != Failure || !ups[2].Changed {
		t.Fatalf("%d updates before the connection closed, want 3 ending in Failure", len(ups))
	}
	if n := s.l.n.Load(); n != 1 {
		t.Errorf("3 runs opened %d connections, want 1", n)
	}
}

// at returns start plus each offset.
func at(start time.Time, offs ...time.Duration) []time.Time {
	out := make([]time.Time, len(offs))
	for i, d := range offs {
		out[i] = start.Add(d)
	}
	return out
}

func TestReadinessRetriesUntilFirstPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		// Refused three times while the app starts, then passing.
		f := &fakeExec{code: func(n int) int32 { return map[bool]int32{true: 1}[n < 3] }}
		u := &updates{}
		m := newTestManager(u, nil)
		defer m.Stop()
		m.Add(execTarget(Readiness, f, Spec{Period: 10 * time.Second}))
		time.Sleep(25 * time.Second)
		synctest.Wait()

		ms := time.Millisecond
		// Retries 5, 10 and 20 ms apart; from the first pass on, the grid.
		want := at(start, 0, 5*ms, 15*ms, 35*ms, 10*time.Second, 20*time.Second)
		if got := f.runs(); !equalTimes(got, want) {
			t.Errorf("runs at %v, want %v", offsets(start, got), offsets(start, want))
		}
		got := u.get()
		if len(got) < 4 || !got[3].Changed || got[3].State != Success {
			t.Fatalf("updates %+v: want the fourth run to make the probe ready", got)
		}
		for i, up := range got[:3] {
			if up.Changed || up.State != Failure {
				t.Errorf("run %d before the pass: state %v changed %v, want failure unchanged", i, up.State, up.Changed)
			}
		}
		if !got[1].Scheduled.Equal(start.Add(5*ms)) || got[1].Ran.Sub(got[1].Scheduled) != 0 {
			t.Errorf("retry scheduled %v ran %v, want both at 5ms",
				got[1].Scheduled.Sub(start), got[1].Ran.Sub(start))
		}
		// Only the retries between slots are early: the first run and the
		// runs on the grid are not.
		for i, up := range got {
			if want := i >= 1 && i <= 3; up.Early != want {
				t.Errorf("run %d at %v: early %v, want %v", i, up.Scheduled.Sub(start), up.Early, want)
			}
		}
	})
}

func TestReadinessRetriesStayWithinTheGrid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		f := &fakeExec{code: func(int) int32 { return 1 }} // never ready
		m := newTestManager(&updates{}, nil)
		defer m.Stop()
		m.Add(execTarget(Readiness, f, Spec{Period: 100 * time.Millisecond}))
		time.Sleep(450 * time.Millisecond)
		synctest.Wait()

		ms := time.Millisecond
		// 5, 10, 20, 40 ms apart; the next wait (80 ms) would pass the slot
		// at 100, and the one after (100 ms) is the period: the grid only.
		want := at(start, 0, 5*ms, 15*ms, 35*ms, 75*ms, 100*ms, 200*ms, 300*ms, 400*ms)
		if got := f.runs(); !equalTimes(got, want) {
			t.Errorf("runs at %v, want %v", offsets(start, got), offsets(start, want))
		}
	})
}

func TestReadinessSuccessThresholdCountsOnTheGrid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		f := &fakeExec{code: func(n int) int32 { return map[bool]int32{true: 1}[n == 0] }}
		u := &updates{}
		m := newTestManager(u, nil)
		defer m.Stop()
		m.Add(execTarget(Readiness, f, Spec{Period: time.Second, SuccessThreshold: 2}))
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()

		want := at(start, 0, 5*time.Millisecond, time.Second)
		if got := f.runs(); !equalTimes(got, want) {
			t.Errorf("runs at %v, want %v", offsets(start, got), offsets(start, want))
		}
		got := u.get()
		if len(got) != 3 || got[1].Changed || !got[2].Changed || got[2].State != Success {
			t.Errorf("updates %+v: want ready only at the second success, one period after the first", got)
		}
	})
}

func TestLivenessAndStartupFailuresStayOnTheGrid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		live := &fakeExec{code: func(int) int32 { return 1 }}
		startup := &fakeExec{code: func(int) int32 { return 1 }}
		m := newTestManager(&updates{}, nil)
		defer m.Stop()
		m.Add(execTarget(Liveness, live, Spec{Period: time.Second, FailureThreshold: 3}))
		st := execTarget(Startup, startup, Spec{Period: time.Second, FailureThreshold: 4})
		st.Container = "init"
		m.Add(st)
		time.Sleep(10 * time.Second)
		synctest.Wait()

		s := time.Second
		if got, want := live.runs(), at(start, 0, s, 2*s); !equalTimes(got, want) {
			t.Errorf("liveness ran at %v, want %v", offsets(start, got), offsets(start, want))
		}
		if got, want := startup.runs(), at(start, 0, s, 2*s, 3*s); !equalTimes(got, want) {
			t.Errorf("startup ran at %v, want %v", offsets(start, got), offsets(start, want))
		}
	})
}
