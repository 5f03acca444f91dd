package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestSnapshot(t *testing.T) {
	now := time.Now()
	f := newFixture(now)
	s := buildSnapshot(f.sources(), now)

	if len(s.Pods) != 2 || s.Pods[0].Name != "web-7d9f8-x2k4q" || s.Pods[1].Name != "api-0" {
		t.Fatalf("pods = %+v", s.Pods)
	}
	web, api := s.Pods[0], s.Pods[1]
	if web.Ready != "1/1" || !web.AllReady || web.Restarts != 3 ||
		web.HostPorts != "web/8080=20001,web/9090=20002" {
		t.Errorf("web = %+v", web)
	}
	if c := web.Containers[0]; c.LastState != "Error (exit 137)" || c.State != "running" {
		t.Errorf("web container = %+v", c)
	}
	if api.Ready != "0/1" || api.Restarts != 7 || api.Containers[0].Reason != "CrashLoopBackOff" {
		t.Errorf("api = %+v", api)
	}
	probes := func(c containerView) string {
		var out []string
		for _, p := range c.Probes {
			out = append(out, p.Type+"="+p.State)
		}
		return strings.Join(out, " ")
	}
	if got, want := probes(web.Containers[0]), "liveness=success readiness=success"; got != want {
		t.Errorf("web probes %q, want %q", got, want)
	}
	// Not running: its probes do not run either.
	if got, want := probes(api.Containers[0]), "startup=idle liveness=idle"; got != want {
		t.Errorf("api probes %q, want %q", got, want)
	}
	if len(s.Events) != 3 || s.Events[0].Reason != "BackOff" || s.Events[2].Reason != "Started" {
		t.Errorf("events not newest first: %+v", s.Events)
	}
	if len(s.Endpoints) != 1 || s.Endpoints[0].Ports[0].Endpoints[0] !=
		"127.0.0.1:20001 (web-7d9f8-x2k4q/web)" {
		t.Errorf("endpoints = %+v", s.Endpoints)
	}
}

// A replica the supervisor could not place is a Pending pod with no
// containers; the page shows it, with the scheduling message, and no
// container rows.
func TestSnapshotUnschedulable(t *testing.T) {
	now := time.Now()
	f := newFixture(now)
	f.pods.Items = append(f.pods.Items, fixtureUnplaced("web-7d9f8-b4kzq", now))
	s := buildSnapshot(f.sources(), now)
	if len(s.Pods) != 3 {
		t.Fatalf("%d pods, want 3", len(s.Pods))
	}
	p := s.Pods[2]
	if p.Phase != "Pending" || p.Ready != "0/1" || p.AllReady || len(p.Containers) != 0 ||
		p.Unschedulable != unplacedMessage {
		t.Errorf("unplaced pod = %+v", p)
	}
	if s.Pods[0].Unschedulable != "" {
		t.Errorf("placed pod %s has unschedulable %q", s.Pods[0].Name, s.Pods[0].Unschedulable)
	}
}

func TestProbeStateFromEvents(t *testing.T) {
	now := time.Now()
	tests := []struct {
		desc       string
		ready      bool
		failureAgo time.Duration // 0: no failure event
		want       string
	}{
		{"ready, no failure", true, 0, "liveness=success readiness=success"},
		{"not ready yet", false, 0, "liveness=success readiness=pending"},
		{"readiness failing now", false, 3 * time.Second, "liveness=success readiness=failing"},
		{"old failure has passed", false, 5 * time.Minute, "liveness=success readiness=pending"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			f := newFixture(now)
			f.pods.Items = f.pods.Items[:1]
			f.pods.Items[0].Status.ContainerStatuses[0].Ready = tt.ready
			if tt.failureAgo > 0 {
				f.addEvent("web-7d9f8-x2k4q", "web", corev1.EventTypeWarning, "Unhealthy",
					"Readiness probe failed: connection refused", now.Add(-tt.failureAgo))
			}
			c := buildSnapshot(f.sources(), now).Pods[0].Containers[0]
			var got []string
			for _, p := range c.Probes {
				got = append(got, p.Type+"="+p.State)
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("probes %q, want %q", g, tt.want)
			}
		})
	}
}

