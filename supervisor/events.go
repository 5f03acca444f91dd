package supervisor

import (
	"log/slog"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Event reasons, as the kubelet names them.
const (
	ReasonUnhealthy    = "Unhealthy"
	ReasonProbeWarning = "ProbeWarning"
	ReasonKilling      = "Killing"
	ReasonBackOff      = "BackOff"
	ReasonCreated      = "Created"
	ReasonStarted      = "Started"
	ReasonFailed       = "Failed"
	ReasonSandbox      = "SandboxChanged"
	ReasonScheduled    = "Scheduled"
	// ReasonFailedScheduling: a pod could not be placed (no free host port).
	ReasonFailedScheduling = "FailedScheduling"
	ReasonAdopted          = "Adopted"
	ReasonFailedStop       = "FailedKillPod"
)

// Recorder keeps the latest events in memory, Kubernetes-shaped, and logs
// each one. Repeats of the same event on the same object fold into one with
// a count, as the API server's event series do.
type Recorder struct {
	log  *slog.Logger
	host string
	cap  int

	mu     sync.Mutex
	seq    int64
	events []*corev1.Event // oldest first
	index  map[eventKey]*corev1.Event
	notify []chan struct{}
}

type eventKey struct {
	uid, field, reason, message string
}

// NewRecorder keeps at most capacity events.
func NewRecorder(log *slog.Logger, host string, capacity int) *Recorder {
	if capacity <= 0 {
		capacity = 1000
	}
	return &Recorder{log: log, host: host, cap: capacity, index: map[eventKey]*corev1.Event{}}
}

// objectRef names the object an event is about.
type objectRef struct {
	namespace, pod string
	uid            types.UID
	container      string // empty for pod-level events
}

func (r *Recorder) record(ref objectRef, typ, reason, message string) {
	if r == nil {
		return
	}
	field := ""
	if ref.container != "" {
		field = "spec.containers{" + ref.container + "}"
	}
	attrs := []any{"pod", ref.namespace + "/" + ref.pod, "reason", reason, "message", message}
	if ref.container != "" {
		attrs = append(attrs, "container", ref.container)
	}
	if typ == corev1.EventTypeWarning {
		r.log.Warn("event", attrs...)
	} else {
		r.log.Info("event", attrs...)
	}

	now := metav1.NewTime(time.Now())
	key := eventKey{string(ref.uid), field, reason, message}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev, ok := r.index[key]; ok {
		ev.Count++
		ev.LastTimestamp = now
		r.wake()
		return
	}
	r.seq++
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:              ref.pod + "." + now.Format("20060102150405") + "." + strconv.FormatInt(r.seq, 10),
			Namespace:         ref.namespace,
			CreationTimestamp: now,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", APIVersion: "v1", Namespace: ref.namespace, Name: ref.pod,
			UID: ref.uid, FieldPath: field,
		},
		Reason:         reason,
		Message:        message,
		Type:           typ,
		Count:          1,
		FirstTimestamp: now,
		LastTimestamp:  now,
		Source:         corev1.EventSource{Component: "vigil", Host: r.host},
	}
	r.events = append(r.events, ev)
	r.index[key] = ev
	if len(r.events) > r.cap {
		old := r.events[0]
		r.events = r.events[1:]
		delete(r.index, eventKey{string(old.InvolvedObject.UID), old.InvolvedObject.FieldPath, old.Reason, old.Message})
	}
	r.wake()
}

func (r *Recorder) wake() {
	for _, ch := range r.notify {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Subscribe returns a channel that receives a value (coalesced) whenever an
// event is recorded.
func (r *Recorder) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.notify = append(r.notify, ch)
	r.mu.Unlock()
	return ch
}

// List returns the recorded events, oldest first, as a v1.EventList.
func (r *Recorder) List() *corev1.EventList {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := &corev1.EventList{TypeMeta: metav1.TypeMeta{Kind: "EventList", APIVersion: "v1"}}
	list.Items = make([]corev1.Event, 0, len(r.events))
	for _, ev := range r.events {
		list.Items = append(list.Items, *ev.DeepCopy())
	}
	return list
}
