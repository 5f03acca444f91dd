package proxy

import (
	"bytes"
	"unsafe"
)

// The direct HTTP/1.1 path (h1.go) parses request and response heads in
// place, in the connections' read buffers. The parsers accept a strict
// subset of HTTP/1.1: anything outside it, or anything they are unsure of,
// gets scanNotDirect, and the caller leaves the message to net/http, which
// either serves it or rejects it as it always has. Being strict is what
// keeps the two paths equivalent.

// scanResult says what a parser made of the bytes buffered so far.
type scanResult int

const (
	scanMore      scanResult = iota // no end of head yet: read more
	scanDone                        // a head the direct path forwards
	scanNotDirect                   // valid or not, for net/http to handle
)

// maxFields bounds the header fields of a head on the direct path.
const maxFields = 64

// maxConnTokens bounds the Connection tokens of a head on the direct path.
const maxConnTokens = 8

// field is one header field of a head, both slices in the read buffer.
type field struct {
	name, value []byte
	kind        fieldKind
}

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

// alnumAnd returns a byte set of the ASCII letters and digits and extra.
func alnumAnd(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range extra {
		t[c] = true
	}
	return t
}

// tokenChars marks the bytes of an RFC 9110 token (tchar).
var tokenChars = alnumAnd("!#$%&'*+-.^_`|~")

// pathChars marks the bytes a request path may hold on the direct path:
// unreserved, sub-delims, ":", "@", "/" and "%" (checked to start an
// escape). For such a path net/url's EscapedPath is the path as sent, so
// both servers route on the same string. Others go to net/http.
var pathChars = alnumAnd("-._~!$&'()*+,;=:@/%")

// hostChars marks the bytes of a Host value the direct path takes: names,
// IPv4 and bracketed IPv6 literals, and a port.
var hostChars = alnumAnd("-._:[]")

// validValue reports whether v is a field value net/http would accept
// unchanged: no control bytes but HTAB, no leading or trailing whitespace
// (the parser trimmed it).
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// trimOWS trims optional whitespace (SP, HTAB) from both ends.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// scanFields parses the header fields of buf, which starts past the start
// line. It appends them to fields and returns them with the offset just
// past the empty line that ends the head. Every line must end in CRLF; a
// bare LF, a folded line or a malformed field is scanNotDirect.
func scanFields(buf []byte, fields []field) ([]field, int, scanResult) {
	off := 0
	for {
		i := bytes.IndexByte(buf[off:], '\n')
		if i < 0 {
			return fields, 0, scanMore
		}
		if i == 0 || buf[off+i-1] != '\r' {
			return fields, 0, scanNotDirect
		}
		line := buf[off : off+i-1]
		off += i + 1
		if len(line) == 0 {
			return fields, off, scanDone
		}
		if len(fields) == maxFields {
			return fields, 0, scanNotDirect
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			// Also an obs-fold: its line starts with SP or HTAB.
			return fields, 0, scanNotDirect
		}
		v := trimOWS(line[colon+1:])
		if !validValue(v) {
			return fields, 0, scanNotDirect
		}
		fields = append(fields, field{name: line[:colon], value: v, kind: kindOf(line[:colon])})
	}
}

// connInfo is what the Connection fields of a head say.
type connInfo struct {
	close     bool
	keepAlive bool
	upgrade   bool
	tooMany   bool
	tokens    [maxConnTokens][]byte // names of further hop-by-hop fields
	n         int
}

// scanConnection reads every Connection field of fields into ci.
func scanConnection(fields []field, ci *connInfo) {
	for i := range fields {
		f := &fields[i]
		if f.kind != fieldHop || !bytes.EqualFold(f.name, []byte("Connection")) {
			continue
		}
		v := f.value
		for len(v) > 0 {
			var tok []byte
			tok, v, _ = bytes.Cut(v, []byte(","))
			tok = trimOWS(tok)
			switch {
			case len(tok) == 0:
			case bytes.EqualFold(tok, []byte("close")):
				ci.close = true
			case bytes.EqualFold(tok, []byte("keep-alive")):
				ci.keepAlive = true
			case bytes.EqualFold(tok, []byte("upgrade")):
				ci.upgrade = true
			case ci.n == maxConnTokens:
				ci.tooMany = true
			default:
				ci.tokens[ci.n] = tok
				ci.n++
			}
		}
	}
}

// names reports whether a Connection token names the field.
func (ci *connInfo) names(name []byte) bool {
	for _, t := range ci.tokens[:ci.n] {
		if bytes.EqualFold(t, name) {
			return true
		}
	}
	return false
}

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
	fields []field // all but Host
	conn   connInfo
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

