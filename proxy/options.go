package proxy

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for the zero fields of Options.
const (
	DefaultIngressClass          = "vigil"
	DefaultReadHeaderTimeout     = 10 * time.Second
	DefaultBodyIdleTimeout       = 60 * time.Second
	DefaultIdleTimeout           = 120 * time.Second
	DefaultWriteIdleTimeout      = 60 * time.Second
	DefaultMaxHeaderBytes        = 32 << 10
	DefaultDialTimeout           = 2 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultUpstreamIdleTimeout   = 60 * time.Second
	DefaultMaxIdleConnsPerHost   = 1024
	DefaultMaxRetries            = 2
	DefaultMaxBufferedBody       = 64 << 10
	DefaultConsecutive5xx        = 5
	DefaultConnectFailures       = 1
	DefaultBaseEjectionTime      = 30 * time.Second
	DefaultMaxEjectionTime       = 5 * time.Minute
	DefaultMaxEjectionPercent    = 50
	DefaultShutdownTimeout       = 30 * time.Second
)

// Options configures a Proxy. A zero field takes the default named in its
// comment; a negative duration disables that timeout.
type Options struct {
	// IngressClass selects the Ingresses whose spec.ingressClassName (or the
	// legacy kubernetes.io/ingress.class annotation) equals it. Default "vigil".
	IngressClass string
	// ServeClassless also serves Ingresses that name no class. The zero value
	// is false; vigil's own configuration defaults it to true.
	ServeClassless bool
	// TrustedProxies are the peers whose X-Forwarded-* and Forwarded headers
	// are kept and extended. From any other peer they are replaced. Default
	// none.
	TrustedProxies []netip.Prefix
	// AccessLog logs one structured line per request at info level.
	// Default off: the hot path does no logging.
	AccessLog bool
	// Logger receives access logs and state changes (ejections, listener
	// errors). Default slog.Default().
	Logger *slog.Logger
	// Registerer, when not nil, receives the proxy's metrics.
	Registerer prometheus.Registerer
	// NetHTTPOnly has net/http serve every request of the plain listener,
	// as it serves TLS, instead of the direct HTTP/1.1 loop serving bodiless
	// GET and HEAD itself (see Serve). Default false. It costs about a
	// third more CPU per request.
	NetHTTPOnly bool

	// ReadHeaderTimeout bounds reading a client's request head. Default 10s.
	ReadHeaderTimeout time.Duration
	// BodyIdleTimeout bounds each read of a request body, so a client that
	// stops sending mid-body is cut off. Default 60s. (A whole-request
	// deadline would also cut long uploads and streams.)
	BodyIdleTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections. Default 120s.
	IdleTimeout time.Duration
	// WriteIdleTimeout bounds each write of a response body to a client, so a
	// client that stops reading cannot hold a backend connection forever.
	// Default 60s.
	WriteIdleTimeout time.Duration
	// MaxHeaderBytes caps the size of a request head. Default 32 KiB; larger
	// heads get 431.
	MaxHeaderBytes int

	// DialTimeout bounds connecting to a backend. Default 2s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a backend's response head
	// once the request is sent. Default 60s; expiry answers 504.
	ResponseHeaderTimeout time.Duration
	// UpstreamIdleTimeout closes idle backend connections. Default 60s.
	UpstreamIdleTimeout time.Duration
	// MaxIdleConnsPerHost is the idle keep-alive pool per backend address.
	// Default 1024 (Go's default of 2 makes every burst dial anew).
	MaxIdleConnsPerHost int

	// MaxRetries is how many further endpoints a request may try after the
	// first. Default 2. Negative disables retries.
	MaxRetries int
	// MaxBufferedBody is the largest request body (by Content-Length) read
	// into memory before forwarding so that it can be replayed on a retry.
	// Larger or chunked bodies are streamed and retried only when no byte of
	// them was sent. Default 64 KiB. Negative disables buffering.
	MaxBufferedBody int64

	// Consecutive5xx ejects an endpoint after this many 5xx responses in a
	// row. Default 5.
	Consecutive5xx int
	// ConnectFailures ejects an endpoint after this many failed connects or
	// resets in a row. Default 1: nothing listens there.
	ConnectFailures int
	// BaseEjectionTime is the first ejection's length; each further ejection
	// of the same endpoint lasts one more multiple, up to MaxEjectionTime.
	// Defaults 30s and 5m.
	BaseEjectionTime time.Duration
	MaxEjectionTime  time.Duration
	// MaxEjectionPercent caps the share of a Service's endpoints ejected at
	// once. The last usable endpoint is never ejected. Default 50.
	MaxEjectionPercent int

	// ShutdownTimeout bounds the graceful shutdown of Serve. Default 30s.
	ShutdownTimeout time.Duration

	// now is the clock for ejections; tests replace it.
	now func() time.Time
}

func (o *Options) setDefaults() {
	if o.IngressClass == "" {
		o.IngressClass = DefaultIngressClass
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	dur := func(d *time.Duration, def time.Duration) {
		switch {
		case *d == 0:
			*d = def
		case *d < 0:
			*d = 0
		}
	}
	dur(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	dur(&o.BodyIdleTimeout, DefaultBodyIdleTimeout)
	dur(&o.IdleTimeout, DefaultIdleTimeout)
	dur(&o.WriteIdleTimeout, DefaultWriteIdleTimeout)
	dur(&o.DialTimeout, DefaultDialTimeout)
	dur(&o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	dur(&o.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
	dur(&o.BaseEjectionTime, DefaultBaseEjectionTime)
	dur(&o.MaxEjectionTime, DefaultMaxEjectionTime)
	dur(&o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	switch {
	case o.MaxBufferedBody == 0:
		o.MaxBufferedBody = DefaultMaxBufferedBody
	case o.MaxBufferedBody < 0:
		o.MaxBufferedBody = 0
	}
	if o.Consecutive5xx <= 0 {
		o.Consecutive5xx = DefaultConsecutive5xx
	}
	if o.ConnectFailures <= 0 {
		o.ConnectFailures = DefaultConnectFailures
	}
	if o.MaxEjectionPercent <= 0 || o.MaxEjectionPercent > 100 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	if o.now == nil {
		o.now = time.Now
	}
}
