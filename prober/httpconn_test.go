package prober

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// connServer is an HTTP server on a counting listener that also counts the
// connections it saw closed.
type connServer struct {
	l      *countingListener
	srv    *http.Server
	closed atomic.Int32
	idle   atomic.Int32 // transitions to idle, one per response on a kept connection
	host   string
	port   int
}

func newConnServer(t *testing.T, h http.Handler) *connServer {
	t.Helper()
	s := &connServer{l: listen(t, "127.0.0.1:0")}
	s.srv = &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateClosed:
			s.closed.Add(1)
		case http.StateIdle:
			s.idle.Add(1)
		}
	}}
	go s.srv.Serve(s.l)
	t.Cleanup(func() { s.srv.Close() })
	s.host, s.port = hostPort(t, s.l.Addr().String())
	return s
}

func (s *connServer) handler(t *testing.T, path string) *httpHandler {
	t.Helper()
	h := newHTTPHandler(httpTarget(s.host, intstr.FromInt(s.port), path, time.Second), testEnv(t, ConnReuse))
	hh, ok := h.(*httpHandler)
	if !ok || hh.ka == nil {
		t.Fatalf("handler %T does not use a kept connection", h)
	}
	t.Cleanup(hh.close)
	return hh
}

func probeOnce(t *testing.T, h handler) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	o, err := h.probe(ctx)
	if err != nil {
		t.Fatalf("probe error: %v", err)
	}
	return o
}

// waitFor polls cond for up to 2 s (connection closes are seen by the
// server asynchronously).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	s := newConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	h := s.handler(t, "/healthz")
	for i := range 5 {
		if o := probeOnce(t, h); o.result != Success {
			t.Fatalf("run %d: %v %q", i, o.result, o.output)
		}
	}
	if n := s.l.n.Load(); n != 1 {
		t.Fatalf("5 runs opened %d connections, want 1", n)
	}

	// The server drops the idle connection: the next run notices on the
	// kept socket and retries once on a new one, without failing.
	waitFor(t, "the server to see the connection idle", func() bool { return s.idle.Load() == 5 })
	s.srv.SetKeepAlivesEnabled(false) // closes idle connections
	s.srv.SetKeepAlivesEnabled(true)
	waitFor(t, "the idle connection to close", func() bool { return s.closed.Load() == 1 })
	if o := probeOnce(t, h); o.result != Success {
		t.Fatalf("run after the server closed the connection: %v %q", o.result, o.output)
	}
	if n := s.l.n.Load(); n != 2 {
		t.Errorf("%d connections after the server closed one, want 2", n)
	}
}

func TestKeepAliveDropsUnreusableConnections(t *testing.T) {
	s := newConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big": // more than maxBodyBytes: the rest is left unread
			w.Write([]byte(strings.Repeat("x", 3*maxBodyBytes)))
		case "/close":
			w.Header().Set("Connection", "close")
		}
	}))
	for _, path := range []string{"/big", "/close"} {
		t.Run(path, func(t *testing.T) {
			before := s.l.n.Load()
			h := s.handler(t, path)
			for i := range 2 {
				if o := probeOnce(t, h); o.result != Success {
					t.Fatalf("run %d: %v %q", i, o.result, o.output)
				}
			}
			if n := s.l.n.Load() - before; n != 2 {
				t.Errorf("2 runs opened %d connections, want 2 (none reusable)", n)
			}
		})
	}
}

func TestKeepAliveHeaderCap(t *testing.T) {
	s := newConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for i := range 40 {
			w.Header().Set("X-Pad-"+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("p", 2<<10))
		}
	}))
	o := probeOnce(t, s.handler(t, "/"))
	if o.result != Failure || !strings.Contains(o.output, "headers exceeded") {
		t.Fatalf("got %v %q, want a failure on the header cap", o.result, o.output)
	}
}

