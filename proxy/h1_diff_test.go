package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/vigil-agent/vigil/internal/h1"
)

// The differential test serves a Proxy two ways, the direct HTTP/1.1 loop in
// front of net/http (as Serve does) and net/http alone, sends both the same
// raw bytes over TCP and compares what the client got, what a raw backend
// got and what the access log said. Each side has its own Proxy, configured
// alike and fresh for every case, so that backend connection pools and
// passive health do not carry over from one run to the other.
//
// Differences allowed: header order and name case (everything is compared
// parsed and canonicalised), the Date value, the Go User-Agent net/http's
// path adds when the client sent none (and an empty one it drops), reason
// phrases (shown on failure, not compared), and those of allowDiffs.

// seenReq is a request as the recording backend read it off the wire.
type seenReq struct {
	raw     string
	method  string
	uri     string
	proto   string
	header  textproto.MIMEHeader
	body    string
	trailer textproto.MIMEHeader
	bad     string // the head did not parse
}

// diffBackend is a raw TCP backend: it records every request head as sent
// and answers as the request's path says (see replyFor).
type diffBackend struct {
	ln    net.Listener
	done  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	reqs  []seenReq
	conns map[net.Conn]struct{}
	// resetAll: read each request, then reset the connection.
	resetAll bool
}

func newDiffBackend(t *testing.T, resetAll bool) *diffBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &diffBackend{ln: ln, done: make(chan struct{}), conns: map[net.Conn]struct{}{},
		resetAll: resetAll}
	b.wg.Add(1)
	go b.accept()
	return b
}

func (b *diffBackend) addr() string { return b.ln.Addr().String() }

func (b *diffBackend) close() {
	close(b.done)
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// take returns the requests recorded so far and forgets them.
func (b *diffBackend) take() []seenReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.reqs
	b.reqs = nil
	return r
}

func (b *diffBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serveConn(c)
	}
}

func (b *diffBackend) serveConn(c net.Conn) {
	defer b.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	for range 100 {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r, ok := readSeen(br)
		if !ok {
			return
		}
		if b.resetAll {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			return
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, r)
		b.mu.Unlock()
		if r.bad != "" {
			return
		}
		rep := replyFor(&r)
		if rep.delay > 0 {
			select {
			case <-time.After(rep.delay):
			case <-b.done:
				return
			}
		}
		if _, err := io.WriteString(c, rep.raw); err != nil || rep.close {
			return
		}
	}
}

// readSeen reads one request off br, head byte for byte, body by its
// framing.
func readSeen(br *bufio.Reader) (seenReq, bool) {
	var head []byte
	lineLen := 0
	for {
		frag, err := br.ReadSlice('\n')
		head = append(head, frag...)
		lineLen += len(frag)
		if err == bufio.ErrBufferFull && len(head) < 1<<20 {
			continue
		}
		if err != nil {
			if len(head) == 0 {
				return seenReq{}, false
			}
			return seenReq{raw: string(head), bad: err.Error()}, true
		}
		if lineLen == 1 || lineLen == 2 && head[len(head)-2] == '\r' {
			break
		}
		lineLen = 0
	}
	r := seenReq{raw: string(head)}
	line, rest, _ := strings.Cut(r.raw, "\n")
	line = strings.TrimSuffix(line, "\r")
	var ok1, ok2 bool
	r.method, line, ok1 = strings.Cut(line, " ")
	r.uri, r.proto, ok2 = strings.Cut(line, " ")
	// No Pragma fix-up, no Host removal: the header as sent.
	h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(rest))).ReadMIMEHeader()
	if !ok1 || !ok2 || err != nil {
		r.bad = fmt.Sprintf("unparsable head (%v)", err)
		return r, true
	}
	r.header = h
	switch {
	case len(h["Transfer-Encoding"]) > 0:
		body, err := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), 1<<20))
		r.body = string(body)
		if err != nil {
			r.bad = "chunked body: " + err.Error()
			return r, true
		}
		r.trailer, err = textproto.NewReader(br).ReadMIMEHeader()
		if err != nil {
			r.bad = "trailer: " + err.Error()
		}
	case len(h["Content-Length"]) > 0:
		n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		if err != nil || n < 0 || n > 1<<20 {
			r.bad = "Content-Length " + h.Get("Content-Length")
			return r, true
		}
		body := make([]byte, n)
		_, err = io.ReadFull(br, body)
		r.body = string(body)
		if err != nil {
			r.bad = "body: " + err.Error()
		}
	}
	return r, true
}

// reply is what the backend answers: raw bytes, after delay; close ends the
// connection after them.
type reply struct {
	raw   string
	delay time.Duration
	close bool
}

