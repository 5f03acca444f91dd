package proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// reply is what the backend answers: raw bytes, after delay; close ends the
// connection after them.
type reply struct {
	raw   string
	delay time.Duration
	close bool
}

const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// replyFor answers r by its path: /r/KIND picks a kind of response, any
// other path a plain one with a Content-Length.
func replyFor(r *seenReq) reply {
	path, _, _ := strings.Cut(r.uri, "?")
	head := r.method == http.MethodHead
	body := func(b string) string {
		if head {
			return ""
		}
		return b
	}
	ok := func(extra, b string) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + extra +
			"Content-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + body(b)
	}
	chunked := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum\r\n" +
		"Transfer-Encoding: chunked\r\n\r\n"
	switch strings.TrimPrefix(path, "/r/") {
	case "chunked":
		return reply{raw: chunked + body("5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")}
	case "chunked-empty":
		return reply{raw: chunked + body("0\r\n\r\n")}
	case "http10-close":
		return reply{raw: "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body("hello"), close: true}
	case "http11-close":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" +
			body("hello"), close: true}
	case "http11-close-empty":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
			close: true}
	case "http10-keepalive":
		return reply{raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 5\r\n\r\n" + body("hello")}
	case "conn-close":
		return reply{raw: ok("Connection: close\r\n", "hello"), close: true}
	case "204":
		return reply{raw: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"}
	case "204-cl":
		return reply{raw: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"}
	case "204-cl5":
		return reply{raw: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"}
	case "304":
		return reply{raw: "HTTP/1.1 304 Not Modified\r\nEtag: \"v1\"\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 5\r\n\r\n"}
	case "1xx":
		return reply{raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
			ok("", "hello")}
	case "hop":
		return reply{raw: ok("Connection: X-Priv, keep-alive\r\nConnection: x-priv2\r\nX-Priv: 1\r\n"+
			"X-Priv2: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTe: trailers\r\n"+
			"Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\n", "hello")}
	case "conn-server-date":
		return reply{raw: ok("Connection: Server, Date\r\nServer: apache\r\nDate: "+httpDate+"\r\n", "hello")}
	case "server-date":
		return reply{raw: ok("Server: backend/1\r\nDate: "+httpDate+"\r\n", "hello")}
	case "cookies":
		return reply{raw: ok("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nset-cookie: c=3\r\n", "hello")}
	case "bighead":
		return reply{raw: ok("X-Big: "+strings.Repeat("b", 5000)+"\r\n", "hello")}
	case "cut":
		// Past the 4 KiB the direct path buffers, so that both paths have
		// sent part of the body when the backend goes. (Before that, the
		// direct path answers 502 instead: TestDirectCutBeforeAnyByte.)
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\n\r\n" +
			body(strings.Repeat("0123456789", 600)), close: true}
	case "cut-chunked":
		return reply{raw: chunked + body("5\r\nhello\r\n"), close: true}
	case "101":
		return reply{raw: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"}
	case "500":
		return reply{raw: "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n" +
			"Content-Length: 4\r\n\r\n" + body("oops")}
	case "bad-field":
		return reply{raw: "HTTP/1.1 200 OK\r\nBad Field\r\nContent-Length: 2\r\n\r\nok"}
	case "ctl-value":
		return reply{raw: ok("X-Ctl: a\x01b\r\n", "hello")}
	case "extra":
		// More bytes than the Content-Length: the rest is garbage.
		return reply{raw: ok("", "ok") + "EXTRA"}
	case "head-body":
		// A body after a HEAD response, as broken backends send.
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"}
	case "notype":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + body("<html>hi</html>")}
	case "reason":
		return reply{raw: "HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body("ok")}
	case "no-reason":
		return reply{raw: "HTTP/1.1 200\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body("ok")}
	case "299":
		return reply{raw: "HTTP/1.1 299 Whatever\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body("ok")}
	case "cl-zeros":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 005\r\n\r\n" + body("hello")}
	case "cl-dup":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n" +
			"Content-Length: 5\r\n\r\n" + body("hello")}
	case "cl-list":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5, 5\r\n\r\n" + body("hello")}
	case "te-cl":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n" + body("5\r\nhello\r\n0\r\n\r\n")}
	case "fold":
		return reply{raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Fold: a\r\n b\r\n" +
			"Content-Length: 5\r\n\r\n" + body("hello")}
	case "bare-lf":
		return reply{raw: "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\n" + body("hello")}
	case "conn-names-cl":
		return reply{raw: ok("Connection: Content-Length\r\n", "hello")}
	case "conn-names-type":
		return reply{raw: ok("Connection: content-type, x-low\r\nx-low: 1\r\nkeep-alive: 1\r\n", "hello")}
	case "conn-9-tokens":
		return reply{raw: ok("Connection: t1, t2, t3, t4, t5, t6, t7, t8, t9\r\nT1: 1\r\nT9: 9\r\n", "hello")}
	case "many-fields":
		return reply{raw: ok(strings.Join(repeatFields(70, "X-F", 1), "\r\n")+"\r\n", "hello")}
	case "big-body":
		return reply{raw: ok("", strings.Repeat("0123456789", 10000))}
	case "big-chunked":
		return reply{raw: chunked + body(strings.Repeat("8000\r\n"+strings.Repeat("x", 0x8000)+"\r\n", 3)+"0\r\n\r\n")}
	case "slowish":
		return reply{raw: ok("", "slowish"), delay: 150 * time.Millisecond}
	case "reset":
		return reply{close: true}
	case "slow":
		return reply{raw: ok("", "late"), delay: 1500 * time.Millisecond}
	}
	return reply{raw: ok("", "hello")}
}

// Request builders.

func getReq(target string, fields ...string) string {
	return req("GET", target, fields...)
}

func req(method, target string, fields ...string) string {
	s := method + " " + target + " HTTP/1.1\r\nHost: a.example\r\n"
	for _, f := range fields {
		s += f + "\r\n"
	}
	return s + "\r\n"
}

func one(name, raw string, methods ...string) diffCase {
	return diffCase{name: name, parts: []string{raw}, methods: methods}
}

func repeatFields(n int, name string, size int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d: %s", name, i, strings.Repeat("v", size))
	}
	return out
}

// bigGet returns a GET whose head is exactly size bytes.
func bigGet(size int) string {
	base := getReq("/big", "X-Pad: ")
	pad := size - len(base)
	return getReq("/big", "X-Pad: "+strings.Repeat("p", pad))
}

var trusted = Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func diffCases() []diffCase {
	G, H, P := http.MethodGet, http.MethodHead, http.MethodPost
	cases := []diffCase{
		// Well-formed.
		one("get", getReq("/")),
		one("head", req("HEAD", "/"), H),
		one("query", getReq("/a/b?x=1&y=%41&z=a/../b")),
		one("query-odd", getReq("/q?a=<\"{}|\\^`>&b=%zz&c=?#frag")),
		one("force-query", getReq("/a?")),
		one("keep-alive", getReq("/", "Connection: keep-alive")),
		one("close", getReq("/", "Connection: close")),
		one("close-token-case", getReq("/", "Connection: CLOSE")),
		one("fields", getReq("/", "User-Agent: ua/1", "Accept: */*", "X-Multi: a", "x-multi: b",
			"X-MULTI: c", "X-Empty:", "X-Tab: a\tb", "X-Space:   padded   ", "X-High: \xff\xfe",
			"X!#$%&'*+-.^_`|~: odd-name", "X_Under: 1")),
		one("no-ua", getReq("/", "Accept: */*")),
		one("empty-ua", getReq("/", "User-Agent:")),
		one("pragma", getReq("/", "Pragma: no-cache")),
		one("forwarded-untrusted", getReq("/", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-Host: evil",
			"X-Forwarded-Proto: https", "Forwarded: for=10.0.0.1", "X-Real-Ip: 10.0.0.1",
			"X-Forwarded-Port: 443")),
		{name: "forwarded-trusted", opts: trusted, parts: []string{getReq("/",
			"X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2, 10.0.0.3",
			"X-Forwarded-Host: front", "X-Forwarded-Proto: https", "Forwarded: for=10.0.0.1",
			"X-Real-Ip: 10.0.0.1")}},
		{name: "forwarded-trusted-none", opts: trusted, parts: []string{getReq("/")}},
		{name: "forwarded-trusted-empty", opts: trusted, parts: []string{getReq("/",
			"X-Forwarded-For:", "X-Forwarded-Host:")}},
		// RFC 9110 7.6.1: a Connection token makes the field it names
		// hop-by-hop, X-Forwarded-* included.
		{name: "connection-names-xff-trusted", opts: trusted, parts: []string{getReq("/",
			"Connection: X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto",
			"X-Forwarded-For: 10.0.0.1", "X-Forwarded-Host: front", "X-Forwarded-Proto: https")}},
		{name: "connection-names-forwarded-trusted", opts: trusted, parts: []string{getReq("/",
			"Connection: forwarded, x-real-ip", "Forwarded: for=10.0.0.1", "X-Real-Ip: 10.0.0.1")}},
		one("connection-names-xff-untrusted", getReq("/",
			"Connection: X-Forwarded-For, X-Forwarded-Host", "X-Forwarded-For: 10.0.0.1",
			"X-Forwarded-Host: front")),
		one("connection-tokens", getReq("/", "Connection: X-A, x-b", "Connection: keep-alive,  X-C ,",
			"X-A: 1", "X-B: 2", "X-C: 3", "X-D: 4")),
		one("connection-names-ua", getReq("/", "Connection: User-Agent", "User-Agent: ua/1")),
		one("connection-names-te", getReq("/", "Connection: te", "TE: trailers")),
		one("connection-names-host", getReq("/", "Connection: host")),
		one("connection-names-accept", getReq("/", "Connection: Accept", "Accept: */*",
			"Accept-Encoding: gzip")),
		one("connection-8-tokens", getReq("/", "Connection: t1, t2, t3, t4, t5, t6, t7, t8",
			"T1: 1", "T8: 8", "T9: 9")),
		one("connection-9-tokens", getReq("/", "Connection: t1, t2, t3, t4, t5, t6, t7, t8, t9",
			"T1: 1", "T9: 9")),
		one("hop-by-hop", getReq("/", "Keep-Alive: 300", "Proxy-Connection: keep-alive",
			"Proxy-Authorization: Basic Zm9v", "Trailer: X-T", "TE: trailers, deflate", "X-End: yes")),
		one("te-trailers", getReq("/", "TE: trailers")),
		one("te-gzip", getReq("/", "TE: gzip", "Te: Trailers")),
		one("cl-0", getReq("/", "Content-Length: 0")),
		one("cl-0-twice", getReq("/", "Content-Length: 0", "content-length: 0")),
		one("cl-00", getReq("/", "Content-Length: 00")),
		one("cl-0-1", getReq("/", "Content-Length: 0", "Content-Length: 1")+"x", G),
		one("cl-5", getReq("/", "Content-Length: 5")+"hello"),
		one("head-cl-0", req("HEAD", "/", "Content-Length: 0"), H),
		one("te-chunked", getReq("/", "Transfer-Encoding: chunked")+"5\r\nhello\r\n0\r\nX-Tr: 1\r\n\r\n"),
		one("te-cl", getReq("/", "Transfer-Encoding: chunked", "Content-Length: 3")+"5\r\nhello\r\n0\r\n\r\n"),
		one("expect-get", getReq("/", "Expect: 100-continue")),
		one("expect-post", req("POST", "/", "Expect: 100-continue", "Content-Length: 5")+"hello", P),
		one("upgrade", getReq("/", "Connection: Upgrade", "Upgrade: websocket")),
		one("upgrade-no-token", getReq("/", "Upgrade: websocket")),
		one("connection-upgrade-alone", getReq("/", "Connection: upgrade")),
		one("absolute-form", "GET http://a.example/abs?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"),
		one("absolute-form-other", "GET http://b.example/abs HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("authority-form", "CONNECT a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\n"),
		one("asterisk", "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n"),

		// Routing.
		one("dot-segments", getReq("/a/./b/../c//d/")),
		one("dot-dot-root", getReq("/../etc")),
		one("dot-dot-root-head", req("HEAD", "/a/../../etc"), H),
		one("pct-2e2e", getReq("/%2e%2e/x")),
		one("pct-2E-inside", getReq("/a/%2E%2e/b/%2E/c")),
		one("pct-unreserved", getReq("/%41%7e%2Fb%20c")),
		one("pct-bad", getReq("/a%zz")),
		one("pct-short", getReq("/a%2")),
		one("pct-00", getReq("/a%00b")),
		one("double-slash", getReq("//a.example/x")),
		one("empty-503", getReq("/empty")),
		one("empty-503-head", req("HEAD", "/empty"), H),
		one("empty-503-close", getReq("/empty", "Connection: close")),
		one("unknown-host-404", "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"),
		one("unknown-host-404-head", "HEAD / HTTP/1.1\r\nHost: b.example\r\n\r\n", H),
		one("host-case", "GET / HTTP/1.1\r\nHost: A.Example\r\n\r\n"),
		one("host-dot", "GET / HTTP/1.1\r\nHost: a.example.\r\n\r\n"),
		one("host-port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n"),
		one("host-empty-port", "GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n"),
		one("host-ipv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
		one("host-underscore", "GET / HTTP/1.1\r\nHost: a_b.example\r\n\r\n"),
		one("host-space", "GET / HTTP/1.1\r\nHost: a.example x\r\n\r\n"),
		one("host-empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
		one("host-missing", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
		one("host-duplicate", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n"),
		one("host-duplicate-other", "GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n"),
		one("http10", "GET / HTTP/1.0\r\nHost: a.example\r\n\r\n"),
		one("http10-no-host", "GET / HTTP/1.0\r\n\r\n"),
		one("http10-keepalive", "GET / HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n"),
		one("http12", "GET / HTTP/1.2\r\nHost: a.example\r\n\r\n"),
		one("http-lower", "GET / http/1.1\r\nHost: a.example\r\n\r\n"),
		one("method-lower", "get / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("method-mixed", "Get / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("method-other", req("PURGE", "/")),
		one("method-delete", req("DELETE", "/")),

		// Malformed.
		one("bare-lf", "GET / HTTP/1.1\nHost: a.example\n\n"),
		one("bare-lf-end", "GET / HTTP/1.1\r\nHost: a.example\r\n\n"),
		one("bare-lf-field", "GET / HTTP/1.1\r\nHost: a.example\nX-A: 1\r\n\r\n"),
		one("bare-cr", "GET / HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r2\r\n\r\n"),
		one("obs-fold", getReq("/", "X-Fold: a", " b")),
		one("obs-fold-first", "GET / HTTP/1.1\r\n X-Fold: a\r\nHost: a.example\r\n\r\n"),
		one("space-before-colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n"),
		one("no-colon", getReq("/", "X-NoColon")),
		one("empty-name", getReq("/", ": v")),
		one("nul-value", getReq("/", "X-A: a\x00b")),
		one("ctl-value", getReq("/", "X-A: a\x01b")),
		one("del-value", getReq("/", "X-A: a\x7fb")),
		one("ctl-name", getReq("/", "X\x01A: 1")),
		one("high-name", getReq("/", "X-\xffA: 1")),
		one("space-in-target", "GET /a b HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("double-space", "GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("trailing-space", "GET / HTTP/1.1 \r\nHost: a.example\r\n\r\n"),
		one("tab-separator", "GET\t/ HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		one("fragment", getReq("/a#frag")),
		one("ctl-target", getReq("/a\x01b")),
		one("ctl-query", getReq("/a?b\x01c")),
		one("del-query", getReq("/a?b\x7fc")),
		one("high-target", getReq("/\xc3\xa9")),
		one("leading-crlf", "\r\n"+getReq("/")),
		one("garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
		one("no-version", "GET /\r\nHost: a.example\r\n\r\n"),

		// Sizes.
		one("head-4000", bigGet(4000)),
		one("head-4095", bigGet(4095)),
		one("head-4096", bigGet(4096)),
		one("head-4097", bigGet(4097)),
		one("head-5000", bigGet(5000)),
		one("head-36k", bigGet(36<<10)),
		one("head-40k", bigGet(40<<10)),
		one("fields-64", getReq("/", repeatFields(63, "X-F", 1)...)),
		one("fields-65", getReq("/", repeatFields(65, "X-F", 1)...)),
		{name: "maxheader-1k-3000", parts: []string{bigGet(3000)}, opts: Options{MaxHeaderBytes: 1024}},
		{name: "maxheader-1k-6000", parts: []string{bigGet(6000)}, opts: Options{MaxHeaderBytes: 1024}},
		one("host-trailing-space", "GET / HTTP/1.1\r\nHost: a.example  \t\r\n\r\n"),
		one("head-4k-pipelined", bigGet(5000)+getReq("/second"), G, G),

		// Pipelines and connections mixing both servers.
		one("pipe-get-get", getReq("/1")+getReq("/2"), G, G),
		one("pipe-get-head-get", getReq("/1")+req("HEAD", "/2")+getReq("/3"), G, H, G),
		one("pipe-get-post-get", getReq("/1")+req("POST", "/2", "Content-Length: 5")+"hello"+getReq("/3"), G, P, G),
		one("pipe-get-chunked-get", getReq("/1")+getReq("/2", "Transfer-Encoding: chunked")+
			"3\r\nabc\r\n0\r\n\r\n"+getReq("/3"), G, G, G),
		one("pipe-get-body-get", getReq("/1")+getReq("/2", "Content-Length: 3")+"abc"+getReq("/3"), G, G, G),
		one("pipe-close-get", getReq("/1", "Connection: close")+getReq("/2"), G, G),
		one("pipe-400-get", getReq("/../x")+getReq("/2"), G, G),
		one("pipe-404-get", "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"+getReq("/2"), G, G),
		one("pipe-503-get", getReq("/empty")+getReq("/2"), G, G),
		one("pipe-get-malformed", getReq("/1")+"GET / HTTP/1.1\r\nHost: a.example\nX: 1\r\n\r\n", G, G),
		one("pipe-get-http10", getReq("/1")+"GET /2 HTTP/1.0\r\nHost: a.example\r\n\r\n", G, G),
		one("pipe-get-lower", getReq("/1")+"get /2 HTTP/1.1\r\nHost: a.example\r\n\r\n", G, G),
		one("pipe-many", strings.Repeat(getReq("/n"), 10), G, G, G, G, G, G, G, G, G, G),
		{name: "split-head", parts: []string{"GE", "T /split HTTP/1.1\r\nHo", "st: a.example\r", "\n\r", "\n"}},
		{name: "split-pipeline", parts: []string{getReq("/1") + "GET /2 HTTP/1.1\r\n", "Host: a.example\r\n\r\n"},
			methods: []string{G, G}},
		{name: "split-post-after-get", parts: []string{getReq("/1"), req("POST", "/2", "Content-Length: 5") + "hel", "lo"},
			methods: []string{G, P}},

		// Backends' responses.
		one("resp-reason", getReq("/r/reason")),
		one("resp-no-reason", getReq("/r/no-reason")),
		one("resp-299", getReq("/r/299")),
		one("resp-chunked", getReq("/r/chunked", "TE: trailers")),
		one("resp-chunked-head", req("HEAD", "/r/chunked"), H),
		one("resp-chunked-empty", getReq("/r/chunked-empty")),
		one("resp-http10-close", getReq("/r/http10-close")),
		one("resp-http10-close-head", req("HEAD", "/r/http10-close"), H),
		one("resp-http11-close", getReq("/r/http11-close")),
		one("resp-http11-close-empty", getReq("/r/http11-close-empty")),
		one("resp-http10-keepalive", getReq("/r/http10-keepalive")+getReq("/r/http10-keepalive"), G, G),
		one("resp-conn-close", getReq("/r/conn-close")+getReq("/2"), G, G),
		one("resp-204", getReq("/r/204")),
		one("resp-204-cl", getReq("/r/204-cl")),
		one("resp-204-cl5", getReq("/r/204-cl5")+getReq("/2"), G, G),
		one("resp-304", getReq("/r/304")),
		one("resp-1xx", getReq("/r/1xx")),
		one("resp-hop", getReq("/r/hop")),
		one("resp-conn-server-date", getReq("/r/conn-server-date")),
		one("resp-server-date", getReq("/r/server-date")),
		one("resp-cookies", getReq("/r/cookies")),
		one("resp-bighead", getReq("/r/bighead")),
		one("resp-bighead-head", req("HEAD", "/r/bighead"), H),
		one("resp-cut", getReq("/r/cut")),
		one("resp-cut-chunked", getReq("/r/cut-chunked")),
		one("resp-101", getReq("/r/101")),
		one("resp-500", getReq("/r/500")),
		one("resp-bad-field", getReq("/r/bad-field")),
		one("resp-ctl-value", getReq("/r/ctl-value")),
		one("resp-extra", getReq("/r/extra")+getReq("/2"), G, G),
		one("resp-head-body", req("HEAD", "/r/head-body")+getReq("/2"), H, G),
		one("resp-notype", getReq("/r/notype")),
		one("resp-cl-zeros", getReq("/r/cl-zeros")),
		one("resp-cl-dup", getReq("/r/cl-dup")),
		one("resp-cl-list", getReq("/r/cl-list")),
		one("resp-te-cl", getReq("/r/te-cl")),
		one("resp-fold", getReq("/r/fold")),
		one("resp-bare-lf", getReq("/r/bare-lf")),
		one("resp-reset", getReq("/r/reset")),
		// The body is left unframed: the client reads on until the
		// connection ends.
		{name: "resp-conn-names-cl", parts: []string{getReq("/r/conn-names-cl") + getReq("/2")},
			methods: []string{G, G}, wait: 500 * time.Millisecond},
		one("resp-conn-names-type", getReq("/r/conn-names-type")),
		one("resp-conn-9-tokens", getReq("/r/conn-9-tokens")),
		one("resp-many-fields", getReq("/r/many-fields")),
		one("resp-big-body", getReq("/r/big-body")+getReq("/2"), G, G),
		one("resp-big-chunked", getReq("/r/big-chunked")+getReq("/2"), G, G),
		one("resp-chunked-close", getReq("/r/chunked", "Connection: close")),
		one("resp-http10-close-close", getReq("/r/http10-close", "Connection: close")),
		one("resp-1xx-close", getReq("/r/1xx", "Connection: close")),
		// The client's next request comes while the backend is awaited
		// (past watchDelay): the hang-up watch reads its first byte.
		{name: "pipe-during-wait-get", parts: []string{getReq("/r/slowish"), getReq("/2")},
			gap: 100 * time.Millisecond, methods: []string{G, G}},
		{name: "pipe-during-wait-post", parts: []string{getReq("/r/slowish"),
			req("POST", "/2", "Content-Length: 2") + "hi"}, gap: 100 * time.Millisecond, methods: []string{G, P}},
		{name: "pipe-during-wait-head", parts: []string{getReq("/r/slowish"), req("HEAD", "/2")},
			gap: 100 * time.Millisecond, methods: []string{G, H}},
		{name: "pipe-during-wait-bad", parts: []string{getReq("/r/slowish"), "GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n"},
			gap: 100 * time.Millisecond, methods: []string{G, G}},

		// Failures, retries, hang-ups.
		one("retry-connect", getReq("/retry")+getReq("/retry"), G, G),
		one("retry-reset", getReq("/flaky")+getReq("/flaky"), G, G),
		one("retry-reset-post", req("POST", "/flaky", "Content-Length: 2")+"hi"+
			req("POST", "/flaky", "Content-Length: 2")+"hi", P, P),
		one("dead-502", getReq("/dead")),
		one("dead-502-head", req("HEAD", "/dead"), H),
		{name: "timeout-504", parts: []string{getReq("/r/slow")},
			opts: Options{ResponseHeaderTimeout: 200 * time.Millisecond}},
		{name: "hangup-499", parts: []string{getReq("/r/slow")}, hangup: 300 * time.Millisecond},
		{name: "hangup-499-head", parts: []string{req("HEAD", "/r/slow")}, hangup: 300 * time.Millisecond},
	}
	return cases
}
