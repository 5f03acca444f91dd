package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const ns = "default"

func pathOf(pt networkingv1.PathType, p, svc string) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{
		Path:     p,
		PathType: &pt,
		Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
			Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80},
		}},
	}
}

func ruleOf(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
	return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{
		HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths},
	}}
}

// ingressOf returns a classless Ingress; age orders conflicts (lower is
// older).
func ingressOf(name string, age int, rules ...networkingv1.IngressRule) *networkingv1.Ingress {
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0)),
		},
		Spec: networkingv1.IngressSpec{Rules: rules},
	}
}

func serviceOf(name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80}}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}
}

// servicesFor declares every service the Ingresses name, on port 80.
func servicesFor(ings ...*networkingv1.Ingress) []*corev1.Service {
	seen := map[string]bool{}
	var out []*corev1.Service
	add := func(be *networkingv1.IngressBackend) {
		if be != nil && be.Service != nil && !seen[be.Service.Name] {
			seen[be.Service.Name] = true
			out = append(out, serviceOf(be.Service.Name))
		}
	}
	for _, ing := range ings {
		add(ing.Spec.DefaultBackend)
		for _, r := range ing.Spec.Rules {
			if r.HTTP != nil {
				for _, p := range r.HTTP.Paths {
					add(&p.Backend)
				}
			}
		}
	}
	return out
}

func epsOf(svc string, addrs ...string) ServiceEndpoints {
	list := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		list[i] = Endpoint{Address: a, Namespace: ns, Pod: fmt.Sprintf("%s-%d", svc, i)}
	}
	return ServiceEndpoints{Namespace: ns, Name: svc, Ports: map[int32][]Endpoint{80: list}}
}

// logSink collects access-log records.
type logSink struct{ ch chan slog.Record }

func newLogSink() *logSink { return &logSink{ch: make(chan slog.Record, 1024)} }

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *logSink) WithGroup(string) slog.Handler            { return s }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "request" {
		select {
		case s.ch <- r.Clone():
		default: // load tests log more than anyone reads
		}
	}
	return nil
}

// next returns the next access-log record's attributes.
func (s *logSink) next(t *testing.T) map[string]slog.Value {
	t.Helper()
	select {
	case r := <-s.ch:
		m := map[string]slog.Value{}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value; return true })
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no access log record")
		return nil
	}
}

// fixture is a proxy served on loopback with one Service "app" routed at
// "/" for every host.
type fixture struct {
	p    *Proxy
	url  string // http://addr
	ln   net.Listener
	logs *logSink
}

func newFixture(t *testing.T, opts Options, svcAnnotations map[string]string, addrs ...string) *fixture {
	t.Helper()
	logs := newLogSink()
	opts.ServeClassless = true
	opts.AccessLog = true
	if opts.Logger == nil {
		opts.Logger = slog.New(logs)
	}
	p := New(opts)
	ing := ingressOf("app", 0, ruleOf("", pathOf(networkingv1.PathTypePrefix, "/", "app")))
	svc := serviceOf("app")
	svc.Annotations = svcAnnotations
	if errs := p.SetConfig(Config{Ingresses: []*networkingv1.Ingress{ing},
		Services: []*corev1.Service{svc}}); len(errs) > 0 {
		t.Fatalf("SetConfig: %v", errs)
	}
	p.SetEndpoints([]ServiceEndpoints{epsOf("app", addrs...)})
	ln := serveTest(t, p)
	return &fixture{p: p, url: "http://" + ln.Addr().String(), ln: ln, logs: logs}
}

func (f *fixture) addr() string { return f.ln.Addr().String() }

// serveTest serves p on a loopback port as Serve serves its plain listener:
// the direct HTTP/1.1 path first, net/http for the rest. With
// VIGIL_PROXY_SERVER=net/http net/http serves every request, so that the
// same tests cover both paths.
func serveTest(tb testing.TB, p *Proxy) net.Listener {
	tb.Helper()
	return serveWith(tb, p, os.Getenv("VIGIL_PROXY_SERVER") != "net/http")
}

// serveWith serves p on a loopback port, on the direct path or not.
func serveWith(tb testing.TB, p *Proxy, direct bool) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := p.newServer()
	if !direct {
		done := make(chan struct{})
		go func() {
			_ = srv.Serve(ln)
			close(done)
		}()
		tb.Cleanup(func() {
			srv.Close()
			<-done
		})
		return ln
	}
	h := newH1Server(p, srv, ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- h.serve(ln) }()
	tb.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-errc; err != http.ErrServerClosed {
			tb.Errorf("serve returned %v", err)
		}
	})
	return ln
}

// backend is a counting test server.
type backend struct {
	*httptest.Server
	hits atomic.Int64
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

func okHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Seen-URI", r.RequestURI)
	_, _ = io.WriteString(w, "ok")
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// rawRequest sends a request head as written and reads the response, so
// that no client library rewrites the target.
func rawRequest(t *testing.T, addr, head string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", strings.SplitN(head, "\r\n", 2)[0], err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func get(t *testing.T, url string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(strings.NewReader(string(body)))
	return res
}

func ingsOf(ings ...*networkingv1.Ingress) []*networkingv1.Ingress { return ings }
