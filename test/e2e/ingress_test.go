package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/proxy"
)

// Load through the ingress while one of three replicas fails and its
// liveness probe restarts it: every GET answers 200, the failing instance
// gets nothing once its first failed readiness result is in, the proxy never
// tries the restarting container (no retries, no 5xx) and the new instance
// gets traffic again.
//
// Readiness has failureThreshold 1, so its first failed result is the state
// change that takes the pod out of rotation. A failed liveness result below
// its threshold leaves the pod Ready, as with the kubelet; the liveness kill
// that follows (three periods on) is later still, and its Killing event is
// the reference if it ever came first.
func TestIngressLoadDuringLivenessRestart(t *testing.T) {
	const ns = "e2e-ingress"
	const period, threshold = 1, 3
	v := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 3, period, threshold)},
		options{config: "log:\n  format: json\nproxy:\n  accessLog: true\n"})
	v.start()
	pods := v.readyPods("app-", 3, 90*time.Second)
	sick := pods[0]
	sickAddr := hostPort(t, sick, "app", 8080)
	epAddr := v.endpointOf(sick.Name)
	old := directServed(t, sickAddr)

	load := startLoad(v, 4, 60*time.Second)
	// Every replica serves before the failure.
	waitFor(t, "traffic to all 3 replicas", 10*time.Second, func() bool {
		return len(load.podsSeen()) == 3
	})

	failAt := time.Now()
	control(t, sickAddr, "/control/fail")
	v.waitRestarted(sick.Name, 30*time.Second)
	v.readyPods("app-", 3, 30*time.Second)
	// Not fatal: the checks below say more about why it did not come.
	back := poll(15*time.Second, func() bool {
		return load.servedBy(sick.Name, old.Instance, false) >= 20
	})
	results := load.stop()

	// Zero failed GETs.
	failed := 0
	for _, r := range results {
		if r.err != nil || r.code != 200 {
			if failed < 10 {
				t.Errorf("GET at %s: code %d err %v", r.start.Format(time.RFC3339Nano), r.code, r.err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d GETs failed", failed, len(results))
	}

	// The failing instance gets nothing sent after it left rotation. The
	// reference is vigil's own record of the probe result (the event's log
	// time, on the same clock as the client's). The worker publishes the
	// endpoints right after it records the event; the tolerance covers that
	// step and a request the proxy had already routed when the endpoints
	// changed. Requests are sent every few ms, so a late removal shows.
	const tolerance = 100 * time.Millisecond
	logs := v.readJSONLog()
	// A probe may also have failed at start, before the app listened.
	const failed500 = " probe failed: HTTP probe failed with statuscode: 500"
	out := firstEvent(logs, failAt, ns+"/"+sick.Name, "Unhealthy", "Readiness"+failed500)
	if kill := firstEvent(logs, failAt, ns+"/"+sick.Name, "Killing", "failed liveness probe"); !kill.IsZero() &&
		(out.IsZero() || kill.Before(out)) {
		out = kill
	}
	if out.IsZero() {
		t.Fatalf("no Unhealthy readiness or Killing event for %s in vigil's log", sick.Name)
	}
	var lastOld time.Time
	late := 0
	for _, r := range results {
		if r.served.Pod != sick.Name || r.served.Instance != old.Instance {
			continue
		}
		if r.start.After(lastOld) {
			lastOld = r.start
		}
		if r.start.After(out.Add(tolerance)) {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d requests sent more than %s after %s left rotation (at %s) reached it; last sent %s after",
			late, tolerance, sick.Name, out.Format(time.RFC3339Nano), lastOld.Sub(out))
	}
	t.Logf("last request to the failing instance was sent %s after it left rotation", lastOld.Sub(out))
	if live := firstEvent(logs, failAt, ns+"/"+sick.Name, "Unhealthy", "Liveness"+failed500); !live.IsZero() {
		t.Logf("first failed liveness result %s after the readiness one", live.Sub(out))
	}

	// The proxy never dialled the container while it stopped and restarted:
	// a retry or a 5xx would show that it was still in rotation.
	var toSick, retried, errs5xx int
	for _, l := range logs {
		if l.Msg != "request" {
			continue
		}
		if l.Endpoint == epAddr {
			toSick++
		}
		if l.Attempts > 1 {
			retried++
		}
		if l.Status >= 500 {
			errs5xx++
		}
	}
	if errs5xx > 0 || retried > 0 {
		t.Errorf("proxy access log: %d responses 5xx, %d requests retried on another endpoint", errs5xx, retried)
	}

	newServed := load.servedBy(sick.Name, old.Instance, false)
	if !back {
		t.Errorf("the restarted instance of %s served %d requests within 15s, want 20", sick.Name, newServed)
	}
	t.Logf("%d GETs, %d proxied to %s (%d by the new instance), pods %v",
		len(results), toSick, epAddr, newServed, load.podsSeen())
}

// poll checks cond every 50 ms until it holds (true) or within passes.
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// endpointOf returns the proxy endpoint address of a pod's Service port,
// as /endpoints lists it.
func (v *vigil) endpointOf(pod string) string {
	v.t.Helper()
	var list []proxy.ServiceEndpoints
	if err := getJSON("http://"+v.admin+"/endpoints", &list); err != nil {
		v.t.Fatalf("GET /endpoints: %v", err)
	}
	for _, se := range list {
		for _, eps := range se.Ports {
			for _, e := range eps {
				if e.Pod == pod {
					return e.Address
				}
			}
		}
	}
	v.t.Fatalf("pod %s is in no endpoints: %+v", pod, list)
	return ""
}

// directServed GETs / from one test app, bypassing the proxy.
func directServed(t *testing.T, addr string) served {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s served
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decode / from %s: %v", addr, err)
	}
	return s
}

// result is one GET of the load.
type result struct {
	start  time.Time
	code   int
	err    error
	served served
}

// load is a fixed number of clients sending GETs through the proxy, each
// pausing between requests, until stopped or a time bound passes.
type load struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	results []result
}

