package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ErrInjected is the error a Faulty returns when a test asked for a failure
// without naming one.
var ErrInjected = errors.New("injected fault")

// Names of the Runtime methods, for Faulty.Hang and Faulty.Fail.
const (
	MethodStatus           = "Status"
	MethodRunPodSandbox    = "RunPodSandbox"
	MethodStopPodSandbox   = "StopPodSandbox"
	MethodRemovePodSandbox = "RemovePodSandbox"
	MethodPodSandboxStatus = "PodSandboxStatus"
	MethodListPodSandboxes = "ListPodSandboxes"
	MethodCreateContainer  = "CreateContainer"
	MethodStartContainer   = "StartContainer"
	MethodStopContainer    = "StopContainer"
	MethodRemoveContainer  = "RemoveContainer"
	MethodContainerStatus  = "ContainerStatus"
	MethodListContainers   = "ListContainers"
	MethodExecSync         = "ExecSync"
	MethodImagePresent     = "ImagePresent"
	MethodPullImage        = "PullImage"
)

// Faulty wraps a Runtime for tests and makes chosen methods hang or fail a
// number of times before they reach the wrapped Runtime again:
//
//	rt := &runtime.Faulty{Runtime: fake}
//	rt.HangStop(2) // the next two StopContainer calls block until ctx ends
//
// A hanging call returns ctx's error once ctx ends and never reaches the
// wrapped Runtime. The zero value (with Runtime set) injects nothing. Faulty is
// safe for concurrent use.
type Faulty struct {
	Runtime

	// OnCall, when set, is called at the start of every call with the
	// method name, before any fault applies; tests use it to learn that a
	// call has begun (e.g. to send on a channel).
	OnCall func(method string)

	mu     sync.Mutex
	faults map[string]*fault
	calls  map[string]int
}

type fault struct {
	n    int // calls left to affect; negative: every call
	hang bool
	err  error
}

// Hang makes the next n calls of method block until their ctx ends; n < 0
// makes every call hang until Reset.
func (f *Faulty) Hang(method string, n int) { f.set(method, &fault{n: n, hang: true}) }

// Fail makes the next n calls of method return err (ErrInjected when nil)
// without reaching the wrapped Runtime; n < 0 means every call until Reset.
func (f *Faulty) Fail(method string, n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	f.set(method, &fault{n: n, err: err})
}

// HangStop is Hang(MethodStopContainer, n).
func (f *Faulty) HangStop(n int) { f.Hang(MethodStopContainer, n) }

// FailStop is Fail(MethodStopContainer, n, err).
func (f *Faulty) FailStop(n int, err error) { f.Fail(MethodStopContainer, n, err) }

// Reset removes every fault; call counts stay.
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// Calls tells how many times method was called, faulted calls included.
func (f *Faulty) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *Faulty) set(method string, flt *fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.faults == nil {
		f.faults = make(map[string]*fault)
	}
	if flt.n == 0 {
		delete(f.faults, method)
		return
	}
	f.faults[method] = flt
}

