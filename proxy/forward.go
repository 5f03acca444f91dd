package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// StatusClientClosedRequest is logged and counted for a request whose
// client went away before its response ended (nginx's 499).
const StatusClientClosedRequest = 499

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// outcome is what one request did, for metrics and the access log.
type outcome struct {
	status   int
	hangup   bool
	abort    bool // the backend failed mid-body: the client's stream is cut
	endpoint *endpoint
	attempts int
	bytes    int64
}

// ServeHTTP routes r by the current table and forwards it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The duration is for the metrics and the access log; without either
	// the clock is not read.
	timed := p.metrics != nil || p.opts.AccessLog
	var start time.Time
	if timed {
		start = time.Now()
	}
	var o outcome
	rt := p.notFound
	if path, ok := cleanPath(r.URL.EscapedPath()); !ok {
		o.status = p.fail(w, http.StatusBadRequest)
	} else if found := p.table.Load().lookup(hostKey(r.Host), path); found == nil {
		o.status = p.fail(w, http.StatusNotFound)
	} else {
		rt = found
		p.forward(w, r, rt, path, &o)
	}

	if timed {
		d := time.Since(start)
		rt.m.observe(o.status, o.hangup, d)
		if p.opts.AccessLog {
			p.logAccess(accessEntry{method: r.Method, host: r.Host, uri: r.RequestURI,
				proto: r.Proto, remote: r.RemoteAddr, ua: r.UserAgent()}, rt, &o, d)
		}
	}
	if o.abort || o.hangup {
		// Cut the client's connection: a truncated body must not be taken
		// for a whole one, and a client that went (or half-closed) before
		// any response must not get the empty 200 net/http would write.
		panic(http.ErrAbortHandler)
	}
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt *route, path string, o *outcome) {
	pl := rt.pool
	if pl == nil || len(pl.endpoints()) == 0 {
		o.status = p.fail(w, http.StatusServiceUnavailable)
		return
	}
	a := &httpAttempt{p: p, w: w, r: r, pl: pl, path: path, o: o}
	a.up = p.prepareRequestHeaders(r)
	if err := p.initReqBody(&a.body, w, r); err != nil {
		if r.Context().Err() != nil {
			o.status, o.hangup = StatusClientClosedRequest, true
			return
		}
		o.status = p.fail(w, http.StatusBadRequest)
		return
	}
	defer a.body.done()
	a.now = p.opts.now().UnixNano()
	a.out.init(r, path, &a.body)
	if code := p.balance(pl, a.now, a, o); code != 0 {
		o.status = p.fail(w, code)
	}
}

// attempter is one request as balance sees it, whichever server read it.
type attempter interface {
	// try sends the request to e and, once a response head came back,
	// relays the response and returns nil, whatever its status. The first
	// try has attempt 0.
	try(e *endpoint, attempt int) error
	// clientGone reports whether the client went away.
	clientGone() bool
	// replayable reports whether the request may be sent again after a
	// failure: one to connect when afterDial, else one before the
	// response head.
	replayable(afterDial bool) bool
}

