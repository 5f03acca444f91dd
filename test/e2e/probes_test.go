package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The probe handlers end to end: an exec, a tcp and a grpc probe each pass
// on a healthy container and fail on a sick one, a startup probe holds a
// trigger-happy liveness probe off until it passes, and a sub-second period
// set by annotation is honoured. Each test runs one Deployment named "app"
// (pods "app-*") with a container "app" in its own namespace.

// probeDeployment is a one-replica Deployment of the test app; containerSpec
// is indented under the container (ports, env, probes), annotations under the
// pod template's metadata.
func probeDeployment(name, annotations, containerSpec string) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
      annotations: {%[2]s}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: localhost/vigil-testapp:latest
%[3]s`, name, annotations, indent(containerSpec, "          "))
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// probeTotal is vigil's prober_probe_total for one pod, probe type
// (Liveness, Readiness, Startup) and result (successful, failed, unknown).
func (v *vigil) probeTotal(pod, probeType, result string) int {
	v.t.Helper()
	resp, err := httpClient.Get("http://" + v.admin + "/metrics")
	if err != nil {
		v.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		v.t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	want := []string{`pod="` + pod + `"`, `probe_type="` + probeType + `"`, `result="` + result + `"`}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	total := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "prober_probe_total{") || !containsAll(line, want) {
			continue
		}
		f := strings.Fields(line)
		n, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			v.t.Fatalf("metrics line %q: %v", line, err)
		}
		total += int(n)
	}
	return total
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// pod returns the current state of the named pod; ok is false when vigil
// does not list it.
// waitRestarted waits until the container "app" of pod name has restarted
// once, and returns the pod as it was then.
func (v *vigil) waitRestarted(name string, within time.Duration) corev1.Pod {
	v.t.Helper()
	var restarted corev1.Pod
	v.waitFor("restartCount 1", within, func() bool {
		p, ok := v.pod(name)
		restarted = p
		return ok && containerStatus(p, "app").RestartCount == 1
	})
	return restarted
}

func (v *vigil) pod(name string) (corev1.Pod, bool) {
	return findPod(v.pods(), name)
}

// restarts is the app container's restartCount, or -1 when the pod is gone.
func (v *vigil) restarts(name string) int32 {
	p, ok := v.pod(name)
	if !ok {
		return -1
	}
	return containerStatus(p, "app").RestartCount
}

// holdsFor fails the test if cond stops holding within d (polled every 50 ms).
func (v *vigil) holdsFor(what string, d time.Duration, cond func() bool) {
	v.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			v.t.Fatalf("%s stopped holding %s before the end of its %s", what,
				time.Until(deadline).Round(time.Millisecond), d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventWith reports whether an event of the given reason contains every one
// of substrs, and returns the messages of that reason for the failure text.
func eventWith(evs []corev1.Event, reason string, substrs ...string) (bool, []string) {
	var msgs []string
	for _, e := range evs {
		if e.Reason != reason {
			continue
		}
		if containsAll(e.Message, substrs) {
			return true, nil
		}
		msgs = append(msgs, e.Message)
	}
	return false, msgs
}

// killedWithin checks that the liveness kill that ends the container's first
// instance came between lo and hi after failedAt, by its termination time.
func killedWithin(t *testing.T, p corev1.Pod, failedAt time.Time, lo, hi time.Duration) {
	t.Helper()
	term := containerStatus(p, "app").LastTerminationState.Terminated
	if term == nil {
		t.Fatalf("no lastState.terminated after the restart: %+v", containerStatus(p, "app"))
	}
	after := term.FinishedAt.Sub(failedAt)
	// FinishedAt has a resolution of one second in the API.
	if after < lo-time.Second || after > hi+time.Second {
		t.Errorf("container stopped %s after the failure, want between %s and %s", after, lo, hi)
	}
	t.Logf("container stopped %s after the failure (window %s..%s)", after.Round(time.Millisecond), lo, hi)
}

// killDelay is what a liveness kill adds after the probe decides: the
// supervisor drains the container's endpoints for up to 2 s, then stops it
// with the pod's 2 s grace (the test app exits at once on SIGTERM).
const killDelay = 2*time.Second + 2*time.Second

// An exec liveness probe (the test app's own `check`) passes while /health
// answers 200: the pod is Ready through an exec readiness probe and nothing
// restarts over several periods. After /control/fail it fails, and the
// container is killed after failureThreshold periods and restarted.
func TestProbeExec(t *testing.T) {
	const ns = "e2e-probe-exec"
	const threshold = 2
	v := newVigil(t, ns, map[string]string{"app.yaml": probeDeployment("app", "", fmt.Sprintf(`
