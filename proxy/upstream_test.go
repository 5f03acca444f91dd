package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

// connCounter is a backend that counts the connections it accepted and
// closed.
type connCounter struct {
	*httptest.Server
	opened, closed atomic.Int64
}

func newConnCounter(t *testing.T, h http.HandlerFunc) *connCounter {
	t.Helper()
	c := &connCounter{Server: httptest.NewUnstartedServer(h)}
	c.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			c.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			c.closed.Add(1)
		}
	}
	c.Start()
	t.Cleanup(c.Close)
	return c
}

func (c *connCounter) addr() string { return c.Listener.Addr().String() }

func getOK(t *testing.T, url string) {
	t.Helper()
	res := get(t, url, nil)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: status %d", url, res.StatusCode)
	}
}

// Sequential GETs share one backend connection; a response that ends with
// Connection: close is not reused.
func TestUpstreamKeepAlive(t *testing.T) {
	b := newConnCounter(t, okHandler)
	f := newFixture(t, Options{}, nil, b.addr())
	for range 20 {
		getOK(t, f.url+"/")
	}
	if got := b.opened.Load(); got != 1 {
		t.Errorf("20 GETs opened %d backend connections, want 1", got)
	}

	closing := newConnCounter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		okHandler(w, r)
	})
	f = newFixture(t, Options{}, nil, closing.addr())
	for range 3 {
		getOK(t, f.url+"/")
	}
	if got := closing.opened.Load(); got != 3 {
		t.Errorf("3 GETs answered with Connection: close opened %d connections, want 3", got)
	}
}

// A backend that drops each keep-alive connection after one response leaves
// a stale connection in the pool: the next GET goes out again on a new one,
// succeeds, and counts nothing against the endpoint.
func TestUpstreamStaleConnectionRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				req.Body.Close()
				// Keep-alive by the response's framing, closed all the same.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()

	f := newFixture(t, Options{}, nil, ln.Addr().String())
	for i := range 5 {
		getOK(t, f.url+"/")
		rec := f.logs.next(t)
		if got := rec["attempts"].Int64(); got != 1 {
			t.Errorf("GET %d: %d attempts, want 1", i, got)
		}
	}
	if got := accepted.Load(); got != 5 {
		t.Errorf("backend accepted %d connections, want 5", got)
	}
	e := f.p.eps[ln.Addr().String()]
	if e.fails5xx.Load() != 0 || e.failsConnect.Load() != 0 || e.ejections.Load() != 0 {
		t.Errorf("stale connections counted against the endpoint")
	}
}

// A backend slower than ResponseHeaderTimeout gets 504.
func TestUpstreamResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	f := newFixture(t, Options{ResponseHeaderTimeout: 100 * time.Millisecond, MaxRetries: -1}, nil, b.addr())
	start := time.Now()
	res := get(t, f.url+"/", nil)
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", res.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("504 took %s", d)
	}
}

// An address that leaves rotation has its idle connections closed, and one
// in use when it left is not pooled afterwards.
func TestUpstreamRemovedEndpointClosesConnections(t *testing.T) {
	b := newConnCounter(t, okHandler)
	f := newFixture(t, Options{}, nil, b.addr())
	getOK(t, f.url+"/")
	f.p.SetEndpoints(nil)
	deadline := time.Now().Add(5 * time.Second)
	for b.closed.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("idle connection to the removed endpoint still open")
		}
		time.Sleep(5 * time.Millisecond)
	}

	var gone atomic.Bool
	gone.Store(true)
	uc := &upConn{nc: &countingConn{}}
	f.p.up.put(b.addr(), uc, &gone)
	if !uc.nc.(*countingConn).closed || f.p.up.take(b.addr(), time.Now()) != nil {
		t.Errorf("a connection to a removed address went back to the pool")
	}
}

// countingConn is a net.Conn that only records Close.
type countingConn struct {
	net.Conn
	closed bool
}

func (c *countingConn) Close() error {
	c.closed = true
	return nil
}

// writeHead sends what Request.Write would for the requests it takes.
func TestWriteHeadMatchesRequestWrite(t *testing.T) {
	for _, tc := range []struct {
		method, path, query string
		header              http.Header
	}{
		{"GET", "/", "", http.Header{"Accept": {"*/*"}, "X-Forwarded-For": {"127.0.0.1"}}},
		{"HEAD", "/a/b", "x=1&y=%20", http.Header{"Cookie": {"a=1", "b=2"}, "User-Agent": {"wrk"}}},
		{"PUT", "/put", "", http.Header{"User-Agent": {""}}},
		{"DELETE", "/d", "", http.Header{"X-Odd": {"a\r\nb"}}},
		{"OPTIONS", "/o", "", http.Header{}},
	} {
		req := &http.Request{Method: tc.method, Host: "app.test:8080", Header: tc.header,
			URL:  &url.URL{Scheme: "http", Host: "10.0.0.1:80", Opaque: tc.path, RawQuery: tc.query},
			Body: http.NoBody, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		var want, got bytes.Buffer
		if err := req.Write(&want); err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriter(&got)
		writeHead(bw, req)
		bw.Flush()
		w, err := http.ReadRequest(bufio.NewReader(&want))
		if err != nil {
			t.Fatal(err)
		}
		g, err := http.ReadRequest(bufio.NewReader(&got))
		if err != nil {
			t.Fatalf("%s %s: writeHead wrote %q: %v", tc.method, tc.path, got.String(), err)
		}
		if g.Method != w.Method || g.RequestURI != w.RequestURI || g.Host != w.Host ||
			g.ContentLength != w.ContentLength || !reflect.DeepEqual(g.Header, w.Header) {
			t.Errorf("%s %s:\nwriteHead     %q\nRequest.Write %q", tc.method, tc.path, got.String(), want.String())
		}
	}
}
