package supervisor

import (
	"context"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/runtime"
)

// Defaults of the supervisor's own bounds on runtime calls.
const (
	DefaultCallTimeout = 10 * time.Second
	// DefaultStopMargin follows the kubelet, which gives StopContainer two
	// minutes beyond the grace period before it gives up on the call.
	DefaultStopMargin  = 2 * time.Minute
	DefaultPullTimeout = 5 * time.Minute
)

// deadlined bounds every call to the runtime that arrives without a
// deadline. runtime.CRI applies its own, but the supervisor does not rely on
// whatever Runtime it is given: a call that never returns would hold its pod's
// worker for good (a hung StopContainer through runtime.Faulty does exactly
// that).
type deadlined struct {
	rt                     runtime.Runtime
	call, stopMargin, pull time.Duration
}

var _ runtime.Runtime = (*deadlined)(nil)

func bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func (d *deadlined) Status(ctx context.Context) (*cri.RuntimeStatus, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.Status(ctx)
}

func (d *deadlined) RunPodSandbox(ctx context.Context, cfg *cri.PodSandboxConfig) (string, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.RunPodSandbox(ctx, cfg)
}

func (d *deadlined) StopPodSandbox(ctx context.Context, id string) error {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.StopPodSandbox(ctx, id)
}

func (d *deadlined) RemovePodSandbox(ctx context.Context, id string) error {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.RemovePodSandbox(ctx, id)
}

func (d *deadlined) PodSandboxStatus(ctx context.Context, id string) (*cri.PodSandboxStatus, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.PodSandboxStatus(ctx, id)
}

func (d *deadlined) ListPodSandboxes(
	ctx context.Context, filter *cri.PodSandboxFilter,
) ([]*cri.PodSandbox, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.ListPodSandboxes(ctx, filter)
}

func (d *deadlined) CreateContainer(
	ctx context.Context, podID string, cfg *cri.ContainerConfig, sandbox *cri.PodSandboxConfig,
) (string, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.CreateContainer(ctx, podID, cfg, sandbox)
}

func (d *deadlined) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.StartContainer(ctx, id)
}

// StopContainer gets the grace period plus the stop margin, like the kubelet.
func (d *deadlined) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	ctx, cancel := bound(ctx, max(grace, 0)+d.stopMargin)
	defer cancel()
	return d.rt.StopContainer(ctx, id, grace)
}

func (d *deadlined) RemoveContainer(ctx context.Context, id string) error {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.RemoveContainer(ctx, id)
}

func (d *deadlined) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.ContainerStatus(ctx, id)
}

func (d *deadlined) ListContainers(
	ctx context.Context, filter *cri.ContainerFilter,
) ([]*cri.Container, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.ListContainers(ctx, filter)
}

// ExecSync gets the command's own timeout plus the call timeout.
func (d *deadlined) ExecSync(
	ctx context.Context, id string, cmd []string, timeout time.Duration,
) (runtime.ExecResult, error) {
	ctx, cancel := bound(ctx, max(timeout, 0)+d.call)
	defer cancel()
	return d.rt.ExecSync(ctx, id, cmd, timeout)
}

func (d *deadlined) ImagePresent(ctx context.Context, ref string) (bool, error) {
	ctx, cancel := bound(ctx, d.call)
	defer cancel()
	return d.rt.ImagePresent(ctx, ref)
}

func (d *deadlined) PullImage(ctx context.Context, ref string) error {
	ctx, cancel := bound(ctx, d.pull)
	defer cancel()
	return d.rt.PullImage(ctx, ref)
}
