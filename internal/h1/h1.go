// Package h1 reads HTTP/1.1 message heads in place, in a connection's read
// buffer, without allocating. It is for the hot paths that speak HTTP/1.1
// themselves (the prober's kept-alive client, the proxy's direct path);
// net/http stays the reference for everything else.
//
// The scanners accept a strict subset of HTTP/1.1: every line ends in CRLF,
// no field is folded, names are tokens, values hold no control byte but
// HTAB. What falls outside gets Other, whether it is valid or not: the
// caller then leaves the message to net/http, which serves or rejects it as
// it always does. Being strict is what lets a caller treat a Done head
// exactly as net/http would.
package h1

import "bytes"

// Result says what a scanner made of the bytes buffered so far.
type Result int

const (
	More  Result = iota // no end of head yet: read more
	Done                // a head in the subset, scanned
	Other               // not in the subset: for net/http
)

// MaxFields bounds the header fields of a head; more is Other.
const MaxFields = 64

// MaxConnTokens bounds the field names a head's Connection fields may list;
// more is Conn.TooMany.
const MaxConnTokens = 8

// Field is one header field, both slices in the scanned buffer, the value
// without surrounding whitespace.
type Field struct {
	Name, Value []byte
}

// ByteSet returns the set of ASCII letters and digits plus extra.
func ByteSet(extra string) (t [256]bool) {
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

// tokenChars holds the bytes of an RFC 9110 token (tchar).
var tokenChars = ByteSet("!#$%&'*+-.^_`|~")

// IsToken reports whether s is an RFC 9110 token, as a field name must be.
func IsToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChars[s[i]] {
			return false
		}
	}
	return true
}

// ValidValue reports whether v is a field value net/http accepts as it is:
// no control byte but HTAB (RFC 9110 5.5).
func ValidValue[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// TrimOWS trims optional whitespace (SP, HTAB) from both ends.
func TrimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// ParseLength parses a Content-Length value of 1 to 18 digits, or returns
// -1.
func ParseLength(v []byte) int64 {
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

// Is reports whether a field name is name, ignoring case.
func Is(field []byte, name string) bool {
	return len(field) == len(name) && bytes.EqualFold(field, []byte(name))
}

// ScanFields scans the header fields of buf, which starts past the start
// line, appending them to fields. It returns them with the offset just past
// the empty line that ends the head.
func ScanFields(buf []byte, fields []Field) ([]Field, int, Result) {
	off := 0
	for {
		i := bytes.IndexByte(buf[off:], '\n')
		if i < 0 {
			return fields, 0, More
		}
		if i == 0 || buf[off+i-1] != '\r' {
			return fields, 0, Other
		}
		line := buf[off : off+i-1]
		off += i + 1
		if len(line) == 0 {
			return fields, off, Done
		}
		if len(fields) == MaxFields {
			return fields, 0, Other
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !IsToken(line[:colon]) {
			// Also an obs-fold: its line starts with SP or HTAB.
			return fields, 0, Other
		}
		v := TrimOWS(line[colon+1:])
		if !ValidValue(v) {
			return fields, 0, Other
		}
		fields = append(fields, Field{Name: line[:colon], Value: v})
	}
}

// Conn is what the Connection fields of a head say.
type Conn struct {
	Close     bool
	KeepAlive bool
	Upgrade   bool
	TooMany   bool // more than MaxConnTokens names listed
	names     [MaxConnTokens][]byte
	n         int
}

// Scan reads every Connection field of fields.
func (c *Conn) Scan(fields []Field) {
	for _, f := range fields {
		if !Is(f.Name, "Connection") {
			continue
		}
		v := f.Value
		for len(v) > 0 {
			var tok []byte
			tok, v, _ = bytes.Cut(v, []byte(","))
			tok = TrimOWS(tok)
			switch {
			case len(tok) == 0:
			case bytes.EqualFold(tok, []byte("close")):
				c.Close = true
			case bytes.EqualFold(tok, []byte("keep-alive")):
				c.KeepAlive = true
			case bytes.EqualFold(tok, []byte("upgrade")):
				c.Upgrade = true
			case c.n == MaxConnTokens:
				c.TooMany = true
			default:
				c.names[c.n] = tok
				c.n++
			}
		}
	}
}

// Lists reports whether the Connection fields name the field, which is
// then hop-by-hop (RFC 9110 7.6.1).
func (c *Conn) Lists(name []byte) bool {
	for _, t := range c.names[:c.n] {
		if bytes.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// ListsAny reports whether the Connection fields name any field.
func (c *Conn) ListsAny() bool { return c.n > 0 }

// Response is a scanned response head.
type Response struct {
	Status  int
	Reason  []byte // the status line past the code, with its space
	HTTP10  bool
	Fields  []Field
	Conn    Conn
	Length  int64 // the Content-Length; -1 when absent
	Size    int   // bytes of the head, through its empty line
	BodyLen int64 // bytes of body that follow the head
}

// Reusable reports whether the connection may carry another request once
// the body is read.
func (h *Response) Reusable() bool {
	if h.HTTP10 {
		return h.Conn.KeepAlive && !h.Conn.Close
	}
	return !h.Conn.Close
}

// ScanResponse scans the response head at the start of buf, the answer to
// a request with method, appending its fields to fields. Final responses
// whose body is delimited by one Content-Length, or that have none, are
// Done; interim, chunked and close-delimited ones are Other, as is a
// Content-Length that a Connection field lists. The head is returned by
// value, so that a caller's array for the fields can stay on its stack.
func ScanResponse(buf []byte, method string, fields []Field) (h Response, r Result) {
	h = Response{Fields: fields, Length: -1}
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		return h, More
	}
	if eol < 12 || buf[eol-1] != '\r' {
		return h, Other
	}
	line := buf[:eol-1]
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		h.HTTP10 = true
	default:
		return h, Other
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return h, Other
		}
	}
	h.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if h.Status < 200 || h.Status > 599 {
		return h, Other
	}
	h.Reason = line[12:]
	if len(h.Reason) > 0 && h.Reason[0] != ' ' || !ValidValue(h.Reason) {
		return h, Other
	}

	var n int
	if h.Fields, n, r = ScanFields(buf[eol+1:], h.Fields); r != Done {
		return h, r
	}
	h.Size = eol + 1 + n
	for _, f := range h.Fields {
		switch {
		case Is(f.Name, "Transfer-Encoding"):
			return h, Other
		case Is(f.Name, "Content-Length"):
			if h.Length >= 0 {
				return h, Other
			}
			if h.Length = ParseLength(f.Value); h.Length < 0 {
				return h, Other
			}
		}
	}
	h.Conn.Scan(h.Fields)
	if h.Conn.TooMany || h.Conn.Lists([]byte("Content-Length")) {
		return h, Other
	}
	switch {
	case method == "HEAD" || h.Status == 204 || h.Status == 304:
		h.BodyLen = 0
	case h.Length >= 0:
		h.BodyLen = h.Length
	default:
		// Delimited by the end of the connection.
		return h, Other
	}
	return h, Done
}
