package prober

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func listen(t *testing.T, addr string) *countingListener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return &countingListener{Listener: l}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func testEnv(t *testing.T, conns ConnPolicy, allowed ...string) *handlerEnv {
	t.Helper()
	hp, err := newHostPolicy(allowed)
	if err != nil {
		t.Fatal(err)
	}
	env := newHandlerEnv(DefaultUserAgent, hp, conns)
	t.Cleanup(env.closeIdle)
	return env
}

func httpTarget(host string, port intstr.IntOrString, path string, timeout time.Duration) *Target {
	return &Target{
		Host: host,
		Spec: Spec{Timeout: timeout, Handler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port},
		}}.withDefaults(),
	}
}

func runProbe(t *testing.T, h handler, timeout time.Duration) (outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if c, ok := h.(closer); ok {
		defer c.close()
	}
	return h.probe(ctx)
}

func TestHTTPStatusAndBody(t *testing.T) {
	other := listen(t, "127.0.0.2:0")
	otherSrv := &http.Server{Handler: http.NotFoundHandler()}
	go otherSrv.Serve(other)
	t.Cleanup(func() { otherSrv.Close() })

	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.WriteHeader(code)
		io.WriteString(w, "secret body that must not be echoed")
	})
	mux.HandleFunc("/same", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/other", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+other.Addr().String()+"/x", http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 50<<10)))
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "8192")
		w.Write([]byte(strings.Repeat("x", 2<<10)))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	host, port := hostPort(t, srv.Listener.Addr().String())

	tests := []struct {
		desc, path  string
		want        Result
		wantOutput  string // substring
		wantWarning string // substring; "" means none
	}{
		{desc: "200", path: "/ok", want: Success},
		{desc: "399 passes", path: "/status/399", want: Success},
		{desc: "same-host redirect followed", path: "/same", want: Success},
		{desc: "404 fails", path: "/status/404", want: Failure,
			wantOutput: "HTTP probe failed with statuscode: 404"},
		{desc: "500 fails", path: "/status/500", want: Failure,
			wantOutput: "HTTP probe failed with statuscode: 500"},
		{desc: "looping redirect fails", path: "/loop", want: Failure,
			wantOutput: "stopped after 10 redirects"},
		{desc: "other-host redirect not followed", path: "/other", want: Success,
			wantWarning: "Probe terminated redirects"},
		{desc: "50 KiB body", path: "/big", want: Success},
		{desc: "body stalls after 2 KiB", path: "/stall", want: Failure,
			wantOutput: "read probe response body"},
	}
	for _, conns := range []ConnPolicy{ConnReuse, ConnLinger} {
		env := testEnv(t, conns)
		for _, tt := range tests {
			t.Run(fmt.Sprintf("conns=%d/%s", conns, tt.desc), func(t *testing.T) {
				tg := httpTarget(host, intstr.FromInt(port), tt.path, 300*time.Millisecond)
				o, err := runProbe(t, newHTTPHandler(tg, env), 2*time.Second)
				if err != nil {
					t.Fatalf("probe error: %v", err)
				}
				if o.result != tt.want {
					t.Fatalf("result = %v (%q), want %v", o.result, o.output, tt.want)
				}
				if !strings.Contains(o.output, tt.wantOutput) {
					t.Errorf("output = %q, want it to contain %q", o.output, tt.wantOutput)
				}
				if strings.Contains(o.output, "secret") {
					t.Errorf("output echoes the body: %q", o.output)
				}
				if tt.wantWarning == "" && o.warning != "" || !strings.Contains(o.warning, tt.wantWarning) {
					t.Errorf("warning = %q, want %q", o.warning, tt.wantWarning)
				}
			})
		}
	}
	if n := other.n.Load(); n != 0 {
		t.Errorf("the other host's listener accepted %d connections, want 0", n)
	}
}