const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// replyFor answers r by its path: /r/KIND picks a kind of response, any
// other path a plain one with a Content-Length.
func replyFor(r *seenReq) reply {
	path, _, _ := strings.Cut(r.uri, "?")
	head := r.method == http.MethodHead
	body := func(b string) string {
		if head {
			return ""
		}
		return b
	}
	ok := func(extra, b string) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + extra +
			"Content-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + body(b)
	}
	chunked := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n"
	switch strings.TrimPrefix(path, "/r/") {
	case "chunked":
		return reply{raw: chunked + body("5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")}
	case "chunked-empty":
		return reply{raw: chunked + body("0\r\n\r\n")}
	case "http10-close":
		return reply{raw: "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body("hello"), close: true}
	case "http11-close":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" +
			body("hello"), close: true}
	case "http11-close-empty":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
			close: true}
	case "http10-keepalive":
		return reply{raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 5\r\n\r\n" + body("hello")}
	case "conn-close":
		return reply{raw: ok("Connection: close\r\n", "hello"), close: true}
	case "204":
		return reply{raw: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"}
	case "204-cl":
		return reply{raw: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"}
	case "204-cl5":
		return reply{raw: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"}
	case "304":
		return reply{raw: "HTTP/1.1 304 Not Modified\r\nEtag: \"v1\"\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 5\r\n\r\n"}
	case "1xx":
		return reply{raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
			ok("", "hello")}
	case "hop":
		return reply{raw: ok("Connection: X-Priv, keep-alive\r\nConnection: x-priv2\r\nX-Priv: 1\r\n"+
			"X-Priv2: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTe: trailers\r\n"+
			"Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\n", "hello")}
	case "conn-server-date":
		return reply{raw: ok("Connection: Server, Date\r\nServer: apache\r\nDate: "+httpDate+"\r\n", "hello")}
	case "server-date":
		return reply{raw: ok("Server: backend/1\r\nDate: "+httpDate+"\r\n", "hello")}
	case "cookies":
		return reply{raw: ok("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nset-cookie: c=3\r\n", "hello")}
	case "bighead":
		return reply{raw: ok("X-Big: "+strings.Repeat("b", 5000)+"\r\n", "hello")}
	case "cut":
		// Past the 4 KiB the direct path buffers, so that both paths have
		// sent part of the body when the backend goes. (Before that, the
		// direct path answers 502 instead: TestDirectCutBeforeAnyByte.)
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\n\r\n" +
			body(strings.Repeat("0123456789", 600)), close: true}
	case "cut-chunked":
		return reply{raw: chunked + body("5\r\nhello\r\n"), close: true}
	case "101":
		return reply{raw: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"}
	case "500":
		return reply{raw: "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 4\r\n\r\n" + body("oops")}
	case "bad-field":
		return reply{raw: "HTTP/1.1 200 OK\r\nBad Field\r\nContent-Length: 2\r\n\r\nok"}
	case "ctl-value":
		return reply{raw: ok("X-Ctl: a\x01b\r\n", "hello")}
	case "extra":
		// More bytes than the Content-Length: the rest is garbage.
		return reply{raw: ok("", "ok") + "EXTRA"}
	case "head-body":
		// A body after a HEAD response, as broken backends send.
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"}
	case "notype":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + body("<html>hi</html>")}
	case "reason":
		return reply{raw: "HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body("ok")}
	case "no-reason":
		return reply{raw: "HTTP/1.1 200\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body("ok")}
	case "299":
		return reply{raw: "HTTP/1.1 299 Whatever\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body("ok")}
	case "cl-zeros":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 005\r\n\r\n" + body("hello")}
	case "cl-dup":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n" +
			"Content-Length: 5\r\n\r\n" + body("hello")}
	case "cl-list":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5, 5\r\n\r\n" + body("hello")}
	case "te-cl":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n" + body("5\r\nhello\r\n0\r\n\r\n")}
	case "fold":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Fold: a\r\n b\r\n" +
			"Content-Length: 5\r\n\r\n" + body("hello")}
	case "bare-lf":
		return reply{raw: "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\n" + body("hello")}
	case "conn-names-cl":
		return reply{raw: ok("Connection: Content-Length\r\n", "hello")}
	case "conn-names-type":
		return reply{raw: ok("Connection: content-type, x-low\r\nx-low: 1\r\nkeep-alive: 1\r\n", "hello")}
	case "conn-9-tokens":
		return reply{raw: ok("Connection: t1, t2, t3, t4, t5, t6, t7, t8, t9\r\nT1: 1\r\nT9: 9\r\n", "hello")}
	case "many-fields":
		return reply{raw: ok(strings.Join(repeatFields(70, "X-F", 1), "\r\n")+"\r\n", "hello")}
	case "big-body":
		return reply{raw: ok("", strings.Repeat("0123456789", 10000))}
	case "big-chunked":
		return reply{raw: chunked + body(strings.Repeat("8000\r\n"+strings.Repeat("x", 0x8000)+"\r\n", 3)+"0\r\n\r\n")}
	case "slowish":
		return reply{raw: ok("", "slowish"), delay: 150 * time.Millisecond}
	case "reset":
		return reply{close: true}
	case "slow":
		return reply{raw: ok("", "late"), delay: 1500 * time.Millisecond}
	}
	return reply{raw: ok("", "hello")}
}

// logged is an access-log record as compared.
type logged struct{ uri, line string }

// diffSide is one way of serving the case's proxy.
type diffSide struct {
	name string
	addr string
	logs *logSink
}

// diffSetup is a case's backends and both sides.
type diffSetup struct {
	be    *diffBackend
	sides [2]diffSide
}

// newDiffSetup starts the recording backend and two proxies configured
// alike: host a.example routes "/" to it, /empty to a Service without
// endpoints, /retry to a closed port and it, /flaky to a backend that resets
// and it, /dead to two closed ports; other hosts get 404.
func newDiffSetup(t *testing.T, opts Options) *diffSetup {
	t.Helper()
	s := &diffSetup{be: newDiffBackend(t, false)}
	resetter := newDiffBackend(t, true)
	closed1, closed2 := closedAddr(t), closedAddr(t)
	ing := ingressOf("main", 0, ruleOf("a.example",
		pathOf(networkingv1.PathTypePrefix, "/", "app"),
		pathOf(networkingv1.PathTypeExact, "/empty", "empty"),
		pathOf(networkingv1.PathTypePrefix, "/retry", "retry"),
		pathOf(networkingv1.PathTypePrefix, "/flaky", "flaky"),
		pathOf(networkingv1.PathTypePrefix, "/dead", "dead"),
	))
	eps := []ServiceEndpoints{
		epsOf("app", s.be.addr()),
		epsOf("retry", s.be.addr(), closed1),
		epsOf("flaky", s.be.addr(), resetter.addr()),
		epsOf("dead", closed1, closed2),
	}
	for i, name := range []string{"direct", "net/http"} {
		o := opts
		logs := newLogSink()
		o.Logger = slog.New(logs)
		o.AccessLog = true
		o.ServeClassless = true
		p := New(o)
		if errs := p.SetConfig(Config{Ingresses: ingsOf(ing), Services: servicesFor(ing)}); len(errs) > 0 {
			t.Fatalf("SetConfig: %v", errs)
		}
		p.SetEndpoints(eps)
		var ln net.Listener
		if i == 0 {
			ln = serveWith(t, p, true)
		} else {
			ln = serveWith(t, p, false)
		}
		s.sides[i] = diffSide{name: name, addr: ln.Addr().String(), logs: logs}
	}
	// Registered last, run first: the backends' connections end before the
	// servers shut down.
	t.Cleanup(resetter.close)
	t.Cleanup(s.be.close)
	return s
}

// diffCase is one client connection's bytes.
type diffCase struct {
	name string
	// parts are written in turn, gap (default 20ms) apart.
	parts []string
	gap   time.Duration
	// methods are those of the requests answered, in order; nil is one GET.
	methods []string
	opts    Options
	// hangup closes the client's connection after this long, reading
	// nothing.
	hangup time.Duration
	// wait bounds the client's connection; default 2s.
	wait time.Duration
}

const probe = "GET /__probe HTTP/1.1\r\nHost: probe.invalid\r\nConnection: close\r\n\r\n"

// result is what one side did with a case: lines to compare, and lines
// shown only.
type result struct {
	client, backend, log []string
	info                 []string
}

func (s *diffSetup) run(t *testing.T, side *diffSide, c *diffCase) result {
	t.Helper()
	var res result
	res.client = clientRun(t, side.addr, c, &res.info)
	// The probe's record ends the connection's records. Without it (the
	// connection ended first) both servers logged before closing, but
	// after a hang-up the log comes when the proxy notices it.
	probed := len(res.client) > 0 && res.client[len(res.client)-1] == "conn: open"
	deadline := time.After(2 * time.Second)
	quiet := 20 * time.Millisecond
	if c.hangup > 0 {
		quiet = 300 * time.Millisecond
	}
drain:
	for {
		select {
		case r := <-side.logs.ch:
			m := map[string]slog.Value{}
			r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value; return true })
			if m["uri"].String() == "/__probe" {
				break drain
			}
			res.log = append(res.log, fmt.Sprintf("log: %s %s status=%s attempts=%s",
				m["method"], m["uri"], m["status"], m["attempts"]))
		case <-time.After(quiet):
			if !probed {
				break drain
			}
		case <-deadline:
			res.log = append(res.log, "log: no probe record")
			break drain
		}
	}
	for i, r := range s.be.take() {
		res.backend = append(res.backend, backendLines(i, &r)...)
	}
	return res
}

