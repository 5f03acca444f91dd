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

// Faulty wraps a Runtime for tests and makes chosen methods hang, fail or
// lose their reply a number of times before they reach the wrapped Runtime
// again:
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
	// lose lets the call reach the wrapped Runtime and returns err instead
	// of its result, as when the reply is lost after the runtime acted.
	lose bool
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

// Lose lets the next n calls of method reach the wrapped Runtime and then
// return err (ErrInjected when nil) instead of what it answered: the runtime
// acted, but the caller never learns so, as when a reply is lost to a
// timeout or a restarting daemon. n < 0 means every call until Reset.
func (f *Faulty) Lose(method string, n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	f.set(method, &fault{n: n, err: err, lose: true})
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

// enter counts the call and applies a pending fault. A nil err lets the
// call through to the wrapped Runtime; a non-nil lost is then returned in
// place of its result (see leave).
func (f *Faulty) enter(ctx context.Context, method string) (lost, err error) {
	if f.OnCall != nil {
		f.OnCall(method)
	}
	f.mu.Lock()
	if f.calls == nil {
		f.calls = make(map[string]int)
	}
	f.calls[method]++
	flt := f.faults[method]
	var hang, lose bool
	if flt != nil {
		hang, lose, err = flt.hang, flt.lose, flt.err
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
		return nil, fmt.Errorf("%s (injected hang): %w", method, ctx.Err())
	case lose:
		return fmt.Errorf("%s (reply lost): %w", method, err), nil
	case err != nil:
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	return nil, nil
}

// leave is the error a call let through returns: lost when its reply is to
// be lost, else the wrapped Runtime's own.
func (f *Faulty) leave(lost, err error) error {
	if lost != nil {
		return lost
	}
	return err
}

func (f *Faulty) Status(ctx context.Context) (*cri.RuntimeStatus, error) {
	lost, err := f.enter(ctx, MethodStatus)
	if err != nil {
		return nil, err
	}
	v, err := f.Runtime.Status(ctx)
	return v, f.leave(lost, err)
}

func (f *Faulty) RunPodSandbox(ctx context.Context, cfg *cri.PodSandboxConfig) (string, error) {
	lost, err := f.enter(ctx, MethodRunPodSandbox)
	if err != nil {
		return "", err
	}
	v, err := f.Runtime.RunPodSandbox(ctx, cfg)
	return v, f.leave(lost, err)
}

func (f *Faulty) StopPodSandbox(ctx context.Context, id string) error {
	lost, err := f.enter(ctx, MethodStopPodSandbox)
	if err != nil {
		return err
	}
	return f.leave(lost, f.Runtime.StopPodSandbox(ctx, id))
}

func (f *Faulty) RemovePodSandbox(ctx context.Context, id string) error {
	lost, err := f.enter(ctx, MethodRemovePodSandbox)
	if err != nil {
		return err
	}
	return f.leave(lost, f.Runtime.RemovePodSandbox(ctx, id))
}

func (f *Faulty) PodSandboxStatus(ctx context.Context, id string) (*cri.PodSandboxStatus, error) {
	lost, err := f.enter(ctx, MethodPodSandboxStatus)
	if err != nil {
		return nil, err
	}
	v, err := f.Runtime.PodSandboxStatus(ctx, id)
	return v, f.leave(lost, err)
}

func (f *Faulty) ListPodSandboxes(
	ctx context.Context, filter *cri.PodSandboxFilter,
) ([]*cri.PodSandbox, error) {
	lost, err := f.enter(ctx, MethodListPodSandboxes)
	if err != nil {
		return nil, err
	}
	v, err := f.Runtime.ListPodSandboxes(ctx, filter)
	return v, f.leave(lost, err)
}

func (f *Faulty) CreateContainer(
	ctx context.Context, podID string, cfg *cri.ContainerConfig, sandbox *cri.PodSandboxConfig,
) (string, error) {
	lost, err := f.enter(ctx, MethodCreateContainer)
	if err != nil {
		return "", err
	}
	v, err := f.Runtime.CreateContainer(ctx, podID, cfg, sandbox)
	return v, f.leave(lost, err)
}

func (f *Faulty) StartContainer(ctx context.Context, id string) error {
	lost, err := f.enter(ctx, MethodStartContainer)
	if err != nil {
		return err
	}
	return f.leave(lost, f.Runtime.StartContainer(ctx, id))
}

func (f *Faulty) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	lost, err := f.enter(ctx, MethodStopContainer)
	if err != nil {
		return err
	}
	return f.leave(lost, f.Runtime.StopContainer(ctx, id, grace))
}

func (f *Faulty) RemoveContainer(ctx context.Context, id string) error {
	lost, err := f.enter(ctx, MethodRemoveContainer)
	if err != nil {
		return err
	}
	return f.leave(lost, f.Runtime.RemoveContainer(ctx, id))
}

func (f *Faulty) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	lost, err := f.enter(ctx, MethodContainerStatus)
	if err != nil {
		return nil, err
	}
	v, err := f.Runtime.ContainerStatus(ctx, id)
	return v, f.leave(lost, err)
}

func (f *Faulty) ListContainers(
	ctx context.Context, filter *cri.ContainerFilter,
) ([]*cri.Container, error) {
	lost, err := f.enter(ctx, MethodListContainers)
	if err != nil {
		return nil, err
	}
	v, err := f.Runtime.ListContainers(ctx, filter)
	return v, f.leave(lost, err)
}

func (f *Faulty) ExecSync(
	ctx context.Context, id string, cmd []string, timeout time.Duration,
) (ExecResult, error) {
	lost, err := f.enter(ctx, MethodExecSync)
	if err != nil {
		return ExecResult{}, err
	}
	v, err := f.Runtime.ExecSync(ctx, id, cmd, timeout)
	return v, f.leave(lost, err)
}

func (f *Faulty) ImagePresent(ctx context.Context, ref string) (bool, error) {
	lost, err := f.enter(ctx, MethodImagePresent)
	if err != nil {
		return false, err
	}
	v, err := f.Runtime.ImagePresent(ctx, ref)
	return v, f.leave(lost, err)
}

func (f *Faulty) PullImage(ctx context.Context, ref string) error {
	lost, err := f.enter(ctx, MethodPullImage)
	if err != nil {
		return err
	}
	return f.leave(lost, f.Runtime.PullImage(ctx, ref))
}
