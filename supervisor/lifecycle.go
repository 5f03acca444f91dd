package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/runtime"
)

// createSandbox runs the pod's sandbox, replacing a dead one.
func (p *pod) createSandbox(ctx context.Context) error {
	cfg := p.sandboxConfig()
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	id, err := p.s.rt.RunPodSandbox(ctx, cfg)
	if err != nil {
		return fmt.Errorf("run pod sandbox: %w", err)
	}
	p.sandboxID, p.sandboxCfg = id, cfg
	p.podIP = "127.0.0.1"
	if !p.hostNetwork {
		st, err := p.s.rt.PodSandboxStatus(ctx, id)
		if err != nil {
			return fmt.Errorf("read pod sandbox status: %w", err)
		}
		if ip := st.GetNetwork().GetIp(); ip != "" {
			p.podIP = ip
		}
	}
	p.s.log.Info("pod sandbox running", "pod", p.ref(), "sandbox", shortID(id), "attempt", p.attempt)
	return nil
}

// startContainer creates and starts the next instance of c. On failure it
// leaves c waiting with a reason and a backoff.
func (p *pod) startContainer(ctx context.Context, c *container) {
	key := p.key(c)
	restartCount := c.restartCount
	// Each attempt steps the backoff once: a restart after an exit from the
	// exit's time, a retry after a failed start from now. The very first
	// start steps only if it fails.
	switch {
	case c.last != nil && !c.failedStart:
		restartCount++
		p.s.backoff.step(key, c.last.finishedAt)
	case c.last != nil:
		restartCount++
		p.s.backoff.step(key, time.Now())
	case c.failedStart:
		p.s.backoff.step(key, time.Now())
	}
	c.failedStart = false

	image := c.spec.Image
	if err := p.ensureImage(ctx, c); err != nil {
		p.startFailed(c, "ErrImagePull", fmt.Errorf("image %q: %w", image, err))
		return
	}
	if c.createFailedIn != "" {
		// A sweep that fails fails this attempt, which backs off like any
		// failed start: a runtime that stays unreachable is asked again
		// only at the next attempt.
		if c.createFailedIn == p.sandboxID {
			if err := p.removeLostCreates(ctx, c); err != nil {
				p.startFailed(c, "CreateContainerError",
					fmt.Errorf("remove instances an earlier create may have left: %w", err))
				return
			}
		}
		// A different sandbox means the one that failed was replaced, and
		// its containers went with it.
		c.createFailedIn = ""
	}
	delay, since := p.s.backoff.state(key)
	cfg := p.containerConfig(c, restartCount, delay, since)
	id, err := p.s.rt.CreateContainer(ctx, p.sandboxID, cfg, p.sandboxCfg)
	if err != nil {
		p.startFailed(c, "CreateContainerError", err)
		c.createFailedIn = p.sandboxID
		if errors.Is(err, runtime.ErrNotFound) {
			p.sandboxID = "" // the sandbox vanished under us
		}
		return
	}
	p.s.rec.record(p.objRef(c.spec.Name), corev1.EventTypeNormal, ReasonCreated,
		"Created container "+c.spec.Name)
	// Route exit events to this pod before the start: a container that
	// exits at once can report it before StartContainer returns, and an
	// event for an unknown container is dropped (the resync would find the
	// exit only a resync period later).
	p.s.trackContainer(p, id, true)
	if err := p.s.rt.StartContainer(ctx, id); err != nil {
		// The start may have gone through though the call failed, its reply
		// lost to a timeout or a restarting runtime. Removing the instance
		// stops it if it runs; the next attempt waits until the runtime has
		// confirmed that, or it could run a second copy.
		if rerr := p.discardContainer(ctx, id, p.termCh); rerr != nil {
			p.s.log.Warn("container of a failed start not confirmed removed; the pod is going",
				"pod", p.ref(), "id", shortID(id), "err", rerr)
		}
		p.s.trackContainer(p, id, false)
		p.startFailed(c, "RunContainerError", err)
		return
	}
	p.s.rec.record(p.objRef(c.spec.Name), corev1.EventTypeNormal, ReasonStarted,
		"Started container "+c.spec.Name)

	// Keep the instance before this one for lastState; the one before that
	// goes, once the new instance is being probed.
	stale := ""
	if c.prevID != "" && c.prevID != c.id {
		stale = c.prevID
	}
	if c.id != "" {
		c.prevID = c.id
	}
	c.id = id
	c.phase = phaseRunning
	c.restartCount = restartCount
	c.term, c.killPending, c.killed = nil, "", false
	c.waitReason, c.waitMessage = "", ""
	c.started = c.spec.StartupProbe == nil
	c.ready, c.awaitingProbe = false, false
	p.updateReady(c)
	p.s.metrics.setRestarts(p, c)
	// Probing starts before the runtime is asked for the exact start time:
	// the initial delay then counts from StartContainer's return, a little
	// after the process started, so it is never cut short, and the first
	// run does not wait for one more runtime call.
	c.startedAt = time.Now()
	p.addProbes(c, false)
	if st, err := p.s.rt.ContainerStatus(ctx, id); err == nil && st.StartedAt > 0 {
		c.startedAt = time.Unix(0, st.StartedAt)
	}
	p.s.log.Info("container started", "pod", p.ref(), "container", c.spec.Name,
		"id", shortID(id), "restartCount", restartCount)
	if stale != "" {
		p.removeInBackground(ctx, stale)
	}
}

