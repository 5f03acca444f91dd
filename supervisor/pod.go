package supervisor

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/runtime"
)

// podParams are what identifies a pod and what it was made from; adoption
// fills the runtime fields from the CRI objects it finds.
type podParams struct {
	name, namespace, uid string
	workloadKind         string
	workloadName         string
	hash                 string
	template             corev1.PodTemplateSpec
	created              time.Time

	// Set on adoption.
	adopted   bool
	sandboxID string
	attempt   uint32
	podIP     string
	hostPorts map[string]int32 // "container/containerPort" -> host port
}

// pod is one pod and the worker goroutine that owns it. Only the worker
// touches the runtime fields; other goroutines read the published view.
type pod struct {
	s *Supervisor
	podParams
	spec        *corev1.PodSpec
	hostNetwork bool
	// remap is set when declared container ports are replaced by host ports
	// from the range (host-network mode, unless the pod asks for
	// hostNetwork itself).
	remap      bool
	sandboxCfg *cri.PodSandboxConfig
	containers []*container
	// sandboxRetryAt delays the next sandbox creation after a failure.
	sandboxRetryAt time.Time
	sandboxFails   int
	lastResync     time.Time

	inboxMu sync.Mutex
	inbox   []any
	wake    chan struct{}

	stateMu sync.Mutex
	view    *corev1.Pod
	ready   bool // may get traffic
	// settling is set while an adopted container's readiness is not yet
	// known (see container.awaitingProbe): not ready, but not found
	// unready either, so a rollout neither counts nor removes the pod.
	settling bool
	// withheld counts probe results that take the pod out of rotation and
	// are still in the inbox: the pod gets no traffic until the worker has
	// taken them in, even while it is stuck in a runtime call.
	withheld int
	ip       string // address endpoints use
	term     bool
	termCh   chan struct{}
	gone     bool
}

// Container phases, as the worker sees them.
const (
	phaseWaiting    = iota // no instance running: first start, backoff or a failed start
	phaseRunning           // the instance c.id runs
	phaseExited            // the instance c.id ended; restart not decided yet
	phaseTerminated        // ended and the restart policy keeps it down
)

// container is one container of a pod across its instances.
type container struct {
	spec         *corev1.Container
	phase        int
	id           string // newest instance, running or ended
	prevID       string // the instance before it, kept for lastState
	startedAt    time.Time
	restartCount int32
	term         *terminated // how instance id ended
	last         *terminated // how the instance before ended
	ready        bool
	started      bool
	killPending  string // kill message, set while a kill is owed
	killedBy     prober.Kind
	killed       bool
	restartAt    time.Time
	// failedStart is set while the latest start attempt failed.
	failedStart bool
	waitReason  string
	waitMessage string
	// createFailedIn is the sandbox in which a CreateContainer call failed
	// since the last sweep. A failed call may still have created the
	// container, its reply lost to a timeout or a restarting runtime; the
	// next attempt removes such instances before it creates another (see
	// removeLostCreates).
	createFailedIn string
	// awaitingProbe is set on an instance found running at adoption until
	// the prober has said whether it is ready: its first readiness result,
	// or with only a startup probe, the startup probe's success. Probes
	// start over on adoption, so ready=false until then says nothing about
	// the container's health. A kill or an exit settles it too.
	awaitingProbe bool
}

type terminated struct {
	exitCode    int32
	reason      string
	message     string
	startedAt   time.Time
	finishedAt  time.Time
	containerID string
}

type exitSignal struct{ runtime.Exit }
type probeSignal struct {
	prober.Update
	withheld bool // counted in pod.withheld until handled
}

// takesOutOfRotation reports whether a probe result ends the container's
// claim to traffic: readiness turning to failure, or liveness or startup
// reaching their failure threshold (a kill follows).
func takesOutOfRotation(u prober.Update) bool {
	return u.Changed && u.State != prober.Success
}

func newPod(s *Supervisor, pp podParams) (*pod, error) {
	if pp.created.IsZero() {
		pp.created = time.Now()
	}
	p := &pod{
		s:         s,
		podParams: pp,
		wake:      make(chan struct{}, 1),
		termCh:    make(chan struct{}),
	}
	p.spec = &p.template.Spec
	p.hostNetwork = s.opts.HostNetwork || p.spec.HostNetwork
	p.remap = s.opts.HostNetwork && !p.spec.HostNetwork
	for i := range p.spec.Containers {
		p.containers = append(p.containers, &container{spec: &p.spec.Containers[i], waitReason: "ContainerCreating"})
	}
	if p.remap && p.hostPorts == nil {
		if err := p.allocatePorts(); err != nil {
			return nil, err
		}
	}
	p.view = p.buildView() // not published: the pod is not registered yet
	return p, nil
}

