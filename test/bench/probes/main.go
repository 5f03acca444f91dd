// Command probes measures the prober at scale: it starts N HTTP targets on
// loopback in a child process (so that the servers' CPU is not counted), probes
// them through the real prober.Manager with GOMAXPROCS=1, and prints probes/s,
// CPU per 1,000 probes, lateness against the schedule and sockets in TIME_WAIT.
//
//	go run ./test/bench/probes -targets 10000 -period 1s -duration 60s -mode reuse
//
// "One core" means one CPU, not one P: by default the prober's process is
// pinned to CPU 0 (all its threads: the scheduler's, the GC's, the
// netpoller's) and the servers' to the other CPUs, so that they do not take
// the prober's core. -prober-cpu -1 turns pinning off.
//
// The targets' containers are taken as started an hour ago and found running
// (Spread), so their first runs, and with them their grids, are spread over
// one period as after a vigil restart. Lateness is Ran - Scheduled of every
// measured run against that grid. It is reported for the whole measurement and
// per 10 s window, next to the Go scheduler's own latency (runnable to
// running) and the GC's stop-the-world pauses, which tell where it comes from.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
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
	proberCPU := flag.Int("prober-cpu", 0, "CPU the prober's process is pinned to; the servers get the others (-1: no pinning)")
	cpuProfile := flag.String("cpuprofile", "", "write the prober's CPU profile of the measured part to this file")
	traceFile := flag.String("trace", "", "write a runtime trace of the measured part to this file (keep the run short)")
	memProfile := flag.String("memprofile", "", "write the prober's heap profile at the end of the measured part to this file")
	serversOn := flag.String("servers-on", "", "internal: the CPUs of the servers, set when pinned")
	child := flag.Bool("child", false, "internal: serve the targets")
	flag.Parse()

	raiseNoFile()
	if *child {
		serve(*ports)
		return
	}
	serverCPUs := pin(*proberCPU, *serversOn)
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
	run(*targets, *ports, *period, *duration, policy, *mode, serverCPUs, *cpuProfile, *memProfile, *traceFile)
}

// pin makes the whole process run on CPU cpu and returns the set the target
// servers are to run on (the other CPUs), or nil when not pinning. Threads
// inherit the affinity of the thread that creates them, and the Go runtime has
// started several before main runs, so the process re-executes itself from a
// thread already pinned: every thread of the new image descends from it. The
// servers' set goes to the new image in -servers-on, since that image sees
// one CPU only.
func pin(cpu int, serversOn string) *unix.CPUSet {
	if cpu < 0 {
		return nil
	}
	if serversOn != "" {
		var set unix.CPUSet
		for _, f := range strings.Split(serversOn, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				log.Fatalf("-servers-on %q: %v", serversOn, err)
			}
			set.Set(n)
		}
		return &set
	}
	var cur unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cur); err != nil {
		log.Fatalf("sched_getaffinity: %v", err)
	}
	if !cur.IsSet(cpu) {
		log.Fatalf("CPU %d is not available to this process", cpu)
	}
	cur.Clear(cpu)
	if cur.Count() == 0 {
		log.Printf("only one CPU: the servers share the prober's")
		return nil
	}
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		log.Fatalf("sched_setaffinity: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	args := append(os.Args[:1:1], "-servers-on="+strings.TrimPrefix(cpuList(&cur), "CPU "))
	args = append(args, os.Args[1:]...)
	log.Fatal(syscall.Exec(self, args, os.Environ()))
	return nil
}

