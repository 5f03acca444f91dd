package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
)

// Serve listens on httpAddr and, when httpsAddr is not "", on httpsAddr
// with TLS (SNI from the Ingresses' Secrets, HTTP/2 by ALPN). When ctx ends
// it stops accepting, lets requests in flight finish for up to
// ShutdownTimeout, and returns nil. A listener that fails returns its error.
func (p *Proxy) Serve(ctx context.Context, httpAddr, httpsAddr string) error {
	type listener struct {
		srv *http.Server
		h1  *h1Server // the plain listener's direct path
		ln  net.Listener
		tls bool
	}
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			l.ln.Close()
		}
	}
	for _, a := range []struct {
		addr string
		tls  bool
	}{{httpAddr, false}, {httpsAddr, true}} {
		if a.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen %s: %w", a.addr, err)
		}
		l := listener{srv: p.newServer(), ln: ln, tls: a.tls}
		switch {
		case a.tls:
			l.srv.TLSConfig = p.TLSConfig()
		case !p.opts.NetHTTPOnly:
			l.h1 = newH1Server(p, l.srv, ln.Addr())
		}
		ls = append(ls, l)
	}
	if len(ls) == 0 {
		return errors.New("serve: no address to listen on")
	}

	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() {
			var err error
			switch {
			case l.tls:
				err = l.srv.ServeTLS(l.ln, "", "")
			case l.h1 != nil:
				err = l.h1.serve(l.ln)
			default:
				err = l.srv.Serve(l.ln)
			}
			errc <- err
		}()
		p.opts.Logger.Info("proxy listening", "addr", l.ln.Addr().String(), "tls", l.tls)
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.ShutdownTimeout)
	defer cancel()
	for _, l := range ls {
		var serr error
		if l.h1 != nil {
			l.ln.Close()
			serr = l.h1.shutdown(sctx)
		} else {
			serr = l.srv.Shutdown(sctx)
		}
		if serr != nil {
			p.opts.Logger.Warn("proxy shutdown", "addr", l.ln.Addr().String(), "err", serr)
			l.srv.Close()
		}
	}
	return err
}

// newServer returns an http.Server with the Options' limits and p as the
// handler.
func (p *Proxy) newServer() *http.Server {
	return &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.opts.ReadHeaderTimeout,
		IdleTimeout:       p.opts.IdleTimeout,
		MaxHeaderBytes:    p.opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.opts.Logger.Handler(), slog.LevelDebug),
	}
}
