// Package runtime talks to a container runtime through the Kubernetes CRI and,
// where the runtime is containerd, through containerd's own API for what the
// CRI lacks: a push stream of task exits and importing image archives.
//
// It knows the CRI's objects and nothing of Kubernetes workloads beyond what
// the CRI carries. The supervisor uses the small Runtime interface below; the
// real gRPC client implements it and tests may fake it.
package runtime

import (
	"context"
	"errors"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels the kubelet puts on CRI objects. Using the same keys makes crictl and
// other node tools show vigil's pods the way they show a kubelet's.
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
)

// ErrNotFound reports that the CRI object named in a call does not exist.
// Callers treat it as "already gone" when stopping or removing.
var ErrNotFound = errors.New("not found")

// Runtime is the subset of the CRI that vigil uses. Every method applies its
// own deadline when ctx has none; errors for missing objects wrap ErrNotFound.
type Runtime interface {
	// Status reports the runtime's conditions (RuntimeReady, NetworkReady).
	Status(ctx context.Context) (*cri.RuntimeStatus, error)

	RunPodSandbox(ctx context.Context, cfg *cri.PodSandboxConfig) (string, error)
	StopPodSandbox(ctx context.Context, id string) error
	RemovePodSandbox(ctx context.Context, id string) error
	PodSandboxStatus(ctx context.Context, id string) (*cri.PodSandboxStatus, error)
	ListPodSandboxes(ctx context.Context, filter *cri.PodSandboxFilter) ([]*cri.PodSandbox, error)

	CreateContainer(ctx context.Context, podID string, cfg *cri.ContainerConfig, sandbox *cri.PodSandboxConfig) (string, error)
	StartContainer(ctx context.Context, id string) error
	// StopContainer asks the runtime to stop the container, killing it after
	// grace. The client deadline is grace plus a margin.
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	RemoveContainer(ctx context.Context, id string) error
	ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error)
	ListContainers(ctx context.Context, filter *cri.ContainerFilter) ([]*cri.Container, error)

	// ExecSync runs cmd in the container and waits at most timeout.
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (ExecResult, error)

	// ImagePresent tells whether the image reference is already in the
	// runtime's image store.
	ImagePresent(ctx context.Context, ref string) (bool, error)
	// PullImage pulls ref through the CRI image service.
	PullImage(ctx context.Context, ref string) error
}

// ExecResult is the outcome of ExecSync.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

// Exit is a container's task exit as the runtime reports it.
type Exit struct {
	ContainerID string
	ExitCode    int32
	ExitedAt    time.Time
}

// ExitWatcher delivers container exits as they happen. Watch returns a
// channel that is closed when ctx ends; a broken stream is reconnected inside
// and reported only through logs, so callers keep a periodic resync as the
// fallback.
type ExitWatcher interface {
	Watch(ctx context.Context) <-chan Exit
}