func startLoad(v *vigil, clients int, bound time.Duration) *load {
	l := &load{done: make(chan struct{})}
	deadline := time.Now().Add(bound)
	for range clients {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer c.CloseIdleConnections()
			for time.Now().Before(deadline) {
				select {
				case <-l.done:
					return
				case <-time.After(5 * time.Millisecond):
				}
				l.add(l.get(c, v.proxy))
			}
		}()
	}
	return l
}

func (l *load) get(c *http.Client, proxyAddr string) result {
	req, _ := http.NewRequest("GET", "http://"+proxyAddr+"/", nil)
	req.Host = "app.test"
	r := result{start: time.Now()}
	resp, err := c.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.code = resp.StatusCode
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		r.err = err
		return r
	}
	if r.code == 200 {
		if err := json.Unmarshal(body, &r.served); err != nil {
			r.err = fmt.Errorf("decode %q: %w", body, err)
		}
	}
	return r
}

func (l *load) add(r result) {
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// stop ends the load and returns every result, in start order.
func (l *load) stop() []result {
	close(l.done)
	l.wg.Wait()
	sort.Slice(l.results, func(i, j int) bool { return l.results[i].start.Before(l.results[j].start) })
	return l.results
}

// podsSeen counts the responses per serving pod so far.
func (l *load) podsSeen() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]int{}
	for _, r := range l.results {
		if r.served.Pod != "" {
			seen[r.served.Pod]++
		}
	}
	return seen
}

// servedBy counts the responses from pod whose instance is (same) or is
// not (!same) the given one.
func (l *load) servedBy(pod, instance string, same bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if r.served.Pod == pod && (r.served.Instance == instance) == same {
			n++
		}
	}
	return n
}

// logLine holds the fields of vigil's JSON log lines that the tests read:
// events and proxy access-log lines.
type logLine struct {
	Time     time.Time `json:"time"`
	Msg      string    `json:"msg"`
	Pod      string    `json:"pod"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message"`
	Endpoint string    `json:"endpoint"`
	Status   int       `json:"status"`
	Attempts int       `json:"attempts"`
}

// readJSONLog parses the current vigil log, which must be in JSON.
func (v *vigil) readJSONLog() []logLine {
	v.t.Helper()
	f, err := os.Open(v.logPath)
	if err != nil {
		v.t.Fatal(err)
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		v.t.Fatalf("read %s: %v", v.logPath, err)
	}
	return out
}

// firstEvent returns the log time of the first event after since on pod
// with the reason and a message containing substr, or the zero time.
func firstEvent(logs []logLine, since time.Time, pod, reason, substr string) time.Time {
	for _, l := range logs {
		if l.Msg == "event" && l.Time.After(since) && l.Pod == pod && l.Reason == reason &&
			strings.Contains(l.Message, substr) {
			return l.Time
		}
	}
	return time.Time{}
}