// clientRun writes the case and reads the responses, then probes whether
// the connection is still open.
func clientRun(t *testing.T, addr string, c *diffCase, info *[]string) []string {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(cmp.Or(c.wait, 2*time.Second)))
	for i, p := range c.parts {
		if i > 0 {
			time.Sleep(cmp.Or(c.gap, 20*time.Millisecond))
		}
		if _, err := io.WriteString(nc, p); err != nil {
			return []string{"write: " + errClass(err)}
		}
	}
	if c.hangup > 0 {
		time.Sleep(c.hangup)
		return []string{"hung up"}
	}
	methods := c.methods
	if methods == nil {
		methods = []string{http.MethodGet}
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	var out []string
	for i, m := range methods {
		lines, err := readResponse(br, m, i, info)
		out = append(out, lines...)
		if err != nil {
			return append(out, "end: "+errClass(err))
		}
	}
	// Whether a closed connection reads as EOF or a reset is timing.
	if _, err := io.WriteString(nc, probe); err != nil {
		return append(out, "conn: closed")
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return append(out, "conn: closed")
	}
	res.Body.Close()
	return append(out, "conn: open")
}

// readResponse reads the response to a request with method m.
func readResponse(br *bufio.Reader, m string, i int, info *[]string) ([]string, error) {
	var out []string
	var res *http.Response
	var raw textproto.MIMEHeader
	for range 10 {
		head, err := peekHead(br)
		if err != nil {
			return out, err
		}
		res, err = http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			return out, err
		}
		*info = append(*info, fmt.Sprintf("resp %d raw head: %q", i, head))
		// The fields as sent: ReadResponse drops some.
		_, rest, _ := strings.Cut(head, "\n")
		raw, err = textproto.NewReader(bufio.NewReader(strings.NewReader(rest))).ReadMIMEHeader()
		if err != nil {
			return out, err
		}
		if res.StatusCode >= 200 {
			break
		}
		out = append(out, fmt.Sprintf("resp %d: interim %d", i, res.StatusCode))
	}
	*info = append(*info, fmt.Sprintf("resp %d status line: %s %s", i, res.Proto, res.Status))
	out = append(out, fmt.Sprintf("resp %d: %s %d", i, res.Proto, res.StatusCode))
	out = append(out, fieldLines(fmt.Sprintf("resp %d header", i), raw, true)...)
	framing := "length " + strconv.FormatInt(res.ContentLength, 10)
	if len(res.TransferEncoding) > 0 {
		framing = "transfer-encoding " + strings.Join(res.TransferEncoding, ",")
	} else if res.ContentLength < 0 {
		framing = "until close"
	}
	out = append(out, fmt.Sprintf("resp %d framing: %s", i, framing))
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if len(body) > 256 {
		out = append(out, fmt.Sprintf("resp %d body: %d bytes, sha256 %x", i, len(body), sha256.Sum256(body)))
	} else {
		out = append(out, fmt.Sprintf("resp %d body: %q", i, body))
	}
	if err != nil {
		return append(out, fmt.Sprintf("resp %d body error: %s", i, errClass(err))), err
	}
	out = append(out, fieldLines(fmt.Sprintf("resp %d trailer", i), res.Trailer, false)...)
	if res.Close {
		out = append(out, fmt.Sprintf("resp %d: connection close", i))
	}
	return out, nil
}