// enter counts the call and applies a pending fault. A nil return lets the
// call through to the wrapped Runtime.
func (f *Faulty) enter(ctx context.Context, method string) error {
	if f.OnCall != nil {
		f.OnCall(method)
	}
	f.mu.Lock()
	if f.calls == nil {
		f.calls = make(map[string]int)
	}
	f.calls[method]++
	flt := f.faults[method]
	var hang bool
	var err error
	if flt != nil {
		hang, err = flt.hang, flt.err
		if flt.n > 0 {
			flt.n--
			if flt.n == 0 {
				delete(f.faults, method)
			}
		}
	}
	f.mu.Unlock()

	switch {
	case hang:
		<-ctx.Done()
		return fmt.Errorf("%s (injected hang): %w", method, ctx.Err())
	case err != nil:
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

func (f *Faulty) Status(ctx context.Context) (*cri.RuntimeStatus, error) {
	if err := f.enter(ctx, MethodStatus); err != nil {
		return nil, err
	}
	return f.Runtime.Status(ctx)
}

func (f *Faulty) RunPodSandbox(ctx context.Context, cfg *cri.PodSandboxConfig) (string, error) {
	if err := f.enter(ctx, MethodRunPodSandbox); err != nil {
		return "", err
	}
	return f.Runtime.RunPodSandbox(ctx, cfg)
}

func (f *Faulty) StopPodSandbox(ctx context.Context, id string) error {
	if err := f.enter(ctx, MethodStopPodSandbox); err != nil {
		return err
	}
	return f.Runtime.StopPodSandbox(ctx, id)
}

func (f *Faulty) RemovePodSandbox(ctx context.Context, id string) error {
	if err := f.enter(ctx, MethodRemovePodSandbox); err != nil {
		return err
	}
	return f.Runtime.RemovePodSandbox(ctx, id)
}

func (f *Faulty) PodSandboxStatus(ctx context.Context, id string) (*cri.PodSandboxStatus, error) {
	if err := f.enter(ctx, MethodPodSandboxStatus); err != nil {
		return nil, err
	}
	return f.Runtime.PodSandboxStatus(ctx, id)
}

func (f *Faulty) ListPodSandboxes(
	ctx context.Context, filter *cri.PodSandboxFilter,
) ([]*cri.PodSandbox, error) {
	if err := f.enter(ctx, MethodListPodSandboxes); err != nil {
		return nil, err
	}
	return f.Runtime.ListPodSandboxes(ctx, filter)
}

func (f *Faulty) CreateContainer(
	ctx context.Context, podID string, cfg *cri.ContainerConfig, sandbox *cri.PodSandboxConfig,
) (string, error) {
	if err := f.enter(ctx, MethodCreateContainer); err != nil {
		return "", err
	}
	return f.Runtime.CreateContainer(ctx, podID, cfg, sandbox)
}

func (f *Faulty) StartContainer(ctx context.Context, id string) error {
	if err := f.enter(ctx, MethodStartContainer); err != nil {
		return err
	}
	return f.Runtime.StartContainer(ctx, id)
}

func (f *Faulty) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	if err := f.enter(ctx, MethodStopContainer); err != nil {
		return err
	}
	return f.Runtime.StopContainer(ctx, id, grace)
}

func (f *Faulty) RemoveContainer(ctx context.Context, id string) error {
	if err := f.enter(ctx, MethodRemoveContainer); err != nil {
		return err
	}
	return f.Runtime.RemoveContainer(ctx, id)
}

func (f *Faulty) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	if err := f.enter(ctx, MethodContainerStatus); err != nil {
		return nil, err
	}
	return f.Runtime.ContainerStatus(ctx, id)
}

func (f *Faulty) ListContainers(
	ctx context.Context, filter *cri.ContainerFilter,
) ([]*cri.Container, error) {
	if err := f.enter(ctx, MethodListContainers); err != nil {
		return nil, err
	}
	return f.Runtime.ListContainers(ctx, filter)
}

func (f *Faulty) ExecSync(
	ctx context.Context, id string, cmd []string, timeout time.Duration,
) (ExecResult, error) {
	if err := f.enter(ctx, MethodExecSync); err != nil {
		return ExecResult{}, err
	}
	return f.Runtime.ExecSync(ctx, id, cmd, timeout)
}

func (f *Faulty) ImagePresent(ctx context.Context, ref string) (bool, error) {
	if err := f.enter(ctx, MethodImagePresent); err != nil {
		return false, err
	}
	return f.Runtime.ImagePresent(ctx, ref)
}

func (f *Faulty) PullImage(ctx context.Context, ref string) error {
	if err := f.enter(ctx, MethodPullImage); err != nil {
		return err
	}
	return f.Runtime.PullImage(ctx, ref)
}
