// Command vigilproxy runs vigil's proxy package alone, with one Ingress,
// Service and endpoint, for the benchmark.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-agent/vigil/proxy"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18081", "proxy listen address")
	upstream := flag.String("upstream", "127.0.0.1:18080", "backend address")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		// Serve returns on SIGTERM; the profile is flushed before exit.
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	prefix := networkingv1.PathTypePrefix
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "app"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{
					Path: "/", PathType: &prefix,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
						Name: "app", Port: networkingv1.ServiceBackendPort{Number: 80},
					}},
				}},
			}},
		}}},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "app"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Metrics on, as vigil runs the proxy: they cost a clock read and a
	// histogram update per request.
	p := proxy.New(proxy.Options{ServeClassless: true, Logger: logger,
		Registerer: prometheus.NewRegistry()})
	if errs := p.SetConfig(proxy.Config{Ingresses: []*networkingv1.Ingress{ing},
		Services: []*corev1.Service{svc}}); len(errs) > 0 {
		log.Fatal(errs)
	}
	p.SetEndpoints([]proxy.ServiceEndpoints{{Namespace: "bench", Name: "app",
		Ports: map[int32][]proxy.Endpoint{80: {{Address: *upstream}}}}})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Serve(ctx, *listen, ""); err != nil {
		log.Print(err)
	}
}
