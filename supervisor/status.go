package supervisor

import (
	"encoding/json"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// publish rebuilds the pod's v1.Pod view from the worker's state and, when
// the pod's readiness changed, republishes the endpoints before the new view
// shows: whoever sees the pod Ready in /pods finds it in the proxy too. Only
// the worker calls it; readers take the view under stateMu.
func (p *pod) publish() {
	view := p.buildView()
	ready, settling := p.readiness()
	p.stateMu.Lock()
	if p.term {
		now := metav1.Now()
		view.DeletionTimestamp = &now
		ready = false
	}
	// A pod that stops settling without turning ready still changes what
	// a rollout may do with it.
	changed := ready != p.ready || settling != p.settling || view.Status.PodIP != p.ip
	p.ready, p.settling, p.ip = ready, settling, view.Status.PodIP
	p.stateMu.Unlock()
	if changed {
		p.s.podChanged()
	}
	p.stateMu.Lock()
	p.view = view
	p.stateMu.Unlock()
	for _, c := range p.containers {
		p.s.metrics.setState(p, c)
	}
}

// readiness derives from the worker's state whether the pod is ready, and
// whether it is settling: adopted, with a running container whose readiness
// the prober has not reported yet.
func (p *pod) readiness() (ready, settling bool) {
	ready = p.sandboxID != ""
	for _, c := range p.containers {
		ready = ready && c.ready && c.phase == phaseRunning
		settling = settling || c.awaitingProbe && c.phase == phaseRunning && c.killPending == ""
	}
	return ready, settling
}

func (p *pod) buildView() *corev1.Pod {
	meta := templateMeta(&p.template, p.workloadKind, p.workloadName, p.hash)
	meta.Name, meta.Namespace, meta.UID = p.name, p.namespace, types.UID(p.uid)
	meta.CreationTimestamp = metav1.NewTime(p.created)
	v := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: meta,
		Spec:       *p.spec.DeepCopy(),
	}
	if len(p.hostPorts) > 0 {
		if v.Annotations == nil {
			v.Annotations = map[string]string{}
		}
		ports, _ := json.Marshal(p.hostPorts)
		v.Annotations[AnnotationHostPorts] = string(ports)
	}
	v.Spec.NodeName = p.s.opts.NodeName
	v.Spec.HostNetwork = p.hostNetwork

	st := &v.Status
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	if p.sandboxID != "" {
		st.PodIP = p.podIP
		st.PodIPs = []corev1.PodIP{{IP: p.podIP}}
	}
	start := metav1.NewTime(p.created)
	st.StartTime = &start

	allReady, anyRunning, allDone, anyFailed := true, false, true, false
	for _, c := range p.containers {
		cs := p.containerStatus(c)
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		allReady = allReady && cs.Ready
		anyRunning = anyRunning || cs.State.Running != nil
		allDone = allDone && c.phase == phaseTerminated
		if c.phase == phaseTerminated && c.term != nil && c.term.exitCode != 0 {
			anyFailed = true
		}
	}
	switch {
	case allDone && anyFailed:
		st.Phase = corev1.PodFailed
	case allDone:
		st.Phase = corev1.PodSucceeded
	case anyRunning:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true),
		cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, allReady),
		cond(corev1.PodReady, allReady && p.sandboxID != ""),
	}
	return v
}

// templateMeta is the metadata a pod of a workload gets from its template:
// the template's labels and annotations, and for a replica of a Deployment
// the template hash label and the owner reference.
func templateMeta(tpl *corev1.PodTemplateSpec, kind, workload, hash string) metav1.ObjectMeta {
	meta := metav1.ObjectMeta{
		Labels:      copyMap(tpl.Labels),
		Annotations: copyMap(tpl.Annotations),
	}
	if meta.Labels == nil {
		meta.Labels = map[string]string{}
	}
	if kind != "Pod" {
		meta.Labels[LabelTemplateHash] = hash
		meta.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: kind, Name: workload,
		}}
	}
	return meta
}

func (p *pod) containerStatus(c *container) corev1.ContainerStatus {
	started := c.phase == phaseRunning && c.started
	cs := corev1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		Ready:        c.ready && c.phase == phaseRunning,
		RestartCount: c.restartCount,
		Started:      &started,
	}
	if c.id != "" {
		cs.ContainerID = "containerd://" + c.id
	}
	switch c.phase {
	case phaseRunning:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	case phaseExited, phaseTerminated:
		cs.State.Terminated = c.term.state()
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waitReason, Message: c.waitMessage}
	}
	if c.last != nil {
		cs.LastTerminationState.Terminated = c.last.state()
	}
	return cs
}

func (t *terminated) state() *corev1.ContainerStateTerminated {
	if t == nil {
		return nil
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:    t.exitCode,
		Reason:      t.reason,
		Message:     t.message,
		StartedAt:   metav1.NewTime(t.startedAt),
		FinishedAt:  metav1.NewTime(t.finishedAt),
		ContainerID: "containerd://" + t.containerID,
	}
}

// PodList returns every pod vigil runs as a v1.PodList, sorted by namespace
// and name, the shape the kubelet serves at /pods. Replicas that could not
// be placed are in it too, as Pending pods (unplaced.go).
func (s *Supervisor) PodList() *corev1.PodList {
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	s.mu.Lock()
	pods := make([]*pod, 0, len(s.pods))
	for _, p := range s.pods {
		pods = append(pods, p)
	}
	for _, us := range s.unplaced {
		for _, u := range us {
			list.Items = append(list.Items, *u.view.DeepCopy())
		}
	}
	s.mu.Unlock()
	for _, p := range pods {
		p.stateMu.Lock()
		if p.view != nil && !p.gone {
			list.Items = append(list.Items, *p.view.DeepCopy())
		}
		p.stateMu.Unlock()
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return list
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
