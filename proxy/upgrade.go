package proxy

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// tunnel completes a protocol switch (WebSocket and other Upgrades): the
// client's connection is taken over and bytes are copied both ways until
// either side closes. The endpoint stays in flight meanwhile.
func (p *Proxy) tunnel(w http.ResponseWriter, res *http.Response, up string, o *outcome) {
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		o.status = p.fail(w, http.StatusBadGateway)
		return
	}
	defer back.Close()
	// RFC 9110 7.8: the server may only switch to a protocol we asked for.
	got := res.Header.Get("Upgrade")
	if up == "" || !strings.EqualFold(got, up) {
		o.status = p.fail(w, http.StatusBadGateway)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		o.status = p.fail(w, http.StatusBadGateway)
		return
	}
	defer conn.Close()
	// The server's deadlines were for one request, not for a tunnel.
	_ = conn.SetDeadline(time.Time{})

	h := make(http.Header, len(res.Header)+2)
	copyResponseHeaders(h, res.Header)
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{got}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		o.status, o.hangup = StatusClientClosedRequest, true
		return
	}
	o.status = http.StatusSwitchingProtocols

	done := make(chan struct{}, 2)
	pipe := func(dst io.Writer, src io.Reader) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	// brw.Reader first yields what the client sent after its request head.
	go pipe(back, brw.Reader)
	go pipe(conn, back)
	<-done
	// One side ended: closing both ends the other copy.
	conn.Close()
	back.Close()
	<-done
}
