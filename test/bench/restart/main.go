// Command restart measures how fast vigil replaces a container whose liveness
// probe fails: from the probe result that crosses the failure threshold to
// the new instance's first passing readiness probe.
//
// It runs vigil's supervisor, prober and proxy in this process against a real
// CRI runtime, the way cmd/vigil wires them, with the runtime and the proxy
// wrapped so that every step of the restart is timed: drain, StopContainer,
// the exit bookkeeping, the crash-loop backoff wait, ImagePresent +
// CreateContainer + StartContainer, and the wait for the first passing
// readiness probe. One pod runs the test app (test/images/testapp); each
// round tells it to fail (POST /control/fail), so /health answers 500 until
// the liveness probe kills it and a fresh instance answers 200.
//
//	go run ./test/bench/restart -restarts 20 -period 20ms -ports 27000-27009
//
// The pod lives in its own namespace (-namespace); the supervisor sees only
// that namespace, so other vigils on the same containerd are left alone, and
// leftovers of an earlier run in it are removed first.
//
// Measured on the shared 2-core VM with the defaults (20 ms periods, backoff
// 10 ms), load average 2-6 from other work: total p50 100-330 ms, of which
// vigil's own steps (signal, drain, exit, backoff, to-probe) are about 1 ms
// and the rest is StopContainer (35-125 ms), CreateContainer (7-20 ms),
// StartContainer (50-150 ms) and the app starting to listen (~5 ms).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
	"github.com/vigil-agent/vigil/supervisor"
)

const (
	defaultEndpoint = "unix:///var/lib/vigil-test/containerd/containerd.sock"
	podName         = "restart-bench"
	containerName   = "app"
	maxRestarts     = 1000
)

type config struct {
	restarts       int
	period         time.Duration
	failures       int
	backoffInitial time.Duration
	backoffMax     time.Duration
	image          string
	endpoint       string
	containerd     string
	namespace      string
	portRange      [2]int
	roundTimeout   time.Duration
	verbose        bool
}

func main() {
	var cfg config
	var ports string
	flag.IntVar(&cfg.restarts, "restarts", 20, "liveness restarts to measure (at most 1000)")
	flag.DurationVar(&cfg.period, "period", 20*time.Millisecond,
		"period of the liveness and readiness probes (probe.vigil.dev/<container>.<kind>-period)")
	// The threshold is not part of the measured time (that starts once it is
	// crossed); it only has to give a new instance time to listen, or a slow
	// start under load is killed again before it gets ready.
	flag.IntVar(&cfg.failures, "liveness-failures", 10, "livenessProbe.failureThreshold")
	flag.DurationVar(&cfg.backoffInitial, "backoff-initial", 10*time.Millisecond, "backoff.initial")
	flag.DurationVar(&cfg.backoffMax, "backoff-max", 10*time.Millisecond, "backoff.max")
	flag.StringVar(&cfg.image, "image", "localhost/vigil-testapp:latest", "test app image, already in the runtime's store")
	flag.StringVar(&cfg.endpoint, "endpoint", envOr("VIGIL_CRI_ENDPOINT", defaultEndpoint), "CRI endpoint")
	flag.StringVar(&cfg.containerd, "containerd", os.Getenv("VIGIL_CONTAINERD_ADDRESS"),
		"containerd socket for exit events (default: the endpoint's socket; none: resync only)")
	flag.StringVar(&cfg.namespace, "namespace", "vigil-bench-restart", "Kubernetes namespace of the bench's pod")
	flag.StringVar(&ports, "ports", "20900-20909", "host-port range of the pod")
	flag.DurationVar(&cfg.roundTimeout, "round-timeout", 30*time.Second, "give up when one restart takes longer")
	flag.BoolVar(&cfg.verbose, "v", false, "log the supervisor and prober at debug level")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("restart bench: ")

	if cfg.restarts < 1 || cfg.restarts > maxRestarts {
		log.Fatalf("-restarts must be 1..%d", maxRestarts)
	}
	if cfg.period < manifest.MinProbePeriod {
		log.Fatalf("-period must be at least %v", manifest.MinProbePeriod)
	}
	if cfg.failures < 1 {
		log.Fatal("-liveness-failures must be at least 1")
	}
	if cfg.backoffInitial <= 0 || cfg.backoffMax < cfg.backoffInitial {
		log.Fatal("want 0 < -backoff-initial <= -backoff-max")
	}
	var err error
	if cfg.portRange, err = parseRange(ports); err != nil {
		log.Fatalf("-ports: %v", err)
	}
	if cfg.containerd == "" {
		cfg.containerd = strings.TrimPrefix(cfg.endpoint, "unix://")
	}
	if err := run(cfg); err != nil {
		log.Fatal(err)
	}
}

