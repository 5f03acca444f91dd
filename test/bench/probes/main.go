// Command probes measures the prober at scale: it starts N HTTP targets on
// loopback in a child process (so that the servers' CPU is not counted), probes
// them through the real prober.Manager with GOMAXPROCS=1, and prints probes/s,
// CPU per 1,000 probes, lateness against the schedule and sockets in TIME_WAIT.
//
//	go run ./test/bench/probes -targets 10000 -period 1s -duration 60s -mode reuse
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigil-agent/vigil/prober"
)

const (
	maxTargets  = 20000
	maxDuration = 10 * time.Minute
	// Lateness histogram: 10 µs buckets up to 100 ms, then 1 ms buckets up
	// to 10 s, past any probe timeout the bench sets; the maximum is kept
	// exactly besides.
	fine, fineUpTo     = 10 * time.Microsecond, 100 * time.Millisecond
	coarse, coarseUpTo = time.Millisecond, 10 * time.Second
	nFine              = int(fineUpTo / fine)
	nBuckets           = nFine + int((coarseUpTo-fineUpTo)/coarse)
)

func main() {
	targets := flag.Int("targets", 1000, "number of probe targets (at most 20000)")
	period := flag.Duration("period", time.Second, "probe period")
	duration := flag.Duration("duration", 30*time.Second, "run time, warm-up included (at most 10m)")
	mode := flag.String("mode", "reuse", "connection policy: reuse or linger")
	ports := flag.Int("ports", 100, "listening ports the targets are spread over")
	child := flag.Bool("child", false, "internal: serve the targets")
	flag.Parse()

	raiseNoFile()
	if *child {
		serve(*ports)
		return
	}
	if *targets < 1 || *targets > maxTargets || *duration > maxDuration || *period < prober.MinPeriod {
		log.Fatalf("want 1..%d targets, a duration up to %v and a period of at least %v",
			maxTargets, maxDuration, prober.MinPeriod)
	}
	conns := map[string]prober.ConnPolicy{"reuse": prober.ConnReuse, "linger": prober.ConnLinger}
	policy, ok := conns[*mode]
	if !ok {
		log.Fatalf("unknown -mode %q: want reuse or linger", *mode)
	}
	runtime.GOMAXPROCS(1)
	run(*targets, *ports, *period, *duration, policy, *mode)
}

// run is the parent: the prober under test.
func run(n, nports int, period, duration time.Duration, policy prober.ConnPolicy, mode string) {
	ch, portList := startChild(nports)
	defer func() {
		_ = ch.cmd.Process.Kill() // our own child, by PID
		_ = ch.cmd.Wait()
	}()
	cw0, sw0 := ch.timeWait()

	var rec recorder
	m := prober.NewManager(prober.Options{
		OnUpdate:   rec.add,
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: prometheus.NewRegistry(),
		Conns:      policy,
	})
	started := time.Now().Add(-time.Hour)
	for i := range n {
		m.Add(prober.Target{
			Namespace: "bench", Pod: "pod-" + strconv.Itoa(i), PodUID: "uid-" + strconv.Itoa(i),
			Container: "app", ContainerID: "c", Kind: prober.Readiness, Host: "127.0.0.1",
			StartedAt: started, Spread: true,
			Spec: prober.Spec{Period: period, Timeout: time.Second, Handler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz",
					Port: intstr.FromInt(portList[i%len(portList)])},
			}},
		})
	}

	// Warm up for one period plus a second (the spread first runs, new
	// connections), then measure.
	warm := period + time.Second
	if warm >= duration {
		log.Fatalf("duration %v must exceed the warm-up %v", duration, warm)
	}
	time.Sleep(warm)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	rec.measuring.Store(true)
	u0, t0 := cpu(), time.Now()
	done := time.After(duration - warm)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	fmt.Printf("mode=%s targets=%d period=%v duration=%v (warm-up %v) GOMAXPROCS=%d\n",
		mode, n, period, duration, warm, runtime.GOMAXPROCS(0))
	fmt.Printf("  TIME_WAIT before start: client=%d server=%d\n", cw0, sw0)
loop:
	for {
		select {
		case <-tick.C:
			c, s := ch.timeWait()
			fmt.Printf("  t=%3.0fs TIME_WAIT client=%d server=%d\n", time.Since(t0).Seconds(), c, s)
		case <-done:
			break loop
		}
	}
	rec.measuring.Store(false)
	u1, elapsed := cpu(), time.Since(t0)
	cw, sw := ch.timeWait()
	goroutines := runtime.NumGoroutine()
	runtime.ReadMemStats(&ms1)
	m.Stop()

	probes := rec.count.Load()
	fmt.Printf("probes: %d in %.1fs = %.0f/s (failed %d, unknown %d)\n", probes, elapsed.Seconds(),
		float64(probes)/elapsed.Seconds(), rec.failed.Load(), rec.unknown.Load())
	fmt.Printf("prober CPU (user+sys, servers in a child process, not counted): %.2fs = %.3f s per 1,000 probes (%.0f%% of one core)\n",
		(u1 - u0).Seconds(), (u1-u0).Seconds()/float64(probes)*1000, 100*(u1-u0).Seconds()/elapsed.Seconds())
	fmt.Printf("lateness: p50 %v p90 %v p99 %v p99.9 %v max %v\n", rec.quantile(0.50),
		rec.quantile(0.90), rec.quantile(0.99), rec.quantile(0.999), rec.quantile(1))
	fmt.Printf("memory at end: heap in use %.0f MB, stacks %.0f MB, %d goroutines; "+
		"%d GCs while measuring, %.1f MB allocated per 1,000 probes\n",
		mb(ms1.HeapInuse), mb(ms1.StackInuse), goroutines, ms1.NumGC-ms0.NumGC,
		mb(ms1.TotalAlloc-ms0.TotalAlloc)/float64(probes)*1000)
	for msg, n := range rec.failures {
		fmt.Printf("  failed %d times: %s\n", n, msg)
	}
	fmt.Printf("TIME_WAIT at end: client side %d, server side %d\n", cw, sw)
}