// removeLostCreates removes the instances of c in the pod's sandbox that
// vigil created but never learnt of: those of a CreateContainer that failed
// after the runtime had acted. Such an instance was never started, so
// removing it loses nothing; it would otherwise stay until the sandbox goes,
// and while it exists containerd refuses another with the same name and
// attempt ("failed to reserve container name"). Only instances still in
// CONTAINER_CREATED that carry this vigil's labels for c are candidates, and
// the current and previous instances (c.id, c.prevID) are never touched. The
// worker starts or discards every instance whose ID it learns before it next
// sweeps, so no created instance it knows of is among them.
func (p *pod) removeLostCreates(ctx context.Context, c *container) error {
	list, err := p.s.rt.ListContainers(ctx, &cri.ContainerFilter{
		PodSandboxId:  p.sandboxID,
		State:         &cri.ContainerStateValue{State: cri.ContainerState_CONTAINER_CREATED},
		LabelSelector: p.instanceLabels(c),
	})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, in := range list {
		if !p.lostCreate(c, in) {
			continue
		}
		if err := p.s.rt.RemoveContainer(ctx, in.Id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return fmt.Errorf("remove container %s: %w", shortID(in.Id), err)
		}
		p.s.log.Info("removed a container created by a call whose reply was lost",
			"pod", p.ref(), "container", c.spec.Name, "id", shortID(in.Id))
	}
	return nil
}

