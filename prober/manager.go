package prober

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultUserAgent is the kubelet's, so that applications filtering probe
// requests out of their logs keep doing so.
const DefaultUserAgent = "kube-probe/1.37"

// ConnPolicy says how HTTP probes treat their connections; TCP probes always
// close at once with a short linger. See the package doc for the numbers.
type ConnPolicy int

const (
	// ConnReuse keeps one idle connection per target between runs (the
	// default): no handshake and no socket left in TIME_WAIT per run.
	ConnReuse ConnPolicy = iota
	// ConnLinger opens a connection per run, keep-alive off, and closes it
	// with SO_LINGER as the kubelet does.
	ConnLinger
)

// Options configure a Manager. The zero value works.
type Options struct {
	// OnUpdate is called from the run goroutines for every run; it must be
	// cheap (hand the update to a channel). Default: none.
	OnUpdate func(Update)
	// UserAgent of HTTP and gRPC probes. Default DefaultUserAgent.
	UserAgent string
	// AllowedHosts are IPs, CIDRs or host names that a probe's httpGet.host
	// or tcpSocket.host may name besides the target's own Host and loopback.
	// Default: none. An entry that does not parse is logged and skipped (call
	// Validate to catch it first).
	AllowedHosts []string
	// Logger for state changes (info) and per-run detail (debug). Default
	// slog.Default().
	Logger *slog.Logger
	// Registerer takes the prober_* metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Conns selects how HTTP probes use connections. Default ConnReuse.
	Conns ConnPolicy
}

// Validate reports the first entry of AllowedHosts that does not parse.
func (o Options) Validate() error {
	_, err := newHostPolicy(o.AllowedHosts)
	return err
}

// Manager runs one worker per (pod UID, container, probe kind).
type Manager struct {
	notify  func(Update)
	log     *slog.Logger
	metrics *metrics
	env     *handlerEnv

	mu      sync.Mutex
	stopped bool
	workers map[workerKey]*worker
	gates   map[instanceKey]*gate
	wg      sync.WaitGroup
}

type workerKey struct {
	podUID, container string
	kind              Kind
}

type instanceKey struct{ podUID, container, containerID string }

// NewManager returns a Manager with no targets.
func NewManager(opts Options) *Manager {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	hosts, err := newHostPolicy(opts.AllowedHosts)
	if err != nil {
		log.Warn("ignoring the prober's allowed hosts", "err", err)
		hosts, _ = newHostPolicy(nil)
	}
	return &Manager{
		notify:  opts.OnUpdate,
		log:     log,
		metrics: newMetrics(opts.Registerer),
		env:     newHandlerEnv(ua, hosts, opts.Conns),
		workers: map[workerKey]*worker{},
		gates:   map[instanceKey]*gate{},
	}
}

// Add starts probing t. A target with the same (PodUID, Container, Kind) and
// the same ContainerID is already probed and is ignored; with a new
// ContainerID it replaces the old worker, whose counters are dropped.
// Add the startup target of a container before its liveness and readiness
// targets: the gate takes effect at their next run.
func (m *Manager) Add(t Target) {
	t.Spec = t.Spec.withDefaults()
	k := workerKey{t.PodUID, t.Container, t.Kind}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	if old, ok := m.workers[k]; ok {
		if old.t.ContainerID == t.ContainerID {
			return
		}
		m.stopLocked(k, old, false)
	}

	w := m.newWorkerLocked(&t)
	m.workers[k] = w
	m.wg.Add(1)
	w.start()
}

func (m *Manager) newWorkerLocked(t *Target) *worker {
	ik := instanceKey{t.PodUID, t.Container, t.ContainerID}
	g, ok := m.gates[ik]
	if !ok {
		g = newGate()
		m.gates[ik] = g
	}
	g.refs++
	if t.Kind == Startup {
		g.mu.Lock()
		g.hasStartup = true
		g.mu.Unlock()
	}

	w := &worker{
		t:      t,
		h:      newHandler(t, m.env),
		gate:   g,
		notify: m.notify,
		done:   m.wg.Done,
		state:  InitialState(t.Kind),
		log: m.log.With("pod", t.Namespace+"/"+t.Pod, "container", t.Container,
			"probe", t.Kind.String()),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	m.metrics.bind(w)
	return w
}

// Remove stops every probe kind of the container at once, aborting any run
// in flight (its result is dropped), and deletes their metric series. It is
// safe to call twice. An Update already being delivered may still complete;
// Updates carry the Target, so a caller can tell a stale ContainerID.
func (m *Manager) Remove(podUID, container string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, kind := range []Kind{Liveness, Readiness, Startup} {
		k := workerKey{podUID, container, kind}
		if w, ok := m.workers[k]; ok {
			m.stopLocked(k, w, true)
		}
	}
}

// stopLocked cancels a worker without waiting for it and forgets it.
func (m *Manager) stopLocked(k workerKey, w *worker, forgetMetrics bool) {
	w.stop()
	delete(m.workers, k)
	ik := instanceKey{w.t.PodUID, w.t.Container, w.t.ContainerID}
	if g := m.gates[ik]; g != nil {
		if g.refs--; g.refs <= 0 {
			delete(m.gates, ik)
		}
	}
	if forgetMetrics {
		m.metrics.forget(w.t)
	}
}

// Stop stops every worker and waits for them to end. Add after Stop does
// nothing.
func (m *Manager) Stop() {
	m.mu.Lock()
	m.stopped = true
	for k, w := range m.workers {
		m.stopLocked(k, w, false)
	}
	m.mu.Unlock()

	m.wg.Wait()
	m.env.closeIdle()
}

// Len is the number of targets being probed.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.workers)
}
