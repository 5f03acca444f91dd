// Package prober decides when to probe a container and how: one worker per
// (container, probe kind) runs a handler (HTTP, TCP, gRPC, exec) on a fixed
// schedule and counts consecutive results against the probe's thresholds.
// It knows nothing of restarts; it reports results and lets the caller act.
//
// # How and when
//
// A handler (http.go, tcp.go, grpc.go, exec.go) runs one probe and returns an
// outcome, or an error when the probe could not run at all; the worker
// (worker.go) owns the schedule and the counters. The Manager keys workers
// by (PodUID, Container, Kind). A worker is a timer between runs, not a
// goroutine: the timer starts a goroutine for the run, which arms the timer
// for the next slot as it ends, so goroutines scale with runs in flight.
//
// # Schedule
//
// The first run is at StartedAt + InitialDelay exactly, or at once if that
// has passed (the kubelet anchors its ticker at worker start and can be a
// period late). Later runs sit on the grid first + k*Period, so hundreds of
// periods do not drift. At most one run per target is in flight: a run that
// outlasts its slots skips them rather than queueing them. Only targets with
// Spread set (found running when vigil starts) get a random first run within
// one period. Periods down to MinPeriod (10 ms) are honoured.
//
// One exception to the grid: until a readiness probe has passed once on a
// container instance, a failed run is retried early (5 ms, then doubling,
// never past the next slot), so that a restarted container is found ready
// within milliseconds of listening rather than up to a period later. Those
// failures change no state (readiness starts at Failure and failureThreshold
// counts only from Success); liveness and startup never retry, since their
// failures count towards a kill.
//
// # States
//
// See InitialState. Thresholds count consecutive Success or Failure runs;
// Unknown (the probe could not run: refused host, unknown port name, no exec
// function, a handler panic) is neither counted nor a break in the run. A
// startup probe gates liveness and readiness of the same container instance;
// once it succeeds it stops running, and the gated workers start their grid
// at that moment. Liveness and startup hold after reaching Failure until a
// new container instance is added.
//
// # Hosts
//
// A probe's host field can name any address; the kubelet honours it, which
// lets a pod spec make the node send requests elsewhere. Here only the
// target's own Host and loopback are probed unless Options.AllowedHosts
// lists the host; a refused probe is Unknown and says how to allow it, and
// no connection is made. Redirects to another host are never followed.
//
// # TIME_WAIT
//
// The kubelet opens a connection per HTTP probe and closes it with SO_LINGER
// 1 s. That does not keep sockets out of TIME_WAIT on Linux: with
// "Connection: close" the server closes first and its side waits 60 s, and
// when the client closes first its side does. HTTP probes here therefore
// reuse connections by default (ConnReuse): each target keeps one idle
// connection, replaced when it sat idle over 2*period+timeout, and closed
// when the target holds or is removed. Plain HTTP goes through httpconn.go:
// the request written as prepared bytes and the response read in the run's
// goroutine, with none of net/http's two goroutines per kept connection. A
// GET on a reused connection that the server had closed is retried once on
// a new one, as Go's transport does, so a stale keep-alive connection
// (#15643) does not fail a probe. HTTPS keeps a per-target net/http pool.
// ConnLinger keeps the kubelet's way; TCP probes always connect and close
// with the linger (nothing to reuse).
//
// Measured with test/bench/probes (10,000 targets, period 1 s, prober's
// process pinned to CPU 0 at GOMAXPROCS=1, loopback servers in a child
// process on CPU 1, on a 2-core VM shared with other work):
//
//	reuse:  10,000 probes/s, 0.037-0.046 CPU s per 1,000 probes, 0 failures
//	        in 20 s runs, TIME_WAIT flat (0, or a few hundred from the warm-up)
//	        over 60 s; 1.3-2.1 MB allocated per 1,000 probes, heap 105-180 MB,
//	        stacks under 30 MB, goroutines = runs in flight. (Before the
//	        timer-driven workers and the kept-connection client: 0.044-0.089
//	        CPU s, 5 MB, 300+ MB heap, 160 MB stacks, 30,000 goroutines, and
//	        under load a collapse into timeouts and TIME_WAIT.)
//	linger: 7,156 probes/s, 0.125 CPU s per 1,000 probes (one core
//	        saturated), 34% failed on timeouts, TIME_WAIT 81k after 10 s and
//	        123k after 30 s, against the kernel's 131,072 bucket limit
//	        (measured before the changes above)
//
// Lateness: p50 0.4 ms (an idle Go runtime sleeps in epoll_wait, whose
// timeout is in whole milliseconds, so a timer can fire up to 1 ms late).
// The tail follows the prober's core rather than the prober: the best run
// gave p99 20 ms with the prober's threads waiting 6 s of 20 s in the
// kernel's run queue behind other processes on CPU 0 (the bench reports
// that wait); with 48 s of 58 s waiting, p99 was 0.9 s. GC is 2-4% of the
// CPU with stop-the-world pauses under 0.25 ms. The 5 ms p99 goal could not
// be shown on that shared machine.
package prober
