package admin

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vigil-agent/vigil/proxy"
)

// fixture is a set of admin sources whose data a test changes while a
// client watches.
type fixture struct {
	mu      sync.Mutex
	pods    *corev1.PodList
	events  *corev1.EventList
	eps     []proxy.ServiceEndpoints
	changes chan struct{}
}

func newFixture(now time.Time) *fixture {
	f := &fixture{changes: make(chan struct{}, 1)}
	f.pods = &corev1.PodList{Items: []corev1.Pod{
		fixturePod("web-7d9f8-x2k4q", "web", now.Add(-2*time.Hour), 3, true),
		fixtureCrashing("api-0", now.Add(-10*time.Minute), 7),
	}}
	f.events = &corev1.EventList{}
	f.addEvent("web-7d9f8-x2k4q", "web", corev1.EventTypeNormal, "Started",
		"Started container web", now.Add(-90*time.Minute))
	f.addEvent("api-0", "api", corev1.EventTypeWarning, "Unhealthy",
		"Liveness probe failed: HTTP probe failed with statuscode: 500", now.Add(-4*time.Minute))
	f.addEvent("api-0", "api", corev1.EventTypeWarning, "BackOff",
		"Back-off restarting failed container api", now.Add(-time.Minute))
	f.eps = []proxy.ServiceEndpoints{{
		Namespace: "default", Name: "web",
		Ports: map[int32][]proxy.Endpoint{80: {{
			Address: "127.0.0.1:20001", Namespace: "default", Pod: "web-7d9f8-x2k4q", Container: "web",
		}}},
	}}
	return f
}

func (f *fixture) sources() Sources {
	return Sources{
		Pods: func() *corev1.PodList {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.pods.DeepCopy()
		},
		Events: func() *corev1.EventList {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.events.DeepCopy()
		},
		Endpoints: func() []proxy.ServiceEndpoints {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]proxy.ServiceEndpoints(nil), f.eps...)
		},
		Changes: func() <-chan struct{} { return f.changes },
	}
}

// update changes the data under the lock and signals the change.
func (f *fixture) update(change func(f *fixture)) {
	f.mu.Lock()
	change(f)
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

func (f *fixture) addEvent(pod, container, typ, reason, msg string, at time.Time) {
	t := metav1.NewTime(at)
	f.events.Items = append(f.events.Items, corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: pod + "." + reason, Namespace: "default", CreationTimestamp: t},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", Namespace: "default", Name: pod, UID: types.UID("uid-" + pod),
			FieldPath: "spec.containers{" + container + "}",
		},
		Type: typ, Reason: reason, Message: msg, Count: 1,
		FirstTimestamp: t, LastTimestamp: t,
		Source: corev1.EventSource{Component: "vigil", Host: "node-1"},
	})
}

func httpProbe(path string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: path},
	}, PeriodSeconds: 5}
}

func fixturePod(name, ctr string, created time.Time, restarts int32, ready bool) corev1.Pod {
	started := true
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(created),
			Annotations:       map[string]string{annotationHostPorts: `{"web/8080":20001,"web/9090":20002}`},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{
			Name: ctr, Image: "vigil-test/web:1",
			LivenessProbe: httpProbe("/healthz"), ReadinessProbe: httpProbe("/ready"),
		}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "127.0.0.1",
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: ctr, Image: "vigil-test/web:1", Ready: ready, Started: &started,
				RestartCount: restarts,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{
					StartedAt: metav1.NewTime(created.Add(time.Hour)),
				}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "Error",
				}},
			}},
		},
	}
}

func fixtureCrashing(name string, created time.Time, restarts int32) corev1.Pod {
	started := false
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(created),
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{
			Name: "api", Image: "vigil-test/api:1",
			StartupProbe: httpProbe("/started"), LivenessProbe: httpProbe("/healthz"),
		}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "127.0.0.1",
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "api", Image: "vigil-test/api:1", Started: &started, RestartCount: restarts,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason: "CrashLoopBackOff", Message: "back-off 2m40s restarting failed container",
				}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 1, Reason: "Error",
				}},
			}},
		},
	}
}

// unplacedMessage is the supervisor's message on a replica it could not
// place.
const unplacedMessage = "cannot create a pod of Deployment web: allocate 1 host ports: " +
	"range 20000-20000 exhausted"

// fixtureUnplaced is a replica the supervisor could not place, as its pod
// list shows it: Pending, not scheduled, no node and no container statuses.
func fixtureUnplaced(name string, created time.Time) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(created),
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "web", Image: "vigil-test/web:1", ReadinessProbe: httpProbe("/ready"),
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: unplacedMessage,
		}}},
	}
}

// newLoopbackServer serves h on 127.0.0.1 only, closed when the test ends.
func newLoopbackServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}
