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
// by (PodUID, Container, Kind).
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
// reuse connections by default (ConnReuse): each target owns a pool of one
// idle connection, dropped after 2*period+timeout idle and when the target
// is removed. Go's transport retries a GET once on a fresh connection when a
// reused one turns out closed, so a stale keep-alive connection (#15643)
// does not fail a probe. ConnLinger keeps the kubelet's way; TCP probes
// always connect and close with the linger (nothing to reuse).
//
// Measured with test/bench/probes (10,000 targets, period 1 s, loopback
// servers in a child process, prober at GOMAXPROCS=1, on a shared 2-core VM):
//
//	reuse:  10,000 probes/s, 0.044 CPU s per 1,000 probes, 0 failures,
//	        TIME_WAIT 0 throughout 60 s (~300 and flat before the
//	        connection buffers were made small; the warm-up's)
//	linger: 7,156 probes/s, 0.125 CPU s per 1,000 probes (one core
//	        saturated), 34% failed on timeouts, TIME_WAIT 81k after 10 s and
//	        123k after 30 s, against the kernel's 131,072 bucket limit
//
// Lateness at p50 is 0.1-0.2 ms in reuse mode; p99 is GC-bound (see the
// TODO in worker.go).
package prober
