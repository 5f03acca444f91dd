package admin

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/proxy"
)

// The status page's snapshot: the pods, endpoints and events of the admin
// API reduced to what the page shows, so the script only lays it out.

// maxPageEvents caps the events a snapshot carries, newest first.
const maxPageEvents = 50

// annotationHostPorts is where the supervisor tells a pod's host ports
// (supervisor.AnnotationHostPorts; not imported, so admin stays a leaf).
const annotationHostPorts = "vigil.dev/host-ports"

type snapshot struct {
	Now       time.Time     `json:"now"`
	Pods      []podView     `json:"pods"`
	Endpoints []serviceView `json:"endpoints"`
	Events    []eventView   `json:"events"`
	// EventsTotal counts every event held, of which Events are the newest.
	EventsTotal int `json:"eventsTotal"`
}

type podView struct {
	Namespace   string          `json:"namespace"`
	Name        string          `json:"name"`
	Phase       string          `json:"phase"`
	Ready       string          `json:"ready"` // "1/2", as kubectl
	AllReady    bool            `json:"allReady"`
	Restarts    int32           `json:"restarts"`
	Created     time.Time       `json:"created"`
	IP          string          `json:"ip,omitempty"`
	HostPorts   string          `json:"hostPorts,omitempty"`
	Terminating bool            `json:"terminating,omitempty"`
	Containers  []containerView `json:"containers"`

	// Unschedulable is why the pod could not be placed on the node (its
	// PodScheduled condition is False); such a pod has no containers yet.
	Unschedulable string `json:"unschedulable,omitempty"`
}

type containerView struct {
	Name         string      `json:"name"`
	Image        string      `json:"image"`
	State        string      `json:"state"` // running, waiting or terminated
	Reason       string      `json:"reason,omitempty"`
	Since        *time.Time  `json:"since,omitempty"`
	Ready        bool        `json:"ready"`
	Started      bool        `json:"started"`
	RestartCount int32       `json:"restartCount"`
	LastState    string      `json:"lastState,omitempty"`
	Probes       []probeView `json:"probes"`
}

