package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the proxy's collectors. A nil *metrics (no Registerer)
// turns every method into a no-op, so the hot path pays nothing.
type metrics struct {
	p         *Proxy
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	hangups   *prometheus.CounterVec
	retries   *prometheus.CounterVec
	ejections *prometheus.CounterVec
	epTotal   *prometheus.Desc
	epReady   *prometheus.Desc
	routes    map[[2]string]bool
}

// codeClasses are the values of the code label, by status / 100.
var codeClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func newMetrics(p *Proxy, reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		p: p,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_requests_total",
			Help: "Requests answered, by ingress, service and status class.",
		}, []string{"ingress", "service", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vigil_proxy_request_duration_seconds",
			Help: "Time from request head to the end of the response.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
				1, 2.5, 5, 10},
		}, []string{"ingress", "service"}),
		hangups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_client_hangups_total",
			Help: "Requests the client abandoned before the response ended (logged as 499).",
		}, []string{"ingress", "service"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_retries_total",
			Help: "Attempts on a further endpoint after a failed one.",
		}, []string{"service"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_proxy_ejections_total",
			Help: "Endpoints taken out of rotation by passive health checks.",
		}, []string{"service"}),
		epTotal: prometheus.NewDesc("vigil_proxy_endpoints",
			"Endpoints in the latest snapshot, per service port.", []string{"service"}, nil),
		epReady: prometheus.NewDesc("vigil_proxy_endpoints_ready",
			"Endpoints in the snapshot and not ejected, per service port.", []string{"service"}, nil),
		routes: make(map[[2]string]bool),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.hangups, m.retries,
		m.ejections, endpointCollector{m}} {
		if err := reg.Register(c); err != nil {
			p.opts.Logger.Warn("register proxy metric", "err", err)
		}
	}
	return m
}

type routeMetrics struct {
	codes   [6]prometheus.Counter
	dur     prometheus.Observer
	hangups prometheus.Counter
}

func (m *metrics) forRoute(ingress, service string) *routeMetrics {
	if m == nil {
		return nil
	}
	rm := &routeMetrics{
		dur:     m.duration.WithLabelValues(ingress, service),
		hangups: m.hangups.WithLabelValues(ingress, service),
	}
	for i, c := range codeClasses {
		rm.codes[i] = m.requests.WithLabelValues(ingress, service, c)
	}
	m.routes[[2]string{ingress, service}] = true
	return rm
}

// keepRoutes drops the series of routes no longer in the table.
func (m *metrics) keepRoutes(live map[string]*route) {
	if m == nil {
		return
	}
	keep := make(map[[2]string]bool, len(live))
	for _, rt := range live {
		label := ""
		if rt.pool != nil {
			label = rt.pool.label
		}
		keep[[2]string{rt.ingress, label}] = true
	}
	keep[[2]string{"", ""}] = true
	for k := range m.routes {
		if keep[k] {
			continue
		}
		delete(m.routes, k)
		m.duration.DeleteLabelValues(k[0], k[1])
		m.hangups.DeleteLabelValues(k[0], k[1])
		for _, c := range codeClasses {
			m.requests.DeleteLabelValues(k[0], k[1], c)
		}
	}
}

func (rm *routeMetrics) observe(status int, hangup bool, d time.Duration) {
	if rm == nil {
		return
	}
	i := status / 100
	if i < 1 || i > 5 {
		i = 0
	}
	rm.codes[i].Inc()
	rm.dur.Observe(d.Seconds())
	if hangup {
		rm.hangups.Inc()
	}
}

type poolMetrics struct {
	retries, ejections prometheus.Counter
}

func (m *metrics) forPool(label string) *poolMetrics {
	if m == nil {
		return nil
	}
	return &poolMetrics{
		retries:   m.retries.WithLabelValues(label),
		ejections: m.ejections.WithLabelValues(label),
	}
}

func (m *metrics) forgetPool(label string) {
	if m == nil {
		return
	}
	m.retries.DeleteLabelValues(label)
	m.ejections.DeleteLabelValues(label)
}

func (pm *poolMetrics) retry() {
	if pm != nil {
		pm.retries.Inc()
	}
}

func (pm *poolMetrics) ejection() {
	if pm != nil {
		pm.ejections.Inc()
	}
}

// endpointCollector reports endpoint counts at scrape time, so ejections
// that simply expire need no bookkeeping.
type endpointCollector struct{ m *metrics }

func (c endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.epTotal
	ch <- c.m.epReady
}

func (c endpointCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.m.p
	now := p.opts.now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pl := range p.pools {
		list := pl.endpoints()
		ready := 0
		for _, e := range list {
			if !e.ejected(now) {
				ready++
			}
		}
		ch <- prometheus.MustNewConstMetric(c.m.epTotal, prometheus.GaugeValue,
			float64(len(list)), pl.label)
		ch <- prometheus.MustNewConstMetric(c.m.epReady, prometheus.GaugeValue,
			float64(ready), pl.label)
	}
}
