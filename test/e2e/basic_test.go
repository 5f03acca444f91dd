package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// examples are the shipped example manifests.
func examples(t *testing.T) map[string]string {
	return map[string]string{
		"web.yaml":     exampleManifest(t, "web.yaml"),
		"api.yaml":     exampleManifest(t, "api.yaml"),
		"ingress.yaml": exampleManifest(t, "ingress.yaml"),
	}
}

// The example comes up: / reaches both web replicas, /api the api pod, and
// crictl shows the pods with the kubelet's labels.
func TestExampleServesThroughIngress(t *testing.T) {
	const ns = "e2e-example"
	v := newVigil(t, ns, examples(t), options{})
	v.start()
	web := v.readyPods("web-", 2, 60*time.Second)
	v.readyPods("api-", 1, 30*time.Second)

	seen := map[string]int{}
	for i := 0; i < 40; i++ {
		code, s, err := v.get("localhost", "/")
		if err != nil || code != 200 {
			t.Fatalf("GET / via proxy: code %d err %v", code, err)
		}
		if s.Container != "web" || s.Namespace != ns {
			t.Fatalf("GET / served by %+v, want a web pod in %s", s, ns)
		}
		seen[s.Pod]++
	}
	for _, p := range web {
		if seen[p.Name] == 0 {
			t.Errorf("web replica %s got none of 40 requests (seen %v)", p.Name, seen)
		}
	}
	code, s, err := v.get("localhost:8080", "/api/things")
	if err != nil || code != 200 || s.Container != "api" || !strings.HasPrefix(s.Pod, "api-") {
		t.Fatalf("GET /api/things: code %d, served %+v, err %v", code, s, err)
	}
	if code, _, _ := v.get("other.example", "/"); code != 404 {
		t.Errorf("GET / for an unknown host: code %d, want 404", code)
	}

	if v.env.crictl != "" {
		out, err := exec.Command(v.env.crictl, "--runtime-endpoint", v.env.endpoint,
			"pods", "--namespace", ns, "--label", "app=web", "--state", "ready", "-q").Output()
		if err != nil {
			t.Fatalf("crictl pods: %v: %s", err, out)
		}
		if n := len(strings.Fields(string(out))); n != 2 {
			t.Errorf("crictl pods --label app=web shows %d pods, want 2:\n%s", n, out)
		}
		out, err = exec.Command(v.env.crictl, "--runtime-endpoint", v.env.endpoint,
			"ps", "--label", "io.kubernetes.pod.namespace="+ns, "--name", "^api$", "-q").Output()
		if err != nil || len(strings.Fields(string(out))) != 1 {
			t.Errorf("crictl ps for the api container: %v: %q", err, out)
		}
	}
}

const failingWeb = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: %d
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: localhost/vigil-testapp:latest
          ports: [{name: http, containerPort: 8080}]
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: CONTAINER_NAME
              value: app
          livenessProbe:
            httpGet: {path: /health, port: http}
            initialDelaySeconds: 1
            periodSeconds: %d
            failureThreshold: %d
          readinessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 1
            failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  selector: {app: app}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
spec:
  rules:
    - host: app.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
