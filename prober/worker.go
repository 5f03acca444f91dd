package prober

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// worker probes one target on its schedule and keeps its threshold counters.
// Its fields past the constructor are touched only by its own goroutine.
type worker struct {
	t      *Target // the worker's own copy, handed out in Updates
	h      handler
	gate   *gate
	log    *slog.Logger
	notify func(Update)

	cancel context.CancelFunc
	done   chan struct{}

	// Metric children resolved once, so a run costs no label lookups.
	counts  [3]prometheus.Counter // indexed by Result
	latency prometheus.Observer

	state  Result // thresholded state
	last   Result // last counted (non-Unknown) result
	run    int32  // consecutive runs that gave last
	passed bool   // a run has succeeded on this instance
}

// runLoop is the worker's goroutine.
//
// TODO: at 10,000 targets on one P, a GC mark phase (about 200 MB live:
// one goroutine and one pooled connection per target) delays about 1% of runs
// by 100-200 ms, missing the 5 ms p99 goal; GOGC=400 brought p99 to 7 ms in
// one run. Fewer goroutines (one timer wheel driving a worker pool) and a
// leaner HTTP client would shrink the heap; until then, tune GOGC.
//
// Runs follow a grid: anchor + k*period. A run that overruns slots skips
// them; runs never overlap. A readiness probe that has not yet passed on this
// instance also runs between slots (see readinessRetry).
func (w *worker) runLoop(ctx context.Context) {
	defer close(w.done)
	defer func() {
		if c, ok := w.h.(closer); ok {
			c.close()
		}
	}()
	defer w.recoverPanic("worker")

	period := w.t.Spec.Period
	anchor := w.firstSlot(time.Now())
	slot := anchor // the next grid slot not yet run
	var retry time.Duration
	var retryAt time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		at := slot
		if !retryAt.IsZero() && retryAt.Before(slot) {
			at = retryAt
		}
		if !sleepUntil(ctx, timer, at) {
			return
		}
		if w.t.Kind != Startup && w.gate.blocked() {
			// Startup gates liveness and readiness: nothing runs until it
			// succeeds, and then the grid restarts from that moment.
			if !w.gate.wait(ctx) {
				return
			}
			if now := time.Now(); now.After(at) {
				anchor, slot, at = now, now, now
			}
		}

		if hold := w.runOnce(ctx, at); hold {
			<-ctx.Done()
			return
		}
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		if !now.Before(slot) {
			slot = nextSlot(anchor, period, slot, now)
		}
		retryAt = time.Time{}
		if w.t.Kind == Readiness && !w.passed {
			retry = readinessRetry(retry, period)
			if r := now.Add(retry); r.Before(slot) {
				retryAt = r
			}
		}
	}
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

// sleepUntil waits for t or for ctx to end; it reports whether to go on.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		timer.Stop()
		return false
	}
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
			State: w.state, Changed: changed,
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
	pctx, cancel := context.WithTimeout(ctx, w.t.Spec.Timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("probe handler panicked", "panic", r, "stack", string(debug.Stack()))
			o, err = outcome{}, fmt.Errorf("probe handler panicked: %v", r)
		}
	}()
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