// probeView is a probe's state as far as the pod status and the events
// tell it: success, failing, pending (not passed yet) or idle (the
// container does not run, or liveness waits for startup).
type probeView struct {
	Type    string `json:"type"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
}

type serviceView struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Ports     []portView `json:"ports"`
}

type portView struct {
	Port      int32    `json:"port"`
	Endpoints []string `json:"endpoints"` // "address (pod/container)"
}

type eventView struct {
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Object  string    `json:"object"`
	Message string    `json:"message"`
	Count   int32     `json:"count"`
	Last    time.Time `json:"last"`
}

// buildSnapshot reads the sources once.
func buildSnapshot(src Sources, now time.Time) *snapshot {
	s := &snapshot{Now: now, Pods: []podView{}, Endpoints: []serviceView{}, Events: []eventView{}}
	var events []corev1.Event
	if src.Events != nil {
		if l := src.Events(); l != nil {
			events = l.Items
		}
	}
	if src.Pods != nil {
		if l := src.Pods(); l != nil {
			for i := range l.Items {
				s.Pods = append(s.Pods, newPodView(&l.Items[i], events, now))
			}
		}
	}
	if src.Endpoints != nil {
		for _, se := range src.Endpoints() {
			s.Endpoints = append(s.Endpoints, newServiceView(se))
		}
	}
	s.EventsTotal = len(events)
	for i := len(events) - 1; i >= 0 && len(s.Events) < maxPageEvents; i-- {
		s.Events = append(s.Events, newEventView(&events[i]))
	}
	// The recorder keeps events in creation order; a repeat moves an old
	// one to the top, as kubectl's --sort-by=.lastTimestamp does.
	sort.SliceStable(s.Events, func(i, j int) bool { return s.Events[i].Last.After(s.Events[j].Last) })
	return s
}

func newPodView(p *corev1.Pod, events []corev1.Event, now time.Time) podView {
	v := podView{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Phase:       string(p.Status.Phase),
		Created:     p.CreationTimestamp.Time,
		IP:          p.Status.PodIP,
		HostPorts:   HostPorts(p),
		Terminating: p.DeletionTimestamp != nil,
		Containers:  []containerView{},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			v.Unschedulable = c.Message
		}
	}
	ready := 0
	for i := range p.Status.ContainerStatuses {
		cs := &p.Status.ContainerStatuses[i]
		if cs.Ready {
			ready++
		}
		v.Restarts += cs.RestartCount
		v.Containers = append(v.Containers, newContainerView(p, cs, events, now))
	}
	n := len(p.Spec.Containers)
	v.Ready = fmt.Sprintf("%d/%d", ready, n)
	v.AllReady = n > 0 && ready == n
	return v
}

func newContainerView(p *corev1.Pod, cs *corev1.ContainerStatus, events []corev1.Event,
	now time.Time) containerView {
	v := containerView{
		Name:         cs.Name,
		Image:        cs.Image,
		Ready:        cs.Ready,
		Started:      cs.Started != nil && *cs.Started,
		RestartCount: cs.RestartCount,
		Probes:       []probeView{},
	}
	var runningSince time.Time
	switch st := cs.State; {
	case st.Running != nil:
		v.State = "running"
		runningSince = st.Running.StartedAt.Time
		v.Since = &runningSince
	case st.Terminated != nil:
		v.State = "terminated"
		v.Reason = terminatedText(st.Terminated)
		t := st.Terminated.FinishedAt.Time
		v.Since = &t
	default:
		v.State = "waiting"
		if st.Waiting != nil {
			v.Reason = st.Waiting.Reason
		}
	}
	if t := cs.LastTerminationState.Terminated; t != nil {
		v.LastState = terminatedText(t)
	}

	var spec *corev1.Container
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == cs.Name {
			spec = &p.Spec.Containers[i]
		}
	}
	if spec == nil {
		return v
	}
	field := "spec.containers{" + cs.Name + "}"
	for _, k := range []struct {
		kind  string // as in the supervisor's event messages
		probe *corev1.Probe
	}{{"Startup", spec.StartupProbe}, {"Liveness", spec.LivenessProbe},
		{"Readiness", spec.ReadinessProbe}} {
		if k.probe == nil {
			continue
		}
		fail := recentFailure(events, p, field, k.kind, runningSince, k.probe, now)
		v.Probes = append(v.Probes, probeState(&v, k.kind, fail, runningSince.IsZero()))
	}
	return v
}

// probeState derives a probe's state from the container status, which
// carries the thresholded outcome of startup (started) and readiness
// (ready), and from a recent failure event, which is all there is of
// liveness below its threshold.
func probeState(c *containerView, kind string, failure string, notRunning bool) probeView {
	pv := probeView{Type: strings.ToLower(kind), Message: failure}
	var passed bool
	switch kind {
	case "Startup":
		passed = c.Started
	case "Readiness":
		passed = c.Ready
	default:
		passed = failure == ""
	}
	switch {
	case notRunning:
		pv.State = "idle"
		pv.Message = ""
	case kind == "Startup" && passed:
		pv.State, pv.Message = "success", ""
	case kind != "Startup" && !c.Started:
		pv.State = "idle" // the kubelet runs neither until startup passes
	case passed && failure == "":
		pv.State = "success"
	case failure != "":
		pv.State = "failing"
	default:
		pv.State = "pending"
	}
	return pv
}

// recentFailure returns the message of the latest Unhealthy event for the
// container's probe of kind, if it came after the container started and
// within two periods (plus the timeout) of now: older failures have since
// passed, or they would have repeated.
func recentFailure(events []corev1.Event, p *corev1.Pod, field, kind string,
	since time.Time, pr *corev1.Probe, now time.Time) string {
	if since.IsZero() {
		return ""
	}
	period := 10 * time.Second // the Kubernetes default
	if pr.PeriodSeconds > 0 {
		period = time.Duration(pr.PeriodSeconds) * time.Second
	}
	window := 2*period + time.Duration(max(pr.TimeoutSeconds, 1))*time.Second
	prefix := kind + " probe "
	for i := len(events) - 1; i >= 0; i-- {
		ev := &events[i]
		o := ev.InvolvedObject
		if ev.Reason != "Unhealthy" || o.Name != p.Name || o.Namespace != p.Namespace ||
			o.FieldPath != field || !strings.HasPrefix(ev.Message, prefix) {
			continue
		}
		last := ev.LastTimestamp.Time
		if last.Before(since) || now.Sub(last) > window {
			continue
		}
		return ev.Message
	}
	return ""
}

func terminatedText(t *corev1.ContainerStateTerminated) string {
	reason := t.Reason
	if reason == "" {
		reason = "Terminated"
	}
	return fmt.Sprintf("%s (exit %d)", reason, t.ExitCode)
}

func newServiceView(se proxy.ServiceEndpoints) serviceView {
	v := serviceView{Namespace: se.Namespace, Name: se.Name, Ports: []portView{}}
	for port, eps := range se.Ports {
		pv := portView{Port: port, Endpoints: []string{}}
		for _, e := range eps {
			pv.Endpoints = append(pv.Endpoints, fmt.Sprintf("%s (%s/%s)", e.Address, e.Pod, e.Container))
		}
		v.Ports = append(v.Ports, pv)
	}
	sort.Slice(v.Ports, func(i, j int) bool { return v.Ports[i].Port < v.Ports[j].Port })
	return v
}

func newEventView(ev *corev1.Event) eventView {
	o := ev.InvolvedObject
	obj := "pod/" + o.Name
	if c, ok := strings.CutPrefix(o.FieldPath, "spec.containers{"); ok {
		obj += " " + strings.TrimSuffix(c, "}")
	}
	last := ev.LastTimestamp.Time
	if last.IsZero() {
		last = ev.CreationTimestamp.Time
	}
	return eventView{
		Type: ev.Type, Reason: ev.Reason, Object: obj, Message: ev.Message,
		Count: ev.Count, Last: last,
	}
}

// HostPorts formats the host ports the supervisor gave a host-network pod
// (its vigil.dev/host-ports annotation) as "container/port=hostport,...",
// sorted; "" when there are none. An annotation that does not parse is
// shown as it is.
func HostPorts(p *corev1.Pod) string {
	raw := p.Annotations[annotationHostPorts]
	if raw == "" {
		return ""
	}
	var ports map[string]int32
	if err := json.Unmarshal([]byte(raw), &ports); err != nil {
		return raw
	}
	out := make([]string, 0, len(ports))
	for k, v := range ports {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
