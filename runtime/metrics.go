package runtime

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// methods lists every Runtime method, the values of the method label.
var methods = []string{
	MethodStatus, MethodRunPodSandbox, MethodStopPodSandbox, MethodRemovePodSandbox,
	MethodPodSandboxStatus, MethodListPodSandboxes, MethodCreateContainer,
	MethodStartContainer, MethodStopContainer, MethodRemoveContainer,
	MethodContainerStatus, MethodListContainers, MethodExecSync, MethodImagePresent,
	MethodPullImage,
}

// instrumented wraps a Runtime and times every call.
type instrumented struct {
	rt       Runtime
	duration map[string]prometheus.Observer
	errs     map[string]prometheus.Counter
}

// Instrument returns rt with every call timed in
// vigil_cri_call_duration_seconds{method} and its failures counted in
// vigil_cri_call_errors_total{method}. A nil reg gives working but
// unregistered collectors.
//
// Not every error counts as one worth alarming on:
//   - NotFound from StopPodSandbox, RemovePodSandbox, StopContainer and
//     RemoveContainer means "already gone", which is what the caller wanted
//     (the kubelet treats it the same way);
//   - context.Canceled means the caller gave up (vigil stopping, a pod
//     removed mid-call), not that the runtime failed.
//
// Deadline expiries do count: a runtime too slow to answer is the failure
// an operator most needs to see.
func Instrument(rt Runtime, reg prometheus.Registerer) Runtime {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vigil_cri_call_duration_seconds",
		Help: "Duration of CRI calls by method, whatever their outcome.",
		// 1 ms .. ~65 s: sandbox creation and image pulls take seconds.
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
	}, []string{"method"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_cri_call_errors_total",
		Help: "Failed CRI calls by method (NotFound on stop/remove and caller cancellation excluded).",
	}, []string{"method"})
	if reg != nil {
		reg.MustRegister(duration, errs)
	}
	in := &instrumented{
		rt:       rt,
		duration: make(map[string]prometheus.Observer, len(methods)),
		errs:     make(map[string]prometheus.Counter, len(methods)),
	}
	// Every series exists from the start, so rate() sees the first error.
	for _, m := range methods {
		in.duration[m] = duration.WithLabelValues(m)
		in.errs[m] = errs.WithLabelValues(m)
	}
	return in
}

// done records one call that began at start.
func (in *instrumented) done(method string, start time.Time, err error) {
	in.duration[method].Observe(time.Since(start).Seconds())
	if countsAsError(method, err) {
		in.errs[method].Inc()
	}
}

func countsAsError(method string, err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return false
	case IsNotFound(err):
		switch method {
		case MethodStopPodSandbox, MethodRemovePodSandbox, MethodStopContainer,
			MethodRemoveContainer:
			return false
		}
	}
	return true
}

func (in *instrumented) Status(ctx context.Context) (*cri.RuntimeStatus, error) {
	start := time.Now()
	st, err := in.rt.Status(ctx)
	in.done(MethodStatus, start, err)
	return st, err
}

func (in *instrumented) RunPodSandbox(ctx context.Context, cfg *cri.PodSandboxConfig) (string, error) {
	start := time.Now()
	id, err := in.rt.RunPodSandbox(ctx, cfg)
	in.done(MethodRunPodSandbox, start, err)
	return id, err
}

func (in *instrumented) StopPodSandbox(ctx context.Context, id string) error {
	start := time.Now()
	err := in.rt.StopPodSandbox(ctx, id)
	in.done(MethodStopPodSandbox, start, err)
	return err
}

func (in *instrumented) RemovePodSandbox(ctx context.Context, id string) error {
	start := time.Now()
	err := in.rt.RemovePodSandbox(ctx, id)
	in.done(MethodRemovePodSandbox, start, err)
	return err
}

func (in *instrumented) PodSandboxStatus(ctx context.Context, id string) (*cri.PodSandboxStatus, error) {
	start := time.Now()
	st, err := in.rt.PodSandboxStatus(ctx, id)
	in.done(MethodPodSandboxStatus, start, err)
	return st, err
}

func (in *instrumented) ListPodSandboxes(ctx context.Context, filter *cri.PodSandboxFilter) ([]*cri.PodSandbox, error) {
	start := time.Now()
	list, err := in.rt.ListPodSandboxes(ctx, filter)
	in.done(MethodListPodSandboxes, start, err)
	return list, err
}

func (in *instrumented) CreateContainer(ctx context.Context, podID string, cfg *cri.ContainerConfig,
	sandbox *cri.PodSandboxConfig) (string, error) {
	start := time.Now()
	id, err := in.rt.CreateContainer(ctx, podID, cfg, sandbox)
	in.done(MethodCreateContainer, start, err)
	return id, err
}

func (in *instrumented) StartContainer(ctx context.Context, id string) error {
	start := time.Now()
	err := in.rt.StartContainer(ctx, id)
	in.done(MethodStartContainer, start, err)
	return err
}

func (in *instrumented) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	start := time.Now()
	err := in.rt.StopContainer(ctx, id, grace)
	in.done(MethodStopContainer, start, err)
	return err
}

func (in *instrumented) RemoveContainer(ctx context.Context, id string) error {
	start := time.Now()
	err := in.rt.RemoveContainer(ctx, id)
	in.done(MethodRemoveContainer, start, err)
	return err
}

func (in *instrumented) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	start := time.Now()
	st, err := in.rt.ContainerStatus(ctx, id)
	in.done(MethodContainerStatus, start, err)
	return st, err
}

func (in *instrumented) ListContainers(ctx context.Context, filter *cri.ContainerFilter) ([]*cri.Container, error) {
	start := time.Now()
	list, err := in.rt.ListContainers(ctx, filter)
	in.done(MethodListContainers, start, err)
	return list, err
}

func (in *instrumented) ExecSync(ctx context.Context, id string, cmd []string,
	timeout time.Duration) (ExecResult, error) {
	start := time.Now()
	res, err := in.rt.ExecSync(ctx, id, cmd, timeout)
	in.done(MethodExecSync, start, err)
	return res, err
}

func (in *instrumented) ImagePresent(ctx context.Context, ref string) (bool, error) {
	start := time.Now()
	ok, err := in.rt.ImagePresent(ctx, ref)
	in.done(MethodImagePresent, start, err)
	return ok, err
}

func (in *instrumented) PullImage(ctx context.Context, ref string) error {
	start := time.Now()
	err := in.rt.PullImage(ctx, ref)
	in.done(MethodPullImage, start, err)
	return err
}
