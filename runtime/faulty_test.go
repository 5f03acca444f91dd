package runtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

// okRuntime answers StopContainer and Status with success.
type okRuntime struct{ Runtime }

func (okRuntime) StopContainer(context.Context, string, time.Duration) error { return nil }

func TestFaultyHangStop(t *testing.T) {
	started := make(chan string, 4)
	f := &Faulty{Runtime: okRuntime{}, OnCall: func(m string) { started <- m }}
	f.HangStop(2)

	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.StopContainer(ctx, "c", time.Second) }()
		<-started // the call is in; cancelling now must end it
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("hung call %d = %v, want context.Canceled", i, err)
		}
	}
	if err := f.StopContainer(context.Background(), "c", time.Second); err != nil {
		t.Errorf("third call = %v, want it passed through", err)
	}
	if n := f.Calls(MethodStopContainer); n != 3 {
		t.Errorf("Calls = %d, want 3", n)
	}
}

func TestFaultyFail(t *testing.T) {
	f := &Faulty{Runtime: okRuntime{}}
	boom := errors.New("boom")
	f.FailStop(1, boom)
	if err := f.StopContainer(context.Background(), "c", 0); !errors.Is(err, boom) {
		t.Errorf("first call = %v, want boom", err)
	}
	if err := f.StopContainer(context.Background(), "c", 0); err != nil {
		t.Errorf("second call = %v, want nil", err)
	}

	f.Fail(MethodStopContainer, -1, nil)
	for range 3 {
		if err := f.StopContainer(context.Background(), "c", 0); !errors.Is(err, ErrInjected) {
			t.Fatalf("call = %v, want ErrInjected", err)
		}
	}
	f.Reset()
	if err := f.StopContainer(context.Background(), "c", 0); err != nil {
		t.Errorf("after Reset = %v, want nil", err)
	}
}

// countingRuntime counts the StopContainer calls that reach it.
type countingRuntime struct {
	Runtime
	stops int
}

func (c *countingRuntime) StopContainer(context.Context, string, time.Duration) error {
	c.stops++
	return nil
}

func TestFaultyLose(t *testing.T) {
	rt := &countingRuntime{}
	f := &Faulty{Runtime: rt}
	f.Lose(MethodStopContainer, 1, nil)
	if err := f.StopContainer(context.Background(), "c", 0); !errors.Is(err, ErrInjected) {
		t.Errorf("lost call = %v, want ErrInjected", err)
	}
	if rt.stops != 1 {
		t.Errorf("the lost call reached the runtime %d times, want 1", rt.stops)
	}
	if err := f.StopContainer(context.Background(), "c", 0); err != nil || rt.stops != 2 {
		t.Errorf("next call = %v with %d stops, want it passed through", err, rt.stops)
	}
}
