package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// maxBodyBytes caps what is read of a response body; hitting it is not a
	// failure (the status decides), the rest is left unread.
	maxBodyBytes = 10 << 10
	// maxRedirects is how many same-host redirects are followed.
	maxRedirects = 10
)

// httpHandler probes httpGet. The request is built once per target.
//
// In ConnReuse mode a plain-HTTP probe goes through keepAlive (one kept
// connection, no goroutines of its own); a same-host redirect it receives
// is followed through net/http on the shared redirect transport. HTTPS in
// ConnReuse mode keeps a per-target net/http pool, and ConnLinger uses the
// shared one-connection-per-run transport.
type httpHandler struct {
	url     string
	host    string // Host header override, "" for the URL's
	header  http.Header
	client  *http.Client
	ownPool *http.Transport // per-target pool for HTTPS in ConnReuse mode; nil otherwise

	ka     *keepAlive   // plain HTTP in ConnReuse mode; nil otherwise
	follow *http.Client // follows redirects received on ka
}

func newHTTPHandler(t *Target, env *handlerEnv) handler {
	g := t.Spec.Handler.HTTPGet
	host, err := env.hostFor(t, g.Host)
	if err != nil {
		return errHandler{err}
	}
	port, err := resolvePort(g.Port, t)
	if err != nil {
		return errHandler{err}
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	if scheme != "http" && scheme != "https" {
		return errHandler{fmt.Errorf("httpGet scheme %q: want HTTP or HTTPS", g.Scheme)}
	}

	h := &httpHandler{url: probeURL(scheme, host, port, g.Path)}
	h.header, h.host = probeHeader(g.HTTPHeaders, env.userAgent)

	idle := 2*t.Spec.Period + t.Spec.Timeout
	if env.conns == ConnReuse && scheme == "http" {
		req, err := h.request(context.Background())
		if err == nil {
			h.ka, err = newKeepAlive(req, net.JoinHostPort(host, strconv.Itoa(port)), plainDialer(), idle)
		}
		if err == nil {
			h.follow = &http.Client{Transport: env.redirectHTTP}
			return h
		}
		// A request keepAlive cannot write as net/http would: net/http
		// decides (and reports the error on every run).
		h.ka = nil
	}

	var tr *http.Transport
	if env.conns == ConnLinger {
		tr = env.lingerHTTP
	} else {
		// One small pool per target: runs never overlap, so one idle
		// connection is enough, and it is dropped when the target goes.
		tr = newTransport(plainDialer())
		tr.MaxIdleConnsPerHost = 1
		tr.IdleConnTimeout = idle
		h.ownPool = tr
	}
	h.client = &http.Client{Transport: tr, CheckRedirect: checkRedirect}
	return h
}

// request is the probe's request for the handler's URL.
func (h *httpHandler) request(ctx context.Context) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, fmt.Errorf("build probe request: %w", err)
	}
	req.Header = h.header
	if h.host != "" {
		req.Host = h.host
	}
	return req, nil
}

// newTransport is an HTTP/1.1 transport that never takes a proxy from the
// environment, never asks for compression and does not verify certificates
// (probes target pod IPs, which no certificate names).
func newTransport(d *net.Dialer) *http.Transport {
	return &http.Transport{
		Proxy:              nil,
		DialContext:        d.DialContext,
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
		DisableCompression: true,
		MaxIdleConns:       0,
		// Headers are small; a server sending megabytes of them is failing.
		MaxResponseHeaderBytes: 64 << 10,
		// A probe request is a few hundred bytes and the body is capped:
		// small buffers keep an idle pooled connection cheap (live heap is
		// what the GC scans, and lateness at 10,000 targets is GC-bound).
		WriteBufferSize: 512,
		ReadBufferSize:  2 << 10,
	}
}

