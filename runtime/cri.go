package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Defaults of CRIOptions.
const (
	DefaultCallTimeout = 10 * time.Second
	// DefaultStopMargin matches the kubelet, which waits two minutes beyond
	// the grace period before it gives up on a StopContainer call.
	DefaultStopMargin  = 2 * time.Minute
	DefaultPullTimeout = 5 * time.Minute
	// maxMsgSize follows the kubelet's 16 MiB limit for CRI responses: a
	// ListContainers on a busy node exceeds gRPC's 4 MiB default.
	maxMsgSize = 16 << 20
)

// CRIOptions tunes NewCRI. The zero value gives the defaults.
type CRIOptions struct {
	// CallTimeout bounds a call whose ctx has no deadline. Default 10s.
	CallTimeout time.Duration
	// StopMargin is added to the grace period to form the client deadline of
	// StopContainer, so the runtime has time to kill after grace. Default 2m.
	StopMargin time.Duration
	// PullTimeout bounds PullImage when ctx has no deadline. Default 5m.
	PullTimeout time.Duration
	// Logger receives one debug line per state-changing call. Default: discard.
	Logger *slog.Logger
}

// Defaults fills the zero fields of o.
func (o *CRIOptions) Defaults() {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.StopMargin <= 0 {
		o.StopMargin = DefaultStopMargin
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = DefaultPullTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// CRI is a Runtime over a CRI gRPC endpoint (RuntimeService and ImageService
// on one socket). It is safe for concurrent use.
type CRI struct {
	conn   *grpc.ClientConn
	rt     cri.RuntimeServiceClient
	img    cri.ImageServiceClient
	opts   CRIOptions
	target string
}

var _ Runtime = (*CRI)(nil)

// NewCRI connects to endpoint, of the form unix:///path/to/containerd.sock (a
// bare absolute path is accepted too). The connection is made lazily: a
// daemon that is down shows as errors from the calls, not from NewCRI.
func NewCRI(endpoint string, opts CRIOptions) (*CRI, error) {
	opts.Defaults()
	target := endpoint
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	if !strings.HasPrefix(target, "unix://") {
		return nil, fmt.Errorf("connect cri %q: only unix:// endpoints are supported", endpoint)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("connect cri %q: %w", endpoint, err)
	}
	return &CRI{
		conn:   conn,
		rt:     cri.NewRuntimeServiceClient(conn),
		img:    cri.NewImageServiceClient(conn),
		opts:   opts,
		target: target,
	}, nil
}

// Close closes the connection. Calls in flight fail.
func (c *CRI) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close cri connection: %w", err)
	}
	return nil
}

// call derives the context of one call: ctx as it is when it carries a
// deadline, otherwise ctx bounded by d.
func call(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func (c *CRI) logDone(msg string, start time.Time, err error, args ...any) {
	args = append(args, "took", time.Since(start))
	if err != nil {
		args = append(args, "err", err)
	}
	c.opts.Logger.Debug(msg, args...)
}

// Version reports the runtime's name and version; it is the cheapest call
// that proves the endpoint answers.
func (c *CRI) Version(ctx context.Context) (*cri.VersionResponse, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.Version(ctx, &cri.VersionRequest{})
	if err != nil {
		return nil, fmt.Errorf("get runtime version: %w", mapErr(err))
	}
	return resp, nil
}

// Status implements Runtime.
func (c *CRI) Status(ctx context.Context) (*cri.RuntimeStatus, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.Status(ctx, &cri.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("get runtime status: %w", mapErr(err))
	}
	return resp.GetStatus(), nil
}

// RunPodSandbox implements Runtime.
func (c *CRI) RunPodSandbox(ctx context.Context, cfg *cri.PodSandboxConfig) (string, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	resp, err := c.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
	c.logDone("ran pod sandbox", start, err, "pod", cfg.GetMetadata().GetName())
	if err != nil {
		return "", fmt.Errorf("run pod sandbox %s: %w", cfg.GetMetadata().GetName(), mapErr(err))
	}
	return resp.GetPodSandboxId(), nil
}

// StopPodSandbox implements Runtime.
func (c *CRI) StopPodSandbox(ctx context.Context, id string) error {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	_, err := c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id})
	c.logDone("stopped pod sandbox", start, err, "sandbox", id)
	if err != nil {
		return fmt.Errorf("stop pod sandbox %s: %w", id, mapErr(err))
	}
	return nil
}

// RemovePodSandbox implements Runtime.
func (c *CRI) RemovePodSandbox(ctx context.Context, id string) error {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	_, err := c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id})
	c.logDone("removed pod sandbox", start, err, "sandbox", id)
	if err != nil {
		return fmt.Errorf("remove pod sandbox %s: %w", id, mapErr(err))
	}
	return nil
}

// PodSandboxStatus implements Runtime.
func (c *CRI) PodSandboxStatus(ctx context.Context, id string) (*cri.PodSandboxStatus, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		return nil, fmt.Errorf("get pod sandbox status %s: %w", id, mapErr(err))
	}
	return resp.GetStatus(), nil
}

// ListPodSandboxes implements Runtime. A nil filter lists all.
func (c *CRI) ListPodSandboxes(
	ctx context.Context, filter *cri.PodSandboxFilter,
) ([]*cri.PodSandbox, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("list pod sandboxes: %w", mapErr(err))
	}
	return resp.GetItems(), nil
}

