package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// adopt takes over the pods an earlier vigil left running. For each pod UID
// the newest sandbox wins and older ones are removed; a dead sandbox is
// replaced by the worker under a new attempt number. Containers keep their
// restart counts and backoff from their annotations. The runtime must answer:
// adopt retries until it does or ctx ends, since starting without knowing
// what runs would create duplicates.
func (s *Supervisor) adopt(ctx context.Context) error {
	var sandboxes []*cri.PodSandbox
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		var err error
		sandboxes, err = s.rt.ListPodSandboxes(ctx, &cri.PodSandboxFilter{
			LabelSelector: map[string]string{LabelManaged: "true", LabelInstance: s.opts.Instance},
		})
		if err == nil {
			break
		}
		s.log.Warn("runtime not answering, retrying before adopting pods", "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}

	byUID := map[string][]*cri.PodSandbox{}
	for _, sb := range sandboxes {
		uid := sb.GetMetadata().GetUid()
		byUID[uid] = append(byUID[uid], sb)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid, sbs := range byUID {
		sort.Slice(sbs, func(i, j int) bool {
			a, b := sbs[i], sbs[j]
			if (a.State == cri.PodSandboxState_SANDBOX_READY) != (b.State == cri.PodSandboxState_SANDBOX_READY) {
				return a.State == cri.PodSandboxState_SANDBOX_READY
			}
			return a.GetMetadata().GetAttempt() > b.GetMetadata().GetAttempt()
		})
		for _, extra := range sbs[1:] {
			s.removeSandbox(ctx, extra.Id)
		}
		p, err := s.adoptRetrying(ctx, sbs[0])
		if errors.Is(err, errUnadoptable) {
			s.log.Warn("cannot adopt pod sandbox, removing it", "sandbox", shortID(sbs[0].Id), "uid", uid, "err", err)
			s.removeSandbox(ctx, sbs[0].Id)
			continue
		}
		if err != nil {
			return err
		}
		s.ports.reserve(p.uid, hostPortList(p.hostPorts))
		s.rec.record(p.objRef(""), corev1.EventTypeNormal, ReasonAdopted,
			"Adopted running pod "+p.ref())
		s.log.Info("adopted pod", "pod", p.ref(), "sandbox", shortID(sbs[0].Id))
		s.launch(p)
	}
	return nil
}

// errUnadoptable marks a sandbox whose annotations do not decode: nothing
// can be rebuilt from it.
var errUnadoptable = errors.New("sandbox cannot be adopted")

// adoptRetrying adopts one sandbox, retrying while the runtime fails: giving
// up on a pod that still runs would start a duplicate of it.
func (s *Supervisor) adoptRetrying(ctx context.Context, sb *cri.PodSandbox) (*pod, error) {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		p, err := s.adoptPod(ctx, sb)
		if err == nil || errors.Is(err, errUnadoptable) {
			return p, err
		}
		s.log.Warn("runtime failed while adopting a pod, retrying", "sandbox", shortID(sb.Id),
			"err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

func (s *Supervisor) removeSandbox(ctx context.Context, id string) {
	_ = s.rt.StopPodSandbox(ctx, id)
	_ = s.rt.RemovePodSandbox(ctx, id)
}

// adoptPod rebuilds a pod from its sandbox and containers.
func (s *Supervisor) adoptPod(ctx context.Context, sb *cri.PodSandbox) (*pod, error) {
	md := sb.GetMetadata()
	var tpl corev1.PodTemplateSpec
	if err := json.Unmarshal([]byte(sb.Annotations[AnnotationTemplate]), &tpl); err != nil {
		return nil, fmt.Errorf("%w: decode annotation %s: %w", errUnadoptable, AnnotationTemplate, err)
	}
	pp := podParams{
		name: md.Name, namespace: md.Namespace, uid: md.Uid,
		workloadKind: sb.Labels[LabelWorkloadKind],
		workloadName: sb.Labels[LabelWorkloadName],
		hash:         sb.Labels[LabelTemplateHash],
		template:     tpl,
		adopted:      true,
		attempt:      md.Attempt,
		sandboxID:    sb.Id,
	}
	if t, err := time.Parse(time.RFC3339Nano, sb.Annotations[AnnotationCreated]); err == nil {
		pp.created = t
	}
	if raw := sb.Annotations[AnnotationHostPorts]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &pp.hostPorts); err != nil {
			return nil, fmt.Errorf("%w: decode annotation %s: %w", errUnadoptable, AnnotationHostPorts, err)
		}
	}
	p, err := newPod(s, pp)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnadoptable, err)
	}
	if sb.State != cri.PodSandboxState_SANDBOX_READY {
		s.removeSandbox(ctx, sb.Id)
		p.sandboxID = ""
		p.attempt++
	} else {
		p.sandboxCfg = p.sandboxConfig()
		p.podIP = "127.0.0.1"
		if !p.hostNetwork {
			if st, err := s.rt.PodSandboxStatus(ctx, sb.Id); err == nil && st.GetNetwork().GetIp() != "" {
				p.podIP = st.GetNetwork().GetIp()
			}
		}
	}

	ctrs, err := s.rt.ListContainers(ctx, &cri.ContainerFilter{PodSandboxId: sb.Id})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	byName := map[string][]*cri.Container{}
	for _, c := range ctrs {
		byName[c.GetMetadata().GetName()] = append(byName[c.GetMetadata().GetName()], c)
	}
	for _, c := range p.containers {
		s.adoptContainer(ctx, p, c, byName[c.spec.Name])
	}
	p.view = p.buildView() // the worker publishes once it runs
	// The supervisor may reconcile before the worker's first publish, which
	// sets ready and settling from the containers: until then the pod
	// counts as settling, so a rollout waits rather than remove it.
	p.settling = true
	return p, nil
}

