package runtime

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI records the requests it gets and answers with err when set.
type fakeCRI struct {
	cri.UnimplementedRuntimeServiceServer
	cri.UnimplementedImageServiceServer

	mu       sync.Mutex
	err      error
	deadline time.Duration // time left on the last request's deadline
	stop     *cri.StopContainerRequest
	exec     *cri.ExecSyncRequest
	hang     bool
}

func (f *fakeCRI) record(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(d)
	}
	return f.err
}

func (f *fakeCRI) Status(ctx context.Context, _ *cri.StatusRequest) (*cri.StatusResponse, error) {
	if err := f.record(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &cri.StatusResponse{Status: &cri.RuntimeStatus{}}, nil
}

func (f *fakeCRI) StopContainer(ctx context.Context, req *cri.StopContainerRequest) (*cri.StopContainerResponse, error) {
	f.mu.Lock()
	f.stop = req
	f.mu.Unlock()
	if err := f.record(ctx); err != nil {
		return nil, err
	}
	return &cri.StopContainerResponse{}, nil
}

func (f *fakeCRI) ExecSync(ctx context.Context, req *cri.ExecSyncRequest) (*cri.ExecSyncResponse, error) {
	f.mu.Lock()
	f.exec = req
	f.mu.Unlock()
	if err := f.record(ctx); err != nil {
		return nil, err
	}
	return &cri.ExecSyncResponse{Stdout: []byte("out"), Stderr: []byte("err"), ExitCode: 2}, nil
}

func (f *fakeCRI) ImageStatus(ctx context.Context, req *cri.ImageStatusRequest) (*cri.ImageStatusResponse, error) {
	if err := f.record(ctx); err != nil {
		return nil, err
	}
	if req.GetImage().GetImage() == "present" {
		return &cri.ImageStatusResponse{Image: &cri.Image{Id: "sha256:1"}}, nil
	}
	return &cri.ImageStatusResponse{}, nil
}

func (f *fakeCRI) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func startFakeCRI(t *testing.T, opts CRIOptions) (*fakeCRI, *CRI) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCRI{}
	srv := grpc.NewServer()
	cri.RegisterRuntimeServiceServer(srv, f)
	cri.RegisterImageServiceServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	c, err := NewCRI("unix://"+sock, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return f, c
}

func TestNewCRIEndpoint(t *testing.T) {
	for _, ep := range []string{"unix:///run/x.sock", "/run/x.sock"} {
		c, err := NewCRI(ep, CRIOptions{})
		if err != nil {
			t.Errorf("NewCRI(%q): %v", ep, err)
			continue
		}
		c.Close()
	}
	if _, err := NewCRI("tcp://127.0.0.1:1", CRIOptions{}); err == nil {
		t.Error("NewCRI(tcp://...) = nil error, want one")
	}
}

func TestStopContainerTimeoutAndDeadline(t *testing.T) {
	f, c := startFakeCRI(t, CRIOptions{StopMargin: 30 * time.Second})
	tests := []struct {
		grace       time.Duration
		wantTimeout int64
	}{
		{0, 0},
		{1500 * time.Millisecond, 2},
		{10 * time.Second, 10},
		{-time.Second, 0},
	}
	for _, tt := range tests {
		if err := c.StopContainer(context.Background(), "c1", tt.grace); err != nil {
			t.Fatalf("StopContainer(%v): %v", tt.grace, err)
		}
		f.mu.Lock()
		got, left := f.stop.GetTimeout(), f.deadline
		f.mu.Unlock()
		if got != tt.wantTimeout {
			t.Errorf("grace %v: CRI timeout = %d, want %d", tt.grace, got, tt.wantTimeout)
		}
		want := max(tt.grace, 0) + 30*time.Second
		if left > want || left < want-5*time.Second {
			t.Errorf("grace %v: deadline in %v, want about %v", tt.grace, left, want)
		}
	}

	// A shorter ctx deadline wins.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.StopContainer(ctx, "c1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deadline > time.Second {
		t.Errorf("deadline in %v, want at most the caller's 1s", f.deadline)
	}
}

func TestCallTimeout(t *testing.T) {
	f, c := startFakeCRI(t, CRIOptions{CallTimeout: 50 * time.Millisecond})
	f.mu.Lock()
	f.hang = true
	f.mu.Unlock()
	start := time.Now()
	_, err := c.Status(context.Background())
	if status.Code(errors.Unwrap(err)) != codes.DeadlineExceeded {
		t.Errorf("Status on a hung runtime = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Status took %v, want about the 50ms CallTimeout", took)
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		desc     string
		err      error
		notFound bool
	}{
		{"code NotFound", status.Error(codes.NotFound, "container \"x\" in store: not found"), true},
		{"unknown with errdefs text", status.Error(codes.Unknown, "failed to find container: not found"), true},
		{"unknown other", status.Error(codes.Unknown, "runc did not terminate"), false},
		{"deadline", status.Error(codes.DeadlineExceeded, "not found"), false},
	}
	f, c := startFakeCRI(t, CRIOptions{})
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			f.setErr(tt.err)
			err := c.StopContainer(context.Background(), "abc", time.Second)
			if got := errors.Is(err, ErrNotFound); got != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", err, got, tt.notFound)
			}
			if !strings.HasPrefix(err.Error(), "stop container abc: ") {
				t.Errorf("error %q does not start with the verb and object", err)
			}
			if status.Code(errors.Unwrap(err)) != status.Code(tt.err) {
				t.Errorf("gRPC code lost: %v", err)
			}
		})
	}
}

func TestExecSync(t *testing.T) {
	f, c := startFakeCRI(t, CRIOptions{CallTimeout: time.Second})
	res, err := c.ExecSync(context.Background(), "c1", []string{"/testapp", "check"}, 2500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "out" || string(res.Stderr) != "err" || res.ExitCode != 2 {
		t.Errorf("result = %+v, want out/err/2", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exec.GetTimeout() != 3 || strings.Join(f.exec.GetCmd(), " ") != "/testapp check" {
		t.Errorf("request = %v, want cmd /testapp check and timeout 3", f.exec)
	}
	if f.deadline > 3500*time.Millisecond {
		t.Errorf("client deadline in %v, want timeout+CallTimeout = 3.5s", f.deadline)
	}
}

func TestImagePresent(t *testing.T) {
	_, c := startFakeCRI(t, CRIOptions{})
	for ref, want := range map[string]bool{"present": true, "absent": false} {
		got, err := c.ImagePresent(context.Background(), ref)
		if err != nil || got != want {
			t.Errorf("ImagePresent(%s) = %v, %v; want %v", ref, got, err, want)
		}
	}
}