ports: [{name: http, containerPort: 8080}]
livenessProbe:
  exec: {command: ["/testapp", "check"]}
  periodSeconds: 1
  failureThreshold: %d
readinessProbe:
  exec: {command: ["/testapp", "check"]}
  periodSeconds: 1
  failureThreshold: 1
`, threshold))}, options{})
	v.start()
	pod := v.readyPods("app-", 1, 60*time.Second)[0]

	// Healthy: several exec liveness runs succeed and none restarts it.
	base := v.probeTotal(pod.Name, "Liveness", "successful")
	v.holdsFor("restartCount 0 and Ready", 4*time.Second, func() bool {
		p, ok := v.pod(pod.Name)
		return ok && podReady(p) && containerStatus(p, "app").RestartCount == 0
	})
	if ran := v.probeTotal(pod.Name, "Liveness", "successful") - base; ran < 3 {
		t.Fatalf("%d successful exec liveness runs in 4 s at a 1 s period, want at least 3", ran)
	}
	if failed := v.probeTotal(pod.Name, "Liveness", "failed"); failed != 0 {
		t.Fatalf("%d failed exec liveness runs while healthy", failed)
	}

	failedAt := time.Now()
	control(t, hostPort(t, pod, "app", 8080), "/control/fail")
	restarted := v.waitRestarted(pod.Name, 20*time.Second)
	// The first failing run lands within a period of the failure, the kill
	// decision threshold-1 periods later.
	killedWithin(t, restarted, failedAt,
		(threshold-1)*time.Second, threshold*time.Second+killDelay)
	v.readyPods("app-", 1, 30*time.Second)

	evs := v.events()
	if ok, msgs := eventWith(evs, "Unhealthy", "Liveness probe failed:",
		`["/testapp" "check"]`, "exited with 1"); !ok {
		t.Errorf("no Unhealthy event for the failed exec liveness probe; Unhealthy events: %q", msgs)
	}
	if ok, _ := eventWith(evs, "Killing", "failed liveness probe, will be restarted"); !ok {
		t.Errorf("no Killing event for the liveness kill")
	}
}

// tcpSocket probes by port name: a readiness probe on the served http port
// makes the pod Ready, and a liveness probe on a second port that the app
// serves too keeps it alive. A pod whose liveness port nobody listens on is
// killed with the dial error in its event, and restarted.
func TestProbeTCP(t *testing.T) {
	const ns = "e2e-probe-tcp"
	const threshold = 2
	// GRPC_PORT makes the test app listen on its second port as well.
	spec := func(serveSide bool) string {
		env := ""
		if serveSide {
			env = `env: [{name: GRPC_PORT, value: "$(PORT_SIDE)"}]`
		}
		return fmt.Sprintf(`
ports: [{name: http, containerPort: 8080}, {name: side, containerPort: 9090}]
%s
readinessProbe:
  tcpSocket: {port: http}
  periodSeconds: 1
livenessProbe:
  tcpSocket: {port: side}
  initialDelaySeconds: 1
  periodSeconds: 1
  failureThreshold: %d
