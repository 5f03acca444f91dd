package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func newApp(startupDelay, failAfter time.Duration) *app {
	return &app{
		start: time.Now(), instance: "i1", port: "8080",
		startupDelay: startupDelay, failAfter: failAfter, exitCode: make(chan int, 1),
	}
}

func do(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestHealthStates(t *testing.T) {
	a := newApp(0, 0)
	h := a.routes()
	if rec := do(t, h, "GET", "/health"); rec.Code != 200 || rec.Body.String() != "ok" {
		t.Errorf("/health = %d %q, want 200 ok", rec.Code, rec.Body)
	}
	do(t, h, "POST", "/control/fail")
	if rec := do(t, h, "GET", "/health"); rec.Code != 500 {
		t.Errorf("/health after fail = %d, want 500", rec.Code)
	}
	do(t, h, "POST", "/control/recover")
	if rec := do(t, h, "GET", "/health"); rec.Code != 200 {
		t.Errorf("/health after recover = %d, want 200", rec.Code)
	}

	if code, _ := newApp(time.Hour, 0).health(); code != 503 {
		t.Errorf("during STARTUP_DELAY = %d, want 503", code)
	}
	failing := newApp(0, time.Second)
	failing.start = time.Now().Add(-2 * time.Second)
	if code, _ := failing.health(); code != 500 {
		t.Errorf("after FAIL_AFTER = %d, want 500", code)
	}
}

func TestRootAndExit(t *testing.T) {
	t.Setenv("POD_NAME", "web-0")
	t.Setenv("POD_NAMESPACE", "default")
	t.Setenv("CONTAINER_NAME", "app")
	a := newApp(0, 0)
	h := a.routes()

	var got map[string]any
	if err := json.Unmarshal(do(t, h, "GET", "/").Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"pod": "web-0", "namespace": "default", "container": "app", "port": 8080.0, "instance": "i1",
	} {
		if got[k] != want {
			t.Errorf("GET / %s = %v, want %v", k, got[k], want)
		}
	}
	if rec := do(t, h, "POST", "/control/exit?code=x"); rec.Code != 400 {
		t.Errorf("exit?code=x = %d, want 400", rec.Code)
	}
	if rec := do(t, h, "POST", "/control/exit?code=3"); rec.Code != 200 {
		t.Errorf("exit?code=3 = %d, want 200", rec.Code)
	}
	if code := <-a.exitCode; code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
}

func TestGRPCHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(0, 0)
	gs := a.serveGRPC(ln)
	defer gs.Stop()

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	if s := check(); s != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status = %v, want SERVING", s)
	}
	do(t, a.routes(), "POST", "/control/fail")
	if s := check(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("status after fail = %v, want NOT_SERVING", s)
	}
}

func TestExitPlan(t *testing.T) {
	for _, tc := range []struct {
		after, code string
		wantAfter   time.Duration
		wantCode    int
		wantErr     bool
	}{
		{after: "", wantAfter: -1},
		{after: "0", wantAfter: 0},
		{after: "1.5", code: "3", wantAfter: 1500 * time.Millisecond, wantCode: 3},
		{after: "x", wantErr: true},
		{after: "1", code: "300", wantErr: true},
	} {
		t.Setenv("EXIT_AFTER", tc.after)
		t.Setenv("EXIT_CODE", tc.code)
		after, code, err := exitPlan()
		if (err != nil) != tc.wantErr {
			t.Errorf("EXIT_AFTER=%q EXIT_CODE=%q: err %v, want error %v", tc.after, tc.code, err, tc.wantErr)
			continue
		}
		if err == nil && (after != tc.wantAfter || code != tc.wantCode) {
			t.Errorf("EXIT_AFTER=%q EXIT_CODE=%q: %v %d, want %v %d",
				tc.after, tc.code, after, code, tc.wantAfter, tc.wantCode)
		}
	}
}
