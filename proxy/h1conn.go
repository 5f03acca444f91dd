package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vigil-agent/vigil/internal/h1"
)

// h1Conn is one client connection on the direct path. One goroutine reads
// its requests and writes its responses; a second one runs only while a
// slow backend is awaited, to notice the client hanging up.
type h1Conn struct {
	s       *h1Server
	p       *Proxy
	nc      net.Conn
	br      *bufio.Reader // reads through c, for the byte the watch may take
	bw      *bufio.Writer
	remote  string
	peer    string
	trusted bool
	state   atomic.Int32

	req  reqHead
	res  h1.Response
	out  []byte // the backend request head
	path string // as routed and forwarded; transient
	pl   *pool
	o    outcome
	now  int64
	// respLimit ends the wait for the response head; zero: no limit.
	respLimit time.Time
	// headLimit is the deadline of a request head being read, once one
	// was set; zero: none.
	headLimit time.Time
	// closeAfter ends the connection after the response: the client asked,
	// or the server is shutting down.
	closeAfter bool

	// The hang-up watch: pending holds a byte it read of a next request.
	watching   bool
	watchDone  chan struct{}
	hangup     atomic.Bool
	pending    byte
	hasPending bool
}

// Read feeds br: the byte a watch read first, then the connection.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.hasPending && len(p) > 0 {
		p[0] = c.pending
		c.hasPending = false
		return 1, nil
	}
	return c.nc.Read(p)
}

// errClientGone ends an attempt whose client hung up.
var errClientGone = errors.New("client closed the connection")

// connNext is what becomes of a connection after a request.
type connNext int

const (
	connKeep   connNext = iota // read the next request
	connClose                  // close it
	connHanded                 // net/http has it now
)