// instance is one container instance that passed its readiness probe.
type instance struct {
	id   string
	port int32
	at   time.Time
}

type bench struct {
	cfg   config
	tl    *timeline
	sup   *supervisor.Supervisor
	ready chan instance
}

// onUpdate is the prober's callback: it marks the results the bench times
// and hands every update to the supervisor, as cmd/vigil does.
func (b *bench) onUpdate(u prober.Update) {
	now := time.Now()
	t := u.Target
	switch t.Kind {
	case prober.Liveness:
		if u.Changed && u.State == prober.Failure {
			b.tl.add(markThreshold, t.ContainerID, now)
		}
	case prober.Readiness:
		b.tl.add(markProbe, t.ContainerID, u.Ran)
		if u.Changed && u.State == prober.Success {
			b.tl.add(markReady, t.ContainerID, now)
			select {
			case b.ready <- instance{id: t.ContainerID, port: t.NamedPorts["http"], at: now}:
			default: // the bench is not waiting; it reads the timeline instead
			}
		}
	}
	b.sup.ProbeResult(u)
}

func run(cfg config) error {
	// Probe failures are the bench's doing and logged as warnings by the
	// event recorder; only errors are worth showing.
	level := slog.LevelError
	if cfg.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	criRT, err := runtime.NewCRI(cfg.endpoint, runtime.CRIOptions{Logger: logger})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", cfg.endpoint, err)
	}
	defer criRT.Close()
	setupCtx, cancelSetup := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelSetup()
	if ok, err := criRT.ImagePresent(setupCtx, cfg.image); err != nil || !ok {
		return fmt.Errorf("image %s not in the runtime's store (err %v): run make images containerd-up", cfg.image, err)
	}
	removeNamespace(setupCtx, criRT, cfg.namespace)

	var exits runtime.ExitWatcher
	if cfg.containerd != "none" {
		ctrd, err := runtime.NewContainerd(cfg.containerd, "k8s.io")
		if err != nil {
			return fmt.Errorf("containerd %s: %w", cfg.containerd, err)
		}
		ctrd.SetLogger(logger)
		defer ctrd.Close()
		exits = ctrd
	}

	dir, err := os.MkdirTemp("", "vigil-restart-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	set, err := loadManifest(dir, cfg)
	if err != nil {
		return err
	}

	b := &bench{cfg: cfg, tl: &timeline{}, ready: make(chan instance, 16)}
	reg := prometheus.NewRegistry()
	px := proxy.New(proxy.Options{Logger: logger, Registerer: reg})
	if errs := px.SetConfig(proxy.Config{Services: set.Services}); len(errs) > 0 {
		return fmt.Errorf("proxy config: %v", errors.Join(errs...))
	}
	pm := prober.NewManager(prober.Options{OnUpdate: b.onUpdate, Logger: logger, Registerer: reg})
	defer pm.Stop()
	b.sup = supervisor.New(supervisor.Options{
		Runtime: &timedRuntime{Runtime: criRT, tl: b.tl},
		// Its own instance: the bench never adopts the pods of other vigils
		// on the same containerd.
		Instance:         "bench-restart",
		Exits:            exits,
		Prober:           pm,
		Endpoints:        &timedSink{Proxy: px, tl: b.tl},
		Logger:           logger,
		Registerer:       reg,
		HostNetwork:      true,
		PortRange:        cfg.portRange,
		BackoffInitial:   cfg.backoffInitial,
		BackoffMax:       cfg.backoffMax,
		RemovePodsOnExit: true,
		LogDir:           filepath.Join(dir, "logs"),
	})

	ctx, stop := context.WithCancel(context.Background())
	supDone := make(chan error, 1)
	go func() { supDone <- b.sup.Run(ctx) }()
	b.sup.SetManifests(set)
	defer func() {
		stop()
		select {
		case err := <-supDone:
			if err != nil {
				log.Printf("supervisor: %v", err)
			}
		case <-time.After(60 * time.Second):
			log.Print("the supervisor did not remove the pod within 60s")
		}
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		removeNamespace(cctx, criRT, cfg.namespace)
	}()

	printConfig(cfg)
	first, err := b.waitReady("", 60*time.Second)
	if err != nil {
		return fmt.Errorf("first start: %w", err)
	}
	samples, err := b.measure(first)
	if len(samples) > 0 {
		report(samples)
	}
	return err
}

