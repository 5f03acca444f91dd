// Package admin serves vigil's admin API: health, Prometheus metrics, and
// the pods, events and endpoints vigil runs, in Kubernetes' own shapes
// (v1.PodList, v1.EventList) so that existing tools and habits apply.
package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/proxy"
)

// Sources are what the admin API reads. Each is called per request.
type Sources struct {
	Pods      func() *corev1.PodList
	Events    func() *corev1.EventList
	Endpoints func() []proxy.ServiceEndpoints
	// Healthy reports whether vigil can serve; nil means always.
	Healthy func() error
	// Changes, when set, signals (coalesced) that pods or events changed;
	// the status page's live stream waits on it.
	Changes func() <-chan struct{}
}

// Options configure the handler.
type Options struct {
	Sources  Sources
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
}

// NewHandler returns the admin API:
//
//	GET /healthz    "ok", or 503 with the reason
//	GET /metrics    Prometheus text
//	GET /pods       v1.PodList
//	GET /events     v1.EventList
//	GET /endpoints  ready endpoints per Service
//	GET /           the status page (status.go), live through
//	GET /stream     server-sent snapshots of pods, endpoints and events
//	GET /snapshot   one such snapshot
func NewHandler(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	mux := http.NewServeMux()
	src := opts.Sources
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if src.Healthy != nil {
			if err := src.Healthy(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		}))
	}
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, src.Pods())
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, src.Events())
	})
	mux.HandleFunc("GET /endpoints", func(w http.ResponseWriter, r *http.Request) {
		eps := src.Endpoints()
		if eps == nil {
			eps = []proxy.ServiceEndpoints{}
		}
		writeJSON(w, eps)
	})
	newStatusPage(src, opts.Logger).register(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
