package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-agent/vigil/admin"
	"github.com/vigil-agent/vigil/proxy"
)

var clientNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(clientNow.Add(-d)) }

func clientPods() *corev1.PodList {
	started := true
	running := func(name string, ready bool, restarts int32, lastEnd time.Duration) corev1.ContainerStatus {
		cs := corev1.ContainerStatus{
			Name: name, Ready: ready, Started: &started, RestartCount: restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: ago(time.Hour)}},
		}
		if lastEnd > 0 {
			cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "Error", FinishedAt: ago(lastEnd),
			}
		}
		return cs
	}
	return &corev1.PodList{Items: []corev1.Pod{
		{
			ObjectMeta: metav1.ObjectMeta{
				Name: "web-7d9f8-x2k4q", Namespace: "default", CreationTimestamp: ago(26 * time.Hour),
				Annotations: map[string]string{"vigil.dev/host-ports": `{"web/8080":20001}`},
			},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "web"}, {Name: "log"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
				ContainerStatuses: []corev1.ContainerStatus{
					running("web", true, 3, 5*time.Minute), running("log", true, 0, 0),
				}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "api-0", Namespace: "default", CreationTimestamp: ago(90 * time.Second)},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "api"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
				Name: "api", RestartCount: 12,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 1, Reason: "Error", FinishedAt: ago(20 * time.Second),
				}},
			}}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "old-1", Namespace: "default", CreationTimestamp: ago(9 * 24 * time.Hour),
				DeletionTimestamp: &metav1.Time{Time: clientNow}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "old"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
				running("old", false, 0, 0),
			}},
		},
	}}
}

func TestPrintPods(t *testing.T) {
	tests := []struct {
		desc string
		wide bool
		want string
	}{
		{"default", false, `
NAME              READY   STATUS             RESTARTS       AGE
web-7d9f8-x2k4q   2/2     Running            3 (5m ago)     26h
api-0             0/1     CrashLoopBackOff   12 (20s ago)   90s
old-1             0/1     Terminating        0              9d
`},
		{"wide", true, `
NAME              READY   STATUS             RESTARTS       AGE   IP          NODE     HOST-PORTS
web-7d9f8-x2k4q   2/2     Running            3 (5m ago)     26h   127.0.0.1   node-1   web/8080=20001
api-0             0/1     CrashLoopBackOff   12 (20s ago)   90s   <none>      node-1   <none>
old-1             0/1     Terminating        0              9d    <none>      <none>   <none>
`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printPods(&buf, clientPods(), tt.wide, clientNow); err != nil {
				t.Fatal(err)
			}
			if got, want := buf.String(), strings.TrimPrefix(tt.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// A replica the supervisor could not place shows as kubectl shows an
// unschedulable pod: Pending, none of its containers ready, no node.
func TestPrintPodsPending(t *testing.T) {
	list := clientPods()
	list.Items = append(list.Items[:1], corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f8-b4kzq", Namespace: "default",
			CreationTimestamp: ago(3 * time.Minute)},
		Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "web"}, {Name: "log"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "cannot create a pod of Deployment web: allocate 1 host ports: range 20000-20000 exhausted",
		}}},
	})
	var buf bytes.Buffer
	if err := printPods(&buf, list, true, clientNow); err != nil {
		t.Fatal(err)
	}
	want := `
NAME              READY   STATUS    RESTARTS     AGE   IP          NODE     HOST-PORTS
web-7d9f8-x2k4q   2/2     Running   3 (5m ago)   26h   127.0.0.1   node-1   web/8080=20001
web-7d9f8-b4kzq   0/2     Pending   0            3m    <none>      <none>   <none>
`
	if got := buf.String(); got != strings.TrimPrefix(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", got, strings.TrimPrefix(want, "\n"))
	}
}

func TestPrintPodsNamespaces(t *testing.T) {
	list := clientPods()
	list.Items[1].Namespace = "batch"
	var buf bytes.Buffer
	if err := printPods(&buf, list, false, clientNow); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	if !strings.HasPrefix(lines[0], "NAMESPACE ") || !strings.HasPrefix(lines[2], "batch ") {
		t.Errorf("no NAMESPACE column for pods in two namespaces:\n%s", buf.String())
	}
}

func TestPrintEndpoints(t *testing.T) {
	ep := func(addr string) proxy.Endpoint { return proxy.Endpoint{Address: addr} }
	list := []proxy.ServiceEndpoints{
		{Namespace: "default", Name: "web", Ports: map[int32][]proxy.Endpoint{
			443: {ep("127.0.0.1:20002")}, 80: {ep("127.0.0.1:20001"), ep("127.0.0.1:20003")},
		}},
		{Namespace: "default", Name: "many", Ports: map[int32][]proxy.Endpoint{
			80: {ep("10.0.0.1:80"), ep("10.0.0.2:80"), ep("10.0.0.3:80"), ep("10.0.0.4:80"), ep("10.0.0.5:80")},
		}},
		{Namespace: "default", Name: "idle", Ports: map[int32][]proxy.Endpoint{80: nil}},
	}
	var buf bytes.Buffer
	if err := printEndpoints(&buf, list); err != nil {
		t.Fatal(err)
	}
	want := `NAME   ENDPOINTS
web    127.0.0.1:20001,127.0.0.1:20003,127.0.0.1:20002
many   10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more...
idle   <none>
`
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func clientEvents() *corev1.EventList {
	ev := func(pod, field, typ, reason, msg string, count int32, first, last time.Duration) corev1.Event {
		return corev1.Event{
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod, FieldPath: field},
			Type:           typ, Reason: reason, Message: msg, Count: count,
			FirstTimestamp: ago(first), LastTimestamp: ago(last),
		}
	}
	return &corev1.EventList{Items: []corev1.Event{
		ev("api-0", "spec.containers{api}", "Warning", "BackOff", "Back-off restarting failed container api",
			9, 10*time.Minute, 20*time.Second),
		ev("web-7d9f8-x2k4q", "", "Normal", "Scheduled", "Assigned to node-1", 1, 26*time.Hour, 26*time.Hour),
		ev("api-0", "spec.containers{api}", "Warning", "Unhealthy", "Liveness probe failed:\nHTTP 500",
			1, 3*time.Minute, 3*time.Minute),
	}}
}

