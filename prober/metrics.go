package prober

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the kubelet's /metrics/probes series, on the caller's registry.
type metrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Subsystem: "prober",
			Name:      "probe_total",
			Help:      "Cumulative number of liveness, readiness or startup probe runs by result.",
		}, []string{"probe_type", "result", "container", "pod", "namespace", "pod_uid"}),
		// Unlike the kubelet, failures are recorded too: a probe that times
		// out is exactly the one whose duration matters.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Subsystem: "prober",
			Name:      "probe_duration_seconds",
			Help:      "Duration in seconds of probe runs, whatever their result.",
			Buckets:   prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5 ms .. 8 s
		}, []string{"probe_type", "container", "pod", "namespace"}),
	}
	if reg != nil {
		m.total = register(reg, m.total)
		m.duration = register(reg, m.duration)
	}
	return m
}

// register registers c, or returns the equal collector already registered
// (two managers on one registry share their series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	return c
}

// bind resolves the worker's metric children once.
func (m *metrics) bind(w *worker) {
	t := w.t
	kind := t.Kind.metricLabel()
	for _, r := range []Result{Unknown, Success, Failure} {
		w.counts[r] = m.total.WithLabelValues(kind, r.metricLabel(),
			t.Container, t.Pod, t.Namespace, t.PodUID)
	}
	w.latency = m.duration.WithLabelValues(kind, t.Container, t.Pod, t.Namespace)
}

// forget deletes a target's series.
func (m *metrics) forget(t *Target) {
	kind := t.Kind.metricLabel()
	for _, r := range []Result{Unknown, Success, Failure} {
		m.total.DeleteLabelValues(kind, r.metricLabel(), t.Container, t.Pod, t.Namespace, t.PodUID)
	}
	m.duration.DeleteLabelValues(kind, t.Container, t.Pod, t.Namespace)
}
