// Package e2e runs the vigil binary against a real containerd and runc.
//
// The tests need the private containerd that `make containerd-up` starts and
// the variables `make e2e` sets (VIGIL_BIN, VIGIL_CRI_ENDPOINT,
// VIGIL_CONTAINERD_ADDRESS, VIGIL_CRICTL, VIGIL_IMAGES_DIR). Without them they
// skip, unless VIGIL_REQUIRE_INTEGRATION=1, when they fail. VIGIL_CTR_DIR names
// the directory of a containerd (test/scripts/containerd.sh) that the tests may
// stop and start again; without it those tests skip. Each test runs its own vigil
// on its own ports and namespace and removes every pod it made.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"sigs.k8s.io/yaml"

	"github.com/vigil-agent/vigil/runtime"
)

// env is what the tests need from the environment.
type env struct {
	bin, endpoint, containerd, crictl string
}

func needEnv(t *testing.T) env {
	t.Helper()
	e := env{
		bin:        os.Getenv("VIGIL_BIN"),
		endpoint:   os.Getenv("VIGIL_CRI_ENDPOINT"),
		containerd: os.Getenv("VIGIL_CONTAINERD_ADDRESS"),
		crictl:     os.Getenv("VIGIL_CRICTL"),
	}
	if e.bin == "" || e.endpoint == "" {
		if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("VIGIL_BIN and VIGIL_CRI_ENDPOINT must be set (run: make e2e)")
		}
		t.Skip("needs a real containerd: run make e2e")
	}
	return e
}

// portBase hands each vigil in this process its own host-port range, from
// VIGIL_E2E_PORT_BASE (default 21000) up, so that test runs sharing a host
// can be given disjoint ranges.
var portBase atomic.Int32

func init() {
	base := 21000
	if s := os.Getenv("VIGIL_E2E_PORT_BASE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1024 || n > 60000 {
			panic(fmt.Sprintf("VIGIL_E2E_PORT_BASE=%q: want a port number between 1024 and 60000", s))
		}
		base = n
	}
	portBase.Store(int32(base))
}

// vigil is one running vigil process.
type vigil struct {
	t         *testing.T
	env       env
	dir       string
	manifests string
	config    string
	proxy     string
	admin     string
	cmd       *exec.Cmd
	log       *os.File
	logPath   string
	exited    chan struct{}
	exitErr   error
}

// options for a vigil under test; zero values are fine.
type options struct {
	// extra config lines (YAML) appended to the generated config.
	config string
}