// peekHead returns the response head at the start of br, leaving it there.
func peekHead(br *bufio.Reader) (string, error) {
	if _, err := br.Peek(1); err != nil {
		return "", err
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\n\r\n")); i >= 0 {
			return string(buf[:i+3]), nil
		}
		if i := bytes.Index(buf, []byte("\n\n")); i >= 0 {
			return string(buf[:i+2]), nil
		}
		if br.Buffered() == br.Size() {
			return "", errors.New("response head too large")
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return "", err
		}
	}
}

// fieldLines lists h by canonical name; Date values are only checked.
func fieldLines(prefix string, h map[string][]string, resp bool) []string {
	var out []string
	for k, vv := range h {
		k = textproto.CanonicalMIMEHeaderKey(k)
		for _, v := range vv {
			switch {
			case k == "Date" && resp:
				if _, err := http.ParseTime(v); err == nil {
					v = "<valid date>"
				}
			case k == "Transfer-Encoding" && resp:
				// In the framing line.
				continue
			case k == "User-Agent" && (v == defaultUserAgent || v == ""):
				// net/http's path adds Go's when the client sent none,
				// and sends none for an empty one (as Request.Write).
				continue
			}
			out = append(out, fmt.Sprintf("%s %s: %q", prefix, k, v))
		}
	}
	// Values of one field keep their order; fields are sorted.
	slices.SortStableFunc(out, func(a, b string) int {
		ka, _, _ := strings.Cut(a, ": ")
		kb, _, _ := strings.Cut(b, ": ")
		return strings.Compare(ka, kb)
	})
	return out
}

func backendLines(i int, r *seenReq) []string {
	if r.bad != "" {
		return []string{fmt.Sprintf("req %d: %s: %q", i, r.bad, r.raw)}
	}
	out := []string{fmt.Sprintf("req %d: %s %s %s", i, r.method, r.uri, r.proto)}
	out = append(out, fieldLines(fmt.Sprintf("req %d header", i), r.header, false)...)
	if r.body != "" {
		out = append(out, fmt.Sprintf("req %d body: %q", i, r.body))
	}
	return append(out, fieldLines(fmt.Sprintf("req %d trailer", i), r.trailer, false)...)
}

// errClass names an error without its addresses.
func errClass(err error) string {
	var ne net.Error
	switch {
	case err == io.EOF:
		return "EOF"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection reset"):
		return "reset"
	case strings.Contains(err.Error(), "broken pipe"):
		return "broken pipe"
	}
	return "error: " + err.Error()
}

// diff returns the lines only a has and only b has.
func diffLines(a, b []string) (onlyA, onlyB []string) {
	count := map[string]int{}
	for _, l := range b {
		count[l]++
	}
	for _, l := range a {
		if count[l] > 0 {
			count[l]--
		} else {
			onlyA = append(onlyA, l)
		}
	}
	count = map[string]int{}
	for _, l := range a {
		count[l]++
	}
	for _, l := range b {
		if count[l] > 0 {
			count[l]--
		} else {
			onlyB = append(onlyB, l)
		}
	}
	return onlyA, onlyB
}

// allowDiffs takes out of d (direct) and n (net/http) the differences
// judged acceptable, all of them net/http's server or client code doing
// more than relaying:
//   - net/http's server sniffs a Content-Type the backend did not send;
//   - on a 304 it drops the backend's Content-Length and Content-Type
//     (both allowed there, RFC 9110 8.6 and 15.4.5);
//   - for an empty body of unknown length it sends Content-Length: 0
//     where the direct path sends an empty chunked body;
//   - ReadRequest makes up "Cache-Control: no-cache" for a Pragma one.
func allowDiffs(c *diffCase, d, n *result) {
	sent := strings.ToLower(strings.Join(c.parts, ""))
	// A body cut by the backend: how much of it got out depends on each
	// path's buffering.
	for i := range 16 {
		cut := fmt.Sprintf("resp %d body error: unexpected EOF", i)
		if slices.Contains(d.client, cut) && slices.Contains(n.client, cut) {
			pre := fmt.Sprintf("resp %d body: ", i)
			d.client = slices.DeleteFunc(d.client, func(x string) bool { return strings.HasPrefix(x, pre) })
			n.client = slices.DeleteFunc(n.client, func(x string) bool { return strings.HasPrefix(x, pre) })
		}
	}
	for _, l := range slices.Clone(n.client) {
		var i int
		var v string
		if _, err := fmt.Sscanf(l, "resp %d header Content-Type: %q", &i, &v); err == nil &&
			!hasPrefix(d.client, fmt.Sprintf("resp %d header Content-Type:", i)) {
			if body, ok := lineValue(n.client, fmt.Sprintf("resp %d body: ", i)); ok &&
				http.DetectContentType([]byte(body)) == v {
				n.client = slices.DeleteFunc(n.client, func(x string) bool { return x == l })
			}
		}
	}
	for _, l := range slices.Clone(d.client) {
		var i int
		if _, err := fmt.Sscanf(l, "resp %d: HTTP/1.1 304", &i); err != nil || !strings.HasSuffix(l, " 304") {
			continue
		}
		for _, h := range []string{"Content-Length", "Content-Type"} {
			pre := fmt.Sprintf("resp %d header %s:", i, h)
			if !hasPrefix(n.client, pre) {
				d.client = slices.DeleteFunc(d.client, func(x string) bool { return strings.HasPrefix(x, pre) })
			}
		}
	}
	for i := range 16 {
		chunked := fmt.Sprintf("resp %d framing: transfer-encoding chunked", i)
		zero := fmt.Sprintf("resp %d framing: length 0", i)
		cl0 := fmt.Sprintf("resp %d header Content-Length: \"0\"", i)
		empty := fmt.Sprintf("resp %d body: \"\"", i)
		if slices.Contains(d.client, chunked) && slices.Contains(d.client, empty) &&
			slices.Contains(n.client, zero) && slices.Contains(n.client, cl0) &&
			!hasPrefix(d.client, fmt.Sprintf("resp %d header Content-Length:", i)) {
			n.client = slices.DeleteFunc(n.client, func(x string) bool { return x == cl0 })
			d.client[slices.Index(d.client, chunked)] = fmt.Sprintf("resp %d framing: empty", i)
			n.client[slices.Index(n.client, zero)] = fmt.Sprintf("resp %d framing: empty", i)
		}
	}
	if !strings.Contains(sent, "cache-control:") && strings.Contains(sent, "pragma: no-cache") {
		n.backend = slices.DeleteFunc(n.backend, func(x string) bool {
			return strings.HasSuffix(x, `header Cache-Control: "no-cache"`)
		})
	}
}

