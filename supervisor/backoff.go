package supervisor

import (
	"sync"
	"time"
)

// Crash-loop backoff defaults, as the kubelet applies them.
const (
	DefaultBackoffInitial = 10 * time.Second
	DefaultBackoffMax     = 300 * time.Second
	DefaultBackoffReset   = 10 * time.Minute
)

// backoff tracks crash-loop delays per container, keyed by pod UID and
// container name.
//
// The first restart after a quiet period is immediate. Each later exit waits
// the current delay, measured from the exit, and doubles it up to max:
// restart, then 10 s, 20 s, 40 s ... 300 s. An entry whose last restart is
// older than reset is forgotten, so a container that ran fine for that long
// starts over from an immediate restart.
type backoff struct {
	initial, max, reset time.Duration

	mu      sync.Mutex
	entries map[string]backoffEntry
}

type backoffEntry struct {
	// delay is what the next exit has to wait.
	delay time.Duration
	// last is the exit time of the latest restart that stepped the entry.
	last time.Time
}

func newBackoff(initial, max, reset time.Duration) *backoff {
	if initial <= 0 {
		initial = DefaultBackoffInitial
	}
	if max <= 0 {
		max = DefaultBackoffMax
	}
	if max < initial {
		max = initial
	}
	if reset <= 0 {
		reset = DefaultBackoffReset
	}
	return &backoff{initial: initial, max: max, reset: reset, entries: map[string]backoffEntry{}}
}

// wait returns how long a restart of the container that exited at exitedAt
// still has to wait at now. Zero means restart now.
func (b *backoff) wait(key string, exitedAt, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || exitedAt.Sub(e.last) > b.reset {
		return 0
	}
	if left := e.delay - now.Sub(exitedAt); left > 0 {
		return left
	}
	return 0
}

// step records a restart of the container that exited at exitedAt and
// returns the delay the next exit will wait.
func (b *backoff) step(key string, exitedAt time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	switch {
	case !ok || exitedAt.Sub(e.last) > b.reset:
		e.delay = b.initial
	default:
		e.delay = min(2*e.delay, b.max)
	}
	e.last = exitedAt
	b.entries[key] = e
	return e.delay
}

// restore puts back an entry read from a container's annotations after a
// restart of vigil.
func (b *backoff) restore(key string, delay time.Duration, last time.Time) {
	if delay <= 0 || last.IsZero() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries[key] = backoffEntry{delay: min(delay, b.max), last: last}
}

// state returns the entry for key, for persisting it on the next container.
func (b *backoff) state(key string) (time.Duration, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	return e.delay, e.last
}

// forget drops the entries of a removed pod.
func (b *backoff) forget(prefix string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.entries {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			delete(b.entries, k)
		}
	}
}