`, env, threshold)
	}
	v := newVigil(t, ns, map[string]string{
		"alive.yaml": probeDeployment("alive", "", spec(true)),
		"dead.yaml":  probeDeployment("dead", "", spec(false)),
	}, options{})
	startedAt := time.Now()
	v.start()
	alive := v.readyPods("alive-", 1, 60*time.Second)[0]

	// The dead pod's liveness port refuses connections: it is killed after
	// threshold periods, and again after every restart (with back-off).
	// (Its probe counters start over with each instance, so the metrics
	// cannot show the first instance's runs.)
	v.waitFor("the dead pod restarted", 30*time.Second, func() bool {
		for _, p := range v.pods() {
			if strings.HasPrefix(p.Name, "dead-") && containerStatus(p, "app").RestartCount >= 1 {
				return true
			}
		}
		return false
	})
	t.Logf("dead pod restarted %s after vigil started", time.Since(startedAt).Round(time.Millisecond))
	evs := v.events()
	if ok, msgs := eventWith(evs, "Unhealthy", "Liveness probe failed:",
		"connect: connection refused"); !ok {
		t.Errorf("no Unhealthy event with the tcp dial error; Unhealthy events: %q", msgs)
	}
	if ok, _ := eventWith(evs, "Killing", "failed liveness probe, will be restarted"); !ok {
		t.Errorf("no Killing event: the dead pod restarted for another reason")
	}

	// Meanwhile the alive pod, probed the same way on a served port, has
	// not restarted and stays Ready.
	v.holdsFor("alive pod Ready without restarts", 3*time.Second, func() bool {
		p, ok := v.pod(alive.Name)
		return ok && podReady(p) && containerStatus(p, "app").RestartCount == 0
	})
	if n := v.probeTotal(alive.Name, "Liveness", "failed"); n != 0 {
		t.Errorf("%d failed tcp liveness runs on the served port", n)
	}
	if n := v.probeTotal(alive.Name, "Liveness", "successful"); n < 3 {
		t.Errorf("%d successful tcp liveness runs on the served port, want at least 3", n)
	}
}

// A grpc probe on the declared container port reaches the app's
// grpc.health.v1 server on the host port vigil assigned: SERVING makes the
// pod Ready; after /control/fail the server says NOT_SERVING, readiness goes
// false at once (threshold 1) and liveness kills the container later.
func TestProbeGRPC(t *testing.T) {
	const ns = "e2e-probe-grpc"
	const liveThreshold = 4
	v := newVigil(t, ns, map[string]string{"app.yaml": probeDeployment("app", "", fmt.Sprintf(`
ports: [{name: http, containerPort: 8080}, {name: grpc, containerPort: 9090}]
env: [{name: GRPC_PORT, value: "$(PORT_GRPC)"}]
readinessProbe:
  grpc: {port: 9090}
  periodSeconds: 1
  failureThreshold: 1
livenessProbe:
  grpc: {port: 9090}
  periodSeconds: 1
  failureThreshold: %d
`, liveThreshold))}, options{})
	v.start()
	pod := v.readyPods("app-", 1, 60*time.Second)[0]
	if n := v.probeTotal(pod.Name, "Readiness", "successful"); n < 1 {
		t.Fatalf("pod Ready with %d successful grpc readiness runs", n)
	}

	failedAt := time.Now()
	control(t, hostPort(t, pod, "app", 8080), "/control/fail")
	v.waitFor("not Ready on NOT_SERVING", 5*time.Second, func() bool {
		p, ok := v.pod(pod.Name)
		return ok && !podReady(p)
	})
	notReadyAfter := time.Since(failedAt)
	if rc := v.restarts(pod.Name); rc != 0 {
		t.Fatalf("restartCount %d when readiness went false; liveness should still wait", rc)
	}
	t.Logf("not Ready %s after NOT_SERVING", notReadyAfter.Round(time.Millisecond))

	restarted := v.waitRestarted(pod.Name, 20*time.Second)
	killedWithin(t, restarted, failedAt,
		(liveThreshold-1)*time.Second, liveThreshold*time.Second+killDelay)
	v.readyPods("app-", 1, 30*time.Second)

	evs := v.events()
	for _, kind := range []string{"Readiness", "Liveness"} {
		if ok, msgs := eventWith(evs, "Unhealthy", kind+" probe failed:",
			`service unhealthy (responded with "NOT_SERVING")`); !ok {
			t.Errorf("no Unhealthy event for the %s grpc probe; Unhealthy events: %q", kind, msgs)
		}
	}
}

// A startup probe holds liveness off: with STARTUP_DELAY=4 /health answers
// 503 for 4 s, which a liveness probe with failureThreshold 1 and a 1 s
// period would punish at its first run. The container is not restarted,
// Started flips true once /health answers 200, and liveness then works.
func TestProbeStartupHoldsLiveness(t *testing.T) {
	const ns = "e2e-probe-startup"
	const delay = 4 * time.Second
	v := newVigil(t, ns, map[string]string{"app.yaml": probeDeployment("app", "", `
ports: [{name: http, containerPort: 8080}]
env: [{name: STARTUP_DELAY, value: "4"}]
startupProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 1
  failureThreshold: 10
livenessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 1
  failureThreshold: 1