func TestKeepAliveDeadlineAndCancel(t *testing.T) {
	l := listen(t, "127.0.0.1:0")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	host, port := hostPort(t, l.Addr().String())
	tg := httpTarget(host, intstr.FromInt(port), "/", time.Second)
	h := newHTTPHandler(tg, testEnv(t, ConnReuse)).(*httpHandler)
	t.Cleanup(h.close)

	// The deadline is the socket's: no context deadline involved.
	start := time.Now()
	o, err := h.probeBy(context.Background(), start.Add(100*time.Millisecond))
	if err != nil || o.result != Failure || o.output != "context deadline exceeded" {
		t.Fatalf("got %v %q %v, want a deadline failure", o.result, o.output, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
		t.Errorf("deadline of 100ms ended the run after %v", d)
	}

	// The worker's context ends mid-run (the target is removed): the run
	// ends at once, long before its deadline.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	o, err = h.probeBy(ctx, start.Add(time.Minute))
	if err != nil || o.result != Failure || o.output != "context canceled" {
		t.Fatalf("got %v %q %v, want the run canceled", o.result, o.output, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancel ended the run after %v", d)
	}
}

func TestKeepAliveRefusesInvalidHeaders(t *testing.T) {
	for _, hd := range []corev1.HTTPHeader{{Name: "Bad Name", Value: "x"}, {Name: "X-Ok", Value: "a\r\nInjected: 1"}} {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
		req.Header.Set(hd.Name, hd.Value)
		if _, err := newKeepAlive(req, "127.0.0.1:1", plainDialer(), time.Second); err == nil {
			t.Errorf("header %q: %q accepted", hd.Name, hd.Value)
		}
	}
}

// BenchmarkKeepAliveProbe measures one run of a plain-HTTP probe on its kept
// connection, allocations included. The server is a bare loop answering
// every request with the same bytes, so that what is allocated is the
// prober's.
func BenchmarkKeepAliveProbe(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Date: Fri, 04 Dec 2026 16:00:00 GMT\r\n\r\nok"
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4<<10)
				for {
					// A probe request fits in one read.
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := io.WriteString(c, answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	host, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)
	hosts, _ := newHostPolicy(nil)
	env := newHandlerEnv(DefaultUserAgent, hosts, ConnReuse)
	h := newHTTPHandler(httpTarget(host, intstr.FromInt(p), "/healthz", time.Second), env)
	hh, ok := h.(*httpHandler)
	if !ok || hh.ka == nil {
		b.Fatalf("handler %T does not use a kept connection", h)
	}
	defer hh.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		o, err := hh.probeBy(ctx, time.Now().Add(time.Second))
		if err != nil || o.result != Success {
			b.Fatalf("probe: %+v, %v", o, err)
		}
	}
}

// TestPlainHead checks which responses the allocation-free path takes and
// that it leaves every other one unread for http.ReadResponse.
func TestPlainHead(t *testing.T) {
	const tail = "ok"
	for _, tc := range []struct {
		name, head string
		ok         bool
		code       int
		length     int64
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n", true, 200, 2},
		{"no reason", "HTTP/1.1 204\r\ncontent-length: 0\r\n\r\n", true, 204, 0},
		{"length with spaces", "HTTP/1.1 299 Whatever\r\nContent-Length: \t2 \r\n\r\n", true, 299, 2},
		{"no length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, 0, 0},
		{"no headers", "HTTP/1.1 200 OK\r\n\r\n", false, 0, 0},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n", false, 0, 0},
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 0},
		{"connection", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"redirect", "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"failure", "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"informational", "HTTP/1.1 100 Continue\r\n\r\n", false, 0, 0},
		{"short code", "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"long code", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n", false, 0, 0},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\n", false, 0, 0},
		{"folded", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n b\r\n\r\n", false, 0, 0},
		{"space in name", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n", false, 0, 0},
		{"control in value", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\x01\r\n\r\n", false, 0, 0},
		// obs-text is valid in a value, and net/http takes it too.
		{"non-ASCII in value", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: \xe9\r\n\r\n", true, 200, 2},
		{"DEL in value", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\x7f\r\n\r\n", false, 0, 0},
		{"head not complete", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.head+tail), 2<<10)
			code, length, ok, err := plainHead(br)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if ok != tc.ok || code != tc.code || length != tc.length {
				t.Fatalf("got ok %v code %d length %d, want %v %d %d", ok, code, length, tc.ok, tc.code, tc.length)
			}
			rest, _ := io.ReadAll(br)
			want := tc.head + tail
			if ok {
				want = tail
			}
			if string(rest) != want {
				t.Errorf("left %q unread, want %q", rest, want)
			}
		})
	}

	// No byte at all is an unexpected EOF, as http.ReadResponse has it.
	if _, _, _, err := plainHead(bufio.NewReader(strings.NewReader(""))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("empty response: %v, want unexpected EOF", err)
	}
}
