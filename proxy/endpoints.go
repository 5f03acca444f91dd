package proxy

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// poolKey names one Service port: endpoints are keyed by the Service port
// number, as ServiceEndpoints is.
type poolKey struct {
	namespace, name string
	port            int32
}

// lbPolicy is a Service's balancing algorithm.
type lbPolicy int32

const (
	roundRobin lbPolicy = iota
	leastRequest
)

// lbAnnotation selects a Service's lbPolicy.
const lbAnnotation = "vigil.dev/load-balancer"

// pool is the rotation of one Service port. It outlives routing tables, so
// that a new table and a new endpoint snapshot meet in the same object.
type pool struct {
	key    poolKey
	label  string // "namespace/name:port", for metrics and logs
	policy atomic.Int32
	rr     atomic.Uint64
	set    atomic.Pointer[[]*endpoint]
	m      *poolMetrics
}

func (pl *pool) endpoints() []*endpoint {
	if s := pl.set.Load(); s != nil {
		return *s
	}
	return nil
}

// endpoint is one backend address. Its counters are shared by every pool
// that lists the address.
type endpoint struct {
	addr     string
	info     Endpoint
	inflight atomic.Int64
	// removed is set once the address left every rotation; a request that
	// picked it from an older snapshot backs off (see acquire).
	removed atomic.Bool

	// Passive health: failures in a row, when the ejection ends (unix ns),
	// and how often it was ejected (the ejection length multiplier).
	fails5xx     atomic.Int32
	failsConnect atomic.Int32
	ejectedUntil atomic.Int64
	ejections    atomic.Int32

	// Drain: watched tells a finishing request to wake the waiters.
	watched atomic.Bool
	mu      sync.Mutex
	idle    chan struct{}
}

// acquire counts a request in flight to e, or reports that e left rotation
// after the request picked it. The increment comes before the check, and
// Drain marks removal before it reads the count, so Drain never misses a
// request that goes on to use e.
func (e *endpoint) acquire() bool {
	e.inflight.Add(1)
	if e.removed.Load() {
		e.release()
		return false
	}
	return true
}

func (e *endpoint) release() {
	if e.inflight.Add(-1) == 0 && e.watched.Load() {
		e.mu.Lock()
		if e.idle != nil {
			close(e.idle)
			e.idle = nil
		}
		e.mu.Unlock()
	}
}