// measure runs the restarts, each from the instance that is ready now.
func (b *bench) measure(cur instance) ([]sample, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	var samples []sample
	skipped := 0
	fmt.Printf("\n%3s %8s", "#", "total")
	for _, n := range segNames {
		fmt.Printf(" %8s", n)
	}
	fmt.Printf(" | %6s %8s\n", "probes", "endpoint")
	for i := range b.cfg.restarts {
		b.tl.take() // this round's timeline starts here
		url := "http://127.0.0.1:" + strconv.Itoa(int(cur.port)) + "/control/fail"
		resp, err := client.Post(url, "text/plain", nil)
		if err != nil {
			return samples, fmt.Errorf("restart %d: tell the app to fail: %w", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		next, err := b.waitReady(cur.id, b.cfg.roundTimeout)
		if err != nil {
			return samples, fmt.Errorf("restart %d: %w", i, err)
		}
		b.waitEndpoint(next, 2*time.Second)
		marks := b.tl.take()
		s, err := analyze(marks, cur.id, next.id)
		cur = next
		if err != nil {
			// Not a sample, but the next round can start from the
			// instance that is ready now.
			fmt.Printf("%3d not measured: %v\n    %s\n", i+1, err, describe(marks, 12))
			if skipped++; skipped > maxSkipped {
				return samples, fmt.Errorf("%d rounds could not be measured", skipped)
			}
			continue
		}
		s.print(i)
		samples = append(samples, s)
	}
	if skipped > 0 {
		fmt.Printf("%d of %d rounds not measured (see above)\n", skipped, b.cfg.restarts)
	}
	return samples, nil
}

// maxSkipped is how many rounds may fail to give a sample before the bench
// gives up.
const maxSkipped = 3

// describe sums up a timeline for a round that could not be measured: the
// count of each kind of mark, and the first n marks.
func describe(marks []mark, n int) string {
	counts := map[string]int{}
	var kinds []string
	for _, m := range marks {
		if counts[m.what] == 0 {
			kinds = append(kinds, m.what)
		}
		counts[m.what]++
	}
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s x%d; ", k, counts[k])
	}
	for _, m := range marks[:min(n, len(marks))] {
		fmt.Fprintf(&b, "\n    %+8.1fms %s %s", float64(m.at.Sub(marks[0].at))/1e6, m.what, shortID(m.id))
	}
	return b.String()
}

func shortID(id string) string { return id[:min(len(id), 12)] }

// waitReady waits for an instance other than old to pass its readiness probe.
func (b *bench) waitReady(old string, timeout time.Duration) (instance, error) {
	deadline := time.After(timeout)
	for {
		select {
		case in := <-b.ready:
			if in.id != old {
				return in, nil
			}
		case <-deadline:
			return instance{}, fmt.Errorf("no new instance passed its readiness probe within %v", timeout)
		}
	}
}

// waitEndpoint waits, at most timeout, for the proxy to get the ready
// instance's address back; the round's figures say so when it did not.
func (b *bench) waitEndpoint(in instance, timeout time.Duration) {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b.tl.mu.Lock()
		found := false
		for _, m := range b.tl.marks {
			if m.what == markEndpoint && !m.at.Before(in.at) {
				found = true
			}
		}
		b.tl.mu.Unlock()
		if found {
			return
		}
	}
}

