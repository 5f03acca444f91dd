package prober

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-agent/vigil/internal/h1"
)

// keepAlive is the HTTP/1.1 client of one target in ConnReuse mode for
// plain-HTTP probes: one connection kept between runs, the request written
// as prepared bytes and the response read in the run's own goroutine.
//
// net/http's Transport would do the same with two goroutines per idle
// connection (a reader and a writer) and a hand-over between them and the
// caller on every request; at thousands of targets those goroutines are
// most of the prober's memory and scheduling. Here an idle connection is a
// socket and nothing else: the read buffer is borrowed from a pool for the
// run only, and the idle timeout is checked when the next run takes the
// connection, not by a timer.
//
// A run is given its deadline, which goes on the socket, and a context for
// cancellation only (the worker's, for its whole life): watching that
// context is set up once, not per run, so a run costs no derived context
// and no timer of its own.
//
// Runs of one target never overlap, and close is called only between
// runs; mu orders them with the cancellation callback.
type keepAlive struct {
	addr        string // host:port to dial
	dialer      *net.Dialer
	request     []byte        // the request as written on the wire
	req         *http.Request // the same, for http.ReadResponse
	idleTimeout time.Duration

	lastUsed time.Time
	// Per-run state kept here rather than allocated by each run (runs
	// never overlap).
	body  io.LimitedReader // the body limiter
	meter meteredReader    // the connection as the read buffer sees it
	resp  http.Response    // the response of a run that took plainHead

	mu        sync.Mutex
	conn      net.Conn
	watched   context.Context // whose cancellation aborts the run on conn
	stopWatch func() bool
}

// maxInformational bounds the 1xx responses skipped before the final one.
const maxInformational = 5

// brPool holds the read buffers of runs in flight.
var brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 2<<10) }}

// errHeaderTooLong ends a response whose header exceeds maxHeaderBytes.
var errHeaderTooLong = fmt.Errorf("server response headers exceeded %d bytes", maxHeaderBytes)

// maxHeaderBytes caps a response header, as Transport.MaxResponseHeaderBytes
// does on the other paths.
const maxHeaderBytes = 64 << 10

// newKeepAlive prepares the request once. It fails for a request net/http
// would refuse to send (a header name or value that is not valid HTTP).
func newKeepAlive(req *http.Request, addr string, dialer *net.Dialer, idle time.Duration) (*keepAlive, error) {
	for name, vs := range req.Header {
		if !h1.IsToken(name) {
			return nil, fmt.Errorf("invalid header field name %q", name)
		}
		for _, v := range vs {
			if !h1.ValidValue(v) {
				return nil, fmt.Errorf("invalid header field value for %q", name)
			}
		}
	}
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		return nil, err
	}
	return &keepAlive{addr: addr, dialer: dialer, request: b.Bytes(), req: req, idleTimeout: idle}, nil
}

// do sends the request and returns the response with its body read up to
// limit bytes (read reports how that read ended), giving up at deadline
// (none if zero) or when ctx ends. A reused connection that turns out
// closed by the server before it answered is replaced by a new one once, as
// Transport does for GET.
func (k *keepAlive) do(ctx context.Context, deadline time.Time, limit int64) (resp *http.Response, read error, err error) {
	k.watch(ctx)
	if k.conn != nil && time.Since(k.lastUsed) > k.idleTimeout {
		k.close()
	}
	for attempt := 0; ; attempt++ {
		reused := k.conn != nil
		if !reused {
			d := *k.dialer
			d.Deadline = deadline
			c, err := d.DialContext(ctx, "tcp", k.addr)
			if err != nil {
				return nil, nil, err
			}
			k.mu.Lock()
			k.conn = c
			k.mu.Unlock()
		}
		resp, read, err, answered := k.roundTrip(ctx, deadline, limit)
		if err == nil {
			return resp, read, nil
		}
		k.close()
		if !reused || answered || attempt > 0 || ctx.Err() != nil || !connGone(err) {
			return nil, nil, err
		}
	}
}

// roundTrip is one request on k.conn. answered tells whether any response
// byte arrived (then the request is not retried).
func (k *keepAlive) roundTrip(ctx context.Context, deadline time.Time, limit int64) (resp *http.Response, read, err error, answered bool) {
	c := k.conn
	_ = c.SetDeadline(deadline)
	// After the deadline is set: a cancellation from now on finds the
	// connection and moves its deadline into the past (see watch).
	if err := ctx.Err(); err != nil {
		return nil, nil, err, false
	}

	if _, err := c.Write(k.request); err != nil {
		return nil, nil, k.ctxErr(ctx, err), false
	}

	mr := &k.meter
	*mr = meteredReader{r: c, left: maxHeaderBytes}
	br := brPool.Get().(*bufio.Reader)
	br.Reset(mr)
	defer func() {
		br.Reset(nil)
		brPool.Put(br)
		mr.r = nil
	}()

	switch code, length, ok, err := plainHead(br); {
	case err != nil:
		return nil, nil, k.ctxErr(ctx, err), mr.got > 0
	case ok:
		return k.plainBody(ctx, br, code, length, limit)
	}

	for range maxInformational + 1 {
		if resp, err = http.ReadResponse(br, k.req); err != nil {
			return nil, nil, k.ctxErr(ctx, err), mr.got > 0
		}
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		resp = nil
	}
	if resp == nil {
		return nil, nil, fmt.Errorf("more than %d informational responses", maxInformational), true
	}

	// The header is in: the body is bounded by limit, not by the header cap.
	mr.left = -1
	// Only the body's length matters: it is read into io.Discard's pooled
	// buffer, through a limiter kept in k, so that a run allocates nothing
	// for it.
	k.body = io.LimitedReader{R: resp.Body, N: limit + 1}
	n, rerr := io.Copy(io.Discard, &k.body)
	k.body.R = nil
	switch {
	case rerr != nil:
		read = k.ctxErr(ctx, rerr)
		k.close()
	case n > limit || resp.Close || br.Buffered() > 0:
		// The rest of the body is left unread, the server asked to close,
		// or it sent more than one response: the connection is not reusable.
		k.close()
	default:
		_ = resp.Body.Close() // at EOF: nothing left to drain
		k.lastUsed = time.Now()
	}
	resp.Body = http.NoBody
	return resp, read, nil, true
}