func hasPrefix(lines []string, pre string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, pre) })
}

// lineValue returns the quoted value of the line that starts with pre.
func lineValue(lines []string, pre string) (string, bool) {
	for _, l := range lines {
		if strings.HasPrefix(l, pre) {
			v, err := strconv.Unquote(strings.TrimPrefix(l, pre))
			return v, err == nil
		}
	}
	return "", false
}

// Request builders.

func getReq(target string, fields ...string) string {
	return req("GET", target, fields...)
}

func req(method, target string, fields ...string) string {
	s := method + " " + target + " HTTP/1.1\r\nHost: a.example\r\n"
	for _, f := range fields {
		s += f + "\r\n"
	}
	return s + "\r\n"
}

func one(name, raw string, methods ...string) diffCase {
	return diffCase{name: name, parts: []string{raw}, methods: methods}
}

func repeatFields(n int, name string, size int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d: %s", name, i, strings.Repeat("v", size))
	}
	return out
}

// bigGet returns a GET whose head is exactly size bytes.
func bigGet(size int) string {
	base := getReq("/big", "X-Pad: ")
	pad := size - len(base)
	return getReq("/big", "X-Pad: "+strings.Repeat("p", pad))
}

var trusted = Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func diffCases() []diffCase {
	G, H, P := http.MethodGet, http.MethodHead, http.MethodPost
	cases := []diffCase{
		// Well-formed.
		one("get", getReq("/")),
		one("head", req("HEAD", "/"), H),
		one("query", getReq("/a/b?x=1&y=%41&z=a/../b")),
		one("query-odd", getReq("/q?a=<\"{}|\\^`>&b=%zz&c=?#frag")),
		one("force-query", getReq("/a?")),
		one("keep-alive", getReq("/", "Connection: keep-alive")),
		one("close", getReq("/", "Connection: close")),
		one("close-token-case", getReq("/", "Connection: CLOSE")),
		one("fields", getReq("/", "User-Agent: ua/1", "Accept: */*", "X-Multi: a", "x-multi: b",
			"X-MULTI: c", "X-Empty:", "X-Tab: a\tb", "X-Space:   padded   ", "X-High: \xff\xfe",
			"X!#$%&'*+-.^_`|~: odd-name", "X_Under: 1")),
		one("no-ua", getReq("/", "Accept: */*")),
		one("empty-ua", getReq("/", "User-Agent:")),
		one("pragma", getReq("/", "Pragma: no-cache")),
		one("forwarded-untrusted", getReq("/", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-Host: evil",
			"X-Forwarded-Proto: https", "Forwarded: for=10.0.0.1", "X-Real-Ip: 10.0.0.1",
			"X-Forwarded-Port: 443")),
		{name: "forwarded-trusted", opts: trusted, parts: []string{getReq("/",
			"X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2, 10.0.0.3",
			"X-Forwarded-Host: front", "X-Forwarded-Proto: https", "Forwarded: for=10.0.0.1",
			"X-Real-Ip: 10.0.0.1")}},
		{name: "forwarded-trusted-none", opts: trusted, parts: []string{getReq("/")}},
		{name: "forwarded-trusted-empty", opts: trusted, parts: []string{getReq("/",
			"X-Forwarded-For:", "X-Forwarded-Host:")}},
		// RFC 9110 7.6.1: a Connection token makes the field it names
		// hop-by-hop, X-Forwarded-* included.
		{name: "connection-names-xff-trusted", opts: trusted, parts: []string{getReq("/",
			"Connection: X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto",
			"X-Forwarded-For: 10.0.0.1", "X-Forwarded-Host: front", "X-Forwarded-Proto: https")}},
		{name: "connection-names-forwarded-trusted", opts: trusted, parts: []string{getReq("/",
			"Connection: forwarded, x-real-ip", "Forwarded: for=10.0.0.1", "X-Real-Ip: 10.0.0.1")}},
		one("connection-names-xff-untrusted", getReq("/",
			"Connection: X-Forwarded-For, X-Forwarded-Host", "X-Forwarded-For: 10.0.0.1",
			"X-Forwarded-Host: front")),
		one("connection-tokens", getReq("/", "Connection: X-A, x-b", "Connection: keep-alive,  X-C ,",
			"X-A: 1", "X-B: 2", "X-C: 3", "X-D: 4")),
		one("connection-names-ua", getReq("/", "Connection: User-Agent", "User-Agent: ua/1")),
		one("connection-names-te", getReq("/", "Connection: te", "TE: trailers")),
		one("connection-names-host", getReq("/", "Connection: host")),
		one("connection-names-accept", getReq("/", "Connection: Accept", "Accept: */*",
			"Accept-Encoding: gzip")),
		one("connection-8-tokens", getReq("/", "Connection: t1, t2, t3, t4, t5, t6, t7, t8",
			"T1: 1", "T8: 8", "T9: 9")),
		one("connection-9-tokens", getReq("/", "Connection: t1, t2, t3, t4, t5, t6, t7, t8, t9",
			"T1: 1", "T9: 9")),
		one("hop-by-hop", getReq("/", "Keep-Alive: 300", "Proxy-Connection: keep-alive",
			"Proxy-Authorization: Basic Zm9v", "Trailer: X-T", "TE: trailers, deflate", "X-End: yes")),
		one("te-trailers", getReq("/", "TE: trailers")),
		one("te-gzip", getReq("/", "TE: gzip", "Te: Trailers")),
		one("cl-0", getReq("/", "Content-Length: 0")),
		one("cl-0-twice", getReq("/", "Content-Length: 0", "content-length: 0")),
		one("cl-00", getReq("/", "Content-Length: 00")),
		one("cl-0-1", getReq("/", "Content-Length: 0", "Content-Length: 1")+"x", G),
		one("cl-5", getReq("/", "Content-Length: 5")+"hello"),
		one("head-cl-0", req("HEAD", "/", "Content-Length: 0"), H),
		one("te-chunked", getReq("/", "Transfer-Encoding: chunked")+"5\r\nhello\r\n0\r\nX-Tr: 1\r\n\r\n"),
		one("te-cl", getReq("/", "Transfer-Encoding: chunked", "Content-Length: 3")+"5\r\nhello\r\n0\r\n\r\n"),
		one("expect-get", getReq("/", "Expect: 100-continue")),
		one("expect-post", req("POST", "/", "Expect: 100-continue", "Content-Length: 5")+"hello", P),
		one("upgrade", getReq("/", "Connection: Upgrade", "Upgrade: websocket")),
		one("upgrade-no-token", getReq("/", "Upgrade: websocket")),
		one("connection-upgrade-alone", getReq("/", "Connection: upgrade")),
		one("absolute-form", "GET http://a.example/abs?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"),
		one("absolute-form-other", "GET http://b.example/abs HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("authority-form", "CONNECT a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\n"),
		one("asterisk", "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n"),

		// Routing.
		one("dot-segments", getReq("/a/./b/../c//d/")),
		one("dot-dot-root", getReq("/../etc")),
		one("dot-dot-root-head", req("HEAD", "/a/../../etc"), H),
		one("pct-2e2e", getReq("/%2e%2e/x")),
		one("pct-2E-inside", getReq("/a/%2E%2e/b/%2E/c")),
		one("pct-unreserved", getReq("/%41%7e%2Fb%20c")),
		one("pct-bad", getReq("/a%zz")),
		one("pct-short", getReq("/a%2")),
		one("pct-00", getReq("/a%00b")),
		one("double-slash", getReq("//a.example/x")),
		one("empty-503", getReq("/empty")),
		one("empty-503-head", req("HEAD", "/empty"), H),
		one("empty-503-close", getReq("/empty", "Connection: close")),
		one("unknown-host-404", "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"),
		one("unknown-host-404-head", "HEAD / HTTP/1.1\r\nHost: b.example\r\n\r\n", H),
		one("host-case", "GET / HTTP/1.1\r\nHost: A.Example\r\n\r\n"),
		one("host-dot", "GET / HTTP/1.1\r\nHost: a.example.\r\n\r\n"),
		one("host-port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n"),
		one("host-empty-port", "GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n"),
		one("host-ipv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
		one("host-underscore", "GET / HTTP/1.1\r\nHost: a_b.example\r\n\r\n"),
		one("host-space", "GET / HTTP/1.1\r\nHost: a.example x\r\n\r\n"),
		one("host-empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
		one("host-missing", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
		one("host-duplicate", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n"),
		one("host-duplicate-other", "GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n"),
		one("http10", "GET / HTTP/1.0\r\nHost: a.example\r\n\r\n"),
		one("http10-no-host", "GET / HTTP/1.0\r\n\r\n"),
		one("http10-keepalive", "GET / HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n"),
		one("http12", "GET / HTTP/1.2\r\nHost: a.example\r\n\r\n"),
		one("http-lower", "GET / http/1.1\r\nHost: a.example\r\n\r\n"),
		one("method-lower", "get / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("method-mixed", "Get / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("method-other", req("PURGE", "/")),
		one("method-delete", req("DELETE", "/")),

		// Malformed.
		one("bare-lf", "GET / HTTP/1.1\nHost: a.example\n\n"),
		one("bare-lf-end", "GET / HTTP/1.1\r\nHost: a.example\r\n\n"),
		one("bare-lf-field", "GET / HTTP/1.1\r\nHost: a.example\nX-A: 1\r\n\r\n"),
		one("bare-cr", "GET / HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r2\r\n\r\n"),
		one("obs-fold", getReq("/", "X-Fold: a", " b")),
		one("obs-fold-first", "GET / HTTP/1.1\r\n X-Fold: a\r\nHost: a.example\r\n\r\n"),
		one("space-before-colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n"),
		one("no-colon", getReq("/", "X-NoColon")),
		one("empty-name", getReq("/", ": v")),
		one("nul-value", getReq("/", "X-A: a\x00b")),
		one("ctl-value", getReq("/", "X-A: a\x01b")),
		one("del-value", getReq("/", "X-A: a\x7fb")),
		one("ctl-name", getReq("/", "X\x01A: 1")),
		one("high-name", getReq("/", "X-\xffA: 1")),
		one("space-in-target", "GET /a b HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("double-space", "GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("trailing-space", "GET / HTTP/1.1 \r\nHost: a.example\r\n\r\n"),
		one("tab-separator", "GET\t/ HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("fragment", getReq("/a#frag")),
		one("ctl-target", getReq("/a\x01b")),
		one("ctl-query", getReq("/a?b\x01c")),
		one("del-query", getReq("/a?b\x7fc")),
		one("high-target", getReq("/\xc3\xa9")),
		one("leading-crlf", "\r\n"+getReq("/")),
		one("garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
		one("no-version", "GET /\r\nHost: a.example\r\n\r\n"),

		// Sizes.
		one("head-4000", bigGet(4000)),
		one("head-4095", bigGet(4095)),
		one("head-4096", bigGet(4096)),
		one("head-4097", bigGet(4097)),
		one("head-5000", bigGet(5000)),
		one("head-36k", bigGet(36<<10)),
		one("head-40k", bigGet(40<<10)),
		one("fields-64", getReq("/", repeatFields(63, "X-F", 1)...)),
		one("fields-65", getReq("/", repeatFields(65, "X-F", 1)...)),
		{name: "maxheader-1k-3000", parts: []string{bigGet(3000)}, opts: Options{MaxHeaderBytes: 1024}},
		{name: "maxheader-1k-6000", parts: []string{bigGet(6000)}, opts: Options{MaxHeaderBytes: 1024}},
		one("host-trailing-space", "GET / HTTP/1.1\r\nHost: a.example  \t\r\n\r\n"),
		one("head-4k-pipelined", bigGet(5000)+getReq("/second"), G, G),

		// Pipelines and connections mixing both servers.
		one("pipe-get-get", getReq("/1")+getReq("/2"), G, G),
		one("pipe-get-head-get", getReq("/1")+req("HEAD", "/2")+getReq("/3"), G, H, G),
		one("pipe-get-post-get", getReq("/1")+req("POST", "/2", "Content-Length: 5")+"hello"+getReq("/3"), G, P, G),
		one("pipe-get-chunked-get", getReq("/1")+getReq("/2", "Transfer-Encoding: chunked")+
			"3\r\nabc\r\n0\r\n\r\n"+getReq("/3"), G, G, G),
		one("pipe-get-body-get", getReq("/1")+getReq("/2", "Content-Length: 3")+"abc"+getReq("/3"), G, G, G),
		one("pipe-close-get", getReq("/1", "Connection: close")+getReq("/2"), G, G),
		one("pipe-400-get", getReq("/../x")+getReq("/2"), G, G),
		one("pipe-404-get", "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"+getReq("/2"), G, G),
		one("pipe-503-get", getReq("/empty")+getReq("/2"), G, G),
		one("pipe-get-malformed", getReq("/1")+"GET / HTTP/1.1\r\nHost: a.example\nX: 1\r\n\r\n", G, G),
		one("pipe-get-http10", getReq("/1")+"GET /2 HTTP/1.0\r\nHost: a.example\r\n\r\n", G, G),
		one("pipe-get-lower", getReq("/1")+"get /2 HTTP/1.1\r\nHost: a.example\r\n\r\n", G, G),
		one("pipe-many", strings.Repeat(getReq("/n"), 10), G, G, G, G, G, G, G, G, G, G),
		{name: "split-head", parts: []string{"GE", "T /split HTTP/1.1\r\nHo", "st: a.example\r", "\n\r", "\n"}},
		{name: "split-pipeline", parts: []string{getReq("/1") + "GET /2 HTTP/1.1\r\n", "Host: a.example\r\n\r\n"},
			methods: []string{G, G}},
		{name: "split-post-after-get", parts: []string{getReq("/1"), req("POST", "/2", "Content-Length: 5") + "hel", "lo"},
			methods: []string{G, P}},

		// Backends' responses.
		one("resp-reason", getReq("/r/reason")),
		one("resp-no-reason", getReq("/r/no-reason")),
		one("resp-299", getReq("/r/299")),
		one("resp-chunked", getReq("/r/chunked", "TE: trailers")),
		one("resp-chunked-head", req("HEAD", "/r/chunked"), H),
		one("resp-chunked-empty", getReq("/r/chunked-empty")),
		one("resp-http10-close", getReq("/r/http10-close")),
		one("resp-http10-close-head", req("HEAD", "/r/http10-close"), H),
		one("resp-http11-close", getReq("/r/http11-close")),
		one("resp-http11-close-empty", getReq("/r/http11-close-empty")),
		one("resp-http10-keepalive", getReq("/r/http10-keepalive")+getReq("/r/http10-keepalive"), G, G),
		one("resp-conn-close", getReq("/r/conn-close")+getReq("/2"), G, G),
		one("resp-204", getReq("/r/204")),
		one("resp-204-cl", getReq("/r/204-cl")),
		one("resp-204-cl5", getReq("/r/204-cl5")+getReq("/2"), G, G),
		one("resp-304", getReq("/r/304")),
		one("resp-1xx", getReq("/r/1xx")),
		one("resp-hop", getReq("/r/hop")),
		one("resp-conn-server-date", getReq("/r/conn-server-date")),
		one("resp-server-date", getReq("/r/server-date")),
		one("resp-cookies", getReq("/r/cookies")),
		one("resp-bighead", getReq("/r/bighead")),
		one("resp-bighead-head", req("HEAD", "/r/bighead"), H),
		one("resp-cut", getReq("/r/cut")),
		one("resp-cut-chunked", getReq("/r/cut-chunked")),
		one("resp-101", getReq("/r/101")),
		one("resp-500", getReq("/r/500")),
		one("resp-bad-field", getReq("/r/bad-field")),
		one("resp-ctl-value", getReq("/r/ctl-value")),
		one("resp-extra", getReq("/r/extra")+getReq("/2"), G, G),
		one("resp-head-body", req("HEAD", "/r/head-body")+getReq("/2"), H, G),
		one("resp-notype", getReq("/r/notype")),
		one("resp-cl-zeros", getReq("/r/cl-zeros")),
		one("resp-cl-dup", getReq("/r/cl-dup")),
		one("resp-cl-list", getReq("/r/cl-list")),
		one("resp-te-cl", getReq("/r/te-cl")),
		one("resp-fold", getReq("/r/fold")),
		one("resp-bare-lf", getReq("/r/bare-lf")),
		one("resp-reset", getReq("/r/reset")),
		// The body is left unframed: the client reads on until the
		// connection ends.
		{name: "resp-conn-names-cl", parts: []string{getReq("/r/conn-names-cl") + getReq("/2")},
			methods: []string{G, G}, wait: 500 * time.Millisecond},
		one("resp-conn-names-type", getReq("/r/conn-names-type")),
		one("resp-conn-9-tokens", getReq("/r/conn-9-tokens")),
		one("resp-many-fields", getReq("/r/many-fields")),
		one("resp-big-body", getReq("/r/big-body")+getReq("/2"), G, G),
		one("resp-big-chunked", getReq("/r/big-chunked")+getReq("/2"), G, G),
		one("resp-chunked-close", getReq("/r/chunked", "Connection: close")),
		one("resp-http10-close-close", getReq("/r/http10-close", "Connection: close")),
		one("resp-1xx-close", getReq("/r/1xx", "Connection: close")),
		// The client's next request comes while the backend is awaited
		// (past watchDelay): the hang-up watch reads its first byte.
		{name: "pipe-during-wait-get", parts: []string{getReq("/r/slowish"), getReq("/2")},
			gap: 100 * time.Millisecond, methods: []string{G, G}},
		{name: "pipe-during-wait-post", parts: []string{getReq("/r/slowish"),
			req("POST", "/2", "Content-Length: 2") + "hi"}, gap: 100 * time.Millisecond, methods: []string{G, P}},
		{name: "pipe-during-wait-head", parts: []string{getReq("/r/slowish"), req("HEAD", "/2")},
			gap: 100 * time.Millisecond, methods: []string{G, H}},
		{name: "pipe-during-wait-bad", parts: []string{getReq("/r/slowish"), "GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n"},
			gap: 100 * time.Millisecond, methods: []string{G, G}},

		// Failures, retries, hang-ups.
		one("retry-connect", getReq("/retry")+getReq("/retry"), G, G),
		one("retry-reset", getReq("/flaky")+getReq("/flaky"), G, G),
		one("retry-reset-post", req("POST", "/flaky", "Content-Length: 2")+"hi"+
			req("POST", "/flaky", "Content-Length: 2")+"hi", P, P),
		one("dead-502", getReq("/dead")),
		one("dead-502-head", req("HEAD", "/dead"), H),
		{name: "timeout-504", parts: []string{getReq("/r/slow")},
			opts: Options{ResponseHeaderTimeout: 200 * time.Millisecond}},
		{name: "hangup-499", parts: []string{getReq("/r/slow")}, hangup: 300 * time.Millisecond},
		{name: "hangup-499-head", parts: []string{req("HEAD", "/r/slow")}, hangup: 300 * time.Millisecond},
	}
	return cases
}

// TestH1Differential runs every case against the direct loop and against
// net/http alone and compares what the client, the backend and the access
// log saw.
func TestH1Differential(t *testing.T) {
	cases := diffCases()
	if only := os.Getenv("VIGIL_DIFF_CASE"); only != "" {
		cases = slices.DeleteFunc(cases, func(c diffCase) bool { return c.name != only })
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newDiffSetup(t, c.opts)
			var res [2]result
			for i := range s.sides {
				res[i] = s.run(t, &s.sides[i], &c)
			}
			allowDiffs(&c, &res[0], &res[1])
			verbose := os.Getenv("VIGIL_DIFF_VERBOSE") != ""
			failed := false
			for _, part := range []struct {
				what string
				a, b []string
			}{
				{"client", res[0].client, res[1].client},
				{"backend", res[0].backend, res[1].backend},
				{"access log", res[0].log, res[1].log},
			} {
				onlyA, onlyB := diffLines(part.a, part.b)
				if len(onlyA) == 0 && len(onlyB) == 0 {
					continue
				}
				failed = true
				t.Errorf("%s differs for %q\n  direct only:\n    %s\n  net/http only:\n    %s",
					part.what, strings.Join(c.parts, ""), strings.Join(onlyA, "\n    "),
					strings.Join(onlyB, "\n    "))
			}
			if failed || verbose {
				for i, r := range res {
					t.Logf("%s:\n    %s", s.sides[i].name, strings.Join(
						slices.Concat(r.client, r.info, r.backend, r.log), "\n    "))
				}
			}
		})
	}
}

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