// adoptContainer restores one container's state from its instances, newest
// first: the newest is current, the one before gives lastState, older ones
// are removed. An instance created but never started (vigil died between
// CreateContainer and StartContainer) never counted as a restart: it is
// removed and the one before stays current, so counts are not inflated.
func (s *Supervisor) adoptContainer(ctx context.Context, p *pod, c *container, instances []*cri.Container) {
	started := make([]*cri.Container, 0, len(instances))
	for _, in := range instances {
		if in.State == cri.ContainerState_CONTAINER_CREATED {
			_ = s.rt.RemoveContainer(ctx, in.Id)
			continue
		}
		started = append(started, in)
	}
	if len(started) == 0 {
		return
	}
	sort.Slice(started, func(i, j int) bool { return started[i].CreatedAt > started[j].CreatedAt })
	for _, old := range started[min(2, len(started)):] {
		_ = s.rt.RemoveContainer(ctx, old.Id)
	}
	cur := started[0]
	n, _ := strconv.Atoi(cur.Annotations[AnnotationRestartCount])
	c.restartCount = int32(n)
	c.id = cur.Id
	if d, err := time.ParseDuration(cur.Annotations[AnnotationBackoff]); err == nil {
		since, _ := time.Parse(time.RFC3339Nano, cur.Annotations[AnnotationBackoffSince])
		s.backoff.restore(p.key(c), d, since)
	}
	if len(started) > 1 {
		c.prevID = started[1].Id
		if st, err := s.rt.ContainerStatus(ctx, c.prevID); err == nil {
			c.last = terminatedFrom(st)
		}
	}
	st, err := s.rt.ContainerStatus(ctx, cur.Id)
	if err == nil && st.State == cri.ContainerState_CONTAINER_EXITED {
		c.phase = phaseExited
		c.term = terminatedFrom(st)
		return
	}
	// Running, or not known for sure: treat it as running and let the
	// worker's resync read how it is. Deciding "exited" on a guess could
	// start a second copy.
	c.phase = phaseRunning
	c.startedAt = time.Unix(0, cur.CreatedAt)
	if err == nil && st.StartedAt > 0 {
		c.startedAt = time.Unix(0, st.StartedAt)
	}
	// Probes start over, so readiness waits for its first success; a
	// container without probes is ready as it runs. Until the prober has
	// spoken, the container was serving a moment ago as far as anyone
	// knows: awaitingProbe keeps a rollout from taking the wait for an
	// unhealthy pod.
	c.started = c.spec.StartupProbe == nil
	c.awaitingProbe = s.opts.Prober != nil && (c.spec.ReadinessProbe != nil || c.spec.StartupProbe != nil)
	// A started container keeps serving until its first readiness result
	// says otherwise, so that restarting vigil takes no healthy pod out of
	// rotation (the kubelet marks every container unready when it
	// restarts). A failing one is caught by that first run, within one
	// period, and until then by the proxy's passive health checks.
	c.ready = c.awaitingProbe && c.started && c.spec.ReadinessProbe != nil
	p.updateReady(c)
}

func terminatedFrom(st *cri.ContainerStatus) *terminated {
	t := &terminated{
		exitCode: st.ExitCode, reason: st.Reason, message: st.Message, containerID: st.Id,
		startedAt: time.Unix(0, st.StartedAt), finishedAt: time.Unix(0, st.FinishedAt),
	}
	if t.reason == "" {
		t.reason = "Error"
		if t.exitCode == 0 {
			t.reason = "Completed"
		}
	}
	return t
}

func hostPortList(m map[string]int32) []int32 {
	out := make([]int32, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}