// plainHead reads the head of a response in the shape nearly every probe
// gets: HTTP/1.1, a 2xx status, a Content-Length and otherwise only headers
// that change nothing here, all in the first read. It then scans it in
// place (internal/h1), consumes it, and ok is true. Any other response
// (1xx, redirects, errors, chunked or closing bodies, HTTP/1.0, Connection
// or Trailer fields, a head split over reads, anything unusual) is left
// unread for http.ReadResponse, which keeps its exact semantics. err is the
// error of that first read, as http.ReadResponse reports it.
func plainHead(br *bufio.Reader) (code int, length int64, ok bool, err error) {
	if _, err := br.Peek(1); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, false, err
	}
	buf, _ := br.Peek(br.Buffered())
	var fields [24]h1.Field
	h, r := h1.ScanResponse(buf, http.MethodGet, fields[:0])
	if r != h1.Done || h.HTTP10 ||
		h.Status < 200 || h.Status > 299 || h.Length < 0 {
		return 0, 0, false, nil
	}
	for _, f := range h.Fields {
		if h1.Is(f.Name, "Connection") || h1.Is(f.Name, "Trailer") {
			return 0, 0, false, nil
		}
	}
	_, _ = br.Discard(h.Size)
	return h.Status, h.Length, true, nil
}

// plainBody reads the Content-Length body of a response plainHead parsed:
// up to limit bytes count, as in the general path; the connection is kept
// when the body was read whole and nothing follows it.
func (k *keepAlive) plainBody(ctx context.Context, br *bufio.Reader, code int, length, limit int64) (resp *http.Response, read, err error, answered bool) {
	k.meter.left = -1
	n := min(length, limit+1)
	if code == http.StatusNoContent {
		n = 0 // whatever its Content-Length says, as net/http reads it
	}
	switch got, rerr := br.Discard(int(n)); {
	case rerr != nil:
		if int64(got) < n && rerr == io.EOF {
			rerr = io.ErrUnexpectedEOF
		}
		read = k.ctxErr(ctx, rerr)
		k.close()
	case n > limit || br.Buffered() > 0:
		k.close()
	default:
		k.lastUsed = time.Now()
	}
	// Only the status code is read of this response (a 2xx is neither a
	// redirect nor judged by its headers), so neither Status nor Header is
	// filled in; it lives until the next run.
	k.resp = http.Response{StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		ContentLength: length, Body: http.NoBody, Request: k.req}
	return &k.resp, read, nil, true
}

// watch makes the end of ctx interrupt a run blocked on the connection: a
// deadline in the past fails its read or write at once. The callback is
// registered once per context, so the worker's costs nothing per run.
func (k *keepAlive) watch(ctx context.Context) {
	if ctx.Done() == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.watched == ctx {
		return
	}
	if k.stopWatch != nil {
		k.stopWatch()
	}
	k.watched = ctx
	k.stopWatch = context.AfterFunc(ctx, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.watched == ctx && k.conn != nil {
			_ = k.conn.SetDeadline(time.Unix(1, 0))
		}
	})
}

// ctxErr reports a deadline or cancellation as net/http does ("context
// deadline exceeded", "context canceled") rather than as "i/o timeout".
func (k *keepAlive) ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// close drops the connection; the next run dials a new one.
func (k *keepAlive) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn != nil {
		_ = k.conn.Close()
		k.conn = nil
	}
}

// connGone tells whether err means the server had closed a kept connection
// (it went away while idle), the case worth one retry on a new connection.
func connGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}

// meteredReader counts what it read and, while left >= 0, fails once more
// than left bytes were asked for (the header cap).
type meteredReader struct {
	r    io.Reader
	left int64 // -1: no cap
	got  int64
}

func (m *meteredReader) Read(p []byte) (int, error) {
	if m.left == 0 {
		return 0, errHeaderTooLong
	}
	if m.left > 0 && int64(len(p)) > m.left {
		p = p[:m.left]
	}
	n, err := m.r.Read(p)
	m.got += int64(n)
	if m.left > 0 {
		m.left -= int64(n)
	}
	return n, err
}