func (p *pod) ref() string { return p.namespace + "/" + p.name }

func (p *pod) objRef(container string) objectRef {
	return objectRef{namespace: p.namespace, pod: p.name, uid: types.UID(p.uid), container: container}
}

func (p *pod) key(c *container) string { return p.uid + "/" + c.spec.Name }

// send queues a signal for the worker without blocking.
func (p *pod) send(sig any) {
	p.inboxMu.Lock()
	p.inbox = append(p.inbox, sig)
	p.inboxMu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pod) takeInbox() []any {
	p.inboxMu.Lock()
	defer p.inboxMu.Unlock()
	in := p.inbox
	p.inbox = nil
	return in
}

// terminate asks the worker to stop and remove the pod. Safe to call twice.
func (p *pod) terminate() {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if !p.term {
		p.term = true
		close(p.termCh)
	}
}

func (p *pod) terminating() bool {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.term
}

func (p *pod) removed() bool {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.gone
}

func (p *pod) isReady() bool {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.ready && !p.term && p.withheld == 0
}

// isSettling reports whether the pod was adopted and its readiness is not
// known yet: it is not ready, and not known to be unready either.
func (p *pod) isSettling() bool {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.settling && !p.term && p.withheld == 0
}

// run is the pod's worker: it syncs the pod with the runtime, then waits for
// a signal, a due restart or the next resync.
func (p *pod) run(ctx context.Context) {
	if p.adopted {
		for _, c := range p.containers {
			if c.phase == phaseRunning {
				p.s.trackContainer(p, c.id, true)
				p.addProbes(c, true)
			}
		}
		p.lastResync = time.Now()
	}
	p.publish()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if p.terminating() {
			p.guard("teardown", p.teardown)
			return
		}
		var next time.Time
		p.guard("sync", func() { next = p.sync(ctx) })
		p.publish()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(time.Until(next), time.Millisecond))

		select {
		case <-ctx.Done():
			p.stopProbes()
			return
		case <-p.termCh:
		case <-p.wake:
			for _, sig := range p.takeInbox() {
				p.guard("signal", func() { p.handle(ctx, sig) })
			}
		case <-timer.C:
		}
		if time.Since(p.lastResync) >= p.s.opts.ResyncPeriod {
			p.guard("resync", func() { p.resync(ctx) })
		}
	}
}

// guard runs one step of the worker and turns a panic into a log line with
// the stack, so the pod keeps its worker.
func (p *pod) guard(step string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			p.s.log.Error("panic recovered", "pod", p.ref(), "in", step, "panic", fmt.Sprint(r),
				"stack", string(debug.Stack()))
		}
	}()
	f()
}

// sync performs whatever the pod needs now and returns when it next needs
// attention.
func (p *pod) sync(ctx context.Context) time.Time {
	now := time.Now()
	next := p.lastResync.Add(p.s.opts.ResyncPeriod)
	if p.sandboxID == "" {
		if now.Before(p.sandboxRetryAt) {
			return p.sandboxRetryAt
		}
		if err := p.createSandbox(ctx); err != nil {
			p.sandboxFails++
			wait := min(time.Duration(p.sandboxFails)*time.Second, 30*time.Second)
			p.sandboxRetryAt = now.Add(wait)
			p.s.rec.record(p.objRef(""), corev1.EventTypeWarning, "FailedCreatePodSandBox",
				"Failed to create pod sandbox: "+err.Error())
			return p.sandboxRetryAt
		}
		p.sandboxFails = 0
	}
	for _, c := range p.containers {
		if wake := p.syncContainer(ctx, c, now); !wake.IsZero() && wake.Before(next) {
			next = wake
		}
	}
	return next
}

// syncContainer acts on one container: an owed kill, an exit to decide on,
// or a due start. It returns when the container next needs attention.
func (p *pod) syncContainer(ctx context.Context, c *container, now time.Time) time.Time {
	switch c.phase {
	case phaseRunning:
		if c.killPending != "" {
			p.kill(ctx, c)
		}
		if c.phase == phaseRunning {
			return time.Time{}
		}
		now = time.Now()
	case phaseTerminated:
		return time.Time{}
	}
	if c.phase == phaseExited {
		p.afterExit(c, now)
		if c.phase == phaseTerminated {
			return time.Time{}
		}
	}
	if now.Before(c.restartAt) {
		return c.restartAt
	}
	p.startContainer(ctx, c)
	if c.phase != phaseRunning {
		return c.restartAt
	}
	return time.Time{}
}

