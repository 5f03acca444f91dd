package admin

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The status page in a real browser: headless Chromium loads it from a
// loopback test server, the data changes while the page is open, and the
// DOM must show the change. A screenshot is kept in build/artifacts.
//
// The browser is driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe) rather than with --dump-dom: the new headless
// mode dumps at the load event, before the stream has delivered anything,
// and --virtual-time-budget never runs out while a stream is open.

// chromiumFlags keep the browser off the network and out of the machine's
// profile: only the loopback test server resolves.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-breakpad", "--disable-extensions", "--no-proxy-server",
	"--no-default-browser-check", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
	"--hide-scrollbars", "--window-size=1400,1200", "--remote-debugging-pipe",
}

func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
		t.Fatal("chromium not found and VIGIL_REQUIRE_INTEGRATION=1 (make chromium installs it)")
	}
	t.Skip("chromium not found (make chromium installs it)")
	return ""
}

// browser is one Chromium process and its DevTools pipe.
type browser struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	msgs   chan cdpMessage
	nextID int
}

type cdpMessage struct {
	ID        int             `json:"id"`
	SessionID string          `json:"sessionId"`
	Method    string          `json:"method"`
	Result    json.RawMessage `json:"result"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts Chromium; it is killed, with its helpers, when the test
// ends.
func startBrowser(t *testing.T, bin string) *browser {
	dir := t.TempDir()
	// fd 3 carries commands to the browser, fd 4 its answers.
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--user-data-dir=" + dir}, chromiumFlags...)...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.ExtraFiles = []*os.File{cmdR, outW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmdR.Close()
	outW.Close()
	b := &browser{cmd: cmd, in: cmdW, msgs: make(chan cdpMessage, 64)}
	go b.read(outR)
	t.Cleanup(func() {
		cmdW.Close()
		// The browser's helpers share its process group: end them all.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		outR.Close()
		if t.Failed() {
			t.Logf("chromium stderr (dbus noise removed):\n%s", withoutDBus(stderr.String()))
		}
	})
	return b
}

func withoutDBus(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "dbus") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// read splits the browser's NUL-terminated messages.
func (b *browser) read(r io.Reader) {
	defer close(b.msgs)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(raw[:len(raw)-1], &m) == nil && m.ID != 0 {
			b.msgs <- m
		}
	}
}

// call sends one command and waits for its answer; events are dropped.
func (b *browser) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	b.nextID++
	id := b.nextID
	req := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		req["sessionId"] = session
	}
	data, _ := json.Marshal(req)
	if _, err := b.in.Write(append(data, 0)); err != nil {
		return nil, fmt.Errorf("send %s: %w", method, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", method, ctx.Err())
		case m, ok := <-b.msgs:
			if !ok {
				return nil, fmt.Errorf("%s: browser exited", method)
			}
			if m.ID != id {
				continue
			}
			if m.Error != nil {
				return nil, fmt.Errorf("%s: %s", method, m.Error.Message)
			}
			return m.Result, nil
		}
	}
}

// open loads url in a new tab and returns the tab's session. The tab starts
// blank and navigates once attached: Page.navigate answers when the page's
// document is committed, so nothing runs in the blank page's context.
func (b *browser) open(ctx context.Context, url string) (string, error) {
	res, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		return "", err
	}
	var target struct{ TargetID string }
	_ = json.Unmarshal(res, &target)
	res, err = b.call(ctx, "", "Target.attachToTarget",
		map[string]any{"targetId": target.TargetID, "flatten": true})
	if err != nil {
		return "", err
	}
	var att struct{ SessionID string }
	_ = json.Unmarshal(res, &att)
	res, err = b.call(ctx, att.SessionID, "Page.navigate", map[string]any{"url": url})
	if err != nil {
		return "", err
	}
	var nav struct{ ErrorText string }
	if _ = json.Unmarshal(res, &nav); nav.ErrorText != "" {
		return "", fmt.Errorf("navigate to %s: %s", url, nav.ErrorText)
	}
	return att.SessionID, nil
}

// waitText waits, inside the page, until its text contains every one of
// want, and returns the DOM then (or at the deadline, with an error).
func (b *browser) waitText(ctx context.Context, session string, want ...string) (string, error) {
	wantJSON, _ := json.Marshal(want)
	expr := fmt.Sprintf(`new Promise((resolve) => {
		const want = %s, deadline = Date.now() + 10000;
		const check = () => {
			const text = document.body ? document.body.innerText : "";
			if (want.every((w) => text.includes(w)) || Date.now() > deadline) {
				resolve(JSON.stringify({ok: want.every((w) => text.includes(w)),
					dom: document.documentElement.outerHTML}));
			} else {
				setTimeout(check, 100);
			}
		};
		check();
	})`, wantJSON)
	res, err := b.call(ctx, session, "Runtime.evaluate",
		map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true})
	if err != nil {
		return "", err
	}
	var out struct {
		Result struct{ Value string }
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return "", err
	}
	var page struct {
		OK  bool
		DOM string
	}
	if err := json.Unmarshal([]byte(out.Result.Value), &page); err != nil {
		return "", fmt.Errorf("page answered %q: %w", out.Result.Value, err)
	}
	if !page.OK {
		return page.DOM, errors.New("page text lacks some of " + string(wantJSON))
	}
	return page.DOM, nil
}

func (b *browser) screenshot(ctx context.Context, session, path string) error {
	res, err := b.call(ctx, session, "Page.captureScreenshot",
		map[string]any{"format": "png", "captureBeyondViewport": true})
	if err != nil {
		return err
	}
	var shot struct{ Data string }
	_ = json.Unmarshal(res, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		return fmt.Errorf("decode screenshot: %w", err)
	}
	return os.WriteFile(path, png, 0o644)
}

// artifactDir is build/artifacts at the module root.
func artifactDir(t *testing.T) string {
	dir, err := filepath.Abs(filepath.Join("..", "build", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestStatusPageInChromium(t *testing.T) {
	bin := findChromium(t)
	f := newFixture(time.Now())
	srv := newLoopbackServer(t, NewHandler(Options{Sources: f.sources()}))
	b := startBrowser(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	session, err := b.open(ctx, srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	dom, err := b.waitText(ctx, session,
		"web-7d9f8-x2k4q", "api-0", "CrashLoopBackOff", // pods and their state
		"readiness: success", "Error (exit 137)", // probes, last state
		"default/web", "127.0.0.1:20001", // endpoints
		"Liveness probe failed", "BackOff", // events
		"live")
	if err != nil {
		t.Fatalf("first render: %v\nDOM:\n%s", err, dom)
	}
	if strings.Contains(dom, "worker-1") || strings.Contains(dom, "Killing") {
		t.Fatal("the change shows before it was made")
	}

	// Made after the page rendered: only the live stream can bring it.
	f.update(liveChange)
	dom, err = b.waitText(ctx, session, "worker-1", "Killing", "4 pods", "web-7d9f8-b4kzq")
	if err != nil {
		t.Fatalf("live update: %v\nDOM:\n%s", err, dom)
	}
	if !strings.Contains(dom, `<td class="num">8</td>`) {
		t.Errorf("api-0's restart count 8 missing from the DOM:\n%s", dom)
	}
	if want := `title="` + unplacedMessage + `">Pending</td>`; !strings.Contains(dom, want) {
		t.Errorf("the unplaced replica's status lacks %s:\n%s", want, dom)
	}

	shot := filepath.Join(artifactDir(t), "status.png")
	if err := b.screenshot(ctx, session, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
}

// liveChange is what happens while the page is open: api-0 restarts once
// more, a worker pod appears, a web replica cannot be placed and the kill
// is recorded.
func liveChange(f *fixture) {
	f.pods.Items[1].Status.ContainerStatuses[0].RestartCount = 8
	f.pods.Items = append(f.pods.Items, fixturePod("worker-1", "worker", time.Now(), 0, true),
		fixtureUnplaced("web-7d9f8-b4kzq", time.Now()))
	f.addEvent("api-0", "api", corev1.EventTypeNormal, "Killing",
		"Stopping container api: failed liveness probe", time.Now())
}
