package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy routes HTTP requests to Service endpoints by Ingress rules.
// Requests read an immutable table and per-endpoint atomics only; SetConfig
// and SetEndpoints serialise among themselves on a mutex requests never take.
type Proxy struct {
	opts      Options
	table     atomic.Pointer[table]
	transport *http.Transport // requests with a body or an Upgrade
	up        *upstream       // the others
	metrics   *metrics
	notFound  *route

	mu         sync.Mutex // control plane only
	pools      map[poolKey]*pool
	eps        map[string]*endpoint
	referenced map[poolKey]bool
}

// New returns a Proxy with an empty table: every request answers 404 until
// SetConfig.
func New(opts Options) *Proxy {
	opts.setDefaults()
	p := &Proxy{
		opts:  opts,
		pools: make(map[poolKey]*pool),
		eps:   make(map[string]*endpoint),
	}
	p.metrics = newMetrics(p, opts.Registerer)
	p.notFound = &route{m: p.metrics.forRoute("", "")}
	p.table.Store(&table{certs: &certTable{}})
	d := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		},
		MaxIdleConnsPerHost:   opts.MaxIdleConnsPerHost,
		IdleConnTimeout:       opts.UpstreamIdleTimeout,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		// Bodies pass through as sent; the client negotiates encoding.
		DisableCompression: true,
		// Backends speak HTTP/1.1; a non-nil empty map turns h2 off.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	p.up = &upstream{
		dial:          p.transport.DialContext,
		maxIdle:       opts.MaxIdleConnsPerHost,
		idleTimeout:   opts.UpstreamIdleTimeout,
		headerTimeout: opts.ResponseHeaderTimeout,
		now:           time.Now,
	}
	return p
}

// dialError marks a failure to connect: the request never reached the
// backend and may go to another endpoint whatever its method.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial backend: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func isDialError(err error) bool {
	var de *dialError
	return errors.As(err, &de)
}
