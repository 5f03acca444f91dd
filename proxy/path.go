package proxy

import (
	"net/url"
	"strings"
)

// cleanPath returns the path that is both routed and forwarded, and false
// when the request must be rejected. The input is the escaped path as sent.
//
// Percent-escapes of unreserved characters are decoded (RFC 3986 6.2.2.2),
// so "%2E%2E" is a dot segment; runs of "/" are merged; "." and ".."
// segments are resolved (RFC 3986 5.2.4), and ".." above the root is
// rejected. Every other escape is kept byte for byte: "%2F" stays an
// encoded slash inside one segment, as the backend will see it.
func cleanPath(p string) (string, bool) {
	if p == "" || p[0] != '/' {
		return "", false
	}
	if isClean(p) {
		return p, true
	}
	return cleanSlow(p)
}

// isClean reports whether p needs no rewriting; it keeps the common case
// free of allocations.
func isClean(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			return false
		case '/':
			rest := p[i+1:]
			if rest == "" {
				continue
			}
			if rest[0] == '/' {
				return false
			}
			if rest[0] == '.' {
				if len(rest) == 1 || rest[1] == '/' {
					return false
				}
				if rest[1] == '.' && (len(rest) == 2 || rest[2] == '/') {
					return false
				}
			}
		}
	}
	return true
}

func cleanSlow(p string) (string, bool) {
	dec, ok := decodeUnreserved(p)
	if !ok {
		return "", false
	}
	segs := strings.Split(dec[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "":
			trailing = last
			continue
		case ".":
			trailing = last
			continue
		case "..":
			if len(out) == 0 {
				return "", false
			}
			out = out[:len(out)-1]
			trailing = last
			continue
		}
		out = append(out, s)
		trailing = false
	}
	var b strings.Builder
	b.Grow(len(dec))
	for _, s := range out {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing || len(out) == 0 {
		b.WriteByte('/')
	}
	return b.String(), true
}

// decodeUnreserved decodes the escapes of ALPHA, DIGIT, "-", ".", "_" and
// "~" and rejects malformed escapes.
func decodeUnreserved(p string) (string, bool) {
	if strings.IndexByte(p, '%') < 0 {
		return p, true
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", false
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(v) {
			b = append(b, v)
		} else {
			b = append(b, p[i:i+3]...)
		}
		i += 2
	}
	return string(b), true
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// rulePath brings an Ingress path into the form requests are compared in:
// escaped as on the wire, then cleaned like a request path.
func rulePath(p string) (string, bool) {
	if p == "" {
		p = "/"
	}
	esc := (&url.URL{Path: p}).EscapedPath()
	return cleanPath(esc)
}

// prefixKey drops the trailing slash of a Prefix rule: the Kubernetes docs
// ignore it ("/foo/" matches "/foo"). The root becomes "".
func prefixKey(p string) string {
	return strings.TrimSuffix(p, "/")
}

// prefixMatch reports whether path lies under the prefix key q, element by
// element: "/foo" covers "/foo", "/foo/" and "/foo/bar", not "/foobar".
func prefixMatch(q, path string) bool {
	if !strings.HasPrefix(path, q) {
		return false
	}
	return len(path) == len(q) || path[len(q)] == '/'
}

// hostKey returns the Host header's name for matching: port removed,
// lower case, one trailing dot dropped. It allocates only when the header
// has upper-case letters.
func hostKey(h string) string {
	if h == "" {
		return ""
	}
	if h[0] == '[' {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[1:i]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if 'A' <= h[i] && h[i] <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// parentDomain returns what a one-label wildcard would be keyed by:
// "bar.foo.com" gives "foo.com". A single label has none.
func parentDomain(h string) string {
	i := strings.IndexByte(h, '.')
	if i <= 0 || i == len(h)-1 {
		return ""
	}
	return h[i+1:]
}
