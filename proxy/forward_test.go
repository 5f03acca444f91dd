package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStatusWithoutBackend(t *testing.T) {
	f := newFixture(t, Options{}, nil) // Service "app" without endpoints
	res := get(t, f.url+"/", nil)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("no ready endpoint: got %d, want 503", res.StatusCode)
	}
	if res.Header.Get("Server") != "vigil" || res.Header.Get("Date") == "" {
		t.Errorf("Server %q Date %q: want both set", res.Header.Get("Server"), res.Header.Get("Date"))
	}

	f.p.SetConfig(Config{}) // nothing routed, no default backend
	if res := get(t, f.url+"/", nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("no rule: got %d, want 404", res.StatusCode)
	}
}

func TestDefaultBackendServes(t *testing.T) {
	b := newBackend(t, okHandler)
	f := newFixture(t, Options{}, nil)
	ing := ingressOf("d", 0, ruleOf("only.com", pathOf(exact, "/x", "other")))
	def := pathOf(prefix, "/", "app")
	ing.Spec.DefaultBackend = &def.Backend
	f.p.SetConfig(Config{Ingresses: ingsOf(ing), Services: servicesFor(ing)})
	f.p.SetEndpoints([]ServiceEndpoints{epsOf("app", b.addr())})
	res := get(t, f.url+"/nothing/matches", nil)
	if res.StatusCode != http.StatusOK || b.hits.Load() != 1 {
		t.Errorf("got %d and %d backend hits, want 200 from the default backend", res.StatusCode, b.hits.Load())
	}
}

func TestHopByHopStripped(t *testing.T) {
	seen := make(chan http.Header, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Connection", "X-Resp-Private")
		w.Header().Set("X-Resp-Private", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
	})
	f := newFixture(t, Options{}, nil, b.addr())
	res := rawRequest(t, f.addr(), "GET / HTTP/1.1\r\nHost: x\r\n"+
		"Connection: keep-alive, X-Private-A\r\nConnection: x-private-b\r\n"+
		"X-Private-A: 1\r\nX-Private-B: 2\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\n"+
		"Te: trailers, deflate\r\nUpgrade: h2c\r\nProxy-Authorization: Basic Zm9v\r\n"+
		"X-End-To-End: yes\r\n\r\n")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	h := <-seen
	for _, k := range []string{"X-Private-A", "X-Private-B", "Keep-Alive", "Proxy-Connection",
		"Upgrade", "Proxy-Authorization"} {
		if v, ok := h[k]; ok {
			t.Errorf("backend got hop-by-hop %s: %q", k, v)
		}
	}
	if got := h.Get("Te"); got != "trailers" {
		t.Errorf("Te = %q, want only trailers", got)
	}
	if h.Get("X-End-To-End") != "yes" {
		t.Errorf("end-to-end header lost")
	}
	for _, k := range []string{"X-Resp-Private", "Keep-Alive"} {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("client got hop-by-hop %s: %q", k, v)
		}
	}
	if res.Header.Get("X-Kept") != "yes" {
		t.Errorf("response header X-Kept lost")
	}
}

func TestForwardedHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		seen <- h
	})
	spoof := map[string]string{
		"X-Forwarded-For":   "6.6.6.6",
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "evil.com",
		"Forwarded":         "for=6.6.6.6",
	}
	for _, tc := range []struct {
		desc                  string
		trusted               []netip.Prefix
		wantFor, wantProto    string
		wantHost, wantForward string
	}{
		{"untrusted peer", nil, "127.0.0.1", "http", "app.com:1234", ""},
		{"trusted peer", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			"6.6.6.6, 127.0.0.1", "https", "evil.com", "for=6.6.6.6"},
		{"trust elsewhere", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			"127.0.0.1", "http", "app.com:1234", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := newFixture(t, Options{TrustedProxies: tc.trusted}, nil, b.addr())
			res := rawRequest(t, f.addr(), "GET / HTTP/1.1\r\nHost: app.com:1234\r\n"+
				headerLines(spoof)+"\r\n")
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			h := <-seen
			if got := h.Get("X-Forwarded-For"); got != tc.wantFor {
				t.Errorf("X-Forwarded-For %q, want %q", got, tc.wantFor)
			}
			if got := h.Get("X-Forwarded-Proto"); got != tc.wantProto {
				t.Errorf("X-Forwarded-Proto %q, want %q", got, tc.wantProto)
			}
			if got := h.Get("X-Forwarded-Host"); got != tc.wantHost {
				t.Errorf("X-Forwarded-Host %q, want %q", got, tc.wantHost)
			}
			if got := h.Get("Forwarded"); got != tc.wantForward {
				t.Errorf("Forwarded %q, want %q", got, tc.wantForward)
			}
			if got := h.Get("Host"); got != "app.com:1234" {
				t.Errorf("Host forwarded as %q, want it unchanged", got)
			}
		})
	}
}

func headerLines(h map[string]string) string {
	var b strings.Builder
	for k, v := range h {
		b.WriteString(k + ": " + v + "\r\n")
	}
	return b.String()
}

func TestPathForwardedAsRouted(t *testing.T) {
	b := newBackend(t, okHandler)
	f := newFixture(t, Options{}, nil, b.addr())
	for _, tc := range []struct {
		target, wantURI string
		status          int
	}{
		{"/a/./b/../c?x=%2F&y", "/a/c?x=%2F&y", 200},
		{"/a%2Fb/c", "/a%2Fb/c", 200},
		{"/a%2fb", "/a%2fb", 200},
		{"/%2e%2e/%2e%2e/etc/passwd", "", 400},
		{"/x/../../etc", "", 400},
		{"//double//slash", "/double/slash", 200},
	} {
		res := rawRequest(t, f.addr(), "GET "+tc.target+" HTTP/1.1\r\nHost: h\r\n\r\n")
		if res.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.target, res.StatusCode, tc.status)
			continue
		}
		if got := res.Header.Get("X-Seen-URI"); got != tc.wantURI {
			t.Errorf("%s: backend saw %q, want %q", tc.target, got, tc.wantURI)
		}
	}
}

