// Package supervisor keeps the pods described by manifests running on a CRI
// runtime. It is the only writer of pod state: it creates sandboxes and
// containers, restarts containers by their restart policy with crash-loop
// backoff, kills containers whose liveness or startup probe fails, rolls
// Deployments when their template changes, and publishes the ready endpoints
// of each Service.
//
// Each pod has its own worker goroutine, so one pod stuck in a slow CRI call
// never stalls the others. The supervisor's own loop only decides which pods
// should exist; it makes no CRI calls apart from adoption at start.
//
// State that must survive a restart of vigil lives on the CRI objects: the
// pod's template, workload and host ports on the sandbox's labels and
// annotations, the restart count and backoff on each container's annotations.
// On start the supervisor adopts the sandboxes it finds instead of creating
// new ones.
package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
)

// ProbeManager runs the probes of containers; prober.Manager implements it.
type ProbeManager interface {
	Add(t prober.Target)
	Remove(podUID, container string)
}

// EndpointSink receives the ready endpoints of every Service; proxy.Proxy
// implements it.
type EndpointSink interface {
	SetEndpoints(eps []proxy.ServiceEndpoints)
	// Drain waits until no request is in flight to any of addrs.
	Drain(ctx context.Context, addrs []string) error
}

// Options configure a Supervisor. Zero values take the documented defaults.
type Options struct {
	Runtime runtime.Runtime
	// Exits delivers container exits as they happen; nil leaves exits to
	// the periodic resync.
	Exits     runtime.ExitWatcher
	Prober    ProbeManager
	Endpoints EndpointSink
	Recorder  *Recorder
	Logger    *slog.Logger
	// Registerer receives the supervisor's metrics; nil registers none.
	Registerer prometheus.Registerer

	// NodeName is reported as the pods' spec.nodeName. Default: the hostname.
	NodeName string
	// Instance names this vigil on the runtime. Every sandbox and container
	// it creates carries it (label vigil.dev/instance), and it adopts, and
	// removes as orphans, only those that carry its own: several vigils with
	// different instance names can share one runtime without touching each
	// other's pods. Default "default".
	Instance string
	// HostNetwork runs every pod in the node's network namespace and gives
	// each declared container port its own host port from PortRange, told to
	// the container as $PORT (the first port) and $PORT_<NAME>. Without it
	// pods get their own network from the runtime (CNI) and use their pod IP.
	HostNetwork bool
	// PortRange is the inclusive host-port range. Default 20000-29999.
	PortRange [2]int
	// Backoff: first delay (default 10s), cap (default 300s) and the quiet
	// time after which a container's backoff starts over (default 10m).
	BackoffInitial, BackoffMax, BackoffReset time.Duration
	// ResyncPeriod is how often each pod re-reads its containers' state from
	// the runtime, the fallback for missed exit events. Default 10s.
	ResyncPeriod time.Duration
	// RemovePodsOnExit stops and removes every pod when Run returns. By
	// default pods keep running and the next start adopts them.
	RemovePodsOnExit bool
	// LogDir is where the runtime writes container logs. Default
	// /var/log/vigil/pods.
	LogDir string
	// PullImages pulls an image through the CRI when it is not in the
	// runtime's store. Off by default: hosts without a registry import
	// images instead.
	PullImages bool
	// CgroupParent is the cgroup under which each pod gets its own, removed
	// with the pod (the runtime leaves it behind). Default /vigil; "-" lets
	// the runtime choose and leaves cleaning to it.
	CgroupParent string
	// MinKillGrace is the least grace period a kill gets. Default 2s, as the
	// kubelet.
	MinKillGrace time.Duration
	// CallTimeout bounds each runtime call made without a deadline. Default
	// 10s.
	CallTimeout time.Duration
	// StopMargin is added to the grace period to bound a StopContainer call;
	// a call that overruns it is retried with backoff. Default 2m, as the
	// kubelet.
	StopMargin time.Duration
	// PullTimeout bounds an image pull. Default 5m.
	PullTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.NodeName == "" {
		o.NodeName, _ = os.Hostname()
	}
	if o.Instance == "" {
		o.Instance = "default"
	}
	if o.PortRange == [2]int{} {
		o.PortRange = [2]int{20000, 29999}
	}
	if o.ResyncPeriod <= 0 {
		o.ResyncPeriod = 10 * time.Second
	}
	if o.LogDir == "" {
		o.LogDir = "/var/log/vigil/pods"
	}
	switch o.CgroupParent {
	case "":
		o.CgroupParent = "/vigil"
	case "-":
		o.CgroupParent = ""
	}
	if o.MinKillGrace <= 0 {
		o.MinKillGrace = 2 * time.Second
	}
	if o.Recorder == nil {
		o.Recorder = NewRecorder(o.Logger, o.NodeName, 0)
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.StopMargin <= 0 {
		o.StopMargin = DefaultStopMargin
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = DefaultPullTimeout
	}
}

// Supervisor keeps the desired pods running. Create it with New and start it
// with Run; feed it manifests with SetManifests.
type Supervisor struct {
	opts    Options
	rt      runtime.Runtime
	log     *slog.Logger
	rec     *Recorder
	backoff *backoff
	ports   *portAllocator
	metrics *metrics

	mu        sync.Mutex
	loaded    bool
	workloads map[string]*manifest.Workload // by workloadKey
	services  []*corev1.Service
	pods      map[string]*pod // by pod UID
	// unplaced are the replicas scale wanted but could not place, by
	// workloadKey (unplaced.go); rebuilt by each reconcile.
	unplaced    map[string][]*unplaced
	byContainer map[string]*pod // by container ID, for exit events
	workers     sync.WaitGroup
	runCtx      context.Context

	kick chan struct{}

	// epMu orders endpoint publications; lastEPs is the latest one.
	epMu    sync.Mutex
	lastEPs []proxy.ServiceEndpoints
}

// New returns a Supervisor. Options.Runtime and Options.Prober are required.
func New(opts Options) *Supervisor {
	opts.setDefaults()
	return &Supervisor{
		opts: opts,
		rt: &deadlined{
			rt: opts.Runtime, call: opts.CallTimeout, stopMargin: opts.StopMargin, pull: opts.PullTimeout,
		},
		log:         opts.Logger,
		rec:         opts.Recorder,
		backoff:     newBackoff(opts.BackoffInitial, opts.BackoffMax, opts.BackoffReset),
		ports:       newPortAllocator(opts.PortRange[0], opts.PortRange[1]),
		metrics:     newMetrics(opts.Registerer),
		workloads:   map[string]*manifest.Workload{},
		pods:        map[string]*pod{},
		unplaced:    map[string][]*unplaced{},
		byContainer: map[string]*pod{},
		kick:        make(chan struct{}, 1),
	}
}

// Recorder returns the event recorder.
func (s *Supervisor) Recorder() *Recorder { return s.rec }

func workloadKey(kind, namespace, name string) string {
	return kind + "/" + namespace + "/" + name
}

// SetManifests replaces the desired state. Workloads missing from set have
// their pods removed; changed templates roll.
func (s *Supervisor) SetManifests(set *manifest.Set) {
	s.mu.Lock()
	s.loaded = true
	s.workloads = make(map[string]*manifest.Workload, len(set.Workloads))
	for _, wl := range set.Workloads {
		s.workloads[workloadKey(wl.Kind, wl.Namespace, wl.Name)] = wl
	}
	s.services = set.Services
	s.mu.Unlock()
	s.trigger()
	s.publishEndpoints()
}

// trigger asks the main loop to reconcile soon.
func (s *Supervisor) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run adopts what an earlier vigil left running, then keeps the desired pods
// running until ctx ends. Afterwards it either leaves the pods for the next
// start to adopt or, with RemovePodsOnExit, stops and removes them.
func (s *Supervisor) Run(ctx context.Context) error {
	workerCtx, cancelWorkers := context.WithCancel(context.Background())
	defer cancelWorkers()
	s.mu.Lock()
	s.runCtx = workerCtx
	s.mu.Unlock()

	if err := s.adopt(ctx); err != nil {
		return fmt.Errorf("adopt running pods: %w", err)
	}
	if s.opts.Exits != nil {
		go s.watchExits(workerCtx)
	}

	resync := time.NewTicker(s.opts.ResyncPeriod)
	defer resync.Stop()
	for {
		s.reconcile()
		select {
		case <-ctx.Done():
			s.shutdown(cancelWorkers)
			return nil
		case <-s.kick:
		case <-resync.C:
		}
	}
}

// shutdown ends every pod worker, first removing the pods when configured.
func (s *Supervisor) shutdown(cancelWorkers context.CancelFunc) {
	s.mu.Lock()
	// No pass will try to place them any more.
	s.unplaced = map[string][]*unplaced{}
	s.mu.Unlock()
	if s.opts.RemovePodsOnExit {
		s.log.Info("stopping all pods before exit")
		s.mu.Lock()
		for _, p := range s.pods {
			p.terminate()
		}
		s.mu.Unlock()
	} else {
		s.log.Info("leaving pods running for the next start to adopt")
		cancelWorkers()
	}
	s.workers.Wait()
}

// watchExits forwards runtime exit events to the pod that owns the container.
func (s *Supervisor) watchExits(ctx context.Context) {
	defer s.recoverPanic("exit watcher")
	for ex := range s.opts.Exits.Watch(ctx) {
		s.mu.Lock()
		p := s.byContainer[ex.ContainerID]
		s.mu.Unlock()
		if p != nil {
			p.send(exitSignal{ex})
		}
	}
}

// ProbeResult takes a probe update from the prober. It never blocks.
func (s *Supervisor) ProbeResult(u prober.Update) {
	s.mu.Lock()
	p := s.pods[u.Target.PodUID]
	s.mu.Unlock()
	if p == nil {
		return
	}
	if !takesOutOfRotation(u) {
		p.send(probeSignal{Update: u})
		return
	}
	// The endpoints go at once, without waiting for the pod's worker,
	// which may be inside a slow runtime call.
	p.stateMu.Lock()
	p.withheld++
	p.stateMu.Unlock()
	p.send(probeSignal{Update: u, withheld: true})
	s.publishEndpoints()
}

// reconcile compares desired workloads with the pods that exist and starts
// or terminates pods. It makes no runtime calls.
func (s *Supervisor) reconcile() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded || s.runCtx == nil {
		return
	}

	owned := map[string][]*pod{}
	for _, p := range s.pods {
		k := workloadKey(p.workloadKind, p.namespace, p.workloadName)
		owned[k] = append(owned[k], p)
	}
	waiting := s.unplaced
	s.unplaced = map[string][]*unplaced{}
	for k, wl := range s.workloads {
		s.scale(wl, owned[k], waiting[k])
	}
	for k, pods := range owned {
		if _, ok := s.workloads[k]; ok {
			continue
		}
		for _, p := range pods {
			if !p.terminating() {
				s.log.Info("removing pod of a workload no longer in the manifests", "pod", p.ref())
				p.terminate()
			}
		}
	}
}

