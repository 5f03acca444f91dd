package proxy

import (
	"bytes"
	"unsafe"

	"github.com/vigil-agent/vigil/internal/h1"
)

// The direct HTTP/1.1 path (h1.go) scans request heads in place with
// internal/h1, which accepts a strict subset of HTTP/1.1, and narrows it
// further to what it forwards itself: anything else, or anything unsure,
// is left to net/http, which serves or rejects it as it always has. Being
// strict is what keeps the two paths equivalent.

// fieldKind sorts fields by what a proxy does with them.
type fieldKind uint8

const (
	fieldPass      fieldKind = iota // forwarded as sent
	fieldHop                        // hop-by-hop: dropped
	fieldTE                         // dropped, "trailers" kept
	fieldXFF                        // X-Forwarded-For
	fieldXFHost                     // X-Forwarded-Host
	fieldXFProto                    // X-Forwarded-Proto
	fieldForwarded                  // Forwarded, X-Real-Ip, X-Forwarded-Port
	fieldUA                         // User-Agent: forwarded, noted for the log
	fieldLength                     // Content-Length
	fieldServer                     // Server (responses)
	fieldDate                       // Date (responses)
)

// headerKinds maps the lower-case names the parsers treat specially. Names
// that make a message unfit for the direct path are not here: they are
// checked first (see isIndirect).
var headerKinds = map[string]fieldKind{
	"connection":          fieldHop,
	"proxy-connection":    fieldHop,
	"keep-alive":          fieldHop,
	"trailer":             fieldHop,
	"proxy-authenticate":  fieldHop,
	"proxy-authorization": fieldHop,
	"te":                  fieldTE,
	"x-forwarded-for":     fieldXFF,
	"x-forwarded-host":    fieldXFHost,
	"x-forwarded-proto":   fieldXFProto,
	"forwarded":           fieldForwarded,
	"x-real-ip":           fieldForwarded,
	"x-forwarded-port":    fieldForwarded,
	"user-agent":          fieldUA,
	"content-length":      fieldLength,
	"server":              fieldServer,
	"date":                fieldDate,
}

// kindOf returns how a field name is treated, without allocating.
func kindOf(name []byte) fieldKind {
	var buf [24]byte
	if len(name) > len(buf) {
		return fieldPass
	}
	lower := buf[:len(name)]
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return headerKinds[string(lower)]
}

// pathChars marks the bytes a request path may hold on the direct path:
// unreserved, sub-delims, ":", "@", "/" and "%" (checked to start an
// escape). For such a path net/url's EscapedPath is the path as sent, so
// both servers route on the same string. Others go to net/http.
var pathChars = h1.ByteSet("-._~!$&'()*+,;=:@/%")

// hostChars marks the bytes of a Host value the direct path takes: names,
// IPv4 and bracketed IPv6 literals, and a port.
var hostChars = h1.ByteSet("-._:[]")

// reqHead is a request head the direct path forwards. Its slices point
// into the client connection's read buffer and are valid until the next
// read from it.
type reqHead struct {
	method string // "GET" or "HEAD"
	target []byte // path and query as sent
	path   []byte
	query  []byte // after "?", possibly empty
	host   []byte
	ua     []byte
	fields []h1.Field  // all but Host
	kinds  []fieldKind // of fields, by index
	conn   h1.Conn
	size   int // bytes of the head, through its empty line
}

// isIndirect names the request fields that net/http must handle: framing
// of a body, Expect, protocol switches.
func isIndirect(name []byte) bool {
	switch len(name) {
	case 6:
		return bytes.EqualFold(name, []byte("Expect"))
	case 7:
		return bytes.EqualFold(name, []byte("Upgrade"))
	case 17:
		return bytes.EqualFold(name, []byte("Transfer-Encoding"))
	}
	return false
}

// scanRequest scans the request head at the start of buf into h, reusing
// its slices' arrays. Only GET and HEAD in HTTP/1.1, in origin form, with
// one plain Host, no body and no Upgrade or Expect are h1.Done.
func scanRequest(buf []byte, h *reqHead) h1.Result {
	*h = reqHead{fields: h.fields[:0], kinds: h.kinds[:0]}
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		if len(buf) > 0 && buf[0] != 'G' && buf[0] != 'H' {
			return h1.Other
		}
		return h1.More
	}
	if eol == 0 || buf[eol-1] != '\r' {
		return h1.Other
	}
	line := buf[:eol-1]
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		h.method, line = "GET", line[4:]
	case bytes.HasPrefix(line, []byte("HEAD /")):
		h.method, line = "HEAD", line[5:]
	default:
		return h1.Other
	}
	target, version, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(version) != "HTTP/1.1" {
		return h1.Other
	}
	h.target = target
	path, query, _ := bytes.Cut(target, []byte("?"))
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !pathChars[c] {
			return h1.Other
		}
		if c == '%' && (i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2])) {
			return h1.Other
		}
	}
	for _, c := range query {
		if c <= ' ' || c >= 0x7f {
			return h1.Other
		}
	}
	h.path, h.query = path, query

	fields, n, res := h1.ScanFields(buf[eol+1:], h.fields)
	h.fields = fields
	if res != h1.Done {
		return res
	}
	h.size = eol + 1 + n
	hosts := 0
	kept := h.fields[:0]
	for _, f := range h.fields {
		if isIndirect(f.Name) {
			return h1.Other
		}
		kind := kindOf(f.Name)
		switch {
		case h1.Is(f.Name, "Host"):
			if hosts++; hosts > 1 || len(f.Value) == 0 {
				return h1.Other
			}
			for _, c := range f.Value {
				if !hostChars[c] {
					return h1.Other
				}
			}
			h.host = f.Value
			continue
		case kind == fieldLength:
			// An empty body may be announced; any other is net/http's.
			if string(f.Value) != "0" {
				return h1.Other
			}
			continue
		case kind == fieldUA:
			h.ua = f.Value
		}
		kept = append(kept, f)
		h.kinds = append(h.kinds, kind)
	}
	h.fields = kept
	if hosts == 0 {
		return h1.Other
	}
	h.conn.Scan(h.fields)
	if h.conn.Upgrade || h.conn.TooMany {
		return h1.Other
	}
	return h1.Done
}

// transient returns b as a string without copying. The string is only
// valid while b is: the direct path uses it for lookups and copies, never
// keeps it past the read buffer's next fill.
func transient(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
