package runtime

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// errRuntime answers every call it implements with err.
type errRuntime struct {
	Runtime // nil: calls it does not implement panic
	err     error
}

func (r errRuntime) Status(context.Context) (*cri.RuntimeStatus, error) { return nil, r.err }
func (r errRuntime) StopContainer(context.Context, string, time.Duration) error {
	return r.err
}
func (r errRuntime) ContainerStatus(context.Context, string) (*cri.ContainerStatus, error) {
	return nil, r.err
}

func TestInstrumentCountsErrors(t *testing.T) {
	notFound := notFoundError{fmt.Errorf("container abc: %w", ErrNotFound)}
	tests := []struct {
		desc      string
		err       error
		call      func(Runtime) error
		method    string
		wantCount float64
	}{
		{"success", nil, func(rt Runtime) error {
			_, err := rt.Status(context.Background())
			return err
		}, MethodStatus, 0},
		{"failure", ErrInjected, func(rt Runtime) error {
			_, err := rt.Status(context.Background())
			return err
		}, MethodStatus, 1},
		{"deadline counts", context.DeadlineExceeded, func(rt Runtime) error {
			_, err := rt.Status(context.Background())
			return err
		}, MethodStatus, 1},
		{"cancel does not count", fmt.Errorf("status: %w", context.Canceled), func(rt Runtime) error {
			_, err := rt.Status(context.Background())
			return err
		}, MethodStatus, 0},
		{"not found on stop is already stopped", notFound, func(rt Runtime) error {
			return rt.StopContainer(context.Background(), "abc", time.Second)
		}, MethodStopContainer, 0},
		{"not found on status counts", notFound, func(rt Runtime) error {
			_, err := rt.ContainerStatus(context.Background(), "abc")
			return err
		}, MethodContainerStatus, 1},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			rt := Instrument(errRuntime{err: tt.err}, reg)
			if err := tt.call(rt); err != tt.err {
				t.Fatalf("error = %v, want the wrapped runtime's %v unchanged", err, tt.err)
			}
			errs := testutil.ToFloat64(rt.(*instrumented).errs[tt.method])
			if errs != tt.wantCount {
				t.Errorf("vigil_cri_call_errors_total{method=%q} = %v, want %v",
					tt.method, errs, tt.wantCount)
			}
			n, err := testutil.GatherAndCount(reg, "vigil_cri_call_duration_seconds")
			if err != nil {
				t.Fatal(err)
			}
			// One series per method exists from the start.
			if n != len(methods) {
				t.Errorf("%d duration series, want %d", n, len(methods))
			}
		})
	}
}

// TestInstrumentNamesEveryMethod guards against a method added to Runtime
// but missing from the method label's values.
func TestInstrumentNamesEveryMethod(t *testing.T) {
	named := map[string]bool{}
	for _, m := range methods {
		named[m] = true
	}
	typ := reflect.TypeFor[Runtime]()
	for i := range typ.NumMethod() {
		if name := typ.Method(i).Name; !named[name] {
			t.Errorf("Runtime.%s has no method label in metrics.go", name)
		}
	}
	if typ.NumMethod() != len(methods) {
		t.Errorf("methods has %d entries, Runtime %d", len(methods), typ.NumMethod())
	}
}
