package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// rawBackend answers every request head it reads with reply(head), as
// bytes, on keep-alive connections. It counts the heads.
type rawBackend struct {
	ln    net.Listener
	heads atomic.Int64
}

func newRawBackend(t *testing.T, reply func(head string) string) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					b.heads.Add(1)
					out := reply(head.String())
					if _, err := io.WriteString(c, out); err != nil {
						return
					}
					if strings.Contains(out, "Connection: close") || strings.HasPrefix(out, "HTTP/1.0") {
						return
					}
				}
			}()
		}
	}()
	return b
}

func (b *rawBackend) addr() string { return b.ln.Addr().String() }

// client is one raw keep-alive connection to the proxy.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatal(err)
	}
}

// read reads one response to a request with method, body included.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	return res, string(body)
}

func (c *client) get(path string) (*http.Response, string) {
	c.t.Helper()
	c.send("GET " + path + " HTTP/1.1\r\nHost: app.test\r\n\r\n")
	return c.read(http.MethodGet)
}

func TestDirectRelaysEveryFraming(t *testing.T) {
	replies := map[string]string{
		"/length": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n" +
			"Connection: keep-alive, X-Private\r\nX-Private: secret\r\nX-Kept: yes\r\n\r\nhello",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n",
		"/interim": "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
			"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
		"/nocontent": "HTTP/1.1 204 No Content\r\nServer: origin\r\n\r\n",
		"/switch":    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n",
		"/http10":    "HTTP/1.0 200 OK\r\n\r\nuntil close",
	}
	b := newRawBackend(t, func(head string) string {
		path := strings.Fields(head)[1]
		return replies[path]
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())

	cases := []struct {
		path, body, header, want string
		status                   int
	}{
		{"/length", "hello", "X-Kept", "yes", 200},
		{"/length", "hello", "X-Private", "", 200},
		{"/length", "hello", "Keep-Alive", "", 200},
		{"/length", "hello", "Server", "vigil", 200},
		{"/chunked", "abcde", "", "", 200},
		{"/interim", "ok", "Link", "", 201},
		{"/nocontent", "", "Server", "origin", 204},
		{"/switch", "Bad Gateway", "", "", 502},
		{"/http10", "until close", "", "", 200},
		{"/length", "hello", "", "", 200},
	}
	// All on one client connection: each framing must leave it usable.
	for _, tc := range cases {
		res, body := c.get(tc.path)
		if res.StatusCode != tc.status || body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.path, res.StatusCode, body, tc.status, tc.body)
		}
		if tc.header != "" && res.Header.Get(tc.header) != tc.want {
			t.Errorf("%s: %s = %q, want %q", tc.path, tc.header, res.Header.Get(tc.header), tc.want)
		}
		if res.Header.Get("Date") == "" {
			t.Errorf("%s: no Date", tc.path)
		}
		if tc.path == "/chunked" && res.Trailer.Get("X-Sum") != "5" {
			t.Errorf("/chunked: trailer X-Sum = %q, want 5", res.Trailer.Get("X-Sum"))
		}
	}
}

func TestDirectHeadAndPipelining(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		_, _ = io.WriteString(w, "body of "+r.URL.Path)
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	// Three requests in one write, a HEAD among them.
	c.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []struct{ method, path, body string }{
		{"GET", "/1", "body of /1"}, {"HEAD", "/2", ""}, {"GET", "/3", "body of /3"},
	} {
		res, body := c.read(want.method)
		if res.StatusCode != 200 || body != want.body || res.Header.Get("X-Path") != want.path {
			t.Errorf("%s %s: %d %q X-Path %q", want.method, want.path, res.StatusCode, body,
				res.Header.Get("X-Path"))
		}
		if want.method == "HEAD" && res.ContentLength != int64(len("body of /2")) {
			t.Errorf("HEAD: Content-Length %d, want the GET's", res.ContentLength)
		}
	}
}

