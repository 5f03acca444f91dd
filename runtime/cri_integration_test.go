package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The integration tests run against a real containerd CRI endpoint:
//
//	bash test/scripts/containerd.sh up
//	eval "$(bash test/scripts/containerd.sh env)"
//	go test -race ./runtime/...
//
// They skip without VIGIL_CRI_ENDPOINT and VIGIL_CONTAINERD_ADDRESS, unless
// VIGIL_REQUIRE_INTEGRATION=1 turns the skip into a failure. Image archives
// come from VIGIL_IMAGES_DIR (default ../build/images, see test/scripts/images.sh).

const (
	testappImage = "localhost/vigil-testapp:latest"
	pauseImage   = "localhost/vigil-pause:latest"
)

type integrationEnv struct {
	endpoint, address, imagesDir string
}

func needIntegration(t *testing.T) integrationEnv {
	t.Helper()
	env := integrationEnv{
		endpoint:  os.Getenv("VIGIL_CRI_ENDPOINT"),
		address:   os.Getenv("VIGIL_CONTAINERD_ADDRESS"),
		imagesDir: os.Getenv("VIGIL_IMAGES_DIR"),
	}
	if env.imagesDir == "" {
		env.imagesDir = filepath.Join("..", "build", "images")
	}
	if env.endpoint == "" || env.address == "" {
		msg := "VIGIL_CRI_ENDPOINT and VIGIL_CONTAINERD_ADDRESS are not set " +
			"(bash test/scripts/containerd.sh up && eval \"$(bash test/scripts/containerd.sh env)\")"
		if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return env
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHealthy polls /health until it answers 200; a real process boots in
// real time, so this is the one place where the test polls.
func waitHealthy(t *testing.T, port int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)
	client := &http.Client{Timeout: time.Second}
	for time.Since(start) < within {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("GET %s: no 200 within %v", url, within)
	return 0
}

// nextExit waits for the exit of container id, skipping other containers'.
func nextExit(t *testing.T, exits <-chan Exit, id string, within time.Duration) Exit {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-exits:
			if !ok {
				t.Fatal("exit channel closed")
			}
			if e.ContainerID == id {
				return e
			}
		case <-timer.C:
			t.Fatalf("no exit of container %s within %v", id, within)
		}
	}
}

