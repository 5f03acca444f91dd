package h1

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestScanResponse(t *testing.T) {
	for _, tc := range []struct {
		name, head, method string
		want               Result
		status             int
		bodyLen            int64
		reusable           bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", Done, 200, 5, true},
		{"no reason", "HTTP/1.1 204\r\n\r\n", "GET", Done, 204, 0, true},
		{"HEAD has no body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", Done, 200, 0, true},
		{"304 has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", Done, 304, 0, true},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", Done, 200, 0, false},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", "GET", Done, 200, 1, true},
		{"1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET", Done, 200, 1, false},
		{"obs-text value", "HTTP/1.1 200 OK\r\nX-A: \xe9\r\nContent-Length: 0\r\n\r\n", "GET", Done, 200, 0, true},
		{"incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", "GET", More, 0, 0, false},
		{"no line yet", "HTTP/1.1 200", "GET", More, 0, 0, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", Other, 0, 0, false},
		{"close-delimited", "HTTP/1.1 200 OK\r\n\r\n", "GET", Other, 0, 0, false},
		{"interim", "HTTP/1.1 100 Continue\r\n\r\n", "GET", Other, 0, 0, false},
		{"switch", "HTTP/1.1 101 Switching Protocols\r\n\r\n", "GET", Other, 0, 0, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "GET", Other, 0, 0, false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", "GET", Other, 0, 0, false},
		{"length listed by Connection", "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 1\r\n\r\n", "GET", Other, 0, 0, false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "GET", Other, 0, 0, false},
		{"folded", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "GET", Other, 0, 0, false},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "GET", Other, 0, 0, false},
		{"control byte", "HTTP/1.1 200 OK\r\nX-A: a\x01\r\nContent-Length: 0\r\n\r\n", "GET", Other, 0, 0, false},
		{"HTTP/2", "HTTP/2 200\r\n\r\n", "GET", Other, 0, 0, false},
		{"long code", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "GET", Other, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte(tc.head + "rest")
			h, r := ScanResponse(buf, tc.method, nil)
			if r != tc.want {
				t.Fatalf("result %v, want %v", r, tc.want)
			}
			if r != Done {
				return
			}
			if h.Status != tc.status || h.BodyLen != tc.bodyLen || h.Reusable() != tc.reusable {
				t.Errorf("status %d body %d reusable %v, want %d %d %v",
					h.Status, h.BodyLen, h.Reusable(), tc.status, tc.bodyLen, tc.reusable)
			}
			if string(buf[h.Size:]) != "rest" {
				t.Errorf("size %d leaves %q", h.Size, buf[h.Size:])
			}
			// What is Done, net/http reads alike.
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.head)),
				&http.Request{Method: tc.method})
			if err != nil {
				t.Fatalf("net/http refuses it: %v", err)
			}
			if res.StatusCode != h.Status || res.Close == h.Reusable() {
				t.Errorf("net/http: status %d close %v", res.StatusCode, res.Close)
			}
		})
	}
}

func TestConnectionTokens(t *testing.T) {
	fields, _, r := ScanFields([]byte("Connection: close, X-A\r\nconnection: ,x-b , Upgrade\r\nX-A: 1\r\n\r\n"), nil)
	if r != Done {
		t.Fatalf("result %v", r)
	}
	var c Conn
	c.Scan(fields)
	if !c.Close || !c.Upgrade || c.KeepAlive || c.TooMany {
		t.Errorf("flags %+v", c)
	}
	for name, want := range map[string]bool{"X-A": true, "x-b": true, "X-C": false, "close": false} {
		if c.Lists([]byte(name)) != want {
			t.Errorf("Lists(%q) = %v, want %v", name, !want, want)
		}
	}
	var many Conn
	fields, _, _ = ScanFields([]byte("Connection: a,b,c,d,e,f,g,h,i\r\n\r\n"), nil)
	if many.Scan(fields); !many.TooMany {
		t.Error("nine names: not TooMany")
	}
}

func TestScanFieldsLimits(t *testing.T) {
	head := strings.Repeat("X-A: 1\r\n", MaxFields) + "\r\n"
	if _, n, r := ScanFields([]byte(head), nil); r != Done || n != len(head) {
		t.Errorf("%d fields: %v %d", MaxFields, r, n)
	}
	head = strings.Repeat("X-A: 1\r\n", MaxFields+1) + "\r\n"
	if _, _, r := ScanFields([]byte(head), nil); r != Other {
		t.Errorf("%d fields: %v, want Other", MaxFields+1, r)
	}
	if f, _, r := ScanFields([]byte("X-A: \t padded \t\r\n\r\n"), nil); r != Done || string(f[0].Value) != "padded" {
		t.Errorf("padded value: %v %q", r, f)
	}
}

func TestScanResponseAllocatesNothing(t *testing.T) {
	buf := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
	allocs := testing.AllocsPerRun(100, func() {
		var fields [8]Field
		if _, r := ScanResponse(buf, "GET", fields[:0]); r != Done {
			t.Fatal("not Done")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per scan, want 0", allocs)
	}
}

func TestSyntax(t *testing.T) {
	for s, want := range map[string]bool{"X-Foo": true, "a!#$%&'*+-.^_`|~z": true, "": false,
		"a b": false, "a:b": false, "é": false} {
		if IsToken(s) != want {
			t.Errorf("IsToken(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"a\tb c": true, "\xe9": true, "a\x00": false, "a\r": false,
		"\x7f": false} {
		if ValidValue([]byte(s)) != want {
			t.Errorf("ValidValue(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]int64{"0": 0, "42": 42, "": -1, "-1": -1, "1 ": -1,
		"999999999999999999": 999999999999999999, "1000000000000000000": -1} {
		if got := ParseLength([]byte(s)); got != want {
			t.Errorf("ParseLength(%q) = %d, want %d", s, got, want)
		}
	}
}

// FuzzScanResponse checks that ScanResponse never panics and that a head it
// takes as Done, net/http reads with the same status, length, body length
// and reuse.
func FuzzScanResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0 204\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
		"HTTP/1.1 500 Oops\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		h, r := ScanResponse(data, method, nil)
		if r != Done {
			return
		}
		if h.Size <= 0 || h.Size > len(data) {
			t.Fatalf("size %d of %d bytes", h.Size, len(data))
		}
		res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(data[:h.Size]))),
			&http.Request{Method: method})
		if err != nil {
			t.Fatalf("Done but net/http refuses %q: %v", data[:h.Size], err)
		}
		if res.StatusCode != h.Status {
			t.Fatalf("status %d, net/http %d", h.Status, res.StatusCode)
		}
		if h.BodyLen > 0 && res.ContentLength != h.BodyLen {
			t.Fatalf("body %d, net/http %d for %q", h.BodyLen, res.ContentLength, data[:h.Size])
		}
		if h.Reusable() == res.Close {
			t.Fatalf("reusable %v, net/http close %v for %q", h.Reusable(), res.Close, data[:h.Size])
		}
	})
}
