package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/internal/h1"
)

// serverSees serves head with an http.Server on an in-memory connection and
// returns the request its handler got, or nil when the server refused it.
func serverSees(head []byte) *http.Request {
	cli, sc := net.Pipe()
	defer cli.Close()
	got := make(chan *http.Request, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- r.Clone(context.Background())
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	ln := &pipeListener{c: sc, done: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		_ = srv.Serve(ln)
		close(served)
	}()
	defer func() {
		srv.Close()
		<-served
	}()
	go func() { _, _ = cli.Write(head) }()
	// The server closes the connection after refusing the request.
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, cli)
		close(closed)
	}()
	select {
	case r := <-got:
		return r
	case <-closed:
		select {
		case r := <-got:
			return r
		default:
			return nil
		}
	case <-time.After(5 * time.Second):
		return nil
	}
}

// pipeListener accepts one connection, then none until closed.
type pipeListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	used bool
}

func (l *pipeListener) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		return l.c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// FuzzScanRequest checks scanRequest: it never panics, a strict prefix of a
// head it takes is never taken, and what it takes net/http takes too, with
// the same method, target, Host and fields.
func FuzzScanRequest(f *testing.F) {
	for _, c := range diffCases() {
		f.Add([]byte(strings.Join(c.parts, "")))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
	f.Add([]byte("HEAD /a?b HTTP/1.1\r\nhost: h:1\r\nContent-Length: 0\r\nTE: trailers\r\n\r\n"))
	f.Add([]byte("GET /%2e HTTP/1.1\r\nHost: [::1]\r\nConnection: x, close\r\nX: \xff\r\n\r\nGET"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h reqHead
		got := scanRequest(data, &h)
		if got != h1.Done {
			return
		}
		if h.size <= 0 || h.size > len(data) {
			t.Fatalf("size %d of %d bytes", h.size, len(data))
		}
		method, target, host := h.method, string(h.target), string(h.host)
		path, query := string(h.path), string(h.query)
		fields := map[string][]string{}
		for _, fl := range h.fields {
			k := textproto.CanonicalMIMEHeaderKey(string(fl.Name))
			fields[k] = append(fields[k], string(fl.Value))
		}
		// The head alone is taken alike; no strict prefix of it is.
		var h2 reqHead
		if r := scanRequest(data[:h.size], &h2); r != h1.Done || h2.size != h.size ||
			string(h2.target) != target || string(h2.host) != host {
			t.Fatalf("the head alone: %v, size %d", r, h2.size)
		}
		// Every prefix while the head fits the loop's buffer, some past it.
		step := max(1, (h.size-4096)/64)
		for n := 0; n < h.size; n++ {
			if n > 4096 && n%step != 0 && n < h.size-4 {
				continue
			}
			if r := scanRequest(data[:n], &h2); r == h1.Done {
				t.Fatalf("prefix of %d bytes taken, of a %d-byte head", n, h.size)
			}
		}

		br := bufio.NewReaderSize(bytes.NewReader(data), len(data)+16)
		r, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("scanned as direct but net/http refuses: %v\n%q", err, data[:h.size])
		}
		if consumed := len(data) - br.Buffered(); consumed != h.size {
			t.Fatalf("net/http read a %d-byte head, scanRequest %d", consumed, h.size)
		}
		// net/http's server checks more than ReadRequest (Host and field
		// values): it must hand the same request to its handler.
		sr := serverSees(data[:h.size])
		if sr == nil {
			t.Fatalf("scanned as direct but net/http's server refuses\n%q", data[:h.size])
		}
		if sr.Method != method || sr.RequestURI != target || sr.Host != host {
			t.Fatalf("net/http's server: %s %s Host %q; scanRequest: %s %s Host %q",
				sr.Method, sr.RequestURI, sr.Host, method, target, host)
		}
		if r.Method != method || r.RequestURI != target || r.Host != host || r.Proto != "HTTP/1.1" {
			t.Fatalf("net/http: %s %s %s Host %q; scanRequest: %s %s Host %q",
				r.Method, r.RequestURI, r.Proto, r.Host, method, target, host)
		}
		if r.URL.EscapedPath() != path || r.URL.RawQuery != query {
			t.Fatalf("net/http: path %q query %q; scanRequest: %q %q",
				r.URL.EscapedPath(), r.URL.RawQuery, path, query)
		}
		if r.ContentLength != 0 || len(r.TransferEncoding) > 0 || r.Body != http.NoBody {
			t.Fatalf("net/http sees a body: length %d, %q", r.ContentLength, r.TransferEncoding)
		}
		if r.Header.Get("Expect") != "" || r.Header.Get("Upgrade") != "" {
			t.Fatalf("Expect or Upgrade taken")
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			t.Fatalf("target %q: %v", target, err)
		}
		// The fields, but Host and Content-Length that scanRequest keeps
		// apart, and the Cache-Control net/http makes up for a Pragma.
		want := r.Header.Clone()
		delete(want, "Content-Length")
		if len(fields["Cache-Control"]) == 0 {
			delete(want, "Cache-Control")
		}
		if fmt.Sprint(fields) != fmt.Sprint(map[string][]string(want)) {
			t.Fatalf("fields %q, net/http %q", fields, want)
		}
	})
}
