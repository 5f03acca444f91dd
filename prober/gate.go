package prober

import (
	"context"
	"sync"
)

// gate holds liveness and readiness of one container instance until its
// startup probe has succeeded. Without a startup probe it never blocks.
type gate struct {
	mu         sync.Mutex
	hasStartup bool
	opened     chan struct{} // closed when startup succeeded
	refs       int           // workers of the instance using the gate
}

func newGate() *gate { return &gate{opened: make(chan struct{})} }

func (g *gate) blocked() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.hasStartup {
		return false
	}
	select {
	case <-g.opened:
		return false
	default:
		return true
	}
}

// wait blocks until the gate opens or ctx ends; it reports whether it opened.
func (g *gate) wait(ctx context.Context) bool {
	select {
	case <-g.opened:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
	default:
		close(g.opened)
	}
}
