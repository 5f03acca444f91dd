package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
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
