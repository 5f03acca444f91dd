package prober

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// worker probes one target on its schedule and keeps its threshold counters.
//
// It owns no goroutine between runs: a timer (the runtime's timer heap is
// the scheduler) starts a goroutine for each run, and the run arms the timer
// for the next slot as it ends. So the goroutines alive are the runs in
// flight, not the targets, which keeps the GC's stack scanning and the
// scheduler's queues small at thousands of targets. Runs of one worker never
// overlap: the timer is armed only by the run that just ended.
type worker struct {
	t      *Target // the worker's own copy, handed out in Updates
	h      handler
	gate   *gate
	log    *slog.Logger
	notify func(Update)
	done   func() // called once when the worker has ended

	ctx    context.Context
	cancel context.CancelFunc

	// Metric children resolved once, so a run costs no label lookups.
	counts  [3]prometheus.Counter // indexed by Result
	latency prometheus.Observer

	// Schedule and counters: touched only by the run goroutine of the
	// moment, one after another (the timer orders them).
	anchor time.Time
	slot   time.Time     // the next grid slot not yet run
	next   time.Time     // the next run: slot, or an earlier readiness retry
	retry  time.Duration // the last readiness retry wait (see readinessRetry)
	state  Result        // thresholded state
	last   Result        // last counted (non-Unknown) result
	run    int32         // consecutive runs that gave last
	passed bool          // a run has succeeded on this instance

	// mu guards the hand-over between the runs and stop.
	mu      sync.Mutex
	timer   *time.Timer
	pending bool // the timer is armed and its run has not begun
	running bool // a run goroutine is between its start and its end
	stopped bool
}

// start arms the first run. Call it once, before stop.
func (w *worker) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.anchor = w.firstSlot(time.Now())
	w.slot, w.next = w.anchor, w.anchor
	w.pending = true
	w.timer = time.AfterFunc(time.Until(w.next), w.fire)
}

// stop cancels the worker: a run in flight is aborted and its result
// dropped, no further run starts. The worker ends (closes its connections
// and calls done) once no run is in flight.
func (w *worker) stop() {
	w.mu.Lock()
	w.stopped = true
	w.cancel()
	if w.pending && w.timer.Stop() {
		w.pending = false
	}
	idle := !w.pending && !w.running
	w.mu.Unlock()
	if idle {
		w.end()
	}
}

// end releases the handler's connections and reports the worker gone. It
// runs once: from stop when no run was in flight or due, else from the run
// that finds the worker stopped.
func (w *worker) end() {
	w.closeHandler()
	w.done()
}

func (w *worker) closeHandler() {
	if c, ok := w.h.(closer); ok {
		c.close()
	}
}

// fire is the timer's function: one run in its own goroutine, at w.next.
// Runs follow a grid: anchor + k*period; a run that overruns slots skips
// them. A readiness probe that has not yet passed on this instance also runs
// between slots (see readinessRetry).
func (w *worker) fire() {
	w.mu.Lock()
	w.pending = false
	if w.stopped {
		w.mu.Unlock()
		w.end()
		return
	}
	w.running = true
	w.mu.Unlock()

	again := w.runSlot()

	w.mu.Lock()
	defer w.mu.Unlock()
	w.running = false
	if w.stopped {
		defer w.end() // after the unlock
		return
	}
	if again {
		w.pending = true
		w.timer.Reset(time.Until(w.next))
	}
}

// runSlot runs at w.next and moves w.next to the following run. It
// reports whether to run again; false means hold (the result stands until
// a new container instance replaces the worker) or stopped.
func (w *worker) runSlot() (again bool) {
	defer w.recoverPanic("worker")
	ctx := w.ctx
	if w.t.Kind != Startup && w.gate.blocked() {
		// Startup gates liveness and readiness: nothing runs until it
		// succeeds, and then the grid restarts from that moment.
		if !w.gate.wait(ctx) {
			return false
		}
		if now := time.Now(); now.After(w.next) {
			w.anchor, w.slot, w.next = now, now, now
		}
	}
	if hold := w.runOnce(ctx, w.next); hold {
		// Nothing runs until the worker is replaced: its pooled
		// connection would only sit idle.
		w.closeHandler()
		return false
	}
	if ctx.Err() != nil {
		return false
	}
	period, now := w.t.Spec.Period, time.Now()
	if !now.Before(w.slot) {
		w.slot = nextSlot(w.anchor, period, w.slot, now)
	}
	w.next = w.slot
	if w.t.Kind == Readiness && !w.passed {
		w.retry = readinessRetry(w.retry, period)
		if r := now.Add(w.retry); r.Before(w.slot) {
			w.next = r
		}
	}
	return true
}

