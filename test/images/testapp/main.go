// Command testapp is the HTTP server that vigil's examples and tests run as a
// container. Its behaviour is a contract: manifests and end-to-end tests are
// written against the names below, so change them only together.
//
// Environment:
//
//	PORT            HTTP port (default 8080).
//	GRPC_PORT       when set, also serve grpc.health.v1 on this port.
//	POD_NAME, POD_NAMESPACE, CONTAINER_NAME
//	                echoed by GET /.
//	FAIL_AFTER      seconds after start when /health begins to answer 500.
//	STARTUP_DELAY   seconds after start during which /health answers 503.
//	EXIT_AFTER      when set, seconds after start when the process exits by
//	                itself with EXIT_CODE; 0 exits before serving anything.
//	EXIT_CODE       exit code for EXIT_AFTER (default 0).
//
// HTTP endpoints (all on PORT):
//
//	GET  /, and any other path   200 JSON {pod, namespace, container, hostname,
//	                             port, instance, path}; instance is a random
//	                             id chosen when the process starts, path the
//	                             request URI as received.
//	GET  /health                 200 "ok"; 503 during STARTUP_DELAY; 500 once
//	                             failing (FAIL_AFTER or /control/fail).
//	POST /control/fail           /health answers 500 and gRPC health reports
//	                             NOT_SERVING from now on.
//	POST /control/recover        undoes /control/fail.
//	POST /control/exit?code=N    answers 200, then exits with code N.
//	GET  /control/state          JSON of the state above.
//
// "testapp check" GETs http://127.0.0.1:$PORT/health and exits 0 on 200 and
// 1 otherwise; it serves exec probes, which inherit the container's env.
//
// On SIGTERM or SIGINT the server stops accepting, lets in-flight requests
// finish for up to 5 seconds and exits 0.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// shutdownGrace bounds how long in-flight requests may run after SIGTERM.
const shutdownGrace = 5 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(check())
	}
	if err := run(); err != nil {
		log.Printf("testapp: %v", err)
		os.Exit(1)
	}
}

// check is the exec-probe helper: 0 when /health answers 200, 1 otherwise.
func check() int {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + envOr("PORT", "8080") + "/health")
	if err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		return 1
	}
	defer resp.Body.Close()
	fmt.Println("status", resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// app holds the state that /control changes.
type app struct {
	start        time.Time
	instance     string
	port         string
	startupDelay time.Duration
	failAfter    time.Duration // zero: never fail by itself
	grpcHealth   *health.Server
	exitCode     chan int

	mu     sync.Mutex
	failed bool // set by /control/fail
}

func run() error {
	a := &app{
		start:    time.Now(),
		instance: randomID(),
		port:     envOr("PORT", "8080"),
		exitCode: make(chan int, 1),
	}
	var err error
	if a.startupDelay, err = envSeconds("STARTUP_DELAY"); err != nil {
		return err
	}
	if a.failAfter, err = envSeconds("FAIL_AFTER"); err != nil {
		return err
	}
	exitAfter, exitCode, err := exitPlan()
	if err != nil {
		return err
	}
	if exitAfter == 0 {
		log.Printf("testapp: exiting with code %d at start (EXIT_AFTER=0)", exitCode)
		os.Exit(exitCode)
	}
	if exitAfter > 0 {
		time.AfterFunc(exitAfter, func() {
			select {
			case a.exitCode <- exitCode:
			default: // an exit is already on its way
			}
		})
	}

	ln, err := net.Listen("tcp", ":"+a.port)
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("testapp: serve http: %v", err)
		}
	}()

	var gs *grpc.Server
	if gp := os.Getenv("GRPC_PORT"); gp != "" {
		gln, err := net.Listen("tcp", ":"+gp)
		if err != nil {
			return fmt.Errorf("listen grpc: %w", err)
		}
		gs = a.serveGRPC(gln)
	}
	log.Printf("testapp: instance %s listening on :%s", a.instance, a.port)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case s := <-sigs:
		log.Printf("testapp: %v, shutting down", s)
	case code = <-a.exitCode:
		log.Printf("testapp: exiting with code %d as asked", code)
		// Let the 200 to /control/exit reach the client first.
		time.Sleep(100 * time.Millisecond)
		os.Exit(code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if gs != nil {
		gs.Stop()
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("testapp: shutdown: %v", err)
	}
	return nil
}