// recorder takes Updates; it must be cheap, so it only counts.
type recorder struct {
	measuring              atomic.Bool
	count, failed, unknown atomic.Int64
	late                   [nBuckets + 1]atomic.Int64
	maxLate                atomic.Int64 // nanoseconds

	mu       sync.Mutex
	failures map[string]int // by message, the first few kinds
}

func (r *recorder) add(u prober.Update) {
	if !r.measuring.Load() {
		return
	}
	r.count.Add(1)
	switch u.Outcome {
	case prober.Failure:
		r.failed.Add(1)
		r.mu.Lock()
		if r.failures == nil {
			r.failures = map[string]int{}
		}
		if _, ok := r.failures[u.Output]; ok || len(r.failures) < 5 {
			r.failures[u.Output]++
		}
		r.mu.Unlock()
	case prober.Unknown:
		r.unknown.Add(1)
	}
	late := max(u.Ran.Sub(u.Scheduled), 0)
	for {
		m := r.maxLate.Load()
		if int64(late) <= m || r.maxLate.CompareAndSwap(m, int64(late)) {
			break
		}
	}
	b := int(late / fine)
	if late >= fineUpTo {
		b = nFine + int((late-fineUpTo)/coarse)
	}
	r.late[min(b, nBuckets)].Add(1)
}

// quantile is the upper edge of the bucket holding quantile q; q = 1 is
// the exact maximum.
func (r *recorder) quantile(q float64) time.Duration {
	if q >= 1 {
		return time.Duration(r.maxLate.Load())
	}
	total := r.count.Load()
	want := int64(q * float64(total))
	var seen int64
	for i := range r.late {
		seen += r.late[i].Load()
		if seen >= want && seen > 0 {
			switch {
			case i < nFine:
				return time.Duration(i+1) * fine
			case i < nBuckets:
				return fineUpTo + time.Duration(i-nFine+1)*coarse
			}
			return time.Duration(r.maxLate.Load()) // past the range: the max bounds it
		}
	}
	return 0
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeWait counts sockets in TIME_WAIT (state 06) in /proc/net/tcp and tcp6
// that belong to the bench: client side when the remote port is a target
// port, server side when the local port is. Other processes' are left out.
func timeWait(serverPorts map[int]bool) (client, server int) {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			var sl, local, remote, state string
			if _, err := fmt.Sscan(sc.Text(), &sl, &local, &remote, &state); err != nil || state != "06" {
				continue
			}
			lport, _ := strconv.ParseInt(local[len(local)-4:], 16, 32)
			rport, _ := strconv.ParseInt(remote[len(remote)-4:], 16, 32)
			switch {
			case serverPorts[int(lport)]:
				server++
			case serverPorts[int(rport)]:
				client++
			}
		}
		fh.Close()
	}
	return client, server
}

// child is the target servers' process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// timeWait asks the child for the TIME_WAIT counts.
func (c *child) timeWait() (client, server int) {
	fmt.Fprintln(c.in, "tw")
	if c.out.Scan() {
		fmt.Sscan(c.out.Text(), &client, &server)
	}
	return client, server
}

// startChild runs this binary with -child and reads the ports it listens on.
func startChild(nports int) (*child, []int) {
	cmd := exec.Command(os.Args[0], "-child", "-ports", strconv.Itoa(nports))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		log.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start target servers: %v", err)
	}
	sc := bufio.NewScanner(out)
	var ports []int
	for len(ports) < nports && sc.Scan() {
		p, err := strconv.Atoi(sc.Text())
		if err != nil {
			log.Fatalf("target servers said %q", sc.Text())
		}
		ports = append(ports, p)
	}
	if len(ports) != nports {
		log.Fatalf("target servers gave %d ports, want %d", len(ports), nports)
	}
	return &child{cmd: cmd, in: stdin, out: sc}, ports
}

// serve is the child: HTTP targets on loopback, until stdin closes.
func serve(nports int) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mine := map[int]bool{}
	for range nports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatalf("listen: %v", err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		go srv.Serve(l)
		port := l.Addr().(*net.TCPAddr).Port
		mine[port] = true
		fmt.Println(port)
	}
	// Each line on stdin asks for a TIME_WAIT count; the scan runs here so
	// that its CPU (and the kernel's, formatting /proc/net/tcp) is not the
	// prober's. EOF ends the child.
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		c, s := timeWait(mine)
		fmt.Println(c, s)
	}
}

func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}
