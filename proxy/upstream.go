package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstream forwards the common request, one that has no body and asks for
// no protocol switch, over its own keep-alive connections. It writes the
// request and reads the response on the handler's goroutine; http.Transport
// hands every request to a write and a read goroutine of the connection,
// which costs more than the proxying itself on small responses. Requests with
// a body or an Upgrade keep going through http.Transport.
type upstream struct {
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle       int
	idleTimeout   time.Duration    // 0: idle connections never expire
	headerTimeout time.Duration    // 0: no bound on the response head
	now           func() time.Time // idle expiry and the header deadline

	mu   sync.Mutex
	idle map[string][]*upConn // by address, most recently used last
}

// upConn is one keep-alive connection to a backend.
type upConn struct {
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	abort     func() // fails nc's pending reads and writes; made once per connection
}

func newUpConn(nc net.Conn) *upConn {
	uc := &upConn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}
	uc.abort = func() { _ = nc.SetDeadline(aborted) }
	return uc
}

// fastPath reports whether out can go through upstream: a bodiless request
// with an idempotent method (so that a keep-alive connection the backend
// closed meanwhile can be retried on a new one, RFC 9110 9.2.2), no Upgrade,
// and a path that writeHead sends as it is ("//x" would need a scheme).
func fastPath(out *http.Request, up string) bool {
	return up == "" && out.Body == http.NoBody && idempotent(out.Method) &&
		strings.HasPrefix(out.URL.Opaque, "/") && !strings.HasPrefix(out.URL.Opaque, "//")
}

// staleError marks a failure before any byte of a response came back. On a
// reused connection it means that the backend closed it while idle.
type staleError struct{ err error }