// waitIdle returns when no request is in flight to e, or ctx ends.
func (e *endpoint) waitIdle(ctx context.Context) error {
	for {
		e.mu.Lock()
		if e.idle == nil {
			e.idle = make(chan struct{})
		}
		ch := e.idle
		e.mu.Unlock()
		e.watched.Store(true)
		if e.inflight.Load() == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (e *endpoint) ejected(now int64) bool {
	return e.ejectedUntil.Load() > now
}

// SetEndpoints replaces the ready endpoints of every Service. A Service port
// missing from eps has none. The change is visible to the next request.
func (p *Proxy) SetEndpoints(eps []ServiceEndpoints) {
	p.mu.Lock()
	defer p.mu.Unlock()

	seen := make(map[poolKey]bool)
	live := make(map[string]bool)
	for _, se := range eps {
		for port, list := range se.Ports {
			key := poolKey{se.Namespace, se.Name, port}
			pl := p.poolLocked(key)
			set := make([]*endpoint, 0, len(list))
			dup := make(map[string]bool, len(list))
			for _, ep := range list {
				if ep.Address == "" || dup[ep.Address] {
					continue
				}
				dup[ep.Address] = true
				e := p.endpointLocked(ep)
				live[ep.Address] = true
				set = append(set, e)
			}
			pl.set.Store(&set)
			seen[key] = true
		}
	}
	for key, pl := range p.pools {
		if !seen[key] && len(pl.endpoints()) > 0 {
			pl.set.Store(&[]*endpoint{})
		}
	}
	for addr, e := range p.eps {
		if live[addr] {
			continue
		}
		e.removed.Store(true)
		p.up.closeIdle(addr)
		if e.inflight.Load() == 0 {
			delete(p.eps, addr)
		}
	}
	p.gcPoolsLocked()
}

// endpointLocked returns the endpoint for ep.Address, reviving one that
// left rotation earlier so its counters carry on.
func (p *Proxy) endpointLocked(ep Endpoint) *endpoint {
	e := p.eps[ep.Address]
	if e == nil {
		e = &endpoint{addr: ep.Address}
		p.eps[ep.Address] = e
	}
	e.info = ep
	e.removed.Store(false)
	return e
}

func (p *Proxy) poolLocked(key poolKey) *pool {
	pl := p.pools[key]
	if pl == nil {
		pl = &pool{key: key, label: poolLabel(key)}
		pl.m = p.metrics.forPool(pl.label)
		p.pools[key] = pl
	}
	return pl
}

// gcPoolsLocked forgets pools that neither the table nor any endpoint uses.
func (p *Proxy) gcPoolsLocked() {
	for key, pl := range p.pools {
		if len(pl.endpoints()) == 0 && !p.referenced[key] {
			delete(p.pools, key)
			p.metrics.forgetPool(pl.label)
		}
	}
}

// Drain waits until no request is in flight to any of addrs, or ctx ends.
// Call it after SetEndpoints took the addresses out of rotation. Upgraded
// connections (WebSocket) count as in flight until they close.
func (p *Proxy) Drain(ctx context.Context, addrs []string) error {
	p.mu.Lock()
	list := make([]*endpoint, 0, len(addrs))
	for _, a := range addrs {
		if e := p.eps[a]; e != nil {
			list = append(list, e)
		}
	}
	p.mu.Unlock()

	for _, e := range list {
		if err := e.waitIdle(ctx); err != nil {
			return err
		}
	}
	return nil
}

// pick chooses an endpoint of list for a request, skipping those already
// tried. Ejected endpoints are skipped too unless every untried endpoint is
// ejected: then ejection is ignored (Envoy's panic mode), because sending to
// a suspect endpoint beats failing for certain.
func (pl *pool) pick(list []*endpoint, now int64, tried []*endpoint) *endpoint {
	n := len(list)
	if n == 0 {
		return nil
	}
	usable := func(e *endpoint, strict bool) bool {
		if strict && e.ejected(now) {
			return false
		}
		for _, t := range tried {
			if t == e {
				return false
			}
		}
		return true
	}
	if lbPolicy(pl.policy.Load()) == leastRequest && n > 1 {
		// Power of two choices: two distinct random endpoints, fewer
		// requests in flight wins.
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := list[i], list[j]
		ua, ub := usable(a, true), usable(b, true)
		switch {
		case ua && ub:
			if b.inflight.Load() < a.inflight.Load() {
				return b
			}
			return a
		case ua:
			return a
		case ub:
			return b
		}
	}
	start := int(pl.rr.Add(1) % uint64(n))
	for _, strict := range [2]bool{true, false} {
		for k := 0; k < n; k++ {
			e := list[(start+k)%n]
			if usable(e, strict) {
				return e
			}
		}
	}
	return nil
}

// Passive health. A result only ever moves one endpoint's counters; the
// share of ejected endpoints is checked against the pool that saw it.

func (p *Proxy) observeSuccess(e *endpoint, now int64) {
	if e.fails5xx.Load() != 0 {
		e.fails5xx.Store(0)
	}
	if e.failsConnect.Load() != 0 {
		e.failsConnect.Store(0)
	}
	// An endpoint healthy for a base ejection time after its last ejection
	// earns one multiplier back, so old trouble stops lengthening new ones.
	if n := e.ejections.Load(); n > 0 {
		until := e.ejectedUntil.Load()
		if now-until > int64(p.opts.BaseEjectionTime) {
			e.ejections.CompareAndSwap(n, n-1)
			e.ejectedUntil.CompareAndSwap(until, now)
		}
	}
}

// observeStatus records a response's status: a 5xx counts against e.
func (p *Proxy) observeStatus(pl *pool, e *endpoint, status int, now int64) {
	if status >= 500 {
		p.observe5xx(pl, e, now)
	} else {
		p.observeSuccess(e, now)
	}
}

func (p *Proxy) observe5xx(pl *pool, e *endpoint, now int64) {
	e.failsConnect.Store(0)
	if int(e.fails5xx.Add(1)) >= p.opts.Consecutive5xx {
		p.eject(pl, e, now, "consecutive 5xx")
	}
}

func (p *Proxy) observeConnectFailure(pl *pool, e *endpoint, now int64) {
	if int(e.failsConnect.Add(1)) >= p.opts.ConnectFailures {
		p.eject(pl, e, now, "connect failure")
	}
}

func (p *Proxy) eject(pl *pool, e *endpoint, now int64, reason string) {
	if e.ejected(now) {
		return
	}
	list := pl.endpoints()
	ejected := 0
	for _, o := range list {
		if o != e && o.ejected(now) {
			ejected++
		}
	}
	// Never eject the last usable endpoint. Past the first ejection, keep
	// to the cap (the first is always allowed, as in Envoy, so that a small
	// cap on a small Service still ejects something).
	if ejected+1 >= len(list) {
		return
	}
	if ejected > 0 && (ejected+1)*100 > p.opts.MaxEjectionPercent*len(list) {
		return
	}
	n := e.ejections.Add(1)
	d := p.opts.BaseEjectionTime * time.Duration(n)
	if d > p.opts.MaxEjectionTime || d <= 0 {
		d = p.opts.MaxEjectionTime
	}
	e.ejectedUntil.Store(now + int64(d))
	e.fails5xx.Store(0)
	e.failsConnect.Store(0)
	pl.m.ejection()
	p.opts.Logger.Warn("ejected endpoint", "service", pl.label, "endpoint", e.addr,
		"reason", reason, "duration", d, "ejections", n)
}