// balance tries endpoints of pl, at most 1+MaxRetries of them, until one
// answers. It returns 0 when the request is done, a response relayed or
// the client gone (o says which), else the status to answer with.
func (p *Proxy) balance(pl *pool, now int64, a attempter, o *outcome) int {
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	var lastErr error
	for attempt, skips := 0, 0; attempt <= p.opts.MaxRetries; {
		e := pl.pick(pl.endpoints(), now, tried)
		if e == nil {
			break
		}
		if !e.acquire() {
			// e left rotation after we loaded the list; the fresh list
			// no longer has it.
			tried = append(tried, e)
			if skips++; skips > 8 {
				break
			}
			continue
		}
		if attempt > 0 {
			pl.m.retry()
		}
		o.endpoint = e
		o.attempts++
		err := tryOn(a, e, attempt)
		if err == nil {
			return 0
		}
		lastErr = err
		if a.clientGone() {
			o.status, o.hangup = StatusClientClosedRequest, true
			return 0
		}
		if !p.retryable(pl, e, err, now, a) {
			break
		}
		tried = append(tried, e)
		attempt++
	}
	switch {
	case lastErr == nil:
		return http.StatusServiceUnavailable
	case isTimeout(lastErr) && !isDialError(lastErr):
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}

// tryOn runs one attempt on e, which acquire counted in flight: released
// however the attempt ends, a panic included, or Drain would wait for it
// forever.
func tryOn(a attempter, e *endpoint, attempt int) error {
	defer e.release()
	return a.try(e, attempt)
}

// httpAttempt is a request read by net/http's server.
type httpAttempt struct {
	p    *Proxy
	w    http.ResponseWriter
	r    *http.Request
	pl   *pool
	path string
	up   string // the Upgrade asked for, or ""
	o    *outcome
	now  int64
	body reqBody
	out  outgoing // the first attempt's backend request
}

func (a *httpAttempt) try(e *endpoint, attempt int) error {
	out := &a.out
	if attempt > 0 {
		out = newOutgoing(a.r, a.path, &a.body)
	}
	out.url.Host = e.addr
	var res *http.Response
	var err error
	if fastPath(&out.req, a.up) {
		res, err = a.p.up.roundTrip(&out.req, &e.removed)
	} else {
		res, err = a.p.transport.RoundTrip(&out.req)
	}
	if err != nil {
		return err
	}
	a.p.respond(a.w, a.r, a.pl, e, res, a.up, a.o, a.now)
	return nil
}

func (a *httpAttempt) clientGone() bool { return a.r.Context().Err() != nil }

func (a *httpAttempt) replayable(afterDial bool) bool {
	if afterDial {
		return a.body.replayable(true)
	}
	return idempotent(a.r.Method) && a.body.replayable(false)
}

// retryable records a failed attempt against e and reports whether the
// request may go to another endpoint. A failed connect never reached the
// backend: any request may move on if its body can be sent again. A reset
// or close before the response head may have been processed: only
// idempotent requests with a replayable body move on (RFC 9110 9.2.2).
// A timeout is not retried: the backend may still be at work.
func (p *Proxy) retryable(pl *pool, e *endpoint, err error, now int64, a attempter) bool {
	switch {
	case isDialError(err):
		p.observeConnectFailure(pl, e, now)
		return a.replayable(true)
	case isTimeout(err):
		p.observe5xx(pl, e, now)
		return false
	default:
		p.observe5xx(pl, e, now)
		return a.replayable(false)
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// respond relays a backend's response to the client.
func (p *Proxy) respond(w http.ResponseWriter, r *http.Request, pl *pool, e *endpoint,
	res *http.Response, up string, o *outcome, now int64) {
	if res.StatusCode == http.StatusSwitchingProtocols {
		p.observeSuccess(e, now)
		p.tunnel(w, res, up, o)
		return
	}
	p.observeStatus(pl, e, res.StatusCode, now)

	copyResponseHeaders(w.Header(), res.Header)
	w.WriteHeader(res.StatusCode)
	o.status = res.StatusCode
	if res.ContentLength < 0 && res.Body != http.NoBody {
		// A stream (server-sent events) may send its first bytes much
		// later; the client gets the head now.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	n, werr, rerr := p.copyBody(w, res.Body, res.ContentLength < 0)
	res.Body.Close()
	o.bytes = n
	switch {
	case werr != nil || r.Context().Err() != nil:
		o.status, o.hangup = StatusClientClosedRequest, true
	case rerr != nil:
		p.observe5xx(pl, e, now)
		o.abort = true
	default:
		for k, v := range res.Trailer {
			w.Header()[http.TrailerPrefix+k] = v
		}
	}
}

// copyBody streams body to w. Unframed (chunked or close-delimited)
// responses are flushed after every read so that event streams flow.
func (p *Proxy) copyBody(w http.ResponseWriter, body io.Reader, stream bool) (n int64, werr, rerr error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var rc *http.ResponseController
	defer func() {
		if rc != nil {
			_ = rc.SetWriteDeadline(time.Time{})
		}
	}()
	for {
		nr, err := body.Read(buf)
		if nr > 0 {
			if n > 0 && p.opts.WriteIdleTimeout > 0 {
				// Past the first chunk the client may be the slow side.
				if rc == nil {
					rc = http.NewResponseController(w)
				}
				_ = rc.SetWriteDeadline(time.Now().Add(p.opts.WriteIdleTimeout))
			}
			nw, err := w.Write(buf[:nr])
			n += int64(nw)
			if err != nil {
				return n, err, nil
			}
			if stream {
				if f, ok := w.(http.Flusher); ok {
					f.Flush()
				}
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, nil, err
		}
	}
}

// outgoing is the backend request and its URL in one allocation.
type outgoing struct {
	req http.Request
	url url.URL
}

// newOutgoing returns a backend request for a further attempt.
func newOutgoing(r *http.Request, path string, b *reqBody) *outgoing {
	o := new(outgoing)
	o.init(r, path, b)
	return o
}

// init derives the backend request from the client's: same method, header
// (already rewritten), Host and context; the cleaned path as routed.
func (o *outgoing) init(r *http.Request, path string, b *reqBody) {
	o.req = *r
	o.url = url.URL{Scheme: "http", Opaque: path, RawQuery: r.URL.RawQuery}
	q := &o.req
	q.URL = &o.url
	q.RequestURI = ""
	q.Proto, q.ProtoMajor, q.ProtoMinor = "HTTP/1.1", 1, 1
	q.Close = false
	q.TransferEncoding = nil
	q.TLS = nil
	q.RemoteAddr = ""
	q.Form, q.PostForm, q.MultipartForm = nil, nil, nil
	q.Response = nil
	q.GetBody = nil
	q.Body, q.ContentLength = b.reader()
}

// reqBody hands a client's body to attempts. Bodies up to MaxBufferedBody
// are read first and replayed from memory; larger ones stream through and
// count what was sent.
type reqBody struct {
	src      io.ReadCloser
	rc       *http.ResponseController
	idle     time.Duration
	size     int64 // -1: unknown (chunked)
	buf      []byte
	buffered bool
	none     bool
	sent     int64
}

// initReqBody sets b up for r's body, reading it first when it is to be
// buffered.
func (p *Proxy) initReqBody(b *reqBody, w http.ResponseWriter, r *http.Request) error {
	*b = reqBody{src: r.Body, size: r.ContentLength, idle: p.opts.BodyIdleTimeout}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		b.none = true
		return nil
	}
	if b.idle > 0 {
		b.rc = http.NewResponseController(w)
	}
	if r.ContentLength > 0 && r.ContentLength <= p.opts.MaxBufferedBody {
		b.buf = make([]byte, r.ContentLength)
		b.deadline()
		_, err := io.ReadFull(r.Body, b.buf)
		b.clearDeadline()
		if err != nil {
			return err
		}
		b.buffered = true
	}
	return nil
}

// reader returns a fresh body for one attempt, so that a Transport still
// closing an earlier attempt cannot disturb this one.
func (b *reqBody) reader() (io.ReadCloser, int64) {
	switch {
	case b.none:
		return http.NoBody, 0
	case b.buffered:
		return io.NopCloser(bytes.NewReader(b.buf)), int64(len(b.buf))
	}
	return streamBody{b}, b.size
}

// replayable reports whether the body can be sent again. A streamed body
// can only when none of it was read, and only after a failed connect,
// where the Transport never started to read it.
func (b *reqBody) replayable(afterDialFailure bool) bool {
	if b.none || b.buffered {
		return true
	}
	return afterDialFailure && b.sent == 0
}

func (b *reqBody) deadline() {
	if b.rc != nil {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
}

func (b *reqBody) clearDeadline() {
	if b.rc != nil {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

// done clears the read deadline, or a later keep-alive request on the
// connection (or the server's wait for it) would inherit it.
func (b *reqBody) done() {
	if !b.buffered {
		b.clearDeadline()
	}
}

type streamBody struct{ b *reqBody }

func (s streamBody) Read(p []byte) (int, error) {
	s.b.deadline()
	n, err := s.b.src.Read(p)
	s.b.sent += int64(n)
	if err != nil {
		// Past the body the server reads the connection to notice a client
		// hang-up; our deadline must not cut that read.
		s.b.clearDeadline()
	}
	return n, err
}

// Close leaves the client's body to the server, which closes it.
func (s streamBody) Close() error { return nil }

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	nosniff   = []string{"nosniff"}
)

// fail answers a request the proxy could not forward.
func (p *Proxy) fail(w http.ResponseWriter, code int) int {
	h := w.Header()
	h["Server"] = serverVigil
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = nosniff
	w.WriteHeader(code)
	_, _ = io.WriteString(w, http.StatusText(code))
	return code
}

func (p *Proxy) logAccess(a accessEntry, rt *route, o *outcome, d time.Duration) {
	service, endpoint := "", ""
	if rt.pool != nil {
		service = rt.pool.label
	}
	if o.endpoint != nil {
		endpoint = o.endpoint.addr
	}
	p.opts.Logger.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("method", a.method),
		slog.String("host", a.host),
		slog.String("uri", a.uri),
		slog.String("proto", a.proto),
		slog.Int("status", o.status),
		slog.Int64("bytes", o.bytes),
		slog.Duration("duration", d),
		slog.String("remote", a.remote),
		slog.String("ingress", rt.ingress),
		slog.String("service", service),
		slog.String("endpoint", endpoint),
		slog.Int("attempts", o.attempts),
		slog.Bool("aborted", o.abort),
		slog.String("user_agent", a.ua),
	)
}
