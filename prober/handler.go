package prober

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// handler knows how to probe one target; the worker decides when. A failing
// target is an outcome; an error means the probe could not run at all (a bad
// port name, a refused host, no exec function) and becomes Unknown, which is
// never counted against the thresholds.
type handler interface {
	probe(ctx context.Context) (outcome, error)
}

// deadlineHandler is a handler that enforces a run's deadline itself (on
// its socket): the worker then passes its own context, for cancellation
// only, and spares the run a derived context and its timer.
type deadlineHandler interface {
	probeBy(ctx context.Context, deadline time.Time) (outcome, error)
}

// outcome is one run's result and the message explaining it.
type outcome struct {
	result  Result
	output  string
	warning string
}

func success() outcome { return outcome{result: Success} }

func failure(format string, args ...any) outcome {
	return outcome{result: Failure, output: fmt.Sprintf(format, args...)}
}

// errHandler is the handler of a target whose probe can never run; it
// reports the same error on every run so the reason stays visible.
type errHandler struct{ err error }

func (h errHandler) probe(context.Context) (outcome, error) { return outcome{}, h.err }

// newHandler picks the handler for a target. Everything that can be decided
// once (the URL, the port, whether the host is allowed) is decided here.
func newHandler(t *Target, env *handlerEnv) handler {
	ph := t.Spec.Handler
	switch {
	case ph.Exec != nil:
		return newExecHandler(t)
	case ph.HTTPGet != nil:
		return newHTTPHandler(t, env)
	case ph.TCPSocket != nil:
		return newTCPHandler(t, env)
	case ph.GRPC != nil:
		return newGRPCHandler(t, env)
	}
	return errHandler{errors.New("probe has no handler (exec, httpGet, tcpSocket or grpc)")}
}

// handlerEnv is what handlers share across targets.
type handlerEnv struct {
	userAgent string
	hosts     *hostPolicy
	conns     ConnPolicy
	// dialer closes its sockets with a short SO_LINGER (see the package doc).
	dialer *net.Dialer
	// lingerHTTP is the transport shared by HTTP probes in ConnLinger mode:
	// keep-alive off, sockets through dialer.
	lingerHTTP *http.Transport
	// redirectHTTP follows the redirects plain-HTTP probes receive in
	// ConnReuse mode, keeping connections alive across targets.
	redirectHTTP *http.Transport
}

// redirectIdle is how long redirectHTTP keeps an idle connection.
const redirectIdle = time.Minute

func newHandlerEnv(userAgent string, hosts *hostPolicy, conns ConnPolicy) *handlerEnv {
	env := &handlerEnv{userAgent: userAgent, hosts: hosts, conns: conns, dialer: newDialer()}
	env.lingerHTTP = newTransport(env.dialer)
	env.lingerHTTP.DisableKeepAlives = true
	env.redirectHTTP = newTransport(plainDialer())
	env.redirectHTTP.IdleConnTimeout = redirectIdle
	return env
}

// closeIdle drops the shared transports' idle connections.
func (env *handlerEnv) closeIdle() {
	env.lingerHTTP.CloseIdleConnections()
	env.redirectHTTP.CloseIdleConnections()
}

// closer is implemented by handlers that keep connections between runs.
type closer interface{ close() }

// ErrHostNotAllowed is wrapped by the error of a probe naming a host that is
// neither the target's own, nor loopback, nor in Options.AllowedHosts.
var ErrHostNotAllowed = errors.New("probe host not allowed")

// hostFor returns the host a probe connects to: the handler's own host when
// set and allowed, else the target's.
func (env *handlerEnv) hostFor(t *Target, host string) (string, error) {
	if host == "" {
		return t.Host, nil
	}
	if env.hosts.allowed(host, t.Host) {
		return host, nil
	}
	// A pod spec must not make the node send requests anywhere it likes (the
	// kubelet lets it: blind SSRF from the node's network position).
	return "", fmt.Errorf("%w: %q is not the target's address (%s) nor loopback; "+
		"to probe it, add it (or a CIDR holding it) to the prober's allowed hosts "+
		"(Options.AllowedHosts)", ErrHostNotAllowed, host, t.Host)
}

// resolvePort turns a handler's port into the port actually reachable: a
// name through Target.NamedPorts, a number through Target.PortMap.
func resolvePort(p intstr.IntOrString, t *Target) (int, error) {
	var n int32
	if p.Type == intstr.String {
		name := p.StrVal
		if v, ok := t.NamedPorts[name]; ok {
			n = v
		} else if v, err := strconv.Atoi(name); err == nil {
			// An int stored as a string; the kubelet accepts it too.
			n = mapPort(int32(v), t)
		} else {
			return 0, fmt.Errorf("resolve port %q: no container port has that name (named ports: %s)",
				name, portNames(t.NamedPorts))
		}
	} else {
		n = mapPort(p.IntVal, t)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("resolve port %s: invalid port number: %d", p.String(), n)
	}
	return int(n), nil
}

func mapPort(n int32, t *Target) int32 {
	if v, ok := t.PortMap[n]; ok {
		return v
	}
	return n
}

func portNames(m map[string]int32) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// lingerSeconds is the SO_LINGER timeout of probe sockets in ConnLinger mode
// and of TCP probes: the kubelet's choice, so that a close does not leave
// the socket behind for the full TIME_WAIT when the peer is gone.
const lingerSeconds = 1

func newDialer() *net.Dialer {
	return &net.Dialer{
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER,
					&syscall.Linger{Onoff: 1, Linger: lingerSeconds})
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}

// plainDialer is used for connections kept alive between runs: they close
// rarely, so they take no linger.
func plainDialer() *net.Dialer { return &net.Dialer{} }

// readCapped reads at most limit bytes of r and discards the rest unread.
func readCapped(r io.Reader, limit int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, limit))
}