`

// A container whose /health starts answering 500 is killed through the CRI
// after failureThreshold periods, its restartCount goes to 1 and the new
// instance serves.
func TestLivenessFailureRestarts(t *testing.T) {
	const ns = "e2e-liveness"
	const period, threshold = 2, 3
	v := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 1, period, threshold)}, options{})
	v.start()
	pod := v.readyPods("app-", 1, 60*time.Second)[0]
	if rc := containerStatus(pod, "app").RestartCount; rc != 0 {
		t.Fatalf("restartCount before the failure = %d", rc)
	}
	_, before, err := v.get("app.test", "/")
	if err != nil {
		t.Fatal(err)
	}

	failedAt := time.Now()
	control(t, hostPort(t, pod, "app", 8080), "/control/fail")
	restarted := v.waitRestarted(pod.Name, 30*time.Second)
	cs := containerStatus(restarted, "app")
	term := cs.LastTerminationState.Terminated
	if term == nil {
		t.Fatalf("lastState.terminated missing after the restart: %+v", cs)
	}
	// The kill comes after `threshold` failed probes, the first of which
	// lands within one period of the failure: between (threshold-1) and
	// threshold periods, plus the stop itself.
	killedAfter := term.FinishedAt.Sub(failedAt)
	lo := time.Duration(threshold-1) * period * time.Second
	hi := time.Duration(threshold)*period*time.Second + 2*time.Second
	if killedAfter < lo-500*time.Millisecond || killedAfter > hi {
		t.Errorf("container killed %s after /health failed, want between %s and %s", killedAfter, lo, hi)
	}
	t.Logf("killed %s after the failure; lastState %+v", killedAfter, *term)

	v.readyPods("app-", 1, 30*time.Second)
	code, after, err := v.get("app.test", "/")
	if err != nil || code != 200 {
		t.Fatalf("GET after restart: %d %v", code, err)
	}
	if after.Instance == before.Instance || after.Pod != pod.Name {
		t.Errorf("served by %+v after restart, want a new instance of %s (was %s)", after, pod.Name, before.Instance)
	}
	if !hasEvent(v.events(), "Killing", "failed liveness probe, will be restarted") {
		t.Errorf("no Killing event for the liveness failure")
	}
	if !hasEvent(v.events(), "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500") {
		t.Errorf("no Unhealthy event with the status code")
	}
}

func hasEvent(evs []corev1.Event, reason, substr string) bool {
	for _, e := range evs {
		if e.Reason == reason && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// While a container fails its readiness probe the proxy sends it nothing;
// once it recovers it gets traffic again.
func TestFailingPodGetsNoTraffic(t *testing.T) {
	const ns = "e2e-traffic"
	// A high liveness threshold keeps the failing container alive meanwhile.
	v := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 2, 1, 60)}, options{})
	v.start()
	pods := v.readyPods("app-", 2, 60*time.Second)
	sick := pods[0]
	control(t, hostPort(t, sick, "app", 8080), "/control/fail")
	v.readyPods("app-", 1, 10*time.Second)

	for i := 0; i < 50; i++ {
		code, s, err := v.get("app.test", "/")
		if err != nil || code != 200 {
			t.Fatalf("GET %d: code %d err %v", i, code, err)
		}
		if s.Pod == sick.Name {
			t.Fatalf("request %d reached %s, which fails its readiness probe", i, sick.Name)
		}
	}

	control(t, hostPort(t, sick, "app", 8080), "/control/recover")
	v.readyPods("app-", 2, 10*time.Second)
	v.waitFor("traffic to the recovered pod", 10*time.Second, func() bool {
		_, s, err := v.get("app.test", "/")
		return err == nil && s.Pod == sick.Name
	})
}

// A container that exits by itself is restarted under restartPolicy Always.
func TestExitedContainerRestarts(t *testing.T) {
	const ns = "e2e-exit"
	v := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 1, 2, 3)},
		options{config: "backoff:\n  initial: 1s\n  max: 4s\n"})
	v.start()
	pod := v.readyPods("app-", 1, 60*time.Second)[0]
	control(t, hostPort(t, pod, "app", 8080), "/control/exit?code=3")
	var p corev1.Pod
	v.waitFor("restart after exit", 20*time.Second, func() bool {
		var ok bool
		p, ok = findPod(v.pods(), pod.Name)
		return ok && containerStatus(p, "app").RestartCount == 1 && podReady(p)
	})
	term := containerStatus(p, "app").LastTerminationState.Terminated
	if term == nil || term.ExitCode != 3 {
		t.Fatalf("lastState.terminated = %+v, want exit code 3", term)
	}
}

// SIGTERM leaves the pods running; the next vigil adopts them without
// creating any, and a second vigil on the same runtime refuses to start.
func TestRestartAdoptsPods(t *testing.T) {
	const ns = "e2e-adopt"
	v := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 2, 2, 3)}, options{})
	v.start()
	before := v.readyPods("app-", 2, 60*time.Second)
	sbBefore := sandboxes(t, v.env, ns)
	if len(sbBefore) != 2 {
		t.Fatalf("%d sandboxes before the restart, want 2", len(sbBefore))
	}

	// A second vigil against the same runtime must not start.
	second := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 2, 2, 3)}, options{})
	second.config = v.config
	second.startArgs()
	select {
	case <-second.exited:
		if second.exitErr == nil {
			t.Errorf("a second vigil on the same runtime exited 0")
		}
		if log, _ := os.ReadFile(second.logPath); !strings.Contains(string(log), "another vigil") {
			t.Errorf("second vigil's error does not say why: %s", log)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("a second vigil on the same runtime kept running")
	}

	v.stop(syscall.SIGTERM, 30*time.Second)
	if sb := sandboxes(t, v.env, ns); len(sb) != 2 {
		t.Fatalf("%d sandboxes after SIGTERM, want the 2 left running", len(sb))
	}
	// The pods keep serving while vigil is down.
	if code, _, err := getDirect(hostPort(t, before[0], "app", 8080)); err != nil || code != 200 {
		t.Errorf("pod %s not serving while vigil is down: %d %v", before[0].Name, code, err)
	}

	v.start()
	after := v.readyPods("app-", 2, 30*time.Second)
	for _, p := range before {
		if _, ok := findPod(after, p.Name); !ok {
			t.Errorf("pod %s not adopted; now %v", p.Name, names(after))
		}
	}
	sbAfter := sandboxes(t, v.env, ns)
	if len(sbAfter) != 2 {
		t.Fatalf("%d sandboxes after the restart, want the same 2", len(sbAfter))
	}
	ids := map[string]bool{}
	for _, sb := range sbBefore {
		ids[sb.Id] = true
	}
	for _, sb := range sbAfter {
		if !ids[sb.Id] {
			t.Errorf("sandbox %s is new after the restart", sb.Id)
		}
	}
	if !hasEvent(v.events(), "Adopted", "Adopted running pod") {
		t.Errorf("no Adopted event")
	}
}

// With pods.removeOnExit, SIGTERM stops and removes every pod.
func TestRemoveOnExit(t *testing.T) {
	const ns = "e2e-remove"
	v := newVigil(t, ns, map[string]string{"app.yaml": fmt.Sprintf(failingWeb, 1, 2, 3)},
		options{config: "pods:\n  removeOnExit: true\n"})
	v.start()
	v.readyPods("app-", 1, 60*time.Second)
	v.stop(syscall.SIGTERM, 30*time.Second)
	if v.exitErr != nil {
		t.Errorf("vigil exited with %v", v.exitErr)
	}
	if sb := sandboxes(t, v.env, ns); len(sb) != 0 {
		t.Errorf("%d sandboxes left after SIGTERM with removeOnExit", len(sb))
	}
}

func getDirect(addr string) (int, string, error) {
	resp, err := httpClient.Get("http://" + addr + "/health")
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, "", nil
}

func names(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}