func (c *h1Conn) serve() {
	defer c.s.forget(c)
	defer func() {
		// A bug must cost one connection, not the process, as with
		// net/http's own connections.
		if v := recover(); v != nil {
			c.nc.Close()
			c.p.opts.Logger.Error("proxy connection panicked", "remote", c.remote,
				"err", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	for {
		switch c.next() {
		case connClose:
			c.nc.Close()
			return
		case connHanded:
			return
		}
	}
}

// next serves one request.
func (c *h1Conn) next() connNext {
	opts := &c.p.opts
	// Idle: wait for the next request within IdleTimeout, then for its
	// whole head within ReadHeaderTimeout.
	if c.br.Buffered() == 0 && !c.hasPending {
		c.state.Store(connIdle)
		if c.s.closing.Load() {
			return connClose
		}
		c.readDeadline(opts.IdleTimeout)
		if _, err := c.br.Peek(1); err != nil {
			return connClose
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return connClose
		}
	}
	headTimed := false
	c.headLimit = time.Time{}
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		switch scanRequest(buf, &c.req) {
		case h1.Done:
			c.serveRequest()
			return c.finish()
		case h1.Other:
			c.handOff()
			return connHanded
		}
		if c.br.Buffered() == c.br.Size() {
			// Heads beyond the buffer are rare; net/http takes them,
			// within MaxHeaderBytes.
			c.handOff()
			return connHanded
		}
		if !headTimed {
			c.headLimit = c.readDeadline(opts.ReadHeaderTimeout)
			headTimed = true
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return connClose
		}
	}
}

// handOff passes the connection, from the request at the head of br, to
// net/http.
func (c *h1Conn) handOff() {
	_ = c.nc.SetDeadline(time.Time{})
	pre, _ := c.br.Peek(c.br.Buffered())
	hc := &handedConn{Conn: c.nc, pre: append([]byte(nil), pre...), headLimit: c.headLimit}
	if c.hasPending {
		hc.pre = append(hc.pre, c.pending)
	}
	c.state.Store(connClosed)
	c.s.hand.handOff(hc)
}

// readDeadline sets the read deadline d from now (none if d is 0) and
// returns it.
func (c *h1Conn) readDeadline(d time.Duration) time.Time {
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	_ = c.nc.SetReadDeadline(t)
	return t
}

// last reports whether the response being written is the connection's
// last: the client asked, or the server began shutting down meanwhile.
func (c *h1Conn) last() bool {
	c.closeAfter = c.closeAfter || c.s.closing.Load()
	return c.closeAfter
}

// finish ends a request: the connection goes on unless it may not.
func (c *h1Conn) finish() connNext {
	if c.o.abort || c.o.hangup || c.closeAfter {
		return connClose
	}
	return connKeep
}

// serveRequest routes, forwards and relays the request scanned into c.req.
func (c *h1Conn) serveRequest() {
	p := c.p
	timed := p.metrics != nil || p.opts.AccessLog
	var start time.Time
	if timed {
		start = time.Now()
	}
	c.o = outcome{}
	c.closeAfter = c.req.conn.Close || c.s.closing.Load()
	rt := p.notFound
	var uri, host, ua string
	if p.opts.AccessLog {
		// The log outlives the read buffer.
		uri = string(c.req.target)
		host, ua = string(c.req.host), string(c.req.ua)
	}
	path, ok := cleanPath(transient(c.req.path))
	switch {
	case !ok:
		c.discardRequest()
		c.o.status = c.fail(http.StatusBadRequest)
	default:
		found := p.table.Load().lookup(hostKey(transient(c.req.host)), path)
		if found == nil {
			c.discardRequest()
			c.o.status = c.fail(http.StatusNotFound)
			break
		}
		rt = found
		c.path = path
		c.forward(rt)
	}
	if timed {
		d := time.Since(start)
		rt.m.observe(c.o.status, c.o.hangup, d)
		if p.opts.AccessLog {
			p.logAccess(accessEntry{method: c.req.method, host: host, uri: uri,
				proto: "HTTP/1.1", remote: c.remote, ua: ua}, rt, &c.o, d)
		}
	}
}

// discardRequest consumes the request head: it is no longer needed.
func (c *h1Conn) discardRequest() {
	_, _ = c.br.Discard(c.req.size)
}

func (c *h1Conn) forward(rt *route) {
	pl := rt.pool
	if pl == nil || len(pl.endpoints()) == 0 {
		c.discardRequest()
		c.o.status = c.fail(http.StatusServiceUnavailable)
		return
	}
	c.pl = pl
	c.out = c.appendBackendHead(c.out[:0])
	// The head is copied; the buffer may take the next request.
	c.discardRequest()
	c.now = c.p.opts.now().UnixNano()
	if code := c.p.balance(pl, c.now, c, &c.o); code != 0 {
		c.o.status = c.fail(code)
	}
}

// appendBackendHead appends the request head sent to backends: the cleaned
// path, Host as sent, the client's fields in their order minus hop-by-hop
// ones, and X-Forwarded-For, -Host and -Proto as prepareRequestHeaders
// sets them on the net/http path.
func (c *h1Conn) appendBackendHead(b []byte) []byte {
	h := &c.req
	b = append(b, h.method...)
	b = append(b, ' ')
	b = append(b, c.path...)
	if len(h.query) > 0 {
		b = append(b, '?')
		b = append(b, h.query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, h.host...)
	b = append(b, "\r\n"...)
	var priorXFF [][]byte
	var xfh, xfp, trailers bool
	for i, f := range h.fields {
		kind := h.kinds[i]
		if kind == fieldTE {
			trailers = trailers || hasTokenBytes(f.Value, "trailers")
			continue
		}
		if kind == fieldHop || h.conn.ListsAny() && h.conn.Lists(f.Name) {
			continue
		}
		switch kind {
		case fieldXFF:
			if c.trusted {
				priorXFF = append(priorXFF, f.Value)
			}
			continue
		case fieldXFHost, fieldXFProto, fieldForwarded:
			if !c.trusted {
				continue
			}
			xfh = xfh || kind == fieldXFHost
			xfp = xfp || kind == fieldXFProto
		}
		b = appendField(b, f.Name, f.Value)
	}
	if trailers {
		b = append(b, "Te: trailers\r\n"...)
	}
	b = append(b, "X-Forwarded-For: "...)
	for _, v := range priorXFF {
		b = append(b, v...)
		b = append(b, ", "...)
	}
	b = append(b, c.peer...)
	b = append(b, "\r\n"...)
	if !xfh {
		b = appendField(b, []byte("X-Forwarded-Host"), h.host)
	}
	if !xfp {
		b = append(b, "X-Forwarded-Proto: http\r\n"...)
	}
	return append(b, "\r\n"...)
}

func appendField(b, name, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// try is one attempt of the direct path: see attempter.
func (c *h1Conn) try(e *endpoint, _ int) error {
	uc, err := c.p.up.do(context.Background(), e.addr, c)
	if err != nil {
		return err
	}
	if c.hangup.Load() {
		// The watch saw the client go as the response began, and
		// aborted uc.
		uc.nc.Close()
		return errClientGone
	}
	res, err := c.readHead(uc)
	if err != nil {
		uc.nc.Close()
		return err
	}
	if res == nil {
		c.relayDirect(e, uc)
	} else {
		c.relayParsed(e, uc, res)
	}
	return nil
}

// exchange writes the backend request head on uc and awaits the response:
// see exchanger.
func (c *h1Conn) exchange(uc *upConn, now time.Time) error {
	if _, err := uc.bw.Write(c.out); err != nil {
		return &staleError{err}
	}
	if err := uc.bw.Flush(); err != nil {
		return &staleError{err}
	}
	return c.await(uc, now)
}

func (c *h1Conn) clientGone() bool { return c.hangup.Load() }

// replayable: a direct request is a bodiless GET or HEAD.
func (c *h1Conn) replayable(bool) bool { return true }

// await waits on uc, where a request was just written, for the first byte
// of the response; see upstream.send. Past watchDelay the client's
// connection is watched meanwhile, so that a hang-up aborts the wait.
func (c *h1Conn) await(uc *upConn, now time.Time) error {
	var limit time.Time
	if t := c.p.up.headerTimeout; t > 0 {
		limit = now.Add(t)
	}
	c.respLimit = limit
	first := now.Add(watchDelay)
	if !limit.IsZero() && limit.Before(first) {
		first = limit
	}
	_ = uc.nc.SetReadDeadline(first)
	defer c.stopWatch()
	for {
		_, err := uc.br.Peek(1)
		if err == nil {
			return nil
		}
		if c.hangup.Load() {
			return errClientGone
		}
		if isTimeout(err) && !c.watching && (limit.IsZero() || time.Now().Before(limit)) {
			c.startWatch(uc)
			_ = uc.nc.SetReadDeadline(limit)
			// The watch sets hangup before it aborts uc: seen false
			// here, its abort comes after this deadline and holds.
			if c.hangup.Load() {
				return errClientGone
			}
			continue
		}
		if isTimeout(err) {
			return err
		}
		return &staleError{err}
	}
}

// startWatch reads the client's connection in the background: a hang-up
// aborts uc. A byte of a next request ends the watch, and is kept. With
// such bytes buffered already there is nothing to watch.
func (c *h1Conn) startWatch(uc *upConn) {
	if c.br.Buffered() > 0 || c.hasPending {
		return
	}
	c.watching = true
	c.watchDone = make(chan struct{})
	_ = c.nc.SetReadDeadline(time.Time{})
	go func() {
		defer close(c.watchDone)
		var b [1]byte
		n, err := c.nc.Read(b[:])
		switch {
		case n == 1:
			c.pending, c.hasPending = b[0], true
		case isTimeout(err):
			// stopWatch ended it.
		default:
			c.hangup.Store(true)
			uc.abort()
		}
	}()
}

func (c *h1Conn) stopWatch() {
	if !c.watching {
		return
	}
	_ = c.nc.SetReadDeadline(aborted)
	<-c.watchDone
	c.watching = false
	_ = c.nc.SetReadDeadline(time.Time{})
}

// dateCache holds the Date field value of the current second.
type dateCache struct {
	sec int64
	val []byte
}

var date atomic.Pointer[dateCache]

// appendDate appends a Date field for now.
func appendDate(b []byte, now time.Time) []byte {
	sec := now.Unix()
	d := date.Load()
	if d == nil || d.sec != sec {
		d = &dateCache{sec: sec, val: now.UTC().AppendFormat(nil, http.TimeFormat)}
		date.Store(d)
	}
	b = append(b, "Date: "...)
	b = append(b, d.val...)
	return append(b, "\r\n"...)
}

// fail answers a request the proxy could not forward, as Proxy.fail does.
func (c *h1Conn) fail(code int) int {
	text := http.StatusText(code)
	b := c.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nServer: vigil\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"X-Content-Type-Options: nosniff\r\n"...)
	b = appendDate(b, time.Now())
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	if c.last() {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	if c.req.method != http.MethodHead {
		b = append(b, text...)
	}
	c.out = b
	_, err := c.bw.Write(b)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		c.o.hangup = true
		return StatusClientClosedRequest
	}
	return code
}

// accessEntry is what the access log says of a request.
type accessEntry struct {
	method, host, uri, proto, remote, ua string
}