// scanRequest parses the request head at the start of buf into h (whose
// fields slice it reuses). Only GET and HEAD in HTTP/1.1, in origin form,
// with one plain Host, no body and no Upgrade or Expect are scanDone.
func scanRequest(buf []byte, h *reqHead) scanResult {
	fields := h.fields[:0]
	*h = reqHead{}
	h.fields = fields
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		if len(buf) > 0 && buf[0] != 'G' && buf[0] != 'H' {
			return scanNotDirect
		}
		return scanMore
	}
	if eol == 0 || buf[eol-1] != '\r' {
		return scanNotDirect
	}
	line := buf[:eol-1]
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		h.method, line = "GET", line[4:]
	case bytes.HasPrefix(line, []byte("HEAD /")):
		h.method, line = "HEAD", line[5:]
	default:
		return scanNotDirect
	}
	target, version, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(version) != "HTTP/1.1" {
		return scanNotDirect
	}
	h.target = target
	path, query, _ := bytes.Cut(target, []byte("?"))
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !pathChars[c] {
			return scanNotDirect
		}
		if c == '%' && (i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2])) {
			return scanNotDirect
		}
	}
	for _, c := range query {
		if c <= ' ' || c >= 0x7f {
			return scanNotDirect
		}
	}
	h.path, h.query = path, query

	fields, n, res := scanFields(buf[eol+1:], h.fields)
	h.fields = fields
	if res != scanDone {
		return res
	}
	h.size = eol + 1 + n
	hosts := 0
	kept := h.fields[:0]
	for _, f := range h.fields {
		if isIndirect(f.name) {
			return scanNotDirect
		}
		switch {
		case len(f.name) == 4 && bytes.EqualFold(f.name, []byte("Host")):
			if hosts++; hosts > 1 || len(f.value) == 0 {
				return scanNotDirect
			}
			for _, c := range f.value {
				if !hostChars[c] {
					return scanNotDirect
				}
			}
			h.host = f.value
			continue
		case f.kind == fieldLength:
			// An empty body may be announced; any other is net/http's.
			if string(f.value) != "0" {
				return scanNotDirect
			}
			continue
		case f.kind == fieldUA:
			h.ua = f.value
		}
		kept = append(kept, f)
	}
	h.fields = kept
	if hosts == 0 {
		return scanNotDirect
	}
	scanConnection(h.fields, &h.conn)
	if h.conn.upgrade || h.conn.tooMany {
		return scanNotDirect
	}
	return scanDone
}

// respHead is a backend's response head the direct path relays. Its
// slices point into the backend connection's read buffer.
type respHead struct {
	status  int
	reason  []byte // the status line past the code, with its space
	http10  bool
	fields  []field
	conn    connInfo
	length  int64 // Content-Length; -1 when absent
	size    int
	bodyLen int64 // bytes of body that follow the head
}

// reusable reports whether the connection may carry another request once
// the body is read.
func (h *respHead) reusable() bool {
	if h.http10 {
		return h.conn.keepAlive && !h.conn.close
	}
	return !h.conn.close
}

// scanResponse parses the response head at the start of buf, the answer to
// a request with method, into h (whose fields slice it reuses). Responses
// whose body is delimited by Content-Length, or that have none, are
// scanDone; interim, chunked and close-delimited ones are not direct.
func scanResponse(buf []byte, method string, h *respHead) scanResult {
	fields := h.fields[:0]
	*h = respHead{fields: fields, length: -1}
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		return scanMore
	}
	if eol < 12 || buf[eol-1] != '\r' {
		return scanNotDirect
	}
	line := buf[:eol-1]
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		h.http10 = true
	default:
		return scanNotDirect
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return scanNotDirect
		}
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if h.status < 200 || h.status > 599 {
		return scanNotDirect
	}
	h.reason = line[12:]
	if len(h.reason) > 0 && h.reason[0] != ' ' || !validValue(h.reason) {
		return scanNotDirect
	}

	fields, n, res := scanFields(buf[eol+1:], h.fields)
	h.fields = fields
	if res != scanDone {
		return res
	}
	h.size = eol + 1 + n
	for _, f := range h.fields {
		switch {
		case len(f.name) == 17 && bytes.EqualFold(f.name, []byte("Transfer-Encoding")):
			return scanNotDirect
		case f.kind == fieldLength:
			if h.length >= 0 {
				return scanNotDirect
			}
			if h.length = parseLength(f.value); h.length < 0 {
				return scanNotDirect
			}
		}
	}
	scanConnection(h.fields, &h.conn)
	// A Connection token naming Content-Length would leave the body
	// unframed once the field is dropped; net/http re-frames it.
	if h.conn.tooMany || h.conn.n > 0 && h.conn.names([]byte("Content-Length")) {
		return scanNotDirect
	}
	switch {
	case method == "HEAD" || h.status == 204 || h.status == 304:
		h.bodyLen = 0
	case h.length >= 0:
		h.bodyLen = h.length
	default:
		// Delimited by the end of the connection.
		return scanNotDirect
	}
	return scanDone
}

// parseLength parses a Content-Length value, or returns -1.
func parseLength(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// transient returns b as a string without copying. The string is only
// valid while b is: the direct path uses it for lookups and copies, never
// keeps it past the read buffer's next fill.
func transient(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
