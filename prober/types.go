package prober

import (
	"context"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Kind is the probe kind.
type Kind int

const (
	Liveness Kind = iota
	Readiness
	Startup
)

// Result is the outcome of one probe run, or the thresholded state.
type Result int

const (
	// Unknown means the probe could not run (an error inside vigil, not in the
	// target). It is never counted against thresholds.
	Unknown Result = iota
	Success
	Failure
)

// Spec is a probe with every default applied and timings resolved.
type Spec struct {
	Handler          corev1.ProbeHandler
	InitialDelay     time.Duration
	Period           time.Duration
	Timeout          time.Duration
	SuccessThreshold int32
	FailureThreshold int32
}

// ExecFunc runs a command in the target container (CRI ExecSync).
type ExecFunc func(ctx context.Context, cmd []string, timeout time.Duration) (exitCode int32, output []byte, err error)

// Target is one probe of one container instance.
type Target struct {
	Namespace, Pod, PodUID, Container string
	// ContainerID identifies the instance; a new ID is a new instance whose
	// counters start from zero.
	ContainerID string
	Kind        Kind
	Spec        Spec
	// Host is the address probed when the handler names none: the pod IP, or
	// 127.0.0.1 for host-network pods.
	Host string
	// NamedPorts resolves a handler's port name to the port actually
	// reachable; PortMap maps a declared container port number to the
	// reachable one (identity unless host-network ports were reassigned).
	NamedPorts map[string]int32
	PortMap    map[int32]int32
	// StartedAt is when the container started; the initial delay counts from it.
	StartedAt time.Time
	// Spread asks for the first run to be placed at a random point within one
	// period (set for containers found running when vigil starts).
	Spread bool
	Exec   ExecFunc
}

// Update reports one probe run of a target.
type Update struct {
	Target *Target
	// Outcome is this run's raw result; Output explains it (for failures, the
	// kubelet-style message such as "HTTP probe failed with statuscode: 500").
	Outcome Result
	Output  string
	// Warning is set for a success that deserves an event (for example a
	// redirect to another host that was not followed).
	Warning string
	// State is the thresholded state after this run and Changed tells whether
	// this run flipped it.
	State   Result
	Changed bool
	// Early marks a readiness run between grid slots, retried because the
	// instance has not passed yet; its failure changes no state.
	Early bool
	// Scheduled is the grid slot this run was due at, Ran when it started
	// (Ran-Scheduled is its lateness) and Duration how long the handler took.
	Scheduled, Ran time.Time
	Duration       time.Duration
}

// String returns the kind in lower case, as logged.
func (k Kind) String() string {
	switch k {
	case Liveness:
		return "liveness"
	case Readiness:
		return "readiness"
	case Startup:
		return "startup"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// metricLabel is the kind as the kubelet's probe_type label spells it.
func (k Kind) metricLabel() string {
	switch k {
	case Liveness:
		return "Liveness"
	case Readiness:
		return "Readiness"
	case Startup:
		return "Startup"
	}
	return k.String()
}

// String returns the result in lower case, as logged.
func (r Result) String() string {
	switch r {
	case Unknown:
		return "unknown"
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "result(" + strconv.Itoa(int(r)) + ")"
}

// metricLabel is the result as the kubelet's result label spells it.
func (r Result) metricLabel() string {
	switch r {
	case Success:
		return "successful"
	case Failure:
		return "failed"
	}
	return "unknown"
}

// InitialState is the state of a probe kind on a new container instance,
// before any run: readiness Failure (not ready until proven), liveness Success
// (alive until proven dead), startup Unknown.
func InitialState(k Kind) Result {
	switch k {
	case Readiness:
		return Failure
	case Liveness:
		return Success
	}
	return Unknown
}
