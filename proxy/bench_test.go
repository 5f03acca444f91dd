package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// BenchmarkLookup routes among 100 hosts with 10 paths each.
func BenchmarkLookup(b *testing.B) {
	var ings []*networkingv1.Ingress
	for h := 0; h < 100; h++ {
		var paths []networkingv1.HTTPIngressPath
		for i := 0; i < 10; i++ {
			paths = append(paths, pathOf(prefix, fmt.Sprintf("/api/v%d", i), "svc"))
		}
		paths = append(paths, pathOf(exact, "/healthz", "svc"))
		ings = append(ings, ingressOf(fmt.Sprintf("i%d", h), h,
			ruleOf(fmt.Sprintf("host%d.example.com", h), paths...)))
	}
	p := New(Options{ServeClassless: true})
	if errs := p.SetConfig(Config{Ingresses: ings, Services: servicesFor(ings...)}); len(errs) > 0 {
		b.Fatal(errs)
	}
	b.ReportAllocs()
	for b.Loop() {
		path, _ := cleanPath("/api/v7/users/42")
		if p.table.Load().lookup(hostKey("Host57.example.com:8080"), path) == nil {
			b.Fatal("no route")
		}
	}
}

// BenchmarkProxy measures one proxied GET over loopback keep-alive, 1 KiB
// response, served on the direct path and by net/http.
func BenchmarkProxy(b *testing.B) {
	body := make([]byte, 1024)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	}))
	defer be.Close()
	for _, direct := range []bool{true, false} {
		name := "direct"
		if !direct {
			name = "net-http"
		}
		b.Run(name, func(b *testing.B) {
			p := New(Options{ServeClassless: true})
			ing := ingressOf("app", 0, ruleOf("", pathOf(prefix, "/", "app")))
			p.SetConfig(Config{Ingresses: ingsOf(ing), Services: servicesFor(ing)})
			p.SetEndpoints([]ServiceEndpoints{epsOf("app", be.Listener.Addr().String())})
			url := "http://" + serveWith(b, p, direct).Addr().String() + "/x"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()

			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		})
	}
}
