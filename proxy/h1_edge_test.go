package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func skipUnlessDirect(t *testing.T) {
	t.Helper()
	if os.Getenv("VIGIL_PROXY_SERVER") == "net/http" {
		t.Skip("direct path only")
	}
}

// A backend connection the direct path pooled may still carry the read
// deadline its wait for the response set (now+50ms). The net/http path,
// taking it from the pool with ResponseHeaderTimeout disabled, must clear
// it: the next bodiless request it sends there (here an HTTP/1.0 GET, handed
// to net/http) gets the healthy backend's 200, not a 504.
func TestPooledConnectionCarriesNoDeadline(t *testing.T) {
	skipUnlessDirect(t)
	b := newRawBackend(t, func(string) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	f := newFixture(t, Options{ResponseHeaderTimeout: -1}, nil, b.addr())
	c := dialClient(t, f.addr())
	if res, body := c.get("/direct"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("direct GET: %d %q", res.StatusCode, body)
	}
	time.Sleep(150 * time.Millisecond) // past await's watchDelay deadline
	c2 := dialClient(t, f.addr())
	c2.send("GET /via-net-http HTTP/1.0\r\nHost: app.test\r\n\r\n")
	res, body := c2.read("GET")
	if res.StatusCode != 200 || body != "ok" {
		t.Errorf("GET served by net/http on the pooled connection: %d %q, want 200 \"ok\"",
			res.StatusCode, body)
	}
}

// A backend connection with bytes buffered past a response that net/http's
// parser read (after a chunked body, or a body a backend wrongly sent to
// HEAD) is not pooled: those bytes would be read as the next request's
// response.
func TestParsedRelayPoolsNoConnectionWithBytesLeft(t *testing.T) {
	skipUnlessDirect(t)
	t.Run("trailing response", func(t *testing.T) {
		b := newRawBackend(t, func(head string) string {
			if strings.HasPrefix(head, "GET /a ") {
				return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" +
					"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
			}
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
		})
		f := newFixture(t, Options{}, nil, b.addr())
		c := dialClient(t, f.addr())
		if res, body := c.get("/a"); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET /a: %d %q", res.StatusCode, body)
		}
		if res, body := c.get("/b"); res.StatusCode != 200 || body != "fresh" {
			t.Errorf("GET /b: %d %q, want 200 \"fresh\" (got another request's response)",
				res.StatusCode, body)
		}
	})
	t.Run("HEAD answered with a chunked body", func(t *testing.T) {
		b := newRawBackend(t, func(head string) string {
			if strings.HasPrefix(head, "HEAD ") {
				return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
			}
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
		})
		f := newFixture(t, Options{}, nil, b.addr())
		c := dialClient(t, f.addr())
		c.send("HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if res, _ := c.read("HEAD"); res.StatusCode != 200 {
			t.Fatalf("HEAD: %d", res.StatusCode)
		}
		if res, body := c.get("/b"); res.StatusCode != 200 || body != "fresh" {
			t.Errorf("GET after HEAD: %d %q, want 200 \"fresh\"", res.StatusCode, body)
		}
	})
}

// A response net/http's parser read (here, because it repeats
// Content-Length) whose body is cut before any of it left vigil's buffer
// gets the client a 502, logged as such, as on the scanned path; not a cut
// connection and a logged 200.
func TestParsedRelayCutBeforeAnyByte(t *testing.T) {
	skipUnlessDirect(t)
	b := newRawBackend(t, func(head string) string {
		if strings.HasPrefix(head, "GET /cut ") {
			return "HTTP/1.0 200 OK\r\nContent-Length: 100\r\nContent-Length: 100\r\n\r\nonly ten.."
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	f := newFixture(t, Options{}, nil, b.addr())
	c := dialClient(t, f.addr())
	c.send("GET /cut HTTP/1.1\r\nHost: app.test\r\n\r\n")
	res, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Errorf("cut body, nothing sent yet: no response at all (%v), want a 502", err)
	} else {
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Errorf("cut body: %d, want 502", res.StatusCode)
		}
	}
	if rec := f.logs.next(t); rec["status"].Int64() != 502 {
		t.Errorf("logged status %d, want 502", rec["status"].Int64())
	}
}

// Shutdown closes the direct loop's idle connections at once, even while a
// request on a connection handed to net/http still runs (net/http's
// Shutdown waits for that one).
func TestShutdownClosesIdleWhileHandedOffBusy(t *testing.T) {
	skipUnlessDirect(t)
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_, _ = io.ReadAll(r.Body)
			arrived <- struct{}{}
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		_, _ = io.WriteString(w, "done")
	})
	ds := newDirectServer(t, b.addr())
	idle := dialClient(t, ds.addr())
	if res, _ := idle.get("/"); res.StatusCode != 200 {
		t.Fatalf("GET: %d", res.StatusCode)
	}
	busy := dialClient(t, ds.addr())
	busy.send("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	<-arrived

	shut := ds.shutdown()
	_ = idle.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := idle.br.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("idle direct connection still open 2s into shutdown, while a handed-off request runs")
	} else if err != io.EOF {
		t.Errorf("idle connection: read %d, %v; want EOF", n, err)
	}
	close(release)
	if res, body := busy.read("POST"); res.StatusCode != 200 || body != "done" {
		t.Errorf("in-flight POST: %d %q", res.StatusCode, body)
	}
	ds.wait(shut)
}
