package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
)

// fakeRuntime is an in-memory runtime.Runtime. Containers start and stay
// running until the test exits them (exit) or onStart decides otherwise.
type fakeRuntime struct {
	mu         sync.Mutex
	seq        int
	sandboxes  map[string]*cri.PodSandbox
	containers map[string]*fakeContainer
	calls      []string // "Method id", in order
	dupes      int      // containers created while a copy still ran
	exits      chan runtime.Exit
	// onStart, when set, runs after a container starts (under mu) and may
	// end it at once, for crash loops: it returns the exit code and true.
	onStart func(name string) (int32, bool)
}

type fakeContainer struct {
	c  *cri.Container
	st *cri.ContainerStatus
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		sandboxes:  map[string]*cri.PodSandbox{},
		containers: map[string]*fakeContainer{},
		exits:      make(chan runtime.Exit, 100),
	}
}

var _ runtime.Runtime = (*fakeRuntime)(nil)

// Watch makes fakeRuntime its own ExitWatcher.
func (f *fakeRuntime) Watch(ctx context.Context) <-chan runtime.Exit {
	out := make(chan runtime.Exit)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ex := <-f.exits:
				select {
				case out <- ex:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func (f *fakeRuntime) record(method, id string) {
	f.calls = append(f.calls, method+" "+id)
}

// callsOf counts calls of method.
func (f *fakeRuntime) callsOf(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if len(c) > len(method) && c[:len(method)+1] == method+" " {
			n++
		}
	}
	return n
}

// running counts running containers named name.
func (f *fakeRuntime) running(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.containers {
		if c.c.Metadata.Name == name && c.st.State == cri.ContainerState_CONTAINER_RUNNING {
			n++
		}
	}
	return n
}

// exit ends the running container name with code, as if it exited by itself.
func (f *fakeRuntime) exit(name string, code int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, c := range f.containers {
		if c.c.Metadata.Name == name && c.st.State == cri.ContainerState_CONTAINER_RUNNING {
			f.exitLocked(id, code)
		}
	}
}

func (f *fakeRuntime) exitLocked(id string, code int32) {
	c := f.containers[id]
	now := time.Now()
	c.st.State, c.c.State = cri.ContainerState_CONTAINER_EXITED, cri.ContainerState_CONTAINER_EXITED
	c.st.ExitCode, c.st.FinishedAt = code, now.UnixNano()
	c.st.Reason = "Error"
	if code == 0 {
		c.st.Reason = "Completed"
	}
	select {
	case f.exits <- runtime.Exit{ContainerID: id, ExitCode: code, ExitedAt: now}:
	default:
	}
}

func (f *fakeRuntime) Status(context.Context) (*cri.RuntimeStatus, error) {
	return &cri.RuntimeStatus{}, nil
}

func (f *fakeRuntime) RunPodSandbox(_ context.Context, cfg *cri.PodSandboxConfig) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("sb%d", f.seq)
	f.record("RunPodSandbox", id)
	f.sandboxes[id] = &cri.PodSandbox{
		Id: id, Metadata: cfg.Metadata, State: cri.PodSandboxState_SANDBOX_READY,
		Labels: cfg.Labels, Annotations: cfg.Annotations, CreatedAt: time.Now().UnixNano(),
	}
	return id, nil
}

func (f *fakeRuntime) StopPodSandbox(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("StopPodSandbox", id)
	sb, ok := f.sandboxes[id]
	if !ok {
		return runtime.ErrNotFound
	}
	sb.State = cri.PodSandboxState_SANDBOX_NOTREADY
	for cid, c := range f.containers {
		if c.c.PodSandboxId == id && c.st.State == cri.ContainerState_CONTAINER_RUNNING {
			f.exitLocked(cid, 137)
		}
	}
	return nil
}

func (f *fakeRuntime) RemovePodSandbox(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RemovePodSandbox", id)
	delete(f.sandboxes, id)
	for cid, c := range f.containers {
		if c.c.PodSandboxId == id {
			delete(f.containers, cid)
		}
	}
	return nil
}

func (f *fakeRuntime) PodSandboxStatus(_ context.Context, id string) (*cri.PodSandboxStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: %w", id, runtime.ErrNotFound)
	}
	return &cri.PodSandboxStatus{Id: id, State: sb.State, Metadata: sb.Metadata}, nil
}

func (f *fakeRuntime) ListPodSandboxes(_ context.Context, filter *cri.PodSandboxFilter) ([]*cri.PodSandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cri.PodSandbox
	for _, sb := range f.sandboxes {
		if matches(sb.Labels, filter.GetLabelSelector()) {
			out = append(out, sb)
		}
	}
	return out, nil
}

func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (f *fakeRuntime) CreateContainer(
	_ context.Context, podID string, cfg *cri.ContainerConfig, _ *cri.PodSandboxConfig,
) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[podID]; !ok {
		return "", fmt.Errorf("sandbox %s: %w", podID, runtime.ErrNotFound)
	}
	// As containerd does, a container's name and attempt are reserved in
	// its sandbox for as long as the container exists.
	for _, c := range f.containers {
		if c.c.PodSandboxId == podID && c.c.Metadata.Name == cfg.Metadata.Name &&
			c.c.Metadata.Attempt == cfg.Metadata.Attempt {
			return "", fmt.Errorf("failed to reserve container name %s_%d: reserved for %s",
				cfg.Metadata.Name, cfg.Metadata.Attempt, c.c.Id)
		}
	}
	f.seq++
	id := fmt.Sprintf("c%d", f.seq)
	f.record("CreateContainer", id)
	for _, c := range f.containers {
		if c.c.PodSandboxId == podID && c.c.Metadata.Name == cfg.Metadata.Name &&
			c.st.State == cri.ContainerState_CONTAINER_RUNNING {
			f.dupes++ // a second copy while the first still runs
		}
	}
	now := time.Now().UnixNano()
	f.containers[id] = &fakeContainer{
		c: &cri.Container{
			Id: id, PodSandboxId: podID, Metadata: cfg.Metadata, State: cri.ContainerState_CONTAINER_CREATED,
			Labels: cfg.Labels, Annotations: cfg.Annotations, CreatedAt: now,
		},
		st: &cri.ContainerStatus{
			Id: id, Metadata: cfg.Metadata, State: cri.ContainerState_CONTAINER_CREATED, CreatedAt: now,
			Annotations: cfg.Annotations,
		},
	}
	return id, nil
}

