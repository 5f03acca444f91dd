package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIntegrationWatchSurvivesRestart restarts the private containerd under
// a running container and checks that Watch reconnects on its own. It stops
// the daemon everyone shares, so it runs only with
// VIGIL_TEST_CONTAINERD_RESTART=1 (and CTR_DIR when not the default).
func TestIntegrationWatchSurvivesRestart(t *testing.T) {
	env := needIntegration(t)
	if os.Getenv("VIGIL_TEST_CONTAINERD_RESTART") != "1" {
		t.Skip("set VIGIL_TEST_CONTAINERD_RESTART=1 to restart the shared containerd")
	}
	ctrDir := os.Getenv("CTR_DIR")
	if ctrDir == "" {
		ctrDir = filepath.Dir(env.address)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	rt, err := NewCRI(env.endpoint, CRIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctrd, err := NewContainerd(env.address, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrd.Close() })
	exits := ctrd.Watch(ctx)

	pod := newTestPod(t, rt)
	port := freePort(t)
	id := pod.run(ctx, t, pod.containerConfig(port, 0))
	waitHealthy(t, port, 10*time.Second)

	restartContainerd(t, ctrDir)
	restarted := time.Now()

	// The container kept running through the restart (its shim outlives the
	// daemon), and its exit reaches the same Watch channel.
	waitHealthy(t, port, 5*time.Second)
	post(t, port, "/control/exit?code=4")
	e := nextExit(t, exits, id, 15*time.Second)
	t.Logf("exit event %v after containerd came back", time.Since(restarted))
	if e.ExitCode != 4 {
		t.Errorf("exit code = %d, want 4", e.ExitCode)
	}
}

func restartContainerd(t *testing.T, ctrDir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ctrDir, "containerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	cmd := exec.Command("bash", filepath.Join("..", "test", "scripts", "containerd.sh"), "up")
	cmd.Env = append(os.Environ(), "CTR_DIR="+ctrDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("containerd.sh up: %v\n%s", err, out)
	}
}
