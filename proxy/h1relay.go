package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/vigil-agent/vigil/internal/h1"
)

// Responses on the direct path. A head with a Content-Length body (or none)
// is relayed from the backend's read buffer to the client's write buffer
// as it stands, hop-by-hop fields left out; chunked, close-delimited and
// interim responses are parsed by net/http and re-framed.

// readHead reads the response head waiting on uc. It returns nil when c.res
// holds a head for relayDirect, else the response net/http parsed. On an
// error nothing was written to the client and the attempt may be retried.
func (c *h1Conn) readHead(uc *upConn) (*http.Response, error) {
	timed := false
	for {
		buf, _ := uc.br.Peek(uc.br.Buffered())
		var r h1.Result
		c.res, r = h1.ScanResponse(buf, c.req.method, c.res.Fields[:0])
		switch r {
		case h1.Done:
			return nil, nil
		case h1.Other:
			return c.readParsed(uc)
		}
		if uc.br.Buffered() == uc.br.Size() {
			return c.readParsed(uc)
		}
		if !timed {
			c.headDeadline(uc)
			timed = true
		}
		if _, err := uc.br.Peek(uc.br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

// headDeadline puts the header timeout back on uc: await may have left an
// earlier deadline, for the watch, on it.
func (c *h1Conn) headDeadline(uc *upConn) {
	_ = uc.nc.SetReadDeadline(c.respLimit)
}

func (c *h1Conn) readParsed(uc *upConn) (*http.Response, error) {
	c.headDeadline(uc)
	req := &http.Request{Method: c.req.method}
	for {
		res, err := http.ReadResponse(uc.br, req)
		if err != nil {
			return nil, err
		}
		// Interim responses are the backend's to this hop.
		if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
			return res, nil
		}
		res.Body.Close()
	}
}

// relayDirect relays the response scanned into c.res.
func (c *h1Conn) relayDirect(e *endpoint, uc *upConn) {
	h := &c.res
	c.p.observeStatus(c.pl, e, h.Status, c.now)
	c.o.status = h.Status
	c.out = c.appendClientHead(c.out[:0])
	reusable := h.Reusable()
	_, _ = uc.br.Discard(h.Size)

	_, werr := c.bw.Write(c.out)
	var rerr error
	if werr == nil {
		werr, rerr = c.copyBody(uc, h.BodyLen)
	}
	if rerr != nil && werr == nil && c.bw.Buffered() == len(c.out)+int(c.o.bytes) {
		c.failUnsent(e, uc)
		return
	}
	c.endRelay(e, uc, reusable && uc.br.Buffered() == 0, werr, rerr)
}

// appendClientHead appends the head of c.res as the client gets it: in
// HTTP/1.1, without hop-by-hop fields, with Server and Date when the
// backend sent none, and Connection: close on a connection's last response.
func (c *h1Conn) appendClientHead(b []byte) []byte {
	h := &c.res
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(h.Status), 10)
	if len(h.Reason) > 0 {
		b = append(b, h.Reason...)
	} else {
		// The space after the code is not optional (RFC 9112 4).
		b = append(b, ' ')
		b = append(b, http.StatusText(h.Status)...)
	}
	b = append(b, "\r\n"...)

	server, date := false, false
	for _, f := range h.Fields {
		kind := kindOf(f.Name)
		if kind == fieldHop || kind == fieldTE || h1.Is(f.Name, "Upgrade") ||
			h.Conn.ListsAny() && h.Conn.Lists(f.Name) {
			continue
		}
		switch kind {
		case fieldLength:
			// RFC 9110 8.6: none on a 204.
			if h.Status == http.StatusNoContent {
				continue
			}
		case fieldServer:
			server = true
		case fieldDate:
			date = true
		}
		b = appendField(b, f.Name, f.Value)
	}
	if !server {
		b = append(b, "Server: vigil\r\n"...)
	}
	if !date {
		b = appendDate(b, time.Now())
	}
	if c.last() {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// copyBody copies n body bytes from uc to the client and flushes them,
// counting them in c.o.bytes. It returns the client's write error and the
// backend's read error.
func (c *h1Conn) copyBody(uc *upConn, n int64) (werr, rerr error) {
	cleared, timed := false, false
	for n > 0 && werr == nil {
		if uc.br.Buffered() == 0 {
			if !cleared {
				// The header timeout does not bound the body.
				_ = uc.nc.SetReadDeadline(time.Time{})
				cleared = true
			}
			if _, rerr = uc.br.Peek(1); rerr != nil {
				break
			}
		}
		k := int(min(n, int64(uc.br.Buffered())))
		chunk, _ := uc.br.Peek(k)
		if c.o.bytes > 0 && c.p.opts.WriteIdleTimeout > 0 {
			// Past the first chunk the client may be the slow side.
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.p.opts.WriteIdleTimeout))
			timed = true
		}
		_, werr = c.bw.Write(chunk)
		_, _ = uc.br.Discard(k)
		n -= int64(k)
		c.o.bytes += int64(k)
	}
	if werr == nil && rerr == nil {
		werr = c.bw.Flush()
	}
	if timed {
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	return werr, rerr
}

// failUnsent answers 502 for a backend that failed mid-body before any of
// its response left the client's write buffer: the client gets a whole
// answer, and keeps its connection, instead of a cut one.
func (c *h1Conn) failUnsent(e *endpoint, uc *upConn) {
	c.bw.Reset(c.nc)
	c.p.observe5xx(c.pl, e, c.now)
	uc.nc.Close()
	c.o.bytes = 0
	c.o.status = c.fail(http.StatusBadGateway)
}

// endRelay settles a relayed response: the backend connection goes back to
// the pool if it may, a failed write is the client's hang-up, a failed read
// the backend's fault.
func (c *h1Conn) endRelay(e *endpoint, uc *upConn, reusable bool, werr, rerr error) {
	switch {
	case werr != nil:
		c.o.status, c.o.hangup = StatusClientClosedRequest, true
	case rerr != nil:
		c.p.observe5xx(c.pl, e, c.now)
		c.o.abort = true
	}
	if reusable && werr == nil && rerr == nil && !c.hangup.Load() {
		c.p.up.put(e.addr, uc, &e.removed)
	} else {
		uc.nc.Close()
	}
}

// relayParsed relays a response net/http parsed: its body is re-framed
// for the client, chunked when its length is unknown, and streamed.
func (c *h1Conn) relayParsed(e *endpoint, uc *upConn, res *http.Response) {
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked for a switch.
		res.Body.Close()
		uc.nc.Close()
		c.p.observe5xx(c.pl, e, c.now)
		c.o.status = c.fail(http.StatusBadGateway)
		return
	}
	c.p.observeStatus(c.pl, e, res.StatusCode, c.now)
	c.o.status = res.StatusCode
	reusable := !res.Close && (res.ContentLength >= 0 || len(res.TransferEncoding) > 0 ||
		res.Body == http.NoBody)
	// The header timeout does not bound the body.
	_ = uc.nc.SetReadDeadline(time.Time{})

	hdr := make(http.Header, len(res.Header)+3)
	copyResponseHeaders(hdr, res.Header)
	bodiless := c.req.method == http.MethodHead || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified
	chunked := !bodiless && (res.ContentLength < 0 || len(res.TransferEncoding) > 0)
	switch {
	case chunked:
		delete(hdr, "Content-Length")
		hdr["Transfer-Encoding"] = []string{"chunked"}
	case res.StatusCode == http.StatusNoContent:
		delete(hdr, "Content-Length")
	case !bodiless:
		// The length as parsed frames the body, whatever the backend's
		// Connection field dropped.
		hdr["Content-Length"] = []string{strconv.FormatInt(res.ContentLength, 10)}
	}
	if c.last() {
		hdr["Connection"] = []string{"close"}
	}
	b := append(c.out[:0], "HTTP/1.1 "...)
	b = append(b, res.Status...)
	b = append(b, "\r\n"...)
	if _, ok := hdr["Date"]; !ok {
		b = appendDate(b, time.Now())
	}
	c.out = b
	_, werr := c.bw.Write(b)
	if werr == nil {
		werr = hdr.Write(c.bw)
	}
	if werr == nil {
		_, werr = c.bw.WriteString("\r\n")
	}
	headLen, headSent := c.bw.Buffered(), false
	if werr == nil && chunked && uc.br.Buffered() == 0 {
		// A stream (server-sent events) may send its first bytes much
		// later; the client gets the head now.
		werr, headSent = c.bw.Flush(), true
	}

	var rerr error
	if werr == nil && !bodiless {
		var w io.Writer = c.bw
		var cw io.WriteCloser
		if chunked {
			cw = httputil.NewChunkedWriter(c.bw)
			w = cw
		}
		var n int64
		n, werr, rerr = c.p.copyBody(streamWriter{c, w, chunked}, res.Body, chunked)
		c.o.bytes = n
		if werr == nil && rerr == nil && chunked {
			werr = cw.Close()
			if werr == nil {
				werr = writeTrailer(c.bw, res.Trailer)
			}
		}
	}
	if werr == nil && rerr == nil {
		werr = c.bw.Flush()
	}
	res.Body.Close()
	untouched := !headSent && (chunked && c.o.bytes == 0 ||
		!chunked && c.bw.Buffered() == headLen+int(c.o.bytes))
	if rerr != nil && werr == nil && untouched {
		c.failUnsent(e, uc)
		return
	}
	// Bytes past the response would be read as the next one's.
	c.endRelay(e, uc, reusable && uc.br.Buffered() == 0, werr, rerr)
}

// writeTrailer ends a chunked body with the backend's trailer fields.
func writeTrailer(w io.Writer, t http.Header) error {
	if len(t) > 0 {
		h := make(http.Header, len(t))
		copyResponseHeaders(h, t)
		delete(h, "Server")
		if err := h.Write(w); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "\r\n")
	return err
}

// streamWriter adapts the client's connection to copyBody: writes go
// through w (chunked or not), Flush reaches the socket, and write
// deadlines are the connection's.
type streamWriter struct {
	c     *h1Conn
	w     io.Writer
	flush bool
}

func (s streamWriter) Header() http.Header { return nil }
func (s streamWriter) WriteHeader(int)     {}

func (s streamWriter) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s streamWriter) Flush() {
	if s.flush {
		_ = s.c.bw.Flush()
	}
}

func (s streamWriter) SetWriteDeadline(t time.Time) error {
	return s.c.nc.SetWriteDeadline(t)
}

// hasTokenBytes reports whether a comma-separated list holds tok,
// ignoring case.
func hasTokenBytes(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(h1.TrimOWS(t), []byte(tok)) {
			return true
		}
	}
	return false
}