// CreateContainer implements Runtime.
func (c *CRI) CreateContainer(
	ctx context.Context, podID string, cfg *cri.ContainerConfig, sandbox *cri.PodSandboxConfig,
) (string, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	resp, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId:  podID,
		Config:        cfg,
		SandboxConfig: sandbox,
	})
	name := cfg.GetMetadata().GetName()
	c.logDone("created container", start, err, "sandbox", podID, "container", name)
	if err != nil {
		return "", fmt.Errorf("create container %s in %s: %w", name, podID, mapErr(err))
	}
	return resp.GetContainerId(), nil
}

// StartContainer implements Runtime.
func (c *CRI) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	_, err := c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: id})
	c.logDone("started container", start, err, "container", id)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, mapErr(err))
	}
	return nil
}

// StopContainer implements Runtime. The CRI timeout is grace in whole
// seconds, rounded up; zero asks for an immediate kill. The client deadline
// is grace plus StopMargin, or ctx's deadline when that comes first.
func (c *CRI) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	if grace < 0 {
		grace = 0
	}
	ctx, cancel := context.WithTimeout(ctx, grace+c.opts.StopMargin)
	defer cancel()
	start := time.Now()
	_, err := c.rt.StopContainer(ctx, &cri.StopContainerRequest{
		ContainerId: id,
		Timeout:     ceilSeconds(grace),
	})
	c.logDone("stopped container", start, err, "container", id, "grace", grace)
	if err != nil {
		return fmt.Errorf("stop container %s: %w", id, mapErr(err))
	}
	return nil
}

// RemoveContainer implements Runtime.
func (c *CRI) RemoveContainer(ctx context.Context, id string) error {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	_, err := c.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id})
	c.logDone("removed container", start, err, "container", id)
	if err != nil {
		return fmt.Errorf("remove container %s: %w", id, mapErr(err))
	}
	return nil
}

// ContainerStatus implements Runtime.
func (c *CRI) ContainerStatus(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, fmt.Errorf("get container status %s: %w", id, mapErr(err))
	}
	return resp.GetStatus(), nil
}

// ListContainers implements Runtime. A nil filter lists all.
func (c *CRI) ListContainers(ctx context.Context, filter *cri.ContainerFilter) ([]*cri.Container, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.ListContainers(ctx, &cri.ListContainersRequest{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", mapErr(err))
	}
	return resp.GetContainers(), nil
}

// ExecSync implements Runtime. A command that runs and exits non-zero is a
// result (ExitCode), not an error. The runtime enforces timeout (rounded up
// to seconds; zero means CallTimeout); the client waits CallTimeout beyond it.
func (c *CRI) ExecSync(
	ctx context.Context, id string, cmd []string, timeout time.Duration,
) (ExecResult, error) {
	if timeout <= 0 {
		timeout = c.opts.CallTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+c.opts.CallTimeout)
	defer cancel()
	resp, err := c.rt.ExecSync(ctx, &cri.ExecSyncRequest{
		ContainerId: id,
		Cmd:         cmd,
		Timeout:     ceilSeconds(timeout),
	})
	if err != nil {
		return ExecResult{}, fmt.Errorf("exec in container %s: %w", id, mapErr(err))
	}
	return ExecResult{
		Stdout: resp.GetStdout(), Stderr: resp.GetStderr(), ExitCode: resp.GetExitCode(),
	}, nil
}

// ImagePresent implements Runtime.
func (c *CRI) ImagePresent(ctx context.Context, ref string) (bool, error) {
	ctx, cancel := call(ctx, c.opts.CallTimeout)
	defer cancel()
	resp, err := c.img.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: ref}})
	if err != nil {
		err = mapErr(err)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("get image status %s: %w", ref, err)
	}
	// The CRI answers a missing image with an empty status, not an error.
	return resp.GetImage() != nil, nil
}

// PullImage implements Runtime. It is bounded by PullTimeout when ctx has no
// deadline.
func (c *CRI) PullImage(ctx context.Context, ref string) error {
	ctx, cancel := call(ctx, c.opts.PullTimeout)
	defer cancel()
	start := time.Now()
	_, err := c.img.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: ref}})
	c.logDone("pulled image", start, err, "image", ref)
	if err != nil {
		return fmt.Errorf("pull image %s: %w", ref, mapErr(err))
	}
	return nil
}

// ceilSeconds rounds d up to whole seconds, as the CRI's int64 timeouts want.
func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// notFoundError keeps the runtime's error while matching ErrNotFound.
type notFoundError struct{ err error }

func (e notFoundError) Error() string        { return e.err.Error() }
func (e notFoundError) Unwrap() error        { return e.err }
func (e notFoundError) Is(target error) bool { return target == ErrNotFound }

// mapErr marks the runtime's "no such object" answers as ErrNotFound. The
// code is NotFound for most calls, but containerd 1.6 returns some lookups
// (e.g. StopContainer of an unknown id) as Unknown with the errdefs text
// "not found" at the end, so the message is checked too.
func mapErr(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if st.Code() == codes.NotFound ||
		(st.Code() == codes.Unknown && strings.HasSuffix(st.Message(), "not found")) {
		return notFoundError{err}
	}
	return err
}

// IsNotFound reports whether err wraps ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// EnvVar builds a container environment entry; in cri-api v0.37 the value is
// bytes.
func EnvVar(key, value string) *cri.KeyValue {
	return &cri.KeyValue{Key: key, Value: []byte(value)}
}