func TestDirectHandsOverTheRest(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())

	// A direct GET, then a POST: from there net/http has the connection
	// and serves the GET after it too.
	if res, body := c.get("/a"); res.StatusCode != 200 || body != "GET /a " {
		t.Fatalf("GET /a: %d %q", res.StatusCode, body)
	}
	c.send("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\ndata")
	if res, body := c.read("POST"); res.StatusCode != 200 || body != "POST /b data" {
		t.Fatalf("POST /b: %d %q", res.StatusCode, body)
	}
	if res, body := c.get("/c"); res.StatusCode != 200 || body != "GET /c " {
		t.Fatalf("GET /c: %d %q", res.StatusCode, body)
	}

	// A head larger than the direct path's buffer is net/http's, within
	// MaxHeaderBytes; beyond it, net/http answers 431.
	c2 := dialClient(t, f.addr())
	c2.send("GET /big HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 6000) + "\r\n\r\n")
	if res, body := c2.read("GET"); res.StatusCode != 200 || body != "GET /big " {
		t.Errorf("6 KB head: %d %q", res.StatusCode, body)
	}
	c3 := dialClient(t, f.addr())
	c3.send("GET /huge HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 40<<10) + "\r\n\r\n")
	if res, _ := c3.read("GET"); res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("40 KB head: %d, want 431", res.StatusCode)
	}
	// A malformed request gets net/http's answer.
	c4 := dialClient(t, f.addr())
	c4.send("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	if res, _ := c4.read("GET"); res.StatusCode != http.StatusBadRequest {
		t.Errorf("two Hosts: %d, want 400", res.StatusCode)
	}
}

func TestDirectConnectionClose(t *testing.T) {
	b := newBackend(t, okHandler)
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	c.send("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	res, body := c.read("GET")
	if res.StatusCode != 200 || body != "ok" || !res.Close {
		t.Fatalf("got %d %q close=%v, want 200 \"ok\" and Connection: close", res.StatusCode, body, res.Close)
	}
	if n, err := c.br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after Connection: close read %d bytes, err %v; want EOF", n, err)
	}
}

func TestDirectShutdown(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	ds := newDirectServer(t, b.addr())
	idle := dialClient(t, ds.addr())
	if res, _ := idle.get("/"); res.StatusCode != 200 {
		t.Fatalf("GET: %d", res.StatusCode)
	}
	busy := dialClient(t, ds.addr())
	busy.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-arrived

	shut := ds.shutdown()
	// The idle connection is closed at once...
	if n, err := idle.br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: read %d, %v; want EOF", n, err)
	}
	// ...the busy one finishes its response, marked as the last.
	close(release)
	res, body := busy.read("GET")
	if res.StatusCode != 200 || body != "done" || !res.Close {
		t.Errorf("in-flight request: %d %q close=%v; want 200 \"done\", closed", res.StatusCode, body, res.Close)
	}
	ds.wait(shut)
}

// directServer is the app route served on the direct loop alone, for the
// tests that shut it down themselves.
type directServer struct {
	t      *testing.T
	s      *h1Server
	ln     net.Listener
	served chan error
}

