package admin

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// The status page: GET / is a static page whose script opens GET /stream,
// a server-sent event stream of snapshots (view.go).

//go:embed static
var staticFiles embed.FS

const (
	// maxStreamClients caps the open /stream connections; a page left open
	// in many tabs must not hold the agent's memory hostage.
	maxStreamClients = 64
	// refreshPeriod is the longest a page goes without a fresh snapshot:
	// pod state such as readiness changes without an event.
	refreshPeriod = 2 * time.Second
	// minPushGap keeps a burst of events (a crash loop of many pods) from
	// turning into a push per event.
	minPushGap = 250 * time.Millisecond
	// keepAlive is how often an unchanged stream still writes (a comment),
	// so a client that left is noticed.
	keepAlive = 15 * time.Second
	// writeTimeout bounds each write to a stream client.
	writeTimeout = 10 * time.Second
)

// statusPage serves the page, its assets and the stream.
type statusPage struct {
	src   Sources
	log   *slog.Logger
	now   func() time.Time
	slots chan struct{} // one per open stream
	hub   *hub
}

func newStatusPage(src Sources, log *slog.Logger) *statusPage {
	return &statusPage{
		src:   src,
		log:   log,
		now:   time.Now,
		slots: make(chan struct{}, maxStreamClients),
		hub:   &hub{subscribe: src.Changes, clients: map[chan struct{}]bool{}},
	}
}

func (sp *statusPage) register(mux *http.ServeMux) {
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		http.ServeFileFS(w, r, static, "index.html")
	})
	assets := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		assets.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /stream", sp.stream)
	mux.HandleFunc("GET /snapshot", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, buildSnapshot(sp.src, sp.now()))
	})
}

func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	// The page loads nothing but its own assets and its own stream.
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
}

// stream pushes a snapshot at once, then whenever the sources change (at
// most every minPushGap) and at least every refreshPeriod while it differs
// from the last one sent. It ends when the client leaves or a write fails.
func (sp *statusPage) stream(w http.ResponseWriter, r *http.Request) {
	select {
	case sp.slots <- struct{}{}:
		defer func() { <-sp.slots }()
	default:
		http.Error(w, "too many status streams open", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	wake, leave := sp.hub.join()
	defer leave()
	tick := time.NewTicker(refreshPeriod)
	defer tick.Stop()

	ctx := r.Context()
	var last []byte
	var lastWrite time.Time
	for {
		// Compared without its time, which always differs.
		snap := buildSnapshot(sp.src, sp.now())
		now := snap.Now
		snap.Now = time.Time{}
		key, err := json.Marshal(snap)
		if err != nil {
			sp.log.Error("encode status snapshot", "err", err)
			return
		}
		var msg []byte
		switch {
		case !bytes.Equal(key, last):
			snap.Now = now
			data, _ := json.Marshal(snap) // encoded once already
			msg = append(append([]byte("data: "), data...), '\n', '\n')
		case time.Since(lastWrite) >= keepAlive:
			msg = []byte(": keep-alive\n\n")
		}
		if msg != nil {
			if err := writeFlush(rc, w, msg); err != nil {
				sp.log.Debug("status stream client gone", "remote", r.RemoteAddr, "err", err)
				return
			}
			last, lastWrite = key, time.Now()
		}
		if !waitNext(ctx, wake, tick.C) {
			return
		}
	}
}

// waitNext waits for a change or a tick, then for the rest of minPushGap
// so bursts coalesce. It reports false when ctx ends.
func waitNext(ctx context.Context, wake <-chan struct{}, tick <-chan time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-tick:
	}
	gap := time.NewTimer(minPushGap)
	defer gap.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-gap.C:
		return true
	}
}

func writeFlush(rc *http.ResponseController, w http.ResponseWriter, msg []byte) error {
	if err := rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil &&
		err != http.ErrNotSupported {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return rc.Flush()
}

// hub fans one Sources.Changes subscription out to every stream. The
// subscription is taken once: the recorder has no way to unsubscribe, so a
// subscription per client would leak one channel per page load. Its pump
// runs only while a stream is open.
type hub struct {
	subscribe func() <-chan struct{}

	mu      sync.Mutex
	changes <-chan struct{}
	clients map[chan struct{}]bool
	stop    chan struct{} // closed when the last client leaves
}

// join returns a channel that receives (coalesced) on every change, and the
// function to call on leaving.
func (h *hub) join() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subscribe == nil {
		return ch, func() {}
	}
	if h.changes == nil {
		h.changes = h.subscribe()
	}
	h.clients[ch] = true
	if len(h.clients) == 1 {
		h.stop = make(chan struct{})
		go h.pump(h.changes, h.stop)
	}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.clients, ch)
		if len(h.clients) == 0 {
			close(h.stop)
		}
	}
}

func (h *hub) pump(changes <-chan struct{}, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-changes:
		}
		h.mu.Lock()
		for ch := range h.clients {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		h.mu.Unlock()
	}
}