func (f *fakeRuntime) StartContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("StartContainer", id)
	c, ok := f.containers[id]
	if !ok {
		return runtime.ErrNotFound
	}
	c.st.State, c.c.State = cri.ContainerState_CONTAINER_RUNNING, cri.ContainerState_CONTAINER_RUNNING
	c.st.StartedAt = time.Now().UnixNano()
	if f.onStart != nil {
		if code, exit := f.onStart(c.c.Metadata.Name); exit {
			f.exitLocked(id, code)
		}
	}
	return nil
}

func (f *fakeRuntime) StopContainer(_ context.Context, id string, grace time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("StopContainer", fmt.Sprintf("%s %s", id, grace))
	c, ok := f.containers[id]
	if !ok {
		return runtime.ErrNotFound
	}
	if c.st.State == cri.ContainerState_CONTAINER_RUNNING {
		f.exitLocked(id, 137)
	}
	return nil
}

func (f *fakeRuntime) RemoveContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RemoveContainer", id)
	delete(f.containers, id)
	return nil
}

func (f *fakeRuntime) ContainerStatus(_ context.Context, id string) (*cri.ContainerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, runtime.ErrNotFound)
	}
	return proto.Clone(c.st).(*cri.ContainerStatus), nil
}

func (f *fakeRuntime) ListContainers(_ context.Context, filter *cri.ContainerFilter) ([]*cri.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cri.Container
	for _, c := range f.containers {
		if filter.GetPodSandboxId() != "" && c.c.PodSandboxId != filter.GetPodSandboxId() {
			continue
		}
		if filter.GetState() != nil && c.c.State != filter.GetState().GetState() {
			continue
		}
		if matches(c.c.Labels, filter.GetLabelSelector()) {
			out = append(out, proto.Clone(c.c).(*cri.Container))
		}
	}
	return out, nil
}

// inSandbox lists the containers named name in the sandbox of the pod that
// has one.
func (f *fakeRuntime) inSandbox(name string) []*cri.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cri.Container
	for _, c := range f.containers {
		if _, ok := f.sandboxes[c.c.PodSandboxId]; ok && c.c.Metadata.Name == name {
			out = append(out, proto.Clone(c.c).(*cri.Container))
		}
	}
	return out
}

func (f *fakeRuntime) ExecSync(context.Context, string, []string, time.Duration) (runtime.ExecResult, error) {
	return runtime.ExecResult{}, nil
}

func (f *fakeRuntime) ImagePresent(context.Context, string) (bool, error) { return true, nil }

func (f *fakeRuntime) PullImage(context.Context, string) error { return nil }

// fakeSink records endpoint publications.
type fakeSink struct {
	mu   sync.Mutex
	last []proxy.ServiceEndpoints
	log  func(string) // called with "endpoints N" on each publication
}

func (s *fakeSink) SetEndpoints(eps []proxy.ServiceEndpoints) {
	s.mu.Lock()
	s.last = eps
	s.mu.Unlock()
	if s.log != nil {
		s.log(fmt.Sprintf("endpoints %d", endpointCount(eps)))
	}
}

func (s *fakeSink) Drain(context.Context, []string) error { return nil }

// count is the number of endpoints in the latest publication.
func (s *fakeSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return endpointCount(s.last)
}

func endpointCount(ses []proxy.ServiceEndpoints) int {
	n := 0
	for _, se := range ses {
		for _, eps := range se.Ports {
			n += len(eps)
		}
	}
	return n
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testOptions are Options for a supervisor over rt in a temporary log dir.
func testOptions(t *testing.T, rt runtime.Runtime) Options {
	return Options{
		Runtime:      rt,
		Logger:       quietLogger(),
		NodeName:     "node",
		LogDir:       t.TempDir(),
		CgroupParent: "-",
		ResyncPeriod: time.Hour,
	}
}

// faultyOptions are testOptions over a fake runtime behind a fault
// injector, with the fake's exits and a fake prober wired in.
func faultyOptions(t *testing.T) (*fakeRuntime, *runtime.Faulty, *fakeProber, Options) {
	rt := newFakeRuntime()
	faulty := &runtime.Faulty{Runtime: rt}
	pm := &fakeProber{}
	opts := testOptions(t, faulty)
	opts.Exits, opts.Prober = rt, pm
	return rt, faulty, pm, opts
}

// deployment is a one-container Deployment workload; the container has the
// workload's name.
func deployment(name string, replicas int32, policy corev1.RestartPolicy, hash string) *manifest.Workload {
	return &manifest.Workload{
		Kind: "Deployment", Namespace: "ns", Name: name, Replicas: replicas, Hash: hash,
		Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{
				RestartPolicy: policy,
				Containers:    []corev1.Container{{Name: name, Image: "img"}},
			},
		},
	}
}