// lostCreate reports whether in, listed from the pod's sandbox, is an
// instance of c that vigil created and does not know. The filter given to
// the runtime already says most of this; it is checked again here because
// removing the wrong container is worse than keeping a stray one.
func (p *pod) lostCreate(c *container, in *cri.Container) bool {
	if in.Id == "" || in.Id == c.id || in.Id == c.prevID {
		return false
	}
	if in.PodSandboxId != p.sandboxID || in.State != cri.ContainerState_CONTAINER_CREATED ||
		in.GetMetadata().GetName() != c.spec.Name {
		return false
	}
	for k, v := range p.instanceLabels(c) {
		if got, ok := in.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// instanceLabels are the labels containerConfig puts on every instance of c
// that tell it apart: vigil's own, this vigil's instance, and the
// container's name.
func (p *pod) instanceLabels(c *container) map[string]string {
	return map[string]string{
		LabelManaged:               "true",
		LabelInstance:              p.s.opts.Instance,
		runtime.LabelPodUID:        p.uid,
		runtime.LabelContainerName: c.spec.Name,
	}
}

// removeInBackground removes an ended instance that no state refers to any
// more. Nothing waits for it: in the worker it would hold up the handling
// of the new instance's first probe results (its readiness, hence its
// endpoints) for as long as the runtime takes. A removal that fails leaves
// the container to adoption, which removes all but the two newest instances.
func (p *pod) removeInBackground(ctx context.Context, id string) {
	p.s.workers.Add(1) // the calling worker is counted, so Wait has not returned
	go func() {
		defer p.s.workers.Done()
		if err := p.s.rt.RemoveContainer(ctx, id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			p.s.log.Debug("remove old container instance failed", "pod", p.ref(), "id", shortID(id), "err", err)
		}
	}()
}

// startFailed leaves c waiting after a failed start and backs off: the next
// attempt waits the current delay (the initial one after a first start).
func (p *pod) startFailed(c *container, reason string, err error) {
	now := time.Now()
	delay, _ := p.s.backoff.state(p.key(c))
	if delay == 0 {
		delay = p.s.backoff.initial
	}
	c.failedStart = true
	c.phase = phaseWaiting
	c.waitReason, c.waitMessage = reason, err.Error()
	c.restartAt = now.Add(delay)
	p.s.rec.record(p.objRef(c.spec.Name), corev1.EventTypeWarning, ReasonFailed,
		fmt.Sprintf("Error: %s: %v", reason, err))
}

// ensureImage makes sure the container's image is in the runtime's store,
// pulling it when allowed.
func (p *pod) ensureImage(ctx context.Context, c *container) error {
	present, err := p.s.rt.ImagePresent(ctx, c.spec.Image)
	if err != nil {
		return err
	}
	pull := c.spec.ImagePullPolicy == corev1.PullAlways && p.s.opts.PullImages
	if present && !pull {
		return nil
	}
	if c.spec.ImagePullPolicy == corev1.PullNever {
		return errors.New("not present and imagePullPolicy is Never")
	}
	if !p.s.opts.PullImages {
		if present {
			return nil
		}
		return errors.New("not present in the runtime's image store and pulling is off " +
			"(import it with 'vigil image import' or enable runtime.pullImages)")
	}
	return p.s.rt.PullImage(ctx, c.spec.Image)
}

// addProbes starts the probes of a running container.
func (p *pod) addProbes(c *container, spread bool) {
	if p.s.opts.Prober == nil {
		return
	}
	probes := []struct {
		kind  prober.Kind
		name  string
		probe *corev1.Probe
	}{
		{prober.Startup, "startup", c.spec.StartupProbe},
		{prober.Liveness, "liveness", c.spec.LivenessProbe},
		{prober.Readiness, "readiness", c.spec.ReadinessProbe},
	}
	named, numbered := p.portMaps(c)
	for _, pr := range probes {
		if pr.probe == nil {
			continue
		}
		spec := prober.NewSpec(pr.probe)
		if period, timeout := manifest.ProbeOverrides(&p.template, c.spec.Name, pr.name); period > 0 || timeout > 0 {
			if period > 0 {
				spec.Period = period
			}
			if timeout > 0 {
				spec.Timeout = timeout
			}
		}
		id := c.id
		p.s.opts.Prober.Add(prober.Target{
			Namespace:   p.namespace,
			Pod:         p.name,
			PodUID:      p.uid,
			Container:   c.spec.Name,
			ContainerID: id,
			Kind:        pr.kind,
			Spec:        spec,
			Host:        p.podIP,
			NamedPorts:  named,
			PortMap:     numbered,
			StartedAt:   c.startedAt,
			Spread:      spread,
			Exec: func(ctx context.Context, cmd []string, timeout time.Duration) (int32, []byte, error) {
				res, err := p.s.rt.ExecSync(ctx, id, cmd, timeout)
				if err != nil {
					return 0, nil, err
				}
				return res.ExitCode, append(res.Stdout, res.Stderr...), nil
			},
		})
	}
}

func (p *pod) stopProbes() {
	if p.s.opts.Prober == nil {
		return
	}
	for _, c := range p.containers {
		p.s.opts.Prober.Remove(p.uid, c.spec.Name)
	}
}

// kill stops a container whose probe failed: out of the endpoints first,
// then its in-flight requests drain, then the runtime stops it with the
// probe's or the pod's grace period.
func (p *pod) kill(ctx context.Context, c *container) {
	p.s.rec.record(p.objRef(c.spec.Name), corev1.EventTypeNormal, ReasonKilling, c.killPending)
	p.publish()
	p.s.publishEndpoints()
	p.drain(ctx, 2*time.Second)
	if p.s.opts.Prober != nil {
		p.s.opts.Prober.Remove(p.uid, c.spec.Name)
	}
	grace := p.killGrace(c)
	// A pod being removed stops waiting here: teardown stops the container
	// under its own deadline.
	st, err := p.stopContainer(ctx, c.id, grace, p.termCh)
	if err != nil {
		return // still owed; the next sync tries again
	}
	c.killed = true
	// The status that confirmed the stop is how the instance ended.
	var stErr error
	if st == nil {
		stErr = runtime.ErrNotFound
	}
	p.recordExit(c, nil, st, stErr)
}

// killGrace is the grace period of a probe kill of c: the failed probe's own
// terminationGracePeriodSeconds overrides the pod's, and never below the
// minimum (the kubelet clamps to 2 s).
func (p *pod) killGrace(c *container) time.Duration {
	grace := 30 * time.Second
	if p.spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
	}
	var probe *corev1.Probe
	switch c.killedBy {
	case prober.Liveness:
		probe = c.spec.LivenessProbe
	case prober.Startup:
		probe = c.spec.StartupProbe
	}
	if probe != nil && probe.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*probe.TerminationGracePeriodSeconds) * time.Second
	}
	return max(grace, p.s.opts.MinKillGrace)
}

