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
type httpHandler struct {
	url     string
	host    string // Host header override, "" for the URL's
	header  http.Header
	client  *http.Client
	ownPool *http.Transport // per-target pool in ConnReuse mode; nil otherwise
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

	var tr *http.Transport
	if env.conns == ConnLinger {
		tr = env.lingerHTTP
	} else {
		// One small pool per target: runs never overlap, so one idle
		// connection is enough, and it is dropped when the target goes.
		tr = newTransport(plainDialer())
		tr.MaxIdleConnsPerHost = 1
		tr.IdleConnTimeout = 2*t.Spec.Period + t.Spec.Timeout
		h.ownPool = tr
	}
	h.client = &http.Client{Transport: tr, CheckRedirect: checkRedirect}
	return h
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return outcome{}, fmt.Errorf("build probe request: %w", err)
	}
	req.Header = h.header
	if h.host != "" {
		req.Host = h.host
	}

	resp, err := h.client.Do(req)
	if err != nil {
		return failure("%s", transportError(err)), nil
	}
	defer resp.Body.Close()

	// The body is read, capped, so that a server stalling in its body fails
	// within the timeout; it is never echoed (the kubelet's blind-SSRF issue).
	if _, err := readCapped(resp.Body, maxBodyBytes); err != nil {
		return failure("read probe response body: %s", transportError(err)), nil
	}

	code := resp.StatusCode
	if code < http.StatusOK || code >= http.StatusBadRequest {
		return failure("HTTP probe failed with statuscode: %d", code), nil
	}
	o := success()
	if code >= 300 {
		if loc, err := resp.Location(); err == nil && loc.Hostname() != resp.Request.URL.Hostname() {
			o.warning = fmt.Sprintf("Probe terminated redirects to another host, not followed: "+
				"statuscode %d, Location %s", code, loc.Redacted())
		}
	}
	return o, nil
}

func (h *httpHandler) close() {
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
