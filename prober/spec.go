package prober

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Defaults of a probe, as the Kubernetes API defaults them
// (pkg/apis/core/v1/defaults.go). A zero in a Spec means the default.
const (
	DefaultPeriod           = 10 * time.Second
	DefaultTimeout          = 1 * time.Second
	DefaultSuccessThreshold = 1
	DefaultFailureThreshold = 3

	// MinPeriod is the shortest period a worker runs at; a shorter Spec.Period
	// is raised to it. Sub-second periods come from a vigil annotation, not
	// from periodSeconds.
	MinPeriod = 10 * time.Millisecond
)

// NewSpec converts an API probe to a Spec: seconds become durations and zero
// values become the API defaults (period 10s, timeout 1s, thresholds 1 and 3).
// A nil probe gives a Spec with no handler and default timings.
func NewSpec(p *corev1.Probe) Spec {
	if p == nil {
		return Spec{}.withDefaults()
	}
	s := Spec{
		Handler:          p.ProbeHandler,
		InitialDelay:     seconds(p.InitialDelaySeconds),
		Period:           seconds(p.PeriodSeconds),
		Timeout:          seconds(p.TimeoutSeconds),
		SuccessThreshold: p.SuccessThreshold,
		FailureThreshold: p.FailureThreshold,
	}
	return s.withDefaults()
}

func seconds(n int32) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// withDefaults fills zero (or negative) fields with the defaults and raises a
// period below MinPeriod to it.
func (s Spec) withDefaults() Spec {
	if s.InitialDelay < 0 {
		s.InitialDelay = 0
	}
	if s.Period <= 0 {
		s.Period = DefaultPeriod
	}
	if s.Period < MinPeriod {
		s.Period = MinPeriod
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.SuccessThreshold <= 0 {
		s.SuccessThreshold = DefaultSuccessThreshold
	}
	if s.FailureThreshold <= 0 {
		s.FailureThreshold = DefaultFailureThreshold
	}
	return s
}
