package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is the ejection clock; tests move it by hand.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Unix(1_000_000, 0).UnixNano())
	return c
}

func statusBackend(t *testing.T, code int) *backend {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
}

func TestPassiveEjection(t *testing.T) {
	clock := newClock()
	bad, good := statusBackend(t, 500), statusBackend(t, 200)
	f := newFixture(t, Options{now: clock.now, BaseEjectionTime: time.Minute}, nil,
		bad.addr(), good.addr())

	// Round robin alternates: bad sees its fifth 500 within ten requests.
	for i := 0; i < 10; i++ {
		get(t, f.url+"/", nil)
	}
	if bad.hits.Load() != 5 {
		t.Fatalf("bad got %d requests, want 5", bad.hits.Load())
	}
	for i := 0; i < 10; i++ {
		if res := get(t, f.url+"/", nil); res.StatusCode != 200 {
			t.Errorf("after ejection: status %d, want 200", res.StatusCode)
		}
	}
	if bad.hits.Load() != 5 {
		t.Errorf("ejected endpoint got %d requests, want still 5", bad.hits.Load())
	}
	e := f.p.eps[bad.addr()]
	first := time.Duration(e.ejectedUntil.Load() - clock.ns.Load())
	if first != time.Minute {
		t.Errorf("first ejection lasts %v, want 1m", first)
	}

	// Back after the ejection; five more failures eject it for twice as long.
	clock.advance(time.Minute + time.Second)
	for bad.hits.Load() < 10 {
		get(t, f.url+"/", nil)
	}
	get(t, f.url+"/", nil)
	if second := time.Duration(e.ejectedUntil.Load() - clock.ns.Load()); second != 2*time.Minute {
		t.Errorf("second ejection lasts %v, want 2m", second)
	}
}

func TestNeverEjectTheLast(t *testing.T) {
	clock := newClock()
	a, b := statusBackend(t, 503), statusBackend(t, 503)
	f := newFixture(t, Options{now: clock.now}, nil, a.addr(), b.addr())
	for i := 0; i < 40; i++ {
		get(t, f.url+"/", nil)
	}
	now := clock.ns.Load()
	ea, eb := f.p.eps[a.addr()].ejected(now), f.p.eps[b.addr()].ejected(now)
	if ea == eb {
		t.Errorf("ejected a=%v b=%v: want exactly one of two failing endpoints ejected", ea, eb)
	}

	single := statusBackend(t, 500)
	f2 := newFixture(t, Options{now: clock.now}, nil, single.addr())
	for i := 0; i < 20; i++ {
		if res := get(t, f2.url+"/", nil); res.StatusCode != 500 {
			t.Fatalf("status %d, want the backend's 500", res.StatusCode)
		}
	}
	if f2.p.eps[single.addr()].ejected(now) || single.hits.Load() != 20 {
		t.Errorf("the only endpoint was ejected (hits %d)", single.hits.Load())
	}
}

func TestPanicModeWhenAllEjected(t *testing.T) {
	pl := &pool{}
	a, b := &endpoint{addr: "a"}, &endpoint{addr: "b"}
	a.ejectedUntil.Store(100)
	b.ejectedUntil.Store(100)
	if got := pl.pick([]*endpoint{a, b}, 50, nil); got == nil {
		t.Fatal("no endpoint picked although all are ejected")
	}
	if got := pl.pick([]*endpoint{a, b}, 50, []*endpoint{a}); got != b {
		t.Errorf("picked %v, want the untried b", got)
	}
}

func TestLeastRequestPick(t *testing.T) {
	pl := &pool{}
	pl.policy.Store(int32(leastRequest))
	a, b, c := &endpoint{addr: "a"}, &endpoint{addr: "b"}, &endpoint{addr: "c"}
	a.inflight.Store(5)
	for i := 0; i < 200; i++ {
		if got := pl.pick([]*endpoint{a, b}, 0, nil); got != b {
			t.Fatalf("two endpoints: picked %s, want the idle b", got.addr)
		}
	}
	b.inflight.Store(1)
	c.inflight.Store(9)
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		counts[pl.pick([]*endpoint{a, b, c}, 0, nil).addr]++
	}
	// c loses every pair it is in; b wins both of its pairs; a wins one.
	if counts["c"] != 0 || counts["b"] <= counts["a"] {
		t.Errorf("picks %v: want c never, b more than a", counts)
	}
}

func TestLoadBalancerAnnotation(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  lbPolicy
	}{{"", roundRobin}, {"round-robin", roundRobin}, {"least-request", leastRequest}} {
		f := newFixture(t, Options{}, map[string]string{lbAnnotation: tc.value}, "127.0.0.1:1")
		pl := f.p.table.Load().any.prefixes[0].rt.pool
		if got := lbPolicy(pl.policy.Load()); got != tc.want {
			t.Errorf("annotation %q: policy %d, want %d", tc.value, got, tc.want)
		}
	}
}

func TestDrainWaitsForInFlight(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	f := newFixture(t, Options{}, nil, b.addr())
	resc := make(chan *http.Response, 1)
	go func() {
		res, err := http.Get(f.url + "/")
		if err != nil {
			t.Error(err)
		}
		resc <- res
	}()
	<-arrived
	f.p.SetEndpoints(nil)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.p.Drain(ctx, []string{b.addr()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain with a request in flight returned %v, want it to wait until ctx ends", err)
	}

	drained := make(chan error, 1)
	go func() { drained <- f.p.Drain(context.Background(), []string{b.addr()}) }()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v before the request finished", err)
	default:
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	res := <-resc
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("drained request did not finish with 200: %v", res)
	}
	res.Body.Close()
	if res := get(t, f.url+"/", nil); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after removal: %d, want 503", res.StatusCode)
	}
	if err := f.p.Drain(context.Background(), []string{"10.9.9.9:1"}); err != nil {
		t.Errorf("Drain of an unknown address: %v", err)
	}
}

// TestRemovalUnderLoad checks that once SetEndpoints dropped an endpoint
// and Drain returned, it receives nothing more, while load runs on.
func TestRemovalUnderLoad(t *testing.T) {
	a, b := newBackend(t, okHandler), newBackend(t, okHandler)
	f := newFixture(t, Options{}, nil, a.addr(), b.addr())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()

	const workers, perWorker = 8, 150
	var done atomic.Int64
	halfway := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				res, err := client.Get(f.url + "/")
				if err != nil || res.StatusCode != 200 {
					failures.Add(1)
				}
				if res != nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				if done.Add(1) == workers*perWorker/3 {
					once.Do(func() { close(halfway) })
				}
			}
		}()
	}
	<-halfway
	f.p.SetEndpoints([]ServiceEndpoints{epsOf("app", b.addr())})
	if err := f.p.Drain(ctxTimeout(t), []string{a.addr()}); err != nil {
		t.Fatal(err)
	}
	atRemoval := a.hits.Load()
	wg.Wait()
	if got := a.hits.Load(); got != atRemoval {
		t.Errorf("removed endpoint got %d requests after Drain", got-atRemoval)
	}
	if failures.Load() != 0 {
		t.Errorf("%d requests failed during the change", failures.Load())
	}
	if atRemoval == 0 || b.hits.Load() == 0 {
		t.Errorf("hits a=%d b=%d: both should have served", atRemoval, b.hits.Load())
	}
}