// newVigil prepares a vigil with the given manifests (file name -> YAML),
// each forced into namespace ns.
func newVigil(t *testing.T, ns string, manifests map[string]string, o options) *vigil {
	t.Helper()
	e := needEnv(t)
	dir := t.TempDir()
	v := &vigil{t: t, env: e, dir: dir, manifests: filepath.Join(dir, "manifests")}
	if err := os.MkdirAll(v.manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range manifests {
		v.writeManifest(name, withNamespace(body, ns))
	}
	v.proxy = freeAddr(t)
	v.admin = freeAddr(t)
	lo := portBase.Add(200) - 200
	cfg := map[string]any{
		"runtime": map[string]any{"endpoint": e.endpoint, "logDir": filepath.Join(dir, "logs")},
		"pods":    map[string]any{"portRange": fmt.Sprintf("%d-%d", lo, lo+199), "resyncPeriod": "2s"},
		"proxy":   map[string]any{"listen": v.proxy},
		"admin":   map[string]any{"listen": v.admin},
		// Each test's vigil is its own instance, so that test runs sharing
		// the runtime never adopt (and remove) each other's pods.
		"instance": ns,
		"lockFile": filepath.Join(dir, "vigil.lock"),
		"log":      map[string]any{"level": "debug"},
	}
	if o.config != "" {
		var extra map[string]any
		if err := yaml.Unmarshal([]byte(o.config), &extra); err != nil {
			t.Fatalf("test config: %v", err)
		}
		merge(cfg, extra)
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v.config = filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(v.config, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupNamespace(t, e, ns) })
	return v
}

// merge copies src into dst, descending into maps present in both.
func merge(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

// withNamespace puts every document of a manifest into ns.
func withNamespace(body, ns string) string {
	return strings.ReplaceAll(body, "\nmetadata:\n", "\nmetadata:\n  namespace: "+ns+"\n")
}

func (v *vigil) writeManifest(name, body string) {
	v.t.Helper()
	if !strings.HasPrefix(body, "\n") {
		body = "\n" + body
	}
	tmp := filepath.Join(v.dir, name+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.manifests, name)); err != nil {
		v.t.Fatal(err)
	}
}

// start runs vigil run in the background and waits for its admin API.
func (v *vigil) start() {
	v.t.Helper()
	v.startArgs()
	v.waitFor("admin API", 20*time.Second, func() bool {
		resp, err := http.Get("http://" + v.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (v *vigil) startArgs(extra ...string) {
	v.t.Helper()
	n := 0
	for {
		v.logPath = filepath.Join(v.dir, fmt.Sprintf("vigil-%d.log", n))
		if _, err := os.Stat(v.logPath); err != nil {
			break
		}
		n++
	}
	f, err := os.Create(v.logPath)
	if err != nil {
		v.t.Fatal(err)
	}
	v.log = f
	args := append([]string{"run", "--config", v.config, "--manifests", v.manifests}, extra...)
	v.cmd = exec.Command(v.env.bin, args...)
	v.cmd.Stdout, v.cmd.Stderr = f, f
	if err := v.cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	v.exited = make(chan struct{})
	cmd, exited := v.cmd, v.exited
	go func() {
		v.exitErr = cmd.Wait()
		f.Close()
		close(exited)
	}()
	v.t.Cleanup(func() {
		v.stop(syscall.SIGTERM, 60*time.Second)
		if v.t.Failed() {
			v.dumpLogs()
		}
	})
}

// stop signals vigil and waits for it to exit.
func (v *vigil) stop(sig syscall.Signal, wait time.Duration) {
	v.t.Helper()
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	select {
	case <-v.exited:
		return
	default:
	}
	_ = v.cmd.Process.Signal(sig)
	select {
	case <-v.exited:
	case <-time.After(wait):
		_ = v.cmd.Process.Kill()
		<-v.exited
		v.t.Errorf("vigil did not exit within %s of %s", wait, sig)
	}
}

func (v *vigil) dumpLogs() {
	matches, _ := filepath.Glob(filepath.Join(v.dir, "vigil-*.log"))
	for _, m := range matches {
		data, _ := os.ReadFile(m)
		if len(data) > 60000 {
			data = data[len(data)-60000:]
		}
		v.t.Logf("==== %s\n%s", m, data)
	}
}

// pods returns vigil's /pods.
func (v *vigil) pods() []corev1.Pod {
	v.t.Helper()
	var list corev1.PodList
	if err := getJSON("http://"+v.admin+"/pods", &list); err != nil {
		v.t.Logf("GET /pods: %v", err)
		return nil
	}
	return list.Items
}

func (v *vigil) events() []corev1.Event {
	v.t.Helper()
	var list corev1.EventList
	if err := getJSON("http://"+v.admin+"/events", &list); err != nil {
		v.t.Logf("GET /events: %v", err)
		return nil
	}
	return list.Items
}

// readyPods waits until n pods whose name starts with prefix are Ready and
// returns them.
func (v *vigil) readyPods(prefix string, n int, within time.Duration) []corev1.Pod {
	v.t.Helper()
	var got []corev1.Pod
	v.waitFor(fmt.Sprintf("%d ready pods %s*", n, prefix), within, func() bool {
		got = got[:0]
		for _, p := range v.pods() {
			if strings.HasPrefix(p.Name, prefix) && podReady(p) && p.DeletionTimestamp == nil {
				got = append(got, p)
			}
		}
		return len(got) == n
	})
	return got
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// hostPort is the host port vigil assigned to a pod's container port.
func hostPort(t *testing.T, p corev1.Pod, container string, port int) string {
	t.Helper()
	var ports map[string]int
	if err := json.Unmarshal([]byte(p.Annotations["vigil.dev/host-ports"]), &ports); err != nil {
		t.Fatalf("pod %s has no host ports annotation: %v", p.Name, err)
	}
	hp, ok := ports[fmt.Sprintf("%s/%d", container, port)]
	if !ok {
		t.Fatalf("pod %s: no host port for %s/%d in %v", p.Name, container, port, ports)
	}
	return fmt.Sprintf("127.0.0.1:%d", hp)
}

// served is what the test app answers on GET /.
type served struct {
	Pod, Namespace, Container, Instance string
	Port                                int
}

// get sends GET path through vigil's proxy with the given Host header.
func (v *vigil) get(host, path string) (int, served, error) {
	req, _ := http.NewRequest("GET", "http://"+v.proxy+path, nil)
	req.Host = host
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, served{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var s served
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &s); err != nil {
			return resp.StatusCode, s, fmt.Errorf("decode %q: %w", body, err)
		}
	}
	return resp.StatusCode, s, nil
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// control POSTs a control request straight to one test app.
func control(t *testing.T, addr, path string) {
	t.Helper()
	resp, err := httpClient.Post("http://"+addr+path, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s%s: %v", addr, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s%s: status %d", addr, path, resp.StatusCode)
	}
}

func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitFor polls cond every 50 ms until it holds or within passes. Polling a
// real system is the only option here; schedules themselves are tested in
// virtual time in the unit tests.
func (v *vigil) waitFor(what string, within time.Duration, cond func() bool) {
	v.t.Helper()
	waitFor(v.t, what, within, cond)
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// criClient talks to the same runtime as vigil, to check what it made.
func criClient(t *testing.T, e env) *runtime.CRI {
	t.Helper()
	c, err := runtime.NewCRI(e.endpoint, runtime.CRIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sandboxes lists the ready sandboxes vigil made in namespace ns.
func sandboxes(t *testing.T, e env, ns string) []*cri.PodSandbox {
	t.Helper()
	c := criClient(t, e)
	list, err := c.ListPodSandboxes(context.Background(), &cri.PodSandboxFilter{
		State:         &cri.PodSandboxStateValue{State: cri.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{runtime.LabelPodNamespace: ns, "vigil.dev/managed": "true"},
	})
	if err != nil {
		t.Fatalf("list sandboxes: %v", err)
	}
	return list
}

// cleanupNamespace removes every sandbox left in ns.
func cleanupNamespace(t *testing.T, e env, ns string) {
	c, err := runtime.NewCRI(e.endpoint, runtime.CRIOptions{})
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := c.ListPodSandboxes(ctx, &cri.PodSandboxFilter{
		LabelSelector: map[string]string{runtime.LabelPodNamespace: ns},
	})
	if err != nil {
		t.Logf("cleanup %s: %v", ns, err)
		return
	}
	for _, sb := range list {
		_ = c.StopPodSandbox(ctx, sb.Id)
		_ = c.RemovePodSandbox(ctx, sb.Id)
	}
}

// runVigil runs a vigil subcommand to completion.
func runVigil(t *testing.T, e env, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(e.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// exampleManifest reads a file of configs/examples.
func exampleManifest(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "configs", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func containerStatus(p corev1.Pod, name string) corev1.ContainerStatus {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

func findPod(pods []corev1.Pod, name string) (corev1.Pod, bool) {
	for _, p := range pods {
		if p.Name == name {
			return p, true
		}
	}
	return corev1.Pod{}, false
}