// run is the parent: the prober under test.
func run(n, nports int, period, duration time.Duration, policy prober.ConnPolicy, mode string,
	serverCPUs *unix.CPUSet, cpuProfile, memProfile, traceFile string) {
	ch, portList := startChild(nports, serverCPUs)
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
	rt0 := readRuntime()
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
	}
	if traceFile != "" {
		f, err := os.Create(traceFile)
		if err != nil {
			log.Fatal(err)
		}
		if err := trace.Start(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
	}
	rec.measuring.Store(true)
	u0, t0 := cpu(), time.Now()
	done := time.After(duration - warm)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	fmt.Printf("mode=%s targets=%d period=%v duration=%v (warm-up %v) GOMAXPROCS=%d pinning: %s\n",
		mode, n, period, duration, warm, runtime.GOMAXPROCS(0), pinning(serverCPUs))
	fmt.Printf("  TIME_WAIT before start: client=%d server=%d\n", cw0, sw0)
	window := rec.snapshot()
loop:
	for {
		select {
		case <-tick.C:
			c, s := ch.timeWait()
			now := rec.snapshot()
			fmt.Printf("  t=%3.0fs TIME_WAIT client=%d server=%d; last 10 s: lateness p99 %v, %d runs\n",
				time.Since(t0).Seconds(), c, s, now.minus(window).quantile(0.99), now.minus(window).total())
			window = now
		case <-done:
			break loop
		}
	}
	rec.measuring.Store(false)
	pprof.StopCPUProfile()
	trace.Stop()
	u1, elapsed := cpu(), time.Since(t0)
	cw, sw := ch.timeWait()
	goroutines := runtime.NumGoroutine()
	rt1 := readRuntime()
	runtime.ReadMemStats(&ms1)
	if memProfile != "" {
		writeHeapProfile(memProfile)
	}
	m.Stop()

	probes := rec.count.Load()
	fmt.Printf("probes: %d in %.1fs = %.0f/s (failed %d, unknown %d)\n", probes, elapsed.Seconds(),
		float64(probes)/elapsed.Seconds(), rec.failed.Load(), rec.unknown.Load())
	fmt.Printf("prober CPU (user+sys, servers in a child process, not counted): %.2fs = %.3f s per 1,000 probes (%.0f%% of one core)\n",
		(u1 - u0).Seconds(), (u1-u0).Seconds()/float64(probes)*1000, 100*(u1-u0).Seconds()/elapsed.Seconds())
	fmt.Printf("lateness: p50 %v p90 %v p99 %v p99.9 %v max %v\n", rec.quantile(0.50),
		rec.quantile(0.90), rec.quantile(0.99), rec.quantile(0.999), rec.quantile(1))
	rt1.report(rt0)
	fmt.Printf("memory at end: heap in use %.0f MB, stacks %.0f MB, %d goroutines; "+
		"%d GCs while measuring, %.1f MB allocated per 1,000 probes\n",
		mb(ms1.HeapInuse), mb(ms1.StackInuse), goroutines, ms1.NumGC-ms0.NumGC,
		mb(ms1.TotalAlloc-ms0.TotalAlloc)/float64(probes)*1000)
	for msg, n := range rec.failures {
		fmt.Printf("  failed %d times: %s\n", n, msg)
	}
	fmt.Printf("TIME_WAIT at end: client side %d, server side %d\n", cw, sw)
}

// writeHeapProfile writes the live heap as of the last GC to path.
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
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
	h := r.snapshot()
	if d := h.quantile(q); d >= 0 {
		return d
	}
	return time.Duration(r.maxLate.Load()) // past the range: the max bounds it
}

// lateHist is a copy of the lateness buckets.
type lateHist []int64

func (r *recorder) snapshot() lateHist {
	h := make(lateHist, len(r.late))
	for i := range r.late {
		h[i] = r.late[i].Load()
	}
	return h
}

func (h lateHist) minus(o lateHist) lateHist {
	d := make(lateHist, len(h))
	for i := range h {
		d[i] = h[i] - o[i]
	}
	return d
}

func (h lateHist) total() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// quantile is the upper edge of the bucket holding quantile q, 0 for no
// runs, -1 when it lies past the histogram's range.
func (h lateHist) quantile(q float64) time.Duration {
	want := int64(q * float64(h.total()))
	var seen int64
	for i, c := range h {
		seen += c
		if seen >= want && seen > 0 {
			switch {
			case i < nFine:
				return time.Duration(i+1) * fine
			case i < nBuckets:
				return fineUpTo + time.Duration(i-nFine+1)*coarse
			}
			return -1
		}
	}
	return 0
}

// runtimeStats are the Go runtime's own measures of what delays a run:
// time goroutines wait runnable for the P, GC stop-the-world pauses, and
// the GC's share of CPU.
type runtimeStats struct {
	sched, gcPauses *metrics.Float64Histogram
	gcCPU, allCPU   float64
	gcCycles        uint64
	// runDelay is the time the process's threads waited for a CPU in the
	// kernel's run queue: other processes on the prober's core.
	runDelay time.Duration
}