// handle applies one signal from the exit watcher or the prober.
func (p *pod) handle(ctx context.Context, sig any) {
	switch sig := sig.(type) {
	case exitSignal:
		for _, c := range p.containers {
			if c.id == sig.ContainerID && c.phase == phaseRunning {
				p.noteExit(ctx, c, &sig.Exit)
			}
		}
	case probeSignal:
		p.handleProbe(ctx, sig.Update)
		if sig.withheld {
			p.stateMu.Lock()
			p.withheld--
			p.stateMu.Unlock()
			p.s.podChanged() // the pod's own state rules again
		}
	}
}

// handleProbe records probe events and acts on state changes: readiness
// sets ready, startup sets started, and a failed liveness or startup probe
// kills the container.
func (p *pod) handleProbe(ctx context.Context, u prober.Update) {
	var c *container
	for _, cc := range p.containers {
		if cc.spec.Name == u.Target.Container && cc.id == u.Target.ContainerID {
			c = cc
		}
	}
	if c == nil || c.phase != phaseRunning || c.killPending != "" {
		return // a result for an instance that is gone or going
	}
	p.s.metrics.observeProbe(u)
	p.settleReadiness(c, u)
	kind := kindName(u.Target.Kind)
	ref := p.objRef(c.spec.Name)
	switch {
	case u.Early && u.Outcome != prober.Success:
		// An early readiness retry while the container starts: the run on
		// the grid reports a failure that lasts.
	case u.Outcome == prober.Failure:
		p.s.rec.record(ref, corev1.EventTypeWarning, ReasonUnhealthy, kind+" probe failed: "+u.Output)
	case u.Outcome == prober.Unknown:
		p.s.rec.record(ref, corev1.EventTypeWarning, ReasonUnhealthy, kind+" probe errored: "+u.Output)
	case u.Warning != "":
		p.s.rec.record(ref, corev1.EventTypeWarning, ReasonProbeWarning, kind+" probe warning: "+u.Warning)
	}
	if !u.Changed {
		return
	}
	switch u.Target.Kind {
	case prober.Readiness:
		c.ready = u.State == prober.Success
	case prober.Startup:
		c.started = u.State == prober.Success
		if u.State == prober.Failure {
			p.requestKill(ctx, c, prober.Startup)
		}
	case prober.Liveness:
		if u.State == prober.Failure {
			p.requestKill(ctx, c, prober.Liveness)
		}
	}
	p.updateReady(c)
}

// settleReadiness ends an adopted container's wait for its readiness to be
// known: any readiness result decides it (the prober's state is now its
// own finding, failures included), and so does the startup probe's success
// when there is no readiness probe to follow it. A startup failure short of
// its threshold decides nothing yet (at the threshold the kill does); a
// startup probe that cannot run (Unknown) never will, and readiness waits
// behind it, so the container counts as not ready from then on.
func (p *pod) settleReadiness(c *container, u prober.Update) {
	if !c.awaitingProbe {
		return
	}
	switch u.Target.Kind {
	case prober.Readiness:
		// The first result rules even when it leaves the prober's state
		// as it began (a failure): the readiness carried over from before
		// the adoption ends here.
		c.awaitingProbe = false
		c.ready = u.State == prober.Success
	case prober.Startup:
		switch {
		case u.Outcome == prober.Unknown:
			c.awaitingProbe = false
		case u.State == prober.Success && c.spec.ReadinessProbe == nil:
			c.awaitingProbe = false
		}
	}
}

// updateReady derives c.ready for containers without a readiness probe: a
// running container is ready once started.
func (p *pod) updateReady(c *container) {
	if c.spec.ReadinessProbe == nil {
		c.ready = c.phase == phaseRunning && c.started && c.killPending == ""
	}
}

// requestKill owes the container a kill for a failed probe; the kill runs at
// once in this worker.
func (p *pod) requestKill(ctx context.Context, c *container, kind prober.Kind) {
	msg := fmt.Sprintf("Container %s failed %s probe", c.spec.Name, kindLower(kind))
	if p.spec.RestartPolicy != corev1.RestartPolicyNever {
		msg += ", will be restarted"
	}
	c.killPending = msg
	c.killedBy = kind
	c.ready = false
	p.publish()
	p.kill(ctx, c)
}

func kindName(k prober.Kind) string {
	switch k {
	case prober.Liveness:
		return "Liveness"
	case prober.Readiness:
		return "Readiness"
	default:
		return "Startup"
	}
}

func kindLower(k prober.Kind) string {
	switch k {
	case prober.Liveness:
		return "liveness"
	case prober.Readiness:
		return "readiness"
	default:
		return "startup"
	}
}
