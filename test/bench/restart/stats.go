package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// The restart is cut into consecutive segments that add up to the total.
var segNames = [...]string{
	"signal",   // threshold result -> drain begins: the update reaches the pod worker, Killing event
	"drain",    // proxy drain of the pod's addresses
	"stop",     // probes removed, StopContainer
	"exit",     // ContainerStatus confirming the stop, exit recorded
	"backoff",  // restart policy, crash-loop backoff wait, worker wake-up
	"cr+start", // ImagePresent, CreateContainer, StartContainer
	"to-probe", // start returned -> first readiness run of the new instance begins
	"probe",    // first readiness run -> first passing readiness result
}

var segHelp = [...]string{
	"liveness threshold result -> drain begins (update to the pod worker, Killing event, endpoints republished)",
	"proxy drain of the pod's addresses",
	"probes removed + StopContainer",
	"ContainerStatus calls confirming the stop and recording the exit",
	"restart decision + crash-loop backoff wait + worker wake-up",
	"ImagePresent + CreateContainer + StartContainer",
	"StartContainer returned -> first readiness run begins (probes added, worker scheduled)",
	"first readiness run begins -> first passing result (includes failed runs while the app starts listening)",
}

// sample is one measured restart.
type sample struct {
	total time.Duration
	seg   [len(segNames)]time.Duration
	// The CRI calls themselves.
	stopCall, createCall, startCall time.Duration
	// remove is the RemoveContainer call of an older instance, when the
	// round made one; negative otherwise.
	remove time.Duration
	// probes is how many readiness runs the new instance needed to pass.
	probes int
	// endpoint is from the passing result to the proxy getting the address
	// back; negative when it did not within the bench's wait.
	endpoint time.Duration
	// starts counts StartContainer calls in the round: more than one means
	// the new instance was itself killed before it got ready.
	starts int
}

// analyze cuts one round's timeline at the marks of the restart from
// instance oldID to newID.
func analyze(marks []mark, oldID, newID string) (sample, error) {
	var s sample
	find := func(from int, what, id string) int {
		for i := from; i < len(marks); i++ {
			if marks[i].what == what && (id == "" || marks[i].id == id) {
				return i
			}
		}
		return -1
	}
	last := func(before int, what, id string) int {
		for i := before - 1; i >= 0; i-- {
			if marks[i].what == what && (id == "" || marks[i].id == id) {
				return i
			}
		}
		return -1
	}
	t0 := find(0, markThreshold, oldID)
	drainB := find(t0+1, markDrain+begin, "")
	drainE := find(drainB+1, markDrain+end, "")
	createE := find(t0+1, markCreate+end, newID)
	createB := last(createE, markCreate+begin, "")
	stopE := last(createB, markStop+end, oldID)
	stopB := last(stopE, markStop+begin, oldID)
	imageB := last(createB, markImage+begin, "")
	statusE := last(imageB, markStatus+end, oldID)
	startB := find(createE+1, markStart+begin, newID)
	startE := find(startB+1, markStart+end, newID)
	firstRun := find(startE+1, markProbe, newID)
	ready := find(startE+1, markReady, newID)
	cuts := []int{t0, drainB, drainE, stopE, statusE, imageB, startE, firstRun, ready}
	names := []string{"threshold", "drain begin", "drain end", "stop end", "status end",
		"image begin", "start end", "first readiness run", "ready"}
	for i, c := range cuts {
		if c < 0 || (i > 0 && c < cuts[i-1]) {
			return s, fmt.Errorf("timeline incomplete: no %q mark in order (%d marks)", names[i], len(marks))
		}
	}
	if t0 < 0 || stopB < 0 || createB < 0 || startB < 0 {
		return s, fmt.Errorf("timeline incomplete (%d marks)", len(marks))
	}
	at := func(i int) time.Time { return marks[i].at }
	for i := range s.seg {
		s.seg[i] = at(cuts[i+1]).Sub(at(cuts[i]))
	}
	s.total = at(ready).Sub(at(t0))
	s.stopCall = at(stopE).Sub(at(stopB))
	s.createCall = at(createE).Sub(at(createB))
	s.startCall = at(startE).Sub(at(startB))
	s.endpoint, s.remove = -1, -1
	if rb := find(t0+1, markRemove+begin, ""); rb >= 0 && rb < ready {
		if re := find(rb+1, markRemove+end, marks[rb].id); re >= 0 {
			s.remove = at(re).Sub(at(rb))
		}
	}
	for i := startE + 1; i < len(marks); i++ {
		switch {
		case marks[i].what == markProbe && marks[i].id == newID && i < ready:
			s.probes++
		case marks[i].what == markEndpoint && i > ready && s.endpoint < 0:
			s.endpoint = at(i).Sub(at(ready))
		}
	}
	for _, m := range marks {
		if m.what == markStart+end {
			s.starts++
		}
	}
	return s, nil
}