func (e *staleError) Error() string { return "backend closed the connection: " + e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

// exchanger writes a request on a backend connection and waits for the
// response to begin.
type exchanger interface {
	// exchange writes the request on uc and reads at least the first
	// byte of the response; now, taken just before, starts the header
	// timeout. A *staleError means that no byte came back.
	exchange(uc *upConn, now time.Time) error
}

// do runs x on a connection to addr and returns the connection, the
// response waiting in its reader. A reused connection that turns out stale
// is replaced by a new one once: the request is idempotent, and the
// backend closed the connection while it was idle (RFC 9112 9.3.1).
func (u *upstream) do(ctx context.Context, addr string, x exchanger) (*upConn, error) {
	now := u.now()
	for fresh := false; ; fresh = true {
		var uc *upConn
		if !fresh {
			uc = u.take(addr, now)
		}
		reused := uc != nil
		if uc == nil {
			nc, err := u.dial(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			uc = newUpConn(nc)
			// The header timeout does not count the connect.
			now = u.now()
		}
		err := x.exchange(uc, now)
		if err == nil {
			return uc, nil
		}
		uc.nc.Close()
		var se *staleError
		if !errors.As(err, &se) {
			return nil, err
		}
		if !reused {
			return nil, se.err
		}
	}
}

// roundTrip sends req to req.URL.Host. The connection goes back to the
// pool after the response only while gone is false: SetEndpoints sets it,
// and closes the idle connections, when the address leaves every rotation.
func (u *upstream) roundTrip(req *http.Request, gone *atomic.Bool) (*http.Response, error) {
	x := &reqExchange{u: u, req: req, gone: gone}
	if _, err := u.do(req.Context(), req.URL.Host, x); err != nil {
		return nil, err
	}
	return x.res, nil
}

// reqExchange is an http.Request's exchange.
type reqExchange struct {
	u    *upstream
	req  *http.Request
	gone *atomic.Bool
	res  *http.Response
}

func (x *reqExchange) exchange(uc *upConn, now time.Time) error {
	res, err := x.u.exchange(uc, x.req, x.req.URL.Host, x.gone, now)
	x.res = res
	return err
}

// exchange writes req on uc and reads the response head; the header timeout
// counts from now, taken just before. The response body
// hands uc back to the pool once read to its end.
func (u *upstream) exchange(uc *upConn, req *http.Request, addr string,
	gone *atomic.Bool, now time.Time) (*http.Response, error) {
	ctx := req.Context()
	// A client that goes away aborts the exchange, as with http.Transport.
	stop := context.AfterFunc(ctx, uc.abort)
	// readDeadline sets the read deadline without undoing an abort that
	// came in between: after the set, a done ctx puts the abort back.
	readDeadline := func(t time.Time) {
		_ = uc.nc.SetReadDeadline(t)
		if ctx.Err() != nil {
			_ = uc.nc.SetDeadline(aborted)
		}
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}

	writeHead(uc.bw, req)
	if err := uc.bw.Flush(); err != nil {
		return fail(&staleError{err})
	}
	// Always set: a pooled connection may carry a deadline the direct path
	// left on it.
	var limit time.Time
	if u.headerTimeout > 0 {
		limit = now.Add(u.headerTimeout)
	}
	readDeadline(limit)
	if _, err := uc.br.Peek(1); err != nil {
		if isTimeout(err) {
			return fail(err)
		}
		return fail(&staleError{err})
	}
	var res *http.Response
	for {
		var err error
		res, err = http.ReadResponse(uc.br, req)
		if err != nil {
			return fail(err)
		}
		// Interim responses (100 Continue, 103 Early Hints) are the
		// backend's to the hop; the final one follows.
		if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		res.Body.Close()
	}
	// The header timeout must not cut the body, unless all of it is
	// buffered already; the next request sets its own deadline.
	if u.headerTimeout > 0 && (res.ContentLength < 0 || int64(uc.br.Buffered()) < res.ContentLength) {
		readDeadline(time.Time{})
	}
	// A body delimited by the connection's end leaves nothing to reuse.
	reusable := !res.Close && res.StatusCode != http.StatusSwitchingProtocols &&
		(res.ContentLength >= 0 || len(res.TransferEncoding) > 0 || res.Body == http.NoBody)
	res.Body = &upBody{u: u, uc: uc, addr: addr, gone: gone, rc: res.Body, stop: stop,
		reusable: reusable}
	return res, nil
}

// aborted is a deadline in the past: set on a connection, it fails the
// reads and writes in progress at once.
var aborted = time.Unix(1, 0)

// writeHead writes the head of a bodiless request, as Request.Write would
// but without its allocations. The header comes from the server's parser,
// which admits no CR or LF, and from the proxy's own rewrites.
func writeHead(bw *bufio.Writer, req *http.Request) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.Opaque)
	if req.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(req.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	// As Request.Write: Go's User-Agent unless the client sent one, none
	// if it sent an empty one.
	ua := defaultUserAgent
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = v[0]
		}
	}
	if ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	// RFC 9110 8.6: a request whose method defines a body says when it is
	// empty.
	if req.Method == http.MethodPut {
		bw.WriteString("Content-Length: 0\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
}

const defaultUserAgent = "Go-http-client/1.1"

func writeField(bw *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// take returns an idle connection to addr that has not expired by now, or
// nil.
func (u *upstream) take(addr string, now time.Time) *upConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	list := u.idle[addr]
	for len(list) > 0 {
		uc := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if u.idleTimeout > 0 && now.Sub(uc.idleSince) > u.idleTimeout {
			uc.nc.Close()
			continue
		}
		u.idle[addr] = list
		return uc
	}
	delete(u.idle, addr)
	return nil
}

// put keeps uc for the next request to addr, within maxIdle and unless the
// address is gone, and closes the expired connections of addr.
func (u *upstream) put(addr string, uc *upConn, gone *atomic.Bool) {
	now := u.now()
	uc.idleSince = now
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.idle == nil {
		u.idle = make(map[string][]*upConn)
	}
	list := u.idle[addr]
	if u.idleTimeout > 0 && len(list) > 0 && now.Sub(list[0].idleSince) > u.idleTimeout {
		kept := list[:0]
		for _, c := range list {
			if now.Sub(c.idleSince) > u.idleTimeout {
				c.nc.Close()
			} else {
				kept = append(kept, c)
			}
		}
		clear(list[len(kept):])
		list = kept
	}
	if len(list) >= u.maxIdle || gone.Load() {
		uc.nc.Close()
	} else {
		list = append(list, uc)
	}
	u.idle[addr] = list
}

// closeIdle closes the idle connections to addr, which left rotation.
func (u *upstream) closeIdle(addr string) {
	u.mu.Lock()
	list := u.idle[addr]
	delete(u.idle, addr)
	u.mu.Unlock()
	for _, uc := range list {
		uc.nc.Close()
	}
}

// upBody is a response body that returns its connection to the pool when
// read to the end, and closes it when abandoned earlier.
type upBody struct {
	u        *upstream
	uc       *upConn
	addr     string
	gone     *atomic.Bool
	rc       io.ReadCloser
	stop     func() bool
	reusable bool
	done     bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.finish(false)
	return nil
}

func (b *upBody) finish(eof bool) {
	if b.done {
		return
	}
	b.done = true
	aborted := !b.stop()
	// Bytes past the body would be read as the next response.
	if eof && b.reusable && !aborted && b.uc.br.Buffered() == 0 {
		b.rc.Close()
		b.u.put(b.addr, b.uc, b.gone)
		return
	}
	// Close the connection first: closing a body not read to its end would
	// otherwise read the rest of it.
	b.uc.nc.Close()
	b.rc.Close()
}
