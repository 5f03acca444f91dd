package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The plain-HTTP listener does not hand every connection to net/http. Its
// own loop (h1Server, h1Conn) reads each request head in place and, when
// the request is a bodiless GET or HEAD in HTTP/1.1 (the bulk of ingress
// traffic), forwards it and relays the response without building an
// http.Request, a context, a header map or a background reader for it.
// Everything else, and anything the loop's strict parser is unsure of, is
// left to net/http: the connection, with the bytes already read, goes to
// an http.Server that serves the rest of it through ServeHTTP. Routing,
// balancing, retries, passive health, metrics and the access log are the
// same code on both paths.

// watchDelay is how long a direct request waits for its backend before the
// client's connection is watched for a hang-up. Most responses come sooner,
// and they pay nothing for the watch.
const watchDelay = 50 * time.Millisecond

// h1Server serves one plain-HTTP listener.
type h1Server struct {
	p    *Proxy
	srv  *http.Server // serves the connections handed over
	hand *connQueue   // srv's listener

	closing atomic.Bool
	wg      sync.WaitGroup // serving goroutines
	mu      sync.Mutex
	conns   map[*h1Conn]struct{}
}

func newH1Server(p *Proxy, srv *http.Server, addr net.Addr) *h1Server {
	return &h1Server{
		p:     p,
		srv:   srv,
		hand:  &connQueue{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr},
		conns: make(map[*h1Conn]struct{}),
	}
}

// serve accepts connections from ln until it is closed, and serves them.
func (s *h1Server) serve(ln net.Listener) error {
	go func() { _ = s.srv.Serve(s.hand) }()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			// Out of descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.p.opts.Logger.Warn("proxy accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// Connection states, for shutdown.
const (
	connActive int32 = iota
	connIdle
	connClosed
)

func (s *h1Server) newConn(nc net.Conn) *h1Conn {
	c := &h1Conn{s: s, p: s.p, nc: nc, remote: nc.RemoteAddr().String()}
	c.peer = peerIP(c.remote)
	c.trusted = s.p.trusted(c.peer)
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *h1Server) forget(c *h1Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// closeIdle closes the connections waiting for a request.
func (s *h1Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			c.nc.Close()
		}
	}
}

// shutdown stops serving: ln must be closed already. Idle connections are
// closed now, busy ones after their response, and net/http's (those handed
// over) as http.Server.Shutdown closes them; when ctx ends first, all of
// them are.
func (s *h1Server) shutdown(ctx context.Context) error {
	// Under mu: newConn checks closing and adds to wg under it, so no
	// connection is added once wg is waited on.
	s.mu.Lock()
	s.closing.Store(true)
	s.mu.Unlock()
	herr := make(chan error, 1)
	go func() { herr <- s.srv.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// A connection may go idle after any sweep; the loop's own check
		// of closing catches the rest.
		s.closeIdle()
		select {
		case <-done:
			return <-herr
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.nc.Close()
			}
			s.mu.Unlock()
			s.srv.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// connQueue is the listener of the http.Server that takes connections
// over from the direct loop.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// handOff gives c to net/http, or closes it when the server is closed.
func (q *connQueue) handOff(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

// handedConn is a connection whose first bytes were read already.
// headLimit, when set, is the deadline the direct loop gave the request
// head it was reading: net/http's own header timeout for that head starts
// anew, so a deadline it sets later is cut back to headLimit, until it
// clears the deadline once the head is in. A client that trickles a head
// past the direct loop's buffer gets one ReadHeaderTimeout in all, not two.
type handedConn struct {
	net.Conn
	pre       []byte
	headLimit time.Time
}

func (h *handedConn) SetReadDeadline(t time.Time) error {
	return h.Conn.SetReadDeadline(h.limit(t))
}

func (h *handedConn) SetDeadline(t time.Time) error {
	return h.Conn.SetDeadline(h.limit(t))
}

func (h *handedConn) limit(t time.Time) time.Time {
	switch {
	case h.headLimit.IsZero():
	case t.IsZero():
		h.headLimit = time.Time{}
	case t.After(h.headLimit):
		t = h.headLimit
	}
	return t
}

func (h *handedConn) Read(p []byte) (int, error) {
	if len(h.pre) > 0 {
		n := copy(p, h.pre)
		h.pre = h.pre[n:]
		return n, nil
	}
	return h.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection after an error reply.
func (h *handedConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// trusted reports whether the peer ip is one of TrustedProxies.
func (p *Proxy) trusted(ip string) bool {
	if len(p.opts.TrustedProxies) == 0 {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, pfx := range p.opts.TrustedProxies {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}