func loadManifest(dir string, cfg config) (*manifest.Set, error) {
	mdir := filepath.Join(dir, "manifests")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		return nil, err
	}
	r := strings.NewReplacer("NAMESPACE", cfg.namespace, "POD", podName, "CONTAINER", containerName,
		"IMAGE", cfg.image, "PERIOD", cfg.period.String(), "FAILURES", strconv.Itoa(cfg.failures))
	if err := os.WriteFile(filepath.Join(mdir, "bench.yaml"), []byte(r.Replace(manifestTemplate)), 0o644); err != nil {
		return nil, err
	}
	set, err := manifest.Load(mdir)
	if err != nil {
		return nil, err
	}
	if len(set.Errors) > 0 {
		return nil, fmt.Errorf("bench manifest: %v", errors.Join(set.Errors...))
	}
	return set, nil
}

// manifestTemplate is the bench's pod and the Service that puts it behind
// the proxy, so that a kill drains it as it would a served pod.
const manifestTemplate = `apiVersion: v1
kind: Pod
metadata:
  name: POD
  namespace: NAMESPACE
  labels: {app: POD}
  annotations:
    probe.vigil.dev/CONTAINER.liveness-period: PERIOD
    probe.vigil.dev/CONTAINER.readiness-period: PERIOD
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: CONTAINER
    image: IMAGE
    imagePullPolicy: Never
    ports: [{name: http, containerPort: 8080}]
    livenessProbe:
      httpGet: {path: /health, port: http}
      timeoutSeconds: 1
      failureThreshold: FAILURES
    readinessProbe:
      httpGet: {path: /health, port: http}
      timeoutSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: POD
  namespace: NAMESPACE
spec:
  selector: {app: POD}
  ports: [{port: 80, targetPort: http}]
`

func printConfig(cfg config) {
	fmt.Printf("restart bench: %d liveness restarts of %s on %s (exits: %s)\n",
		cfg.restarts, cfg.image, cfg.endpoint, cfg.containerd)
	fmt.Printf("config: liveness and readiness httpGet /health every %v (probe.vigil.dev period annotations), "+
		"timeout 1s, initialDelay 0, liveness failureThreshold %d, readiness failureThreshold 1; "+
		"backoff.initial %v backoff.max %v backoff.reset %v; restartPolicy Always; "+
		"host network, host ports %d-%d; namespace %s\n",
		cfg.period, cfg.failures, cfg.backoffInitial, cfg.backoffMax, supervisor.DefaultBackoffReset,
		cfg.portRange[0], cfg.portRange[1], cfg.namespace)
	fmt.Println("each restart is timed from the liveness result that crosses the threshold " +
		"to the new instance's first passing readiness result")
}

// removeNamespace stops and removes every sandbox of the bench's namespace:
// what an interrupted earlier run left, or this run's if vigil could not.
func removeNamespace(ctx context.Context, rt *runtime.CRI, ns string) {
	sbs, err := rt.ListPodSandboxes(ctx, &cri.PodSandboxFilter{
		LabelSelector: map[string]string{runtime.LabelPodNamespace: ns},
	})
	if err != nil {
		log.Printf("list sandboxes of namespace %s: %v", ns, err)
		return
	}
	for _, sb := range sbs {
		if err := rt.StopPodSandbox(ctx, sb.Id); err != nil && !runtime.IsNotFound(err) {
			log.Printf("stop sandbox %s: %v", sb.Id, err)
		}
		if err := rt.RemovePodSandbox(ctx, sb.Id); err != nil && !runtime.IsNotFound(err) {
			log.Printf("remove sandbox %s: %v", sb.Id, err)
		}
	}
}

func parseRange(s string) ([2]int, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1024 || b < a || b > 65535 {
		return [2]int{}, fmt.Errorf("%q: want LOW-HIGH within 1024-65535", s)
	}
	return [2]int{a, b}, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