func TestHTTPServerNeverAnswers(t *testing.T) {
	l := listen(t, "127.0.0.1:0")
	var held sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() { defer held.Done(); io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	host, port := hostPort(t, l.Addr().String())
	tg := httpTarget(host, intstr.FromInt(port), "/", 200*time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), tg.Spec.Timeout)
	defer cancel()
	o, err := newHTTPHandler(tg, testEnv(t, ConnLinger)).probe(ctx)
	if err != nil || o.result != Failure || !strings.Contains(o.output, "deadline exceeded") {
		t.Fatalf("got %v %q %v, want a deadline failure", o.result, o.output, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("probe took %v, want about the 200ms timeout", d)
	}
	if l.n.Load() != 1 {
		t.Errorf("accepted %d connections, want 1", l.n.Load())
	}
}

func TestHTTPRequestAsSent(t *testing.T) {
	type seen struct {
		host, rawQuery, path string
		header               http.Header
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.URL.RawQuery, r.URL.Path, r.Header.Clone()}
	}))
	t.Cleanup(srv.Close)
	host, port := hostPort(t, srv.Listener.Addr().String())

	tests := []struct {
		desc    string
		path    string
		headers []corev1.HTTPHeader
		check   func(t *testing.T, s seen)
	}{
		{desc: "defaults", path: "/healthz", check: func(t *testing.T, s seen) {
			if ua := s.header.Get("User-Agent"); ua != "kube-probe/1.37" {
				t.Errorf("User-Agent = %q", ua)
			}
			if a := s.header.Get("Accept"); a != "*/*" {
				t.Errorf("Accept = %q", a)
			}
			if s.header.Get("Accept-Encoding") != "" {
				t.Errorf("compression asked for: %q", s.header.Get("Accept-Encoding"))
			}
		}},
		{desc: "query string and Host header", path: "/ready?verbose=1&check=db,cache",
			headers: []corev1.HTTPHeader{{Name: "Host", Value: "app.example"}},
			check: func(t *testing.T, s seen) {
				if s.host != "app.example" {
					t.Errorf("Host = %q, want app.example", s.host)
				}
				if s.path != "/ready" || s.rawQuery != "verbose=1&check=db,cache" {
					t.Errorf("path, query = %q, %q", s.path, s.rawQuery)
				}
			}},
		{desc: "repeated header, overridden and deleted defaults", path: "healthz",
			headers: []corev1.HTTPHeader{
				{Name: "X-Check", Value: "a"}, {Name: "X-Check", Value: "b"},
				{Name: "User-Agent", Value: ""}, {Name: "Accept", Value: "application/json"},
			},
			check: func(t *testing.T, s seen) {
				if v := s.header.Values("X-Check"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
					t.Errorf("X-Check = %q, want [a b]", v)
				}
				if _, ok := s.header["User-Agent"]; ok {
					t.Errorf("User-Agent sent: %q", s.header.Get("User-Agent"))
				}
				if s.header.Get("Accept") != "application/json" {
					t.Errorf("Accept = %q", s.header.Values("Accept"))
				}
				if s.path != "/healthz" {
					t.Errorf("path = %q, want /healthz", s.path)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tg := httpTarget(host, intstr.FromInt(port), tt.path, time.Second)
			tg.Spec.Handler.HTTPGet.HTTPHeaders = tt.headers
			o, err := runProbe(t, newHTTPHandler(tg, testEnv(t, ConnReuse)), 2*time.Second)
			if err != nil || o.result != Success {
				t.Fatalf("got %v %q %v", o.result, o.output, err)
			}
			tt.check(t, <-got)
		})
	}
}

func TestHTTPSAndNoProxy(t *testing.T) {
	proxy := listen(t, "127.0.0.1:0")
	t.Setenv("HTTP_PROXY", "http://"+proxy.Addr().String())
	t.Setenv("HTTPS_PROXY", "http://"+proxy.Addr().String())

	tls := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(tls.Close)
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(plain.Close)

	for _, tc := range []struct {
		scheme corev1.URIScheme
		addr   string
	}{{"HTTPS", tls.Listener.Addr().String()}, {"https", tls.Listener.Addr().String()},
		{"http", plain.Listener.Addr().String()}} {
		host, port := hostPort(t, tc.addr)
		tg := httpTarget(host, intstr.FromInt(port), "/", time.Second)
		tg.Spec.Handler.HTTPGet.Scheme = tc.scheme
		o, err := runProbe(t, newHTTPHandler(tg, testEnv(t, ConnLinger)), 2*time.Second)
		if err != nil || o.result != Success {
			t.Errorf("scheme %s: got %v %q %v, want success", tc.scheme, o.result, o.output, err)
		}
	}
	if n := proxy.n.Load(); n != 0 {
		t.Errorf("the environment's proxy got %d connections, want 0", n)
	}
}

