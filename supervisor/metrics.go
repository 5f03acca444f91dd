package supervisor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/prober"
)

// metrics are the supervisor's Prometheus series. A nil registerer gives
// working but unregistered collectors.
type metrics struct {
	restarts *prometheus.GaugeVec
	state    *prometheus.GaugeVec
	backoff  *prometheus.GaugeVec
	probeRes *prometheus.CounterVec
}

var containerStates = []string{"waiting", "running", "terminated"}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{"namespace", "pod", "container"}
	m := &metrics{
		restarts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_container_restarts",
			Help: "Restart count of each container, as in the pod's status.",
		}, labels),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_container_state",
			Help: "1 for the state each container is in (waiting, running, terminated).",
		}, append(labels, "state")),
		backoff: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_container_backoff_remaining_seconds",
			Help: "Seconds left before a container in crash-loop backoff is restarted.",
		}, labels),
		probeRes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_probe_state_changes_total",
			Help: "Thresholded probe state changes by probe kind and new state.",
		}, []string{"namespace", "pod", "container", "probe_type", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.restarts, m.state, m.backoff, m.probeRes)
	}
	return m
}

func (m *metrics) setRestarts(p *pod, c *container) {
	m.restarts.WithLabelValues(p.namespace, p.name, c.spec.Name).Set(float64(c.restartCount))
}

func (m *metrics) setState(p *pod, c *container) {
	cur := "waiting"
	switch c.phase {
	case phaseRunning:
		cur = "running"
	case phaseExited, phaseTerminated:
		cur = "terminated"
	}
	for _, s := range containerStates {
		v := 0.0
		if s == cur {
			v = 1
		}
		m.state.WithLabelValues(p.namespace, p.name, c.spec.Name, s).Set(v)
	}
	left := 0.0
	if c.phase == phaseWaiting && c.waitReason == "CrashLoopBackOff" {
		left = max(time.Until(c.restartAt).Seconds(), 0)
	}
	m.backoff.WithLabelValues(p.namespace, p.name, c.spec.Name).Set(left)
}

func (m *metrics) observeProbe(u prober.Update) {
	if !u.Changed {
		return
	}
	state := "success"
	if u.State == prober.Failure {
		state = "failure"
	} else if u.State == prober.Unknown {
		state = "unknown"
	}
	m.probeRes.WithLabelValues(u.Target.Namespace, u.Target.Pod, u.Target.Container,
		kindName(u.Target.Kind), state).Inc()
}

// forgetPod deletes every series of a removed pod.
func (m *metrics) forgetPod(p *pod) {
	match := prometheus.Labels{"namespace": p.namespace, "pod": p.name}
	m.restarts.DeletePartialMatch(match)
	m.state.DeletePartialMatch(match)
	m.backoff.DeletePartialMatch(match)
	m.probeRes.DeletePartialMatch(match)
}
