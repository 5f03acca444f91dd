package prober

import (
	"context"
	"net"
	"strconv"
)

// tcpHandler probes tcpSocket: success is a completed TCP handshake.
type tcpHandler struct {
	addr   string
	dialer *net.Dialer
}

func newTCPHandler(t *Target, env *handlerEnv) handler {
	s := t.Spec.Handler.TCPSocket
	host, err := env.hostFor(t, s.Host)
	if err != nil {
		return errHandler{err}
	}
	port, err := resolvePort(s.Port, t)
	if err != nil {
		return errHandler{err}
	}
	return &tcpHandler{addr: net.JoinHostPort(host, strconv.Itoa(port)), dialer: env.dialer}
}

func (h *tcpHandler) probe(ctx context.Context) (outcome, error) {
	c, err := h.dialer.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return failure("%s", err.Error()), nil
	}
	// Closed at once with the dialer's short linger: nothing was sent, so
	// the close is quick, and the socket does not sit in TIME_WAIT for long.
	_ = c.Close()
	return success(), nil
}