func TestSnapshotCapsEvents(t *testing.T) {
	now := time.Now()
	f := newFixture(now)
	for i := range 2 * maxPageEvents {
		f.addEvent("api-0", "api", corev1.EventTypeNormal, "Pulled", "n", now.Add(time.Duration(i)*time.Millisecond))
	}
	s := buildSnapshot(f.sources(), now)
	if len(s.Events) != maxPageEvents || s.EventsTotal != 2*maxPageEvents+3 {
		t.Errorf("%d events of %d, want %d of %d", len(s.Events), s.EventsTotal, maxPageEvents,
			2*maxPageEvents+3)
	}
}

// readStream sends each data payload of an event stream on the channel.
func readStream(body io.Reader) <-chan snapshot {
	ch := make(chan snapshot, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var s snapshot
			if json.Unmarshal([]byte(data), &s) == nil {
				ch <- s
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan snapshot) snapshot {
	t.Helper()
	select {
	case s, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot within 10s")
	}
	return snapshot{}
}

func TestStreamPushesChanges(t *testing.T) {
	f := newFixture(time.Now())
	srv := httptest.NewServer(NewHandler(Options{Sources: f.sources()}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	snaps := readStream(resp.Body)
	if s := next(t, snaps); s.Pods[1].Restarts != 7 {
		t.Fatalf("first snapshot: api restarts %d, want 7", s.Pods[1].Restarts)
	}

	start := time.Now()
	f.update(func(f *fixture) {
		f.pods.Items[1].Status.ContainerStatuses[0].RestartCount = 8
		f.addEvent("api-0", "api", corev1.EventTypeNormal, "Pulled", "image already present", time.Now())
	})
	s := next(t, snaps)
	if s.Pods[1].Restarts != 8 || s.Events[0].Reason != "Pulled" {
		t.Errorf("after the change: restarts %d, newest event %q", s.Pods[1].Restarts, s.Events[0].Reason)
	}
	// Pushed on the change signal, not at the next periodic refresh.
	if d := time.Since(start); d >= refreshPeriod {
		t.Errorf("change pushed after %v, want before the %v refresh", d, refreshPeriod)
	}
}

func TestStreamRefusesPastCap(t *testing.T) {
	f := newFixture(time.Now())
	sp := newStatusPage(f.sources(), slog.New(slog.DiscardHandler))
	sp.slots = make(chan struct{}, 1)
	sp.slots <- struct{}{} // the one slot is taken
	rec := httptest.NewRecorder()
	sp.stream(rec, httptest.NewRequest("GET", "/stream", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
}

func TestHubStopsWithLastClient(t *testing.T) {
	changes := make(chan struct{}, 1)
	subscribed := 0
	h := &hub{
		subscribe: func() <-chan struct{} { subscribed++; return changes },
		clients:   map[chan struct{}]bool{},
	}
	a, leaveA := h.join()
	b, leaveB := h.join()
	changes <- struct{}{}
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("a client missed the change")
		}
	}
	leaveA()
	leaveB()
	_, leaveC := h.join()
	leaveC()
	if subscribed != 1 {
		t.Errorf("subscribed %d times, want once", subscribed)
	}
}

func TestPageServed(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Options{Sources: newFixture(time.Now()).sources()}))
	defer srv.Close()
	for path, want := range map[string]string{
		"/":                  "<title>vigil status</title>",
		"/static/status.js":  "new EventSource(\"/stream\")",
		"/static/status.css": "--ok:",
		"/snapshot":          `"name": "api-0"`,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Get(srv.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", resp.StatusCode)
	}
}