// probeURL builds the URL from the handler's path. The path is parsed as a
// URL so that a query string reaches the server as written.
func probeURL(scheme, host string, port int, path string) string {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(path)
	if err != nil {
		u = &url.URL{Path: path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	return u.String()
}

// probeHeader builds the request header: the handler's headers (repeats
// kept), then the defaults User-Agent and Accept unless the handler named
// them; an explicit empty value deletes a default. A Host entry becomes the
// request's Host instead of a header.
func probeHeader(hs []corev1.HTTPHeader, userAgent string) (http.Header, string) {
	h := http.Header{}
	for _, e := range hs {
		h.Add(e.Name, e.Value)
	}
	host := h.Get("Host")
	h.Del("Host")
	for name, def := range map[string]string{"User-Agent": userAgent, "Accept": "*/*"} {
		v, named := h[name]
		switch {
		case !named:
			h.Set(name, def)
		case len(v) == 1 && v[0] == "":
			h.Del(name)
		}
	}
	if _, ok := h["User-Agent"]; !ok {
		// Go sends its own User-Agent when none is set; an empty one keeps it out.
		h["User-Agent"] = []string{""}
	}
	return h, host
}

// checkRedirect follows redirects to the same host, up to maxRedirects. A
// redirect to another host is not followed: no connection is made there,
// and the 3xx response is returned as the final one.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Hostname() != via[0].URL.Hostname() {
		return http.ErrUseLastResponse
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

func (h *httpHandler) probe(ctx context.Context) (outcome, error) {
	if h.ka != nil {
		deadline, _ := ctx.Deadline()
		return h.probeKeepAlive(ctx, deadline)
	}
	req, err := h.request(ctx)
	if err != nil {
		return outcome{}, err
	}
	return h.send(h.client, req), nil
}

// send runs req through client and judges the response.
func (h *httpHandler) send(client *http.Client, req *http.Request) outcome {
	resp, err := client.Do(req)
	if err != nil {
		return failure("%s", transportError(err))
	}
	defer resp.Body.Close()

	// The body is read, capped, so that a server stalling in its body fails
	// within the timeout; it is never echoed (the kubelet's blind-SSRF issue).
	if _, err := readCapped(resp.Body, maxBodyBytes); err != nil {
		return failure("read probe response body: %s", transportError(err))
	}
	return judge(resp)
}

// probeBy implements deadlineHandler: on the kept connection the deadline
// goes on the socket; through net/http it needs a context.
func (h *httpHandler) probeBy(ctx context.Context, deadline time.Time) (outcome, error) {
	if h.ka != nil {
		return h.probeKeepAlive(ctx, deadline)
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return h.probe(ctx)
}

// probeKeepAlive runs the probe on the kept connection. A redirect to the
// same host is followed as http.Client would, with checkRedirect seeing the
// first request as the first of the chain.
func (h *httpHandler) probeKeepAlive(ctx context.Context, deadline time.Time) (outcome, error) {
	resp, readErr, err := h.ka.do(ctx, deadline, maxBodyBytes)
	if err != nil {
		return failure("%s", transportError(err)), nil
	}
	next, err := redirectRequest(ctx, h.ka.req, resp)
	if err != nil {
		return failure("%s", err), nil
	}
	if next != nil {
		// The redirect's own body does not matter (http.Client drains
		// and drops it too).
		first := h.ka.req
		switch err := checkRedirect(next, []*http.Request{first}); {
		case err == nil:
			if !deadline.IsZero() {
				dctx, cancel := context.WithDeadline(next.Context(), deadline)
				defer cancel()
				next = next.WithContext(dctx)
			}
			client := *h.follow
			client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
				return checkRedirect(req, append([]*http.Request{first}, via...))
			}
			return h.send(&client, next), nil
		case !errors.Is(err, http.ErrUseLastResponse):
			return failure("%s", err), nil
		}
		// Not followed: the 3xx is the final response.
	}
	if readErr != nil {
		return failure("read probe response body: %s", transportError(readErr)), nil
	}
	return judge(resp), nil
}

// redirectRequest is the request http.Client would make to follow resp, or
// nil when resp is not a redirect it follows.
func redirectRequest(ctx context.Context, req *http.Request, resp *http.Response) (*http.Request, error) {
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return nil, nil
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, nil
	}
	u, err := req.URL.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("failed to parse Location header %q: %w", loc, err)
	}
	next, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	next.Header = req.Header
	// A Host override survives a relative redirect only, as in http.Client.
	if req.Host != "" && req.Host != req.URL.Host {
		if l, _ := url.Parse(loc); l != nil && !l.IsAbs() {
			next.Host = req.Host
		}
	}
	return next, nil
}

// judge turns the final response into the outcome.
func judge(resp *http.Response) outcome {
	code := resp.StatusCode
	if code < http.StatusOK || code >= http.StatusBadRequest {
		return failure("HTTP probe failed with statuscode: %d", code)
	}
	o := success()
	if code >= 300 {
		if loc, err := resp.Location(); err == nil && loc.Hostname() != resp.Request.URL.Hostname() {
			o.warning = fmt.Sprintf("Probe terminated redirects to another host, not followed: "+
				"statuscode %d, Location %s", code, loc.Redacted())
		}
	}
	return o
}

func (h *httpHandler) close() {
	if h.ka != nil {
		h.ka.close()
	}
	if h.ownPool != nil {
		h.ownPool.CloseIdleConnections()
	}
}

// transportError unwraps the *url.Error wrapper, whose text repeats the
// method and URL, to the Go error text the kubelet reports.
func transportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