var runtimeNames = []string{
	"/sched/latencies:seconds",
	"/sched/pauses/total/gc:seconds",
	"/cpu/classes/gc/total:cpu-seconds",
	"/cpu/classes/total:cpu-seconds",
	"/gc/cycles/total:gc-cycles",
}

func readRuntime() runtimeStats {
	s := make([]metrics.Sample, len(runtimeNames))
	for i, n := range runtimeNames {
		s[i].Name = n
	}
	metrics.Read(s)
	return runtimeStats{
		sched: s[0].Value.Float64Histogram(), gcPauses: s[1].Value.Float64Histogram(),
		gcCPU: s[2].Value.Float64(), allCPU: s[3].Value.Float64(), gcCycles: s[4].Value.Uint64(),
		runDelay: runDelay(),
	}
}

// runDelay sums the run-queue wait of the process's threads
// (/proc/self/task/*/schedstat, second field, nanoseconds).
func runDelay() time.Duration {
	tasks, _ := os.ReadDir("/proc/self/task")
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait); err == nil {
			sum += wait
		}
	}
	return time.Duration(sum)
}

// report prints the runtime's figures between r0 and r.
func (r runtimeStats) report(r0 runtimeStats) {
	p99, maxS := histDelta(r.sched, r0.sched)
	_, maxP := histDelta(r.gcPauses, r0.gcPauses)
	gcShare := 0.0
	if d := r.allCPU - r0.allCPU; d > 0 {
		gcShare = 100 * (r.gcCPU - r0.gcCPU) / d
	}
	fmt.Printf("go scheduler latency (runnable to running): p99 <= %v, max <= %v; "+
		"%d GC cycles, longest stop-the-world <= %v, GC %.0f%% of the process's CPU; "+
		"threads waited %v for the CPU (kernel run queue)\n",
		p99, maxS, r.gcCycles-r0.gcCycles, maxP, gcShare, (r.runDelay - r0.runDelay).Round(time.Millisecond))
}

// histDelta returns the p99 and the maximum (upper bucket edges) of the
// observations between h0 and h.
func histDelta(h, h0 *metrics.Float64Histogram) (p99, maxV time.Duration) {
	var total uint64
	for i := range h.Counts {
		total += h.Counts[i] - h0.Counts[i]
	}
	edge := func(i int) time.Duration {
		e := h.Buckets[i+1]
		if math.IsInf(e, 1) {
			e = h.Buckets[i]
		}
		return time.Duration(e * float64(time.Second))
	}
	var seen uint64
	for i := range h.Counts {
		c := h.Counts[i] - h0.Counts[i]
		if c == 0 {
			continue
		}
		seen += c
		if p99 == 0 && float64(seen) >= 0.99*float64(total) {
			p99 = edge(i)
		}
		maxV = edge(i)
	}
	return p99, maxV
}

func pinning(servers *unix.CPUSet) string {
	if servers == nil {
		return "none"
	}
	var mine unix.CPUSet
	_ = unix.SchedGetaffinity(0, &mine)
	return fmt.Sprintf("prober on %s, servers on %s", cpuList(&mine), cpuList(servers))
}

func cpuList(s *unix.CPUSet) string {
	var out []string
	for i := range len(s) * 64 {
		if s.IsSet(i) {
			out = append(out, strconv.Itoa(i))
		}
	}
	return "CPU " + strings.Join(out, ",")
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

// startChild runs this binary with -child, on cpus when not nil, and reads the
// ports it listens on.
func startChild(nports int, cpus *unix.CPUSet) (*child, []int) {
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
	if err := startOn(cmd, cpus); err != nil {
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

// startOn starts cmd with its affinity set to cpus: the child inherits the
// mask of the thread that forks it, so that thread takes the mask for the
// moment of the fork and gets its own back after.
func startOn(cmd *exec.Cmd, cpus *unix.CPUSet) error {
	if cpus == nil {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		return err
	}
	if err := unix.SchedSetaffinity(0, cpus); err != nil {
		return err
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &mine); rerr != nil {
		// A prober thread left on the servers' CPUs would falsify the run.
		log.Fatalf("restore affinity: %v", rerr)
	}
	return err
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