func newDirectServer(t *testing.T, backend string) *directServer {
	t.Helper()
	p := New(Options{ServeClassless: true})
	if errs := p.SetConfig(Config{Ingresses: ingsOf(ingressOf("app", 0,
		ruleOf("", pathOf("Prefix", "/", "app")))), Services: []*corev1.Service{serviceOf("app")}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	p.SetEndpoints([]ServiceEndpoints{epsOf("app", backend)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ds := &directServer{t: t, s: newH1Server(p, p.newServer(), ln.Addr()), ln: ln,
		served: make(chan error, 1)}
	go func() { ds.served <- ds.s.serve(ln) }()
	return ds
}

func (ds *directServer) addr() string { return ds.ln.Addr().String() }

// shutdown closes the listener and shuts down, within 10 s, in the
// background; the channel gets shutdown's result.
func (ds *directServer) shutdown() <-chan error {
	shut := make(chan error, 1)
	go func() {
		ds.ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- ds.s.shutdown(ctx)
	}()
	return shut
}

// wait checks that shutdown succeeded and that serve returned for it.
func (ds *directServer) wait(shut <-chan error) {
	ds.t.Helper()
	if err := <-shut; err != nil {
		ds.t.Errorf("shutdown: %v", err)
	}
	if err := <-ds.served; err != http.ErrServerClosed {
		ds.t.Errorf("serve: %v", err)
	}
}

func TestDirectCutBeforeAnyByte(t *testing.T) {
	b := newRawBackend(t, func(head string) string {
		if strings.HasPrefix(head, "GET /cut ") {
			return "HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	if os.Getenv("VIGIL_PROXY_SERVER") == "net/http" {
		t.Skip("net/http has the head written already: it cuts the connection")
	}
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	// Nothing of the response reached the client when the backend went,
	// so it gets a whole 502 and keeps its connection.
	if res, _ := c.get("/cut"); res.StatusCode != http.StatusBadGateway {
		t.Fatalf("cut body: %d, want 502", res.StatusCode)
	}
	if rec := f.logs.next(t); rec["status"].Int64() != 502 {
		t.Errorf("logged status %d, want 502", rec["status"].Int64())
	}
	if res, body := c.get("/next"); res.StatusCode != 200 || body != "ok" {
		t.Errorf("next request on the connection: %d %q", res.StatusCode, body)
	}
}

func TestHalfClosedClientGetsNoInventedResponse(t *testing.T) {
	b := newBackend(t, okHandler)
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	if err := c.c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The server may answer the request (the backend's "ok") or close,
	// counting a hang-up; it must not make up an empty 200 of its own.
	got, _ := io.ReadAll(c.br)
	if len(got) > 0 && !strings.HasSuffix(string(got), "\r\n\r\nok") {
		t.Errorf("half-closed POST got %q", got)
	}
}

func TestStreamHeadBeforeFirstEvent(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(time.Second)
		_, _ = io.WriteString(w, "data: late\n\n")
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	start := time.Now()
	c.send("GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
	res, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	// The head was flushed by the backend at once; the event is a second
	// late. A head held back for the first body byte would come with it.
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Errorf("head of the stream arrived after %v, with its first event", d)
	}
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil || line != "data: late\n" {
		t.Errorf("first event %q, %v", line, err)
	}
}

func TestHandOffKeepsTheHeadDeadline(t *testing.T) {
	b := newBackend(t, okHandler)
	f := newFixture(t, Options{ReadHeaderTimeout: 2 * time.Second}, nil, b.addr())
	c := dialClient(t, f.addr())
	// Part of a head at once, then a trickle that fills the direct loop's
	// 4 KiB buffer after about a second, handing the connection to net/http
	// with half the header timeout left. Cut at 2 s, it had one timeout;
	// at 3 s, net/http started its own.
	start := time.Now()
	c.send("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + strings.Repeat("p", 3550))
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.ReadAll(c.br)
		closed <- time.Since(start)
	}()
	check := func(d time.Duration) {
		if d < 1800*time.Millisecond || d > 2600*time.Millisecond {
			t.Errorf("trickled head cut after %v, want about 2s", d)
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range 250 {
		select {
		case d := <-closed:
			check(d)
			return
		case <-tick.C:
			if _, err := io.WriteString(c.c, "pppppppppp"); err != nil {
				check(<-closed)
				return
			}
		}
	}
	t.Fatal("a head trickled for 5 s was not cut")
}

func TestNoUserAgentAdded(t *testing.T) {
	uas := make(chan []string, 2)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		uas <- r.Header.Values("User-Agent")
		_, _ = io.WriteString(w, "ok")
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	// A GET (direct) and a POST (net/http's): neither gets Go's default.
	c.get("/")
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
	c.read("POST")
	for _, m := range []string{"GET", "POST"} {
		if ua := <-uas; len(ua) != 0 {
			t.Errorf("%s without User-Agent reached the backend with %q", m, ua)
		}
	}
}