func TestHTTPPortsAndHosts(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	host, port := hostPort(t, srv.Listener.Addr().String())

	tests := []struct {
		desc      string
		target    func() *Target
		allowed   []string
		want      Result
		wantErr   string
		noConnect bool // the handler must be refused before any network code
	}{
		{desc: "named port", want: Success, target: func() *Target {
			tg := httpTarget(host, intstr.FromString("http"), "/", time.Second)
			tg.NamedPorts = map[string]int32{"http": int32(port), "metrics": 9}
			return tg
		}},
		{desc: "numeric port through PortMap", want: Success, target: func() *Target {
			tg := httpTarget(host, intstr.FromInt(8080), "/", time.Second)
			tg.PortMap = map[int32]int32{8080: int32(port)}
			return tg
		}},
		{desc: "misspelt port name", want: Unknown, noConnect: true,
			wantErr: `resolve port "htpp": no container port has that name (named ports: http, metrics)`,
			target: func() *Target {
				tg := httpTarget(host, intstr.FromString("htpp"), "/", time.Second)
				tg.NamedPorts = map[string]int32{"http": int32(port), "metrics": 9}
				return tg
			}},
		{desc: "port out of range", want: Unknown, noConnect: true, wantErr: "invalid port number: 70000",
			target: func() *Target { return httpTarget(host, intstr.FromInt(70000), "/", time.Second) }},
		{desc: "loopback host allowed", want: Success, target: func() *Target {
			tg := httpTarget("10.0.0.7", intstr.FromInt(port), "/", time.Second)
			tg.Spec.Handler.HTTPGet.Host = host
			return tg
		}},
		// 192.0.2.0/24 is TEST-NET-1; the handler is refused before any dial.
		{desc: "other host refused", want: Unknown, noConnect: true,
			wantErr: `probe host not allowed: "192.0.2.10" is not the target's address`,
			target: func() *Target {
				tg := httpTarget(host, intstr.FromInt(port), "/", time.Second)
				tg.Spec.Handler.HTTPGet.Host = "192.0.2.10"
				return tg
			}},
		{desc: "refusal says how to allow", want: Unknown, noConnect: true,
			wantErr: "Options.AllowedHosts", allowed: []string{"192.0.2.128/25"},
			target: func() *Target {
				tg := httpTarget(host, intstr.FromInt(port), "/", time.Second)
				tg.Spec.Handler.HTTPGet.Host = "192.0.2.10"
				return tg
			}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			h := newHTTPHandler(tt.target(), testEnv(t, ConnReuse, tt.allowed...))
			if _, refused := h.(errHandler); refused != tt.noConnect {
				t.Fatalf("handler refused = %v, want %v", refused, tt.noConnect)
			}
			o, err := runProbe(t, h, 2*time.Second)
			if tt.want == Unknown {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || o.result != tt.want {
				t.Fatalf("got %v %q %v, want %v", o.result, o.output, err, tt.want)
			}
		})
	}
}

func TestHostPolicy(t *testing.T) {
	p, err := newHostPolicy([]string{"192.0.2.0/24", "2001:db8::1", "Metrics.Internal"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, own string
		want      bool
	}{
		{"10.1.2.3", "10.1.2.3", true},
		{"127.0.0.1", "10.1.2.3", true},
		{"127.9.9.9", "10.1.2.3", true},
		{"::1", "10.1.2.3", true},
		{"[::1]", "10.1.2.3", true},
		{"localhost", "10.1.2.3", true},
		{"192.0.2.77", "10.1.2.3", true},
		{"2001:db8::1", "10.1.2.3", true},
		{"metrics.internal", "10.1.2.3", true},
		{"10.1.2.4", "10.1.2.3", false},
		{"169.254.169.254", "10.1.2.3", false},
		{"0.0.0.0", "10.1.2.3", false},
		{"example.com", "10.1.2.3", false},
		{"198.51.100.1", "10.1.2.3", false},
	}
	for _, tt := range tests {
		if got := p.allowed(tt.host, tt.own); got != tt.want {
			t.Errorf("allowed(%q, own %q) = %v, want %v", tt.host, tt.own, got, tt.want)
		}
	}
	for _, tc := range []struct{ entry, want string }{
		{"10.0.0.0/33", `"10.0.0.0/33" is not a valid CIDR`},
		{"10.0.0.256", `"10.0.0.256" is not a valid IP address`},
		{"fe80::zz", `"fe80::zz" is not a valid IP address`},
		{"bad_host", `"bad_host" is neither an IP, a CIDR nor a valid host name`},
	} {
		_, err := newHostPolicy([]string{tc.entry})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("newHostPolicy(%q) = %v, want %q", tc.entry, err, tc.want)
		}
	}
	if err := (Options{AllowedHosts: []string{"a b"}}).Validate(); err == nil {
		t.Error("Validate accepted a host with a space")
	}
}