// startPod creates the worker of a new pod of wl, named name with the given
// UID. When the pod cannot be created it returns why, and the replica stays
// unplaced. Caller holds s.mu.
func (s *Supervisor) startPod(wl *manifest.Workload, name, uid string) (why string) {
	p, err := newPod(s, podParams{
		name:         name,
		namespace:    wl.Namespace,
		uid:          uid,
		workloadKind: wl.Kind,
		workloadName: wl.Name,
		hash:         wl.Hash,
		template:     *wl.Template.DeepCopy(),
	})
	if err != nil {
		// The pod never existed: the event names the replica set it was
		// to belong to (name-hash), so that each retry adds to one event.
		set := wl.Name
		if wl.Kind != "Pod" {
			set = wl.Name + "-" + wl.Hash
		}
		why = "cannot create a pod of " + wl.Kind + " " + wl.Name + ": " + err.Error()
		s.rec.record(objectRef{namespace: wl.Namespace, pod: set}, corev1.EventTypeWarning,
			ReasonFailedScheduling, why)
		return why
	}
	s.rec.record(p.objRef(""), corev1.EventTypeNormal, ReasonScheduled,
		"Assigned "+p.ref()+" to "+s.opts.NodeName)
	s.launch(p)
	return ""
}

// launch registers p and starts its worker. Caller holds s.mu.
func (s *Supervisor) launch(p *pod) {
	s.pods[p.uid] = p
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		p.run(s.runCtx)
		s.forget(p)
	}()
}

// forget drops a pod whose worker has ended.
func (s *Supervisor) forget(p *pod) {
	s.mu.Lock()
	if p.removed() {
		delete(s.pods, p.uid)
		s.ports.release(p.uid)
		s.backoff.forget(p.uid + "/")
	}
	for id, q := range s.byContainer {
		if q == p {
			delete(s.byContainer, id)
		}
	}
	s.mu.Unlock()
	if p.removed() {
		s.metrics.forgetPod(p)
		s.publishEndpoints()
		s.trigger()
	}
}

// trackContainer routes exit events of container id to p.
func (s *Supervisor) trackContainer(p *pod, id string, track bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if track {
		s.byContainer[id] = p
	} else {
		delete(s.byContainer, id)
	}
}

// podChanged is called by a pod worker after its status changed.
func (s *Supervisor) podChanged() {
	s.publishEndpoints()
	s.trigger()
}

func (s *Supervisor) recoverPanic(what string) {
	if r := recover(); r != nil {
		s.log.Error("panic recovered", "in", what, "panic", r, "stack", string(debug.Stack()))
	}
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// randomSuffix returns five characters the way ReplicaSets name their pods:
// lower-case consonants and digits, so no words are spelt by accident.
func randomSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}
