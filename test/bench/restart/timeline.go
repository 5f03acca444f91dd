package main

import (
	"context"
	"slices"
	"sync"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
)

// Marks on the timeline of one restart. A CRI call leaves two: its name
// with " begin" and " end".
const (
	markThreshold = "liveness threshold" // the probe result that owes the kill
	markDrain     = "drain"              // proxy drain of the pod's endpoints
	markStop      = "StopContainer"      // of the failed instance
	markStatus    = "ContainerStatus"    // of any instance
	markImage     = "ImagePresent"       // first step of the next start
	markCreate    = "CreateContainer"    // the new instance
	markStart     = "StartContainer"     // the new instance
	markRemove    = "RemoveContainer"    // an older instance
	markProbe     = "readiness run"      // a readiness run of the new instance
	markReady     = "readiness passed"   // its readiness state became Success
	markEndpoint  = "endpoint published" // the proxy got the pod's address back
	begin, end    = " begin", " end"
)

type mark struct {
	what string
	id   string // container ID, when the mark is about one
	at   time.Time
}

// timeline collects marks from the runtime wrapper, the prober callback and
// the endpoint sink; the bench reads and clears it once per restart.
type timeline struct {
	mu    sync.Mutex
	marks []mark
}

func (t *timeline) add(what, id string, at time.Time) {
	t.mu.Lock()
	t.marks = append(t.marks, mark{what: what, id: id, at: at})
	t.mu.Unlock()
}

// take returns the marks so far, in time order, and starts a new timeline.
func (t *timeline) take() []mark {
	t.mu.Lock()
	out := t.marks
	t.marks = nil
	t.mu.Unlock()
	slices.SortStableFunc(out, func(a, b mark) int { return a.at.Compare(b.at) })
	return out
}

// timedRuntime marks the CRI calls of the restart path.
type timedRuntime struct {
	runtime.Runtime
	tl *timeline
}

func (r *timedRuntime) timed(what, id string) func() {
	r.tl.add(what+begin, id, time.Now())
	return func() { r.tl.add(what+end, id, time.Now()) }
}

func (r *timedRuntime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	defer r.timed(markStop, id)()
	return r.Runtime.StopContainer(ctx, id, grace)
}

func (r *timedRuntime) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	defer r.timed(markStatus, id)()
	return r.Runtime.ContainerStatus(ctx, id)
}

func (r *timedRuntime) ImagePresent(ctx context.Context, ref string) (bool, error) {
	defer r.timed(markImage, "")()
	return r.Runtime.ImagePresent(ctx, ref)
}

func (r *timedRuntime) CreateContainer(ctx context.Context, podID string, cfg *cri.ContainerConfig,
	sandbox *cri.PodSandboxConfig) (string, error) {
	r.tl.add(markCreate+begin, "", time.Now())
	id, err := r.Runtime.CreateContainer(ctx, podID, cfg, sandbox)
	r.tl.add(markCreate+end, id, time.Now())
	return id, err
}

func (r *timedRuntime) StartContainer(ctx context.Context, id string) error {
	defer r.timed(markStart, id)()
	return r.Runtime.StartContainer(ctx, id)
}

func (r *timedRuntime) RemoveContainer(ctx context.Context, id string) error {
	defer r.timed(markRemove, id)()
	return r.Runtime.RemoveContainer(ctx, id)
}

// timedSink is the real proxy as the supervisor's endpoint sink, with drains
// and endpoint publications marked.
type timedSink struct {
	*proxy.Proxy
	tl *timeline

	mu      sync.Mutex
	present map[string]bool // addresses in the latest publication
}

func (s *timedSink) Drain(ctx context.Context, addrs []string) error {
	s.tl.add(markDrain+begin, "", time.Now())
	defer func() { s.tl.add(markDrain+end, "", time.Now()) }()
	return s.Proxy.Drain(ctx, addrs)
}

func (s *timedSink) SetEndpoints(eps []proxy.ServiceEndpoints) {
	s.Proxy.SetEndpoints(eps)
	now := time.Now()
	next := map[string]bool{}
	for _, se := range eps {
		for _, list := range se.Ports {
			for _, e := range list {
				next[e.Address] = true
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range next {
		if !s.present[a] {
			s.tl.add(markEndpoint, a, now)
		}
	}
	s.present = next
}