func TestPrintEvents(t *testing.T) {
	var buf bytes.Buffer
	if err := printEvents(&buf, clientEvents(), clientNow); err != nil {
		t.Fatal(err)
	}
	want := `LAST SEEN           TYPE      REASON      OBJECT                MESSAGE
26h                 Normal    Scheduled   pod/web-7d9f8-x2k4q   Assigned to node-1
3m                  Warning   Unhealthy   pod/api-0 (api)       Liveness probe failed: HTTP 500
20s (x9 over 10m)   Warning   BackOff     pod/api-0 (api)       Back-off restarting failed container api
`
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestHumanAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 119 * time.Second: "119s", 3*time.Minute + 12*time.Second: "3m12s",
		5 * time.Minute: "5m", 95 * time.Minute: "95m", 5*time.Hour + 12*time.Minute: "5h12m",
		30 * time.Hour: "30h", 76 * time.Hour: "3d4h", 20 * 24 * time.Hour: "20d",
		(2*365 + 40) * 24 * time.Hour: "2y40d", -time.Hour: "<invalid>",
	} {
		if got := humanAge(clientNow.Add(-d), clientNow); got != want {
			t.Errorf("humanAge(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestClientCommands runs the commands against a real admin handler on
// loopback.
func TestClientCommands(t *testing.T) {
	h := admin.NewHandler(admin.Options{Sources: admin.Sources{
		Pods:   clientPods,
		Events: clientEvents,
		Endpoints: func() []proxy.ServiceEndpoints {
			return []proxy.ServiceEndpoints{{Namespace: "default", Name: "web",
				Ports: map[int32][]proxy.Endpoint{80: {{Address: "127.0.0.1:20001"}}}}}
		},
	}})
	srv := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")

	run := func(args ...string) (string, error) {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"get", "pods", "--admin", srv.URL}, "api-0             0/1     CrashLoopBackOff   12 ("},
		{[]string{"get", "po", "-o", "wide", "--admin", hostPort}, "web/8080=20001"},
		{[]string{"get", "endpoints", "--admin", srv.URL}, "web    127.0.0.1:20001"},
		{[]string{"events", "--admin", srv.URL}, "pod/api-0 (api)"},
	}
	for _, tt := range tests {
		out, err := run(tt.args...)
		if err != nil || !strings.Contains(out, tt.want) {
			t.Errorf("vigil %s: %v\n%s\nwant it to contain %q", strings.Join(tt.args, " "), err, out, tt.want)
		}
	}

	out, err := run("get", "pods", "-o", "json", "--admin", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var list corev1.PodList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 3 {
		t.Errorf("-o json: %v, %d pods\n%s", err, len(list.Items), out)
	}
	out, err = run("events", "-o", "json", "--admin", srv.URL)
	var events corev1.EventList
	if err != nil || json.Unmarshal([]byte(out), &events) != nil || len(events.Items) != 3 {
		t.Errorf("events -o json: %v\n%s", err, out)
	}

	if _, err := run("get", "endpoints", "-o", "wide", "--admin", srv.URL); err == nil {
		t.Error("get endpoints -o wide: want an error, -o wide is for pods only")
	}
	// Nothing listens on port 1 of loopback.
	if _, err := run("get", "pods", "--admin", "127.0.0.1:1"); err == nil ||
		!strings.Contains(err.Error(), "is vigil running") {
		t.Errorf("unreachable admin: err = %v", err)
	}
}

func TestAdminURLFromEnvironment(t *testing.T) {
	t.Setenv("VIGIL_ADMIN_LISTEN", ":10300")
	cmd := clientCommands()[1]
	got, err := adminURL(cmd.Flags())
	if err != nil || got != "http://127.0.0.1:10300" {
		t.Errorf("adminURL = %q, %v; want http://127.0.0.1:10300", got, err)
	}
}

// An unknown or missing resource fails and names the resources there are.
func TestGetUnknownResource(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "foo"}, `get: unknown resource "foo": vigil serves endpoints, pods`},
		{[]string{"get"}, "get: name a resource: endpoints, pods"},
	} {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || err.Error() != tc.want {
			t.Errorf("vigil %s: err = %v, want %q\n%s", strings.Join(tc.args, " "), err, tc.want, out.String())
		}
	}
}
