package prober

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestTCP(t *testing.T) {
	open := listen(t, "127.0.0.1:0")
	go func() {
		for {
			c, err := open.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed := listen(t, "127.0.0.1:0")
	_, closedPort := hostPort(t, closed.Addr().String())
	closed.Close()
	_, openPort := hostPort(t, open.Addr().String())

	tests := []struct {
		desc       string
		port       int
		host       string
		want       Result
		wantOutput string
	}{
		{desc: "open", port: openPort, want: Success},
		{desc: "open via handler host", port: openPort, host: "127.0.0.1", want: Success},
		{desc: "closed", port: closedPort, want: Failure, wantOutput: "connection refused"},
		{desc: "host refused", port: openPort, host: "192.0.2.1", want: Unknown,
			wantOutput: "probe host not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tg := &Target{Host: "127.0.0.1", Spec: Spec{Handler: corev1.ProbeHandler{
				TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(tt.port), Host: tt.host},
			}}.withDefaults()}
			o, err := runProbe(t, newTCPHandler(tg, testEnv(t, ConnLinger)), time.Second)
			if err != nil {
				o = outcome{result: Unknown, output: err.Error()}
			}
			if o.result != tt.want || !strings.Contains(o.output, tt.wantOutput) {
				t.Fatalf("got %v %q, want %v containing %q", o.result, o.output, tt.want, tt.wantOutput)
			}
		})
	}
}

func TestGRPC(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	l := listen(t, "127.0.0.1:0")
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	bare := grpc.NewServer() // no health service
	bl := listen(t, "127.0.0.1:0")
	go bare.Serve(bl)
	t.Cleanup(bare.Stop)

	_, port := hostPort(t, l.Addr().String())
	_, barePort := hostPort(t, bl.Addr().String())
	str := func(s string) *string { return &s }
	tests := []struct {
		desc       string
		port       int
		service    *string
		want       Result
		wantOutput string
	}{
		{desc: "server default", port: port, want: Success},
		{desc: "SERVING", port: port, service: str("up"), want: Success},
		{desc: "NOT_SERVING", port: port, service: str("down"), want: Failure,
			wantOutput: `service unhealthy (responded with "NOT_SERVING")`},
		{desc: "unknown service", port: port, service: str("nope"), want: Failure,
			wantOutput: `service "nope" unknown`},
		{desc: "no health service", port: barePort, want: Failure,
			wantOutput: "does not implement the grpc health protocol"},
	}
	for _, conns := range []ConnPolicy{ConnReuse, ConnLinger} {
		for _, tt := range tests {
			t.Run(tt.desc, func(t *testing.T) {
				tg := &Target{Host: "127.0.0.1", Spec: Spec{Handler: corev1.ProbeHandler{
					GRPC: &corev1.GRPCAction{Port: int32(tt.port), Service: tt.service},
				}}.withDefaults()}
				h := newGRPCHandler(tg, testEnv(t, conns))
				for range 2 { // the second run reuses the connection in ConnReuse mode
					o, err := runProbe(t, h, 2*time.Second)
					if err != nil || o.result != tt.want || !strings.Contains(o.output, tt.wantOutput) {
						t.Fatalf("got %v %q %v, want %v containing %q",
							o.result, o.output, err, tt.want, tt.wantOutput)
					}
				}
			})
		}
	}
}

func TestExec(t *testing.T) {
	tests := []struct {
		desc       string
		exec       ExecFunc
		want       Result
		wantOutput string
		wantErr    bool
	}{
		{desc: "exit 0", want: Success, wantOutput: "fine",
			exec: func(context.Context, []string, time.Duration) (int32, []byte, error) {
				return 0, []byte("fine\n"), nil
			}},
		{desc: "exit 1", want: Failure, wantOutput: `command ["check" "--deep"] exited with 1: db down`,
			exec: func(context.Context, []string, time.Duration) (int32, []byte, error) {
				return 1, []byte("db down"), nil
			}},
		{desc: "exit 137 without output", want: Failure, wantOutput: "exited with 137",
			exec: func(context.Context, []string, time.Duration) (int32, []byte, error) {
				return 137, nil, nil
			}},
		{desc: "timeout", want: Failure, wantOutput: "timed out after 50ms",
			exec: func(ctx context.Context, _ []string, timeout time.Duration) (int32, []byte, error) {
				if timeout != 50*time.Millisecond {
					return 0, nil, errors.New("timeout not passed on")
				}
				<-ctx.Done()
				return -1, nil, ctx.Err()
			}},
		{desc: "runtime error", want: Unknown, wantErr: true, wantOutput: "container not found",
			exec: func(context.Context, []string, time.Duration) (int32, []byte, error) {
				return 0, nil, errors.New("container not found")
			}},
		{desc: "no exec function", want: Unknown, wantErr: true, wantOutput: "no exec function"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tg := &Target{Exec: tt.exec, Spec: Spec{Timeout: 50 * time.Millisecond,
				Handler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check", "--deep"}}},
			}.withDefaults()}
			ctx, cancel := context.WithTimeout(context.Background(), tg.Spec.Timeout)
			defer cancel()
			o, err := newHandler(tg, testEnv(t, ConnReuse)).probe(ctx)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				o.output = err.Error()
			}
			if o.result != tt.want || !strings.Contains(o.output, tt.wantOutput) {
				t.Fatalf("got %v %q, want %v containing %q", o.result, o.output, tt.want, tt.wantOutput)
			}
		})
	}
}

func TestNewSpec(t *testing.T) {
	got := NewSpec(&corev1.Probe{InitialDelaySeconds: 4, PeriodSeconds: 0, TimeoutSeconds: 2,
		FailureThreshold: 5})
	want := Spec{InitialDelay: 4 * time.Second, Period: 10 * time.Second, Timeout: 2 * time.Second,
		SuccessThreshold: 1, FailureThreshold: 5}
	if got != want {
		t.Errorf("NewSpec = %+v, want %+v", got, want)
	}
	if s := (Spec{Period: time.Millisecond}).withDefaults(); s.Period != MinPeriod {
		t.Errorf("1ms period became %v, want %v", s.Period, MinPeriod)
	}
}