`)}, options{})
	v.start()

	// Watch from the container's start until Started: never a restart.
	var p corev1.Pod
	var startedSeen time.Time
	v.waitFor("Started", 30*time.Second, func() bool {
		for _, q := range v.pods() {
			if !strings.HasPrefix(q.Name, "app-") {
				continue
			}
			p = q
			cs := containerStatus(q, "app")
			if cs.RestartCount != 0 {
				t.Fatalf("restarted during the startup delay: %+v", cs)
			}
			if cs.Started != nil && *cs.Started {
				startedSeen = time.Now()
				return true
			}
		}
		return false
	})
	cs := containerStatus(p, "app")
	if cs.State.Running == nil {
		t.Fatalf("Started but not running: %+v", cs)
	}
	// StartedAt has one-second resolution; the first success comes on the
	// first 1 s tick at or after the delay.
	took := startedSeen.Sub(cs.State.Running.StartedAt.Time)
	if took < delay-time.Second || took > delay+3*time.Second {
		t.Errorf("Started %s after the container started, want about %s", took, delay)
	}
	t.Logf("Started %s after the container started", took.Round(time.Millisecond))
	if n := v.probeTotal(p.Name, "Startup", "failed"); n < 2 {
		t.Errorf("%d failed startup runs during a %s delay at a 1 s period, want at least 2", n, delay)
	}
	if n := v.probeTotal(p.Name, "Liveness", "failed"); n != 0 {
		t.Errorf("liveness failed %d times: it ran during the startup delay", n)
	}
	if !podReady(p) {
		// No readiness probe: Ready follows Started.
		v.readyPods("app-", 1, 5*time.Second)
	}

	// Liveness runs now and passes ...
	base := v.probeTotal(p.Name, "Liveness", "successful")
	v.holdsFor("no restart after startup", 3*time.Second, func() bool { return v.restarts(p.Name) == 0 })
	if n := v.probeTotal(p.Name, "Liveness", "successful") - base; n < 2 {
		t.Errorf("%d successful liveness runs in 3 s after startup, want at least 2", n)
	}
	// ... and kills on the first failure.
	failedAt := time.Now()
	control(t, hostPort(t, p, "app", 8080), "/control/fail")
	restarted := v.waitRestarted(p.Name, 20*time.Second)
	killedWithin(t, restarted, failedAt, 0, time.Second+killDelay)
	if ok, msgs := eventWith(v.events(), "Unhealthy", "Startup probe failed:",
		"HTTP probe failed with statuscode: 503"); !ok {
		t.Errorf("no Unhealthy event for the startup probe's 503; Unhealthy events: %q", msgs)
	}
}

// The annotation probe.vigil.dev/app.readiness-period sets a 200 ms period
// on a probe whose periodSeconds says 10: a readiness failure and the
// recovery are both noticed well within a second, several times over.
func TestProbeSubSecondReadiness(t *testing.T) {
	const ns = "e2e-probe-fast"
	const limit = 700 * time.Millisecond
	v := newVigil(t, ns, map[string]string{"app.yaml": probeDeployment("app",
		`probe.vigil.dev/app.readiness-period: "200ms"`, `
ports: [{name: http, containerPort: 8080}]
readinessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 10
  failureThreshold: 1
`)}, options{})
	v.start()
	pod := v.readyPods("app-", 1, 60*time.Second)[0]
	addr := hostPort(t, pod, "app", 8080)

	// noticed polls /pods tightly (10 ms) until the pod's readiness is want.
	noticed := func(want bool) time.Duration {
		t.Helper()
		from := time.Now()
		for time.Since(from) < 5*time.Second {
			if p, ok := v.pod(pod.Name); ok && podReady(p) == want {
				return time.Since(from)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("readiness did not become %v within 5 s", want)
		return 0
	}
	for i := range 3 {
		control(t, addr, "/control/fail")
		down := noticed(false)
		control(t, addr, "/control/recover")
		up := noticed(true)
		t.Logf("round %d: not Ready after %s, Ready again after %s", i,
			down.Round(time.Millisecond), up.Round(time.Millisecond))
		if down > limit || up > limit {
			t.Errorf("round %d: readiness changes noticed after %s and %s, want under %s "+
				"with a 200 ms period", i, down, up, limit)
		}
	}
	if rc := v.restarts(pod.Name); rc != 0 {
		t.Errorf("restartCount %d: nothing here should restart", rc)
	}
}