func TestIntegrationCRI(t *testing.T) {
	env := needIntegration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	rt, err := NewCRI(env.endpoint, CRIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Closed by Cleanup, after the pods' own Cleanup (LIFO) has used it.
	t.Cleanup(func() { rt.Close() })
	ctrd, err := NewContainerd(env.address, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrd.Close() })

	st, err := rt.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if !runtimeReady(st) {
		t.Fatalf("runtime not ready: %v", st)
	}

	t.Run("ImportImages", func(t *testing.T) {
		files := []string{
			filepath.Join(env.imagesDir, "pause.tar"),
			filepath.Join(env.imagesDir, "testapp.tar"),
		}
		names, err := ctrd.ImportImages(ctx, files...)
		if err != nil {
			t.Fatalf("ImportImages: %v", err)
		}
		for _, want := range []string{pauseImage, testappImage} {
			if !slices.Contains(names, want) {
				t.Errorf("ImportImages names = %v, want %s among them", names, want)
			}
			ok, err := rt.ImagePresent(ctx, want)
			if err != nil || !ok {
				t.Errorf("ImagePresent(%s) = %v, %v; want true", want, ok, err)
			}
		}
		ok, err := rt.ImagePresent(ctx, "localhost/vigil-no-such-image:latest")
		if err != nil || ok {
			t.Errorf("ImagePresent(missing) = %v, %v; want false, nil", ok, err)
		}
	})
	if t.Failed() {
		return
	}

	// Watch before anything starts, so no exit can be missed.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	exits := ctrd.Watch(watchCtx)

	pod := newTestPod(t, rt)
	port := freePort(t)
	cfg := pod.containerConfig(port, 0)

	start := time.Now()
	id := pod.run(ctx, t, cfg)
	took := waitHealthy(t, port, 10*time.Second)
	t.Logf("create+start+healthy: %v (healthy %v after start)", time.Since(start), took)

	t.Run("ContainerStatus", func(t *testing.T) {
		cs, err := rt.ContainerStatus(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cs.GetState() != cri.ContainerState_CONTAINER_RUNNING {
			t.Errorf("state = %v, want RUNNING", cs.GetState())
		}
		if got := cs.GetLabels()[LabelContainerName]; got != "testapp" {
			t.Errorf("container name label = %q, want testapp", got)
		}
		list, err := rt.ListContainers(ctx, &cri.ContainerFilter{PodSandboxId: pod.id})
		if err != nil || len(list) != 1 || list[0].GetId() != id {
			t.Errorf("ListContainers(pod) = %v, %v; want just %s", list, err, id)
		}
	})

	t.Run("ExecSync", func(t *testing.T) {
		res, err := rt.ExecSync(ctx, id, []string{"/testapp", "check"}, 5*time.Second)
		if err != nil {
			t.Fatalf("ExecSync: %v", err)
		}
		if res.ExitCode != 0 {
			t.Errorf("exit code = %d, want 0 (stdout %q, stderr %q)", res.ExitCode, res.Stdout, res.Stderr)
		}
		post(t, port, "/control/fail")
		res, err = rt.ExecSync(ctx, id, []string{"/testapp", "check"}, 5*time.Second)
		if err != nil || res.ExitCode != 1 {
			t.Errorf("ExecSync while failing = %+v, %v; want exit code 1", res, err)
		}
		post(t, port, "/control/recover")
	})

	t.Run("ExitEvent", func(t *testing.T) {
		// The exec exits of ExecSync above come first on the stream; Watch
		// must have dropped them, so the first exit seen here is code 3.
		post(t, port, "/control/exit?code=3")
		sent := time.Now()
		e := nextExit(t, exits, id, time.Second)
		t.Logf("exit event %v after the exit request", time.Since(sent))
		if e.ExitCode != 3 {
			t.Errorf("exit code = %d, want 3", e.ExitCode)
		}
		if e.ExitedAt.IsZero() || time.Since(e.ExitedAt) > time.Minute {
			t.Errorf("ExitedAt = %v, want about now", e.ExitedAt)
		}
		// The CRI learns of the exit from the same event stream, so its
		// status may lag the event by a moment.
		cs := waitExited(ctx, t, rt, id, time.Second)
		t.Logf("ContainerStatus EXITED %v after the exit request", time.Since(sent))
		if cs.GetExitCode() != 3 {
			t.Errorf("status exit code = %d, want 3", cs.GetExitCode())
		}
	})

	t.Run("Restart", func(t *testing.T) {
		start := time.Now()
		if err := rt.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		id = pod.run(ctx, t, pod.containerConfig(port, 1))
		waitHealthy(t, port, 10*time.Second)
		t.Logf("restart (remove, create, start, healthy): %v", time.Since(start))
	})

	t.Run("StopContainer", func(t *testing.T) {
		start := time.Now()
		if err := rt.StopContainer(ctx, id, 5*time.Second); err != nil {
			t.Fatalf("StopContainer: %v", err)
		}
		t.Logf("StopContainer (SIGTERM, graceful exit): %v", time.Since(start))
		if e := nextExit(t, exits, id, time.Second); e.ExitCode != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0", e.ExitCode)
		}
		// Stopping a stopped container is not an error.
		if err := rt.StopContainer(ctx, id, time.Second); err != nil {
			t.Errorf("second StopContainer: %v", err)
		}
		if err := rt.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		if _, err := rt.ContainerStatus(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("ContainerStatus(removed) = %v, want ErrNotFound", err)
		}
		missing := strings.Repeat("0", 64)
		if err := rt.StopContainer(ctx, missing, time.Second); !errors.Is(err, ErrNotFound) {
			t.Errorf("StopContainer(missing) = %v, want ErrNotFound", err)
		}
		if err := rt.StartContainer(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("StartContainer(missing) = %v, want ErrNotFound", err)
		}
		if _, err := rt.ExecSync(ctx, missing, []string{"/testapp"}, time.Second); !errors.Is(err, ErrNotFound) {
			t.Errorf("ExecSync(missing) = %v, want ErrNotFound", err)
		}
		if _, err := rt.PodSandboxStatus(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("PodSandboxStatus(missing) = %v, want ErrNotFound", err)
		}
		// Removal of what is gone is idempotent in the CRI: nil or NotFound.
		if err := rt.RemoveContainer(ctx, missing); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("RemoveContainer(missing) = %v, want nil or ErrNotFound", err)
		}
	})

	t.Run("Sandbox", func(t *testing.T) {
		ps, err := rt.PodSandboxStatus(ctx, pod.id)
		if err != nil {
			t.Fatal(err)
		}
		if ps.GetState() != cri.PodSandboxState_SANDBOX_READY {
			t.Errorf("sandbox state = %v, want READY", ps.GetState())
		}
		if got := ps.GetLabels()[LabelPodUID]; got != pod.uid {
			t.Errorf("pod uid label = %q, want %q", got, pod.uid)
		}
		list, err := rt.ListPodSandboxes(ctx, &cri.PodSandboxFilter{
			LabelSelector: map[string]string{LabelPodUID: pod.uid},
		})
		if err != nil || len(list) != 1 || list[0].GetId() != pod.id {
			t.Errorf("ListPodSandboxes(uid) = %v, %v; want just %s", list, err, pod.id)
		}
		start := time.Now()
		if err := rt.StopPodSandbox(ctx, pod.id); err != nil {
			t.Fatal(err)
		}
		if err := rt.RemovePodSandbox(ctx, pod.id); err != nil {
			t.Fatal(err)
		}
		t.Logf("StopPodSandbox+RemovePodSandbox: %v", time.Since(start))
		if _, err := rt.PodSandboxStatus(ctx, pod.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("PodSandboxStatus(removed) = %v, want ErrNotFound", err)
		}
	})
}