func ms(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}

func (s sample) print(i int) {
	fmt.Printf("%3d %8s", i+1, ms(s.total))
	for _, d := range s.seg {
		fmt.Printf(" %8s", ms(d))
	}
	fmt.Printf(" | %6d %8s", s.probes, ms(s.endpoint))
	if s.starts > 1 {
		fmt.Printf("  (%d starts: the new instance was killed again)", s.starts)
	}
	fmt.Println()
}

// quantile is the nearest-rank quantile of ds (q = 1 is the maximum).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	k := max(int(math.Ceil(q*float64(len(s))))-1, 0)
	return s[min(k, len(s)-1)]
}

func report(samples []sample) {
	col := func(f func(sample) time.Duration) []time.Duration {
		out := make([]time.Duration, 0, len(samples))
		for _, s := range samples {
			if d := f(s); d >= 0 {
				out = append(out, d)
			}
		}
		return out
	}
	row := func(name string, ds []time.Duration, help string) {
		if len(ds) == 0 {
			fmt.Printf("  %-14s %8s %8s %8s  %s\n", name, "-", "-", "-", help)
			return
		}
		fmt.Printf("  %-14s %8s %8s %8s  %s\n", name, ms(quantile(ds, 0.5)), ms(quantile(ds, 0.99)),
			ms(quantile(ds, 1)), help)
	}
	fmt.Printf("\nrestart latency over %d restarts (ms; p99 is nearest-rank, so with few samples it is the maximum):\n",
		len(samples))
	fmt.Printf("  %-14s %8s %8s %8s\n", "", "p50", "p99", "max")
	row("total", col(func(s sample) time.Duration { return s.total }),
		"liveness threshold -> new instance passes readiness")
	for i, name := range segNames {
		row(name, col(func(s sample) time.Duration { return s.seg[i] }), segHelp[i])
	}
	fmt.Println("  CRI calls alone:")
	row("StopContainer", col(func(s sample) time.Duration { return s.stopCall }), "")
	row("Create", col(func(s sample) time.Duration { return s.createCall }), "")
	row("Start", col(func(s sample) time.Duration { return s.startCall }), "")
	row("Remove", col(func(s sample) time.Duration { return s.remove }),
		"of the instance before the failed one, when made before the pass")
	row("endpoint", col(func(s sample) time.Duration { return s.endpoint }),
		"after the total: passing result -> the proxy routes to the pod again")
	probes := make([]int, 0, len(samples))
	extra := 0
	for _, s := range samples {
		probes = append(probes, s.probes)
		if s.starts > 1 {
			extra++
		}
	}
	slices.Sort(probes)
	fmt.Printf("  readiness runs until the first pass: median %d, max %d; rounds with an extra restart: %d\n",
		probes[len(probes)/2], probes[len(probes)-1], extra)
	fmt.Printf("RESULT restart p50_ms=%s p99_ms=%s max_ms=%s n=%d\n",
		ms(quantile(col(func(s sample) time.Duration { return s.total }), 0.5)),
		ms(quantile(col(func(s sample) time.Duration { return s.total }), 0.99)),
		ms(quantile(col(func(s sample) time.Duration { return s.total }), 1)), len(samples))
}