func TestHeaderSizeLimit(t *testing.T) {
	b := newBackend(t, okHandler)
	f := newFixture(t, Options{MaxHeaderBytes: 4 << 10}, nil, b.addr())
	res := rawRequest(t, f.addr(), "GET / HTTP/1.1\r\nHost: h\r\nX-Big: "+
		strings.Repeat("a", 16<<10)+"\r\n\r\n")
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", res.StatusCode)
	}
	if b.hits.Load() != 0 {
		t.Errorf("oversized request reached the backend")
	}
}

func TestWebSocketTunnel(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") ||
			!hasToken(r.Header["Connection"], "upgrade") {
			http.Error(w, "want upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n" +
			"Upgrade: websocket\r\nSec-WebSocket-Accept: abc\r\n\r\n")
		_ = brw.Flush()
		// Echo lines until the client closes.
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
		}
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\nhello\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Upgrade") != "websocket" ||
		res.Header.Get("Sec-WebSocket-Accept") != "abc" {
		t.Fatalf("got %d %v, want 101 websocket", res.StatusCode, res.Header)
	}
	for _, want := range []string{"echo hello\n", "echo again\n"} {
		if want == "echo again\n" {
			_, _ = io.WriteString(c, "again\n")
		}
		got, err := br.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("tunnel read %q, %v; want %q", got, err, want)
		}
	}
	ep := f.p.eps[b.addr()]
	if ep.inflight.Load() != 1 {
		t.Errorf("open tunnel in flight = %d, want 1", ep.inflight.Load())
	}
	c.Close()
	if err := f.p.Drain(ctxTimeout(t), []string{b.addr()}); err != nil {
		t.Errorf("drain after the tunnel closed: %v", err)
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRetryConnectFailure(t *testing.T) {
	b := newBackend(t, okHandler)
	dead := closedAddr(t)
	reg := prometheus.NewRegistry()
	f := newFixture(t, Options{Registerer: reg}, nil, dead, b.addr())
	for i := 0; i < 4; i++ {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, f.url+"/", strings.NewReader("body"))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("%s %d: status %d, want 200 after retry", method, i, res.StatusCode)
			}
		}
	}
	if got := b.hits.Load(); got != 8 {
		t.Errorf("live backend got %d requests, want 8", got)
	}
	if !f.p.eps[dead].ejected(time.Now().UnixNano()) {
		t.Errorf("refusing endpoint not ejected")
	}
	if got := testutil.ToFloat64(f.p.metrics.retries.WithLabelValues("default/app:80")); got != 1 {
		t.Errorf("retries = %v, want 1 (ejected after the first refusal)", got)
	}
}

// resetBackend reads a request head and closes the connection unanswered.
func resetBackend(t *testing.T) (string, *sync.WaitGroup) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var seen sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
				seen.Done()
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), &seen
}

func TestNoRetryOfSentPOST(t *testing.T) {
	good := newBackend(t, okHandler)
	broken, seen := resetBackend(t)
	// Round-robin starts at index 1: the first request goes to broken.
	f := newFixture(t, Options{}, nil, good.addr(), broken)

	seen.Add(1)
	res, err := http.Post(f.url+"/", "text/plain", strings.NewReader("pay once"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	seen.Wait()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("POST cut after sending: status %d, want 502", res.StatusCode)
	}
	if good.hits.Load() != 0 {
		t.Errorf("POST was replayed on another endpoint")
	}

	get(t, f.url+"/", nil) // index 0: good
	seen.Add(1)
	res = get(t, f.url+"/", nil) // index 1: broken, then retried
	seen.Wait()
	if res.StatusCode != http.StatusOK || good.hits.Load() != 2 {
		t.Errorf("GET after reset: status %d, good hits %d; want 200 and 2", res.StatusCode, good.hits.Load())
	}
}

func TestClientHangupIs499(t *testing.T) {
	arrived := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done() // the proxy gives up once the client has
	})
	reg := prometheus.NewRegistry()
	f := newFixture(t, Options{Registerer: reg}, nil, b.addr())

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	<-arrived
	cancel()
	<-errc

	rec := f.logs.next(t)
	if got := rec["status"].Int64(); got != StatusClientClosedRequest {
		t.Errorf("logged status %d, want 499", got)
	}
	if got := testutil.ToFloat64(f.p.metrics.hangups.WithLabelValues("default/app", "default/app:80")); got != 1 {
		t.Errorf("hang-ups = %v, want 1", got)
	}
	e := f.p.eps[b.addr()]
	if e.fails5xx.Load() != 0 || e.failsConnect.Load() != 0 {
		t.Errorf("hang-up counted against the backend")
	}
}

func TestStreamedBodyAndTrailers(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "42")
	})
	f := newFixture(t, Options{MaxBufferedBody: 8}, nil, b.addr())
	big := strings.Repeat("x", 100<<10)
	res, err := http.Post(f.url+"/", "text/plain", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || string(got) != big {
		t.Errorf("status %d, body %d bytes; want 201 and %d bytes", res.StatusCode, len(got), len(big))
	}
	if res.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer X-Sum = %q, want 42", res.Trailer.Get("X-Sum"))
	}
}