func waitExited(ctx context.Context, t *testing.T, rt *CRI, id string, within time.Duration) *cri.ContainerStatus {
	t.Helper()
	start := time.Now()
	for {
		cs, err := rt.ContainerStatus(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cs.GetState() == cri.ContainerState_CONTAINER_EXITED {
			return cs
		}
		if time.Since(start) > within {
			t.Fatalf("container %s is %v, not EXITED, %v after its exit event", id, cs.GetState(), within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runtimeReady(st *cri.RuntimeStatus) bool {
	for _, c := range st.GetConditions() {
		if c.GetType() == cri.RuntimeReady {
			return c.GetStatus()
		}
	}
	return false
}

func post(t *testing.T, port int, path string) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d%s", port, path)
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: status %d", path, resp.StatusCode)
	}
}

// testPod is a host-network sandbox that removes itself when the test ends.
type testPod struct {
	rt      *CRI
	id, uid string
	name    string
	cgroup  string
	sandbox *cri.PodSandboxConfig
}

func newTestPod(t *testing.T, rt *CRI) *testPod {
	t.Helper()
	uid := randomHex(t, 8)
	p := &testPod{rt: rt, uid: uid, name: "rt-it-" + uid, cgroup: "/vigil/rt-it-" + uid}
	p.sandbox = &cri.PodSandboxConfig{
		Metadata: &cri.PodSandboxMetadata{Name: p.name, Namespace: "vigil-test", Uid: uid},
		// No Hostname: host-network pods share the node's.
		LogDirectory: t.TempDir(),
		Labels: map[string]string{
			LabelPodName: p.name, LabelPodNamespace: "vigil-test", LabelPodUID: uid,
		},
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent: p.cgroup,
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{
					Network: cri.NamespaceMode_NODE,
					Pid:     cri.NamespaceMode_CONTAINER,
					Ipc:     cri.NamespaceMode_POD,
				},
			},
		},
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	id, err := rt.RunPodSandbox(ctx, p.sandbox)
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Logf("RunPodSandbox: %v", time.Since(start))
	p.id = id
	t.Cleanup(p.cleanup)
	return p
}

func (p *testPod) containerConfig(port int, attempt uint32) *cri.ContainerConfig {
	return &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "testapp", Attempt: attempt},
		Image:    &cri.ImageSpec{Image: testappImage},
		Envs: []*cri.KeyValue{
			EnvVar("PORT", strconv.Itoa(port)),
			EnvVar("POD_NAME", p.name),
			EnvVar("POD_NAMESPACE", "vigil-test"),
			EnvVar("CONTAINER_NAME", "testapp"),
		},
		Labels: map[string]string{
			LabelPodName: p.name, LabelPodNamespace: "vigil-test", LabelPodUID: p.uid,
			LabelContainerName: "testapp",
		},
		LogPath: fmt.Sprintf("testapp/%d.log", attempt),
	}
}

func (p *testPod) run(ctx context.Context, t *testing.T, cfg *cri.ContainerConfig) string {
	t.Helper()
	start := time.Now()
	id, err := p.rt.CreateContainer(ctx, p.id, cfg, p.sandbox)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	created := time.Now()
	if err := p.rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	t.Logf("CreateContainer %v, StartContainer %v", created.Sub(start), time.Since(created))
	return id
}

// cleanup removes the sandbox (and so its containers) and the cgroup parent
// directories containerd leaves behind.
func (p *testPod) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.rt.StopPodSandbox(ctx, p.id); err != nil && !IsNotFound(err) {
		fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
	}
	if err := p.rt.RemovePodSandbox(ctx, p.id); err != nil && !IsNotFound(err) {
		fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
	}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + p.cgroup)
	for _, d := range dirs {
		os.Remove(d) // only empty cgroups can be removed; that is all we want
	}
}
