package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// isHopByHop names the headers that RFC 9110 7.6.1 reserves for one
// connection, plus the proxy-auth pair, which is addressed to us.
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Te", "Transfer-Encoding",
		"Upgrade", "Proxy-Authenticate", "Proxy-Authorization", "Trailer":
		return true
	}
	return false
}

// removeHopByHop strips the hop-by-hop headers of h, including every
// header named by any token of any Connection header (RFC 9110 7.6.1).
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = textproto.TrimString(tok); tok != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	for k := range h {
		if isHopByHop(k) {
			delete(h, k)
		}
	}
}

// hasToken reports whether a comma-separated header list holds tok,
// ignoring case.
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(textproto.TrimString(t), tok) {
				return true
			}
		}
	}
	return false
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !hasToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

var (
	protoHTTP   = []string{"http"}
	protoHTTPS  = []string{"https"}
	serverVigil = []string{"vigil"}
	teTrailers  = []string{"trailers"}
	noUserAgent = []string{""}
)

// prepareRequestHeaders turns the client's header into the backend's, in
// place: the server reads no request header once the handler runs.
// It returns the requested upgrade protocol, if any.
func (p *Proxy) prepareRequestHeaders(r *http.Request) string {
	h := r.Header
	up := upgradeType(h)
	trailers := hasToken(h["Te"], "trailers")
	removeHopByHop(h)
	if up != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{up}
	}
	if trailers {
		// gRPC needs "TE: trailers" to reach the backend.
		h["Te"] = teTrailers
	}
	// We answered (or will answer) 100-continue ourselves.
	delete(h, "Expect")
	// A client that sent no User-Agent has none forwarded, as on the
	// direct path; an empty value keeps Go's own from being added.
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = noUserAgent
	}
	p.setForwarded(r, h)
	return up
}

// setForwarded sets X-Forwarded-For, -Proto and -Host. What a client sent
// is kept (and For extended) only when the peer is a trusted proxy.
func (p *Proxy) setForwarded(r *http.Request, h http.Header) {
	ip := peerIP(r.RemoteAddr)
	trusted := p.trusted(ip)
	if !trusted {
		delete(h, "Forwarded")
		delete(h, "X-Real-Ip")
		delete(h, "X-Forwarded-Port")
		// One backing array for both values; full slice expressions keep
		// an append to one from overwriting the other.
		vals := [...]string{ip, r.Host}
		h["X-Forwarded-For"] = vals[0:1:1]
		h["X-Forwarded-Host"] = vals[1:2:2]
		if r.TLS != nil {
			h["X-Forwarded-Proto"] = protoHTTPS
		} else {
			h["X-Forwarded-Proto"] = protoHTTP
		}
		return
	}
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
	} else {
		h["X-Forwarded-For"] = []string{ip}
	}
	if len(h["X-Forwarded-Host"]) == 0 {
		h["X-Forwarded-Host"] = []string{r.Host}
	}
	if len(h["X-Forwarded-Proto"]) == 0 {
		if r.TLS != nil {
			h["X-Forwarded-Proto"] = protoHTTPS
		} else {
			h["X-Forwarded-Proto"] = protoHTTP
		}
	}
}

// peerIP returns the host part of a RemoteAddr without allocating.
func peerIP(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		addr = addr[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
}

// copyResponseHeaders copies a backend's header to the client's, dropping
// hop-by-hop fields. Slices are shared: the response is ours alone.
func copyResponseHeaders(dst, src http.Header) {
	var named []string
	for _, v := range src["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = textproto.TrimString(tok); tok != "" {
				named = append(named, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	for k, v := range src {
		if isHopByHop(k) || (named != nil && contains(named, k)) {
			continue
		}
		dst[k] = v
	}
	if _, ok := dst["Server"]; !ok {
		dst["Server"] = serverVigil
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