// drain waits, at most bound, for requests in flight to this pod to finish.
func (p *pod) drain(ctx context.Context, bound time.Duration) {
	if p.s.opts.Endpoints == nil {
		return
	}
	addrs := p.addresses()
	if len(addrs) == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	_ = p.s.opts.Endpoints.Drain(dctx, addrs)
}

// stopContainer stops id and confirms that it no longer runs, retrying with
// backoff while the runtime fails or hangs (each call is bounded by grace
// plus Options.StopMargin). No new instance starts before this returns nil,
// so two copies never run at once. It gives up only when ctx ends or abort
// is closed. It returns the status that confirmed the stop, nil when the
// runtime no longer knows the container.
func (p *pod) stopContainer(ctx context.Context, id string, grace time.Duration,
	abort <-chan struct{}) (*cri.ContainerStatus, error) {
	delay := time.Second
	for attempt := 1; ; attempt++ {
		err := p.s.rt.StopContainer(ctx, id, grace)
		if err == nil || errors.Is(err, runtime.ErrNotFound) {
			st, serr := p.s.rt.ContainerStatus(ctx, id)
			switch {
			case errors.Is(serr, runtime.ErrNotFound):
				return nil, nil
			case serr != nil:
				err = serr
			case st.State == cri.ContainerState_CONTAINER_EXITED ||
				st.State == cri.ContainerState_CONTAINER_CREATED:
				return st, nil
			default:
				err = fmt.Errorf("container still %s after stop", st.State)
			}
		}
		p.s.log.Warn("stop container failed, will retry", "pod", p.ref(), "id", shortID(id),
			"attempt", attempt, "retryIn", delay, "err", err)
		if attempt == 1 {
			p.s.rec.record(p.objRef(""), corev1.EventTypeWarning, ReasonFailedStop,
				fmt.Sprintf("error killing container %s: %v", shortID(id), err))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-abort:
			return nil, errors.New("stop container: pod is being removed")
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// discardContainer removes instance id, which the runtime stops first if it
// runs, retrying with backoff until the runtime confirms it is gone. It gives
// up only when ctx ends or abort is closed; the pod's teardown then removes
// the instance with its sandbox.
func (p *pod) discardContainer(ctx context.Context, id string, abort <-chan struct{}) error {
	delay := time.Second
	for attempt := 1; ; attempt++ {
		err := p.s.rt.RemoveContainer(ctx, id)
		if err == nil || errors.Is(err, runtime.ErrNotFound) {
			return nil
		}
		p.s.log.Warn("remove container failed, will retry", "pod", p.ref(), "id", shortID(id),
			"attempt", attempt, "retryIn", delay, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-abort:
			return errors.New("remove container: pod is being removed")
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// noteExit records that instance c.id has ended, reading how from the
// runtime; hint comes from an exit event when there is one.
func (p *pod) noteExit(ctx context.Context, c *container, hint *runtime.Exit) {
	st, err := p.s.rt.ContainerStatus(ctx, c.id)
	p.recordExit(c, hint, st, err)
}

// recordExit records how instance c.id ended from its status st as read
// from the runtime (err when that failed), unless st says it still runs.
func (p *pod) recordExit(c *container, hint *runtime.Exit, st *cri.ContainerStatus, err error) {
	// The reason stays empty unless the runtime gives one, so that an exit
	// known only from its event is named by its code below.
	t := &terminated{containerID: c.id, startedAt: c.startedAt, finishedAt: time.Now()}
	if hint != nil {
		t.exitCode, t.finishedAt = hint.ExitCode, hint.ExitedAt
	}
	switch {
	case err == nil && (st.State == cri.ContainerState_CONTAINER_RUNNING ||
		st.State == cri.ContainerState_CONTAINER_UNKNOWN):
		if hint == nil {
			return // still running, or the runtime cannot tell yet
		}
	case err == nil:
		t.exitCode, t.reason, t.message = st.ExitCode, st.Reason, st.Message
		if st.FinishedAt > 0 {
			t.finishedAt = time.Unix(0, st.FinishedAt)
		}
		if st.StartedAt > 0 {
			t.startedAt = time.Unix(0, st.StartedAt)
		}
	case errors.Is(err, runtime.ErrNotFound):
		t.reason = "ContainerStatusUnknown"
		t.message = "The container could not be located when the pod was synced"
		if hint == nil {
			t.exitCode = 137
		}
	default:
		if hint == nil {
			return // the runtime does not answer; try again at the next resync
		}
	}
	if t.reason == "" {
		t.reason = "Error"
		if t.exitCode == 0 {
			t.reason = "Completed"
		}
	}
	c.phase, c.term = phaseExited, t
	c.ready, c.started, c.awaitingProbe = false, false, false
	if p.s.opts.Prober != nil {
		p.s.opts.Prober.Remove(p.uid, c.spec.Name)
	}
	p.s.trackContainer(p, c.id, false)
	p.s.log.Info("container exited", "pod", p.ref(), "container", c.spec.Name,
		"id", shortID(c.id), "exitCode", t.exitCode, "reason", t.reason, "killed", c.killed)
	p.publish()
	p.s.publishEndpoints()
}

// afterExit applies the restart policy to an ended instance: under Always a
// container restarts; under OnFailure when it failed or a probe killed it;
// under Never it stays down. A restart waits out the crash-loop backoff.
func (p *pod) afterExit(c *container, now time.Time) {
	t := c.term
	restart := false
	switch p.spec.RestartPolicy {
	case corev1.RestartPolicyNever:
	case corev1.RestartPolicyOnFailure:
		restart = c.killed || t.exitCode != 0
	default:
		restart = true
	}
	if !restart {
		c.phase = phaseTerminated
		p.s.metrics.setState(p, c)
		return
	}
	c.last, c.term = t, nil
	c.phase = phaseWaiting
	wait := p.s.backoff.wait(p.key(c), t.finishedAt, now)
	c.restartAt = now.Add(wait)
	c.waitReason, c.waitMessage = "ContainerCreating", ""
	if wait > 0 {
		c.waitReason = "CrashLoopBackOff"
		delay, _ := p.s.backoff.state(p.key(c))
		c.waitMessage = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s",
			delay, c.spec.Name, p.ref())
		p.s.rec.record(p.objRef(c.spec.Name), corev1.EventTypeWarning, ReasonBackOff,
			"Back-off restarting failed container "+c.spec.Name+" in pod "+p.name)
	}
	p.s.metrics.setState(p, c)
}

// resync re-reads the sandbox and the running containers from the runtime,
// catching exits whose events were missed and a sandbox that died.
func (p *pod) resync(ctx context.Context) {
	p.lastResync = time.Now()
	if p.sandboxID == "" {
		return
	}
	st, err := p.s.rt.PodSandboxStatus(ctx, p.sandboxID)
	switch {
	case errors.Is(err, runtime.ErrNotFound) || (err == nil && st.State != cri.PodSandboxState_SANDBOX_READY):
		p.s.log.Warn("pod sandbox is gone, recreating it", "pod", p.ref(), "sandbox", shortID(p.sandboxID))
		p.s.rec.record(p.objRef(""), corev1.EventTypeNormal, ReasonSandbox,
			"Pod sandbox changed, it will be killed and re-created.")
		for _, c := range p.containers {
			if c.phase == phaseRunning {
				p.noteExit(ctx, c, &runtime.Exit{ContainerID: c.id, ExitCode: 137, ExitedAt: time.Now()})
			}
		}
		old := p.sandboxID
		_ = p.s.rt.StopPodSandbox(ctx, old)
		_ = p.s.rt.RemovePodSandbox(ctx, old)
		p.sandboxID = ""
		p.attempt++
		return
	case err != nil:
		p.s.log.Debug("resync: runtime unavailable", "pod", p.ref(), "err", err)
		return
	}
	for _, c := range p.containers {
		if c.phase == phaseRunning {
			p.noteExit(ctx, c, nil) // returns at once while it runs
		}
	}
}

// teardown stops and removes the pod: out of the endpoints, drained,
// containers stopped with the pod's grace period, sandbox removed.
func (p *pod) teardown() {
	grace := 30 * time.Second
	if p.spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace+time.Minute)
	defer cancel()

	for _, c := range p.containers {
		c.ready = false
	}
	p.publish()
	p.s.publishEndpoints()
	p.drain(ctx, min(grace, 5*time.Second))
	p.stopProbes()
	for _, c := range p.containers {
		if c.phase == phaseRunning {
			p.s.rec.record(p.objRef(c.spec.Name), corev1.EventTypeNormal, ReasonKilling,
				"Stopping container "+c.spec.Name)
			if _, err := p.stopContainer(ctx, c.id, grace, nil); err != nil {
				p.s.log.Warn("container did not stop, removing its sandbox anyway",
					"pod", p.ref(), "container", c.spec.Name, "err", err)
			}
			p.s.trackContainer(p, c.id, false)
		}
	}
	if p.sandboxID != "" {
		if err := p.s.rt.StopPodSandbox(ctx, p.sandboxID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			p.s.log.Warn("stop pod sandbox failed", "pod", p.ref(), "err", err)
		}
		if err := p.s.rt.RemovePodSandbox(ctx, p.sandboxID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			p.s.log.Warn("remove pod sandbox failed", "pod", p.ref(), "err", err)
		}
	}
	removeCgroup(p.cgroupParent())
	p.s.log.Info("pod removed", "pod", p.ref())
	p.stateMu.Lock()
	p.gone = true
	p.stateMu.Unlock()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// removeCgroup deletes the empty cgroup directories of a removed pod in
// every hierarchy, deepest first. The runtime removes its containers'
// cgroups but not the parent it was given.
func removeCgroup(parent string) {
	if parent == "" {
		return
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		dir := filepath.Join(root, parent)
		var dirs []string
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}