// Between a new instance's start and its first passing readiness run, a
// failed readiness run is retried before the next slot: after
// readinessRetryFirst, then twice as long each time, never later than the
// grid. Until a readiness probe has passed, its state is the initial Failure
// and failureThreshold does not apply (it counts only when leaving Success),
// so an early failed run changes nothing; an early success only lets the
// container take traffic sooner, which is what the kubelet achieves by
// triggering a readiness run at each pod status sync while a started
// container is not ready yet. The first success ends the retries, so a
// successThreshold above 1 is still met on the grid, one period per run.
// Liveness and startup runs never retry: their failures count towards a kill.
const readinessRetryFirst = 5 * time.Millisecond

// readinessRetry returns the wait before the next early readiness run,
// given the previous one (zero for the first).
func readinessRetry(prev, period time.Duration) time.Duration {
	if prev <= 0 {
		return min(readinessRetryFirst, period)
	}
	return min(2*prev, period)
}

// firstSlot is the first run's time: StartedAt + InitialDelay exactly, or now
// if that has passed. With Spread the run moves to a random point within one
// period from now (but never before the delay), so that containers found
// running when vigil starts are not all probed in the same instant.
func (w *worker) firstSlot(now time.Time) time.Time {
	start := w.t.StartedAt
	if start.IsZero() {
		start = now
	}
	first := start.Add(w.t.Spec.InitialDelay)
	if first.Before(now) {
		first = now
	}
	if w.t.Spread {
		if j := now.Add(rand.N(w.t.Spec.Period)); j.After(first) {
			first = j
		}
	}
	return first
}

// nextSlot is the first grid slot after the one just run that is not in the
// past: anchor + k*period, skipping the slots a slow run overran.
func nextSlot(anchor time.Time, period time.Duration, last, now time.Time) time.Time {
	next := last.Add(period)
	if now.After(next) {
		k := (now.Sub(anchor) + period - 1) / period
		next = anchor.Add(k * period)
	}
	return next
}

// runOnce runs the handler once and reports the result. It returns whether
// the worker must hold: liveness or startup at Failure (until a new container
// instance replaces the worker), or startup at Success (its job is done).
func (w *worker) runOnce(ctx context.Context, scheduled time.Time) (hold bool) {
	ran := time.Now()
	o, err := w.probe(ctx)
	dur := time.Since(ran)
	if ctx.Err() != nil {
		// Removed or replaced while running: the result is for nobody.
		return false
	}
	if err != nil {
		o = outcome{result: Unknown, output: err.Error()}
	}

	before := w.state
	changed := w.count(o.result)
	w.passed = w.passed || o.result == Success
	w.counts[o.result].Inc()
	w.latency.Observe(dur.Seconds())
	w.logRun(ctx, o, before, changed, dur, ran.Sub(scheduled))

	if w.t.Kind == Startup && w.state == Success {
		w.gate.open()
	}
	if ctx.Err() == nil && w.notify != nil {
		w.notify(Update{
			Target: w.t, Outcome: o.result, Output: o.output, Warning: o.warning,
			State: w.state, Changed: changed, Early: scheduled.Before(w.slot),
			Scheduled: scheduled, Ran: ran, Duration: dur,
		})
	}

	switch w.t.Kind {
	case Liveness:
		return w.state == Failure
	case Startup:
		return w.state != Unknown
	}
	return false
}

// probe calls the handler under the probe's timeout. A panic in a handler
// is an Unknown result, not the end of the worker.
func (w *worker) probe(ctx context.Context) (o outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("probe handler panicked", "panic", r, "stack", string(debug.Stack()))
			o, err = outcome{}, fmt.Errorf("probe handler panicked: %v", r)
		}
	}()
	if dh, ok := w.h.(deadlineHandler); ok {
		return dh.probeBy(ctx, time.Now().Add(w.t.Spec.Timeout))
	}
	pctx, cancel := context.WithTimeout(ctx, w.t.Spec.Timeout)
	defer cancel()
	return w.h.probe(pctx)
}

// count applies one result to the threshold counters and reports whether
// the state flipped. Unknown is not counted and does not break a run.
func (w *worker) count(r Result) bool {
	if r == Unknown {
		return false
	}
	if r == w.last {
		w.run++
	} else {
		w.last, w.run = r, 1
	}
	threshold := w.t.Spec.FailureThreshold
	if r == Success {
		threshold = w.t.Spec.SuccessThreshold
	}
	if w.run < threshold {
		return false
	}
	old := w.state
	w.state = r
	return old != r
}

func (w *worker) logRun(ctx context.Context, o outcome, before Result, changed bool,
	dur, late time.Duration) {
	if changed {
		w.log.Info("probe state changed", "from", before.String(), "to", w.state.String(),
			"output", o.output)
	}
	if o.warning != "" {
		w.log.Warn("probe succeeded with a warning", "warning", o.warning)
	}
	if w.log.Enabled(ctx, slog.LevelDebug) {
		w.log.Debug("probe ran", "result", o.result.String(), "state", w.state.String(),
			"output", o.output, "duration", dur, "lateness", late)
	}
}

func (w *worker) recoverPanic(what string) {
	if r := recover(); r != nil {
		w.log.Error("prober "+what+" panicked; probing of this target stopped",
			"panic", r, "stack", string(debug.Stack()))
	}
}