func (a *app) serveGRPC(ln net.Listener) *grpc.Server {
	a.grpcHealth = health.NewServer()
	a.grpcHealth.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, a.grpcHealth)
	go func() {
		if err := gs.Serve(ln); err != nil {
			log.Printf("testapp: serve grpc: %v", err)
		}
	}()
	return gs
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", a.handleRoot)
	mux.HandleFunc("GET /health", a.handleHealth)
	mux.HandleFunc("POST /control/fail", func(w http.ResponseWriter, r *http.Request) {
		a.setFailed(true)
		fmt.Fprintln(w, "failing")
	})
	mux.HandleFunc("POST /control/recover", func(w http.ResponseWriter, r *http.Request) {
		a.setFailed(false)
		fmt.Fprintln(w, "recovered")
	})
	mux.HandleFunc("POST /control/exit", a.handleExit)
	mux.HandleFunc("GET /control/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.state())
	})
	return mux
}

func (a *app) handleRoot(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	port, _ := strconv.Atoi(a.port)
	writeJSON(w, map[string]any{
		"pod":       os.Getenv("POD_NAME"),
		"namespace": os.Getenv("POD_NAMESPACE"),
		"container": os.Getenv("CONTAINER_NAME"),
		"hostname":  host,
		"port":      port,
		"instance":  a.instance,
		"path":      r.URL.RequestURI(),
	})
}

func (a *app) handleHealth(w http.ResponseWriter, r *http.Request) {
	code, body := a.health()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprint(w, body)
}

func (a *app) handleExit(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.URL.Query().Get("code"))
	if err != nil || code < 0 || code > 255 {
		http.Error(w, "code must be 0..255", http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "exiting with %d\n", code)
	select {
	case a.exitCode <- code:
	default: // an exit is already on its way
	}
}

// health is the /health answer at this moment.
func (a *app) health() (int, string) {
	since := time.Since(a.start)
	a.mu.Lock()
	failed := a.failed
	a.mu.Unlock()
	switch {
	case failed, a.failAfter > 0 && since >= a.failAfter:
		return http.StatusInternalServerError, "failing"
	case since < a.startupDelay:
		return http.StatusServiceUnavailable, "starting"
	default:
		return http.StatusOK, "ok"
	}
}

func (a *app) setFailed(failed bool) {
	a.mu.Lock()
	a.failed = failed
	a.mu.Unlock()
	if a.grpcHealth == nil {
		return
	}
	status := healthpb.HealthCheckResponse_SERVING
	if failed {
		status = healthpb.HealthCheckResponse_NOT_SERVING
	}
	a.grpcHealth.SetServingStatus("", status)
}

func (a *app) state() map[string]any {
	code, body := a.health()
	a.mu.Lock()
	defer a.mu.Unlock()
	return map[string]any{
		"instance":        a.instance,
		"uptime_seconds":  time.Since(a.start).Seconds(),
		"failed":          a.failed,
		"health_status":   code,
		"health":          body,
		"startup_delay_s": a.startupDelay.Seconds(),
		"fail_after_s":    a.failAfter.Seconds(),
		"grpc":            a.grpcHealth != nil,
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("testapp: write json: %v", err)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envSeconds reads a duration in (possibly fractional) seconds; unset is 0.
func envSeconds(key string) (time.Duration, error) {
	v := os.Getenv(key)
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("parse %s=%q: want seconds >= 0", key, v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// exitPlan reads EXIT_AFTER and EXIT_CODE: after is negative when the
// process should not exit by itself.
func exitPlan() (after time.Duration, code int, err error) {
	if os.Getenv("EXIT_AFTER") == "" {
		return -1, 0, nil
	}
	if after, err = envSeconds("EXIT_AFTER"); err != nil {
		return 0, 0, err
	}
	if v := os.Getenv("EXIT_CODE"); v != "" {
		code, err = strconv.Atoi(v)
		if err != nil || code < 0 || code > 255 {
			return 0, 0, fmt.Errorf("parse EXIT_CODE=%q: want 0..255", v)
		}
	}
	return after, code, nil
}

func randomID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b)
}
