package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// grpcHandler probes grpc with grpc.health.v1 Check; only SERVING passes.
type grpcHandler struct {
	addr    string
	service string
	env     *handlerEnv

	mu   sync.Mutex
	conn *grpc.ClientConn // kept between runs in ConnReuse mode
}

func newGRPCHandler(t *Target, env *handlerEnv) handler {
	g := t.Spec.Handler.GRPC
	// The API allows a numeric port only; PortMap still applies.
	port, err := resolvePort(intstr.FromInt32(g.Port), t)
	if err != nil {
		return errHandler{err}
	}
	h := &grpcHandler{addr: net.JoinHostPort(t.Host, strconv.Itoa(port)), env: env}
	if g.Service != nil {
		h.service = *g.Service
	}
	return h
}

func (h *grpcHandler) dial() (*grpc.ClientConn, error) {
	d := h.env.dialer
	if h.env.conns == ConnReuse {
		d = plainDialer()
	}
	return grpc.NewClient("passthrough:///"+h.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(h.env.userAgent),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}),
	)
}

func (h *grpcHandler) probe(ctx context.Context) (outcome, error) {
	h.mu.Lock()
	conn := h.conn
	h.mu.Unlock()
	if conn == nil {
		c, err := h.dial()
		if err != nil {
			return outcome{}, fmt.Errorf("create grpc client for %s: %w", h.addr, err)
		}
		conn = c
		if h.env.conns == ConnReuse {
			h.mu.Lock()
			h.conn = c
			h.mu.Unlock()
		} else {
			defer conn.Close()
		}
	}

	resp, err := healthpb.NewHealthClient(conn).Check(ctx,
		&healthpb.HealthCheckRequest{Service: h.service})
	if err != nil {
		st, _ := status.FromError(err)
		switch {
		case st.Code() == codes.Unimplemented:
			return failure("this server does not implement the grpc health protocol "+
				"(grpc.health.v1.Health): %s", st.Message()), nil
		case st.Code() == codes.DeadlineExceeded || errors.Is(ctx.Err(), context.DeadlineExceeded):
			return failure("timeout: health rpc did not complete within the probe timeout"), nil
		case st.Code() == codes.NotFound:
			return failure("health rpc probe failed: service %q unknown to the server", h.service), nil
		}
		return failure("health rpc probe failed: %s", err.Error()), nil
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return failure("service unhealthy (responded with %q)", s.String()), nil
	}
	return success(), nil
}

func (h *grpcHandler) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		_ = h.conn.Close()
		h.conn = nil
	}
}
