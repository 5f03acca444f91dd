package runtime

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeEvents is a containerd events service whose Subscribe streams what the
// test sends on envs and ends the stream on a value from breaks.
type fakeEvents struct {
	eventsapi.UnimplementedEventsServer
	subscribed chan []string // filters of each new subscription
	envs       chan *types.Envelope
	breaks     chan error
}

func (f *fakeEvents) Subscribe(req *eventsapi.SubscribeRequest, stream eventsapi.Events_SubscribeServer) error {
	f.subscribed <- req.GetFilters()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case err := <-f.breaks:
			return err
		case env := <-f.envs:
			if err := stream.Send(env); err != nil {
				return err
			}
		}
	}
}

func startFakeEvents(t *testing.T) (*fakeEvents, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctrd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeEvents{
		subscribed: make(chan []string, 4),
		envs:       make(chan *types.Envelope),
		breaks:     make(chan error),
	}
	srv := grpc.NewServer()
	eventsapi.RegisterEventsServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return f, sock
}

func exitEnvelope(t *testing.T, ns, container, id string, code uint32) *types.Envelope {
	t.Helper()
	ev, err := typeurl.MarshalAnyToProto(&apievents.TaskExit{
		ContainerID: container, ID: id, ExitStatus: code,
		ExitedAt: timestamppb.New(time.Unix(1700000000, 0)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &types.Envelope{
		Timestamp: timestamppb.Now(), Namespace: ns, Topic: "/tasks/exit", Event: ev,
	}
}

func waitSubscribed(t *testing.T, f *fakeEvents) []string {
	t.Helper()
	select {
	case filters := <-f.subscribed:
		return filters
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not subscribe")
		return nil
	}
}

func recvExit(t *testing.T, exits <-chan Exit) Exit {
	t.Helper()
	select {
	case e, ok := <-exits:
		if !ok {
			t.Fatal("exit channel closed")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no exit delivered")
		return Exit{}
	}
}

func TestWatchFiltersAndReconnects(t *testing.T) {
	f, sock := startFakeEvents(t)
	c, err := NewContainerd(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exits := c.Watch(ctx)

	filters := waitSubscribed(t, f)
	if len(filters) != 1 || !strings.Contains(filters[0], `topic=="/tasks/exit"`) ||
		!strings.Contains(filters[0], `namespace=="k8s.io"`) {
		t.Errorf("filters = %q, want one on topic /tasks/exit and namespace k8s.io", filters)
	}

	// An exec's exit and another namespace's exit are dropped, so the first
	// exit delivered is c1's.
	f.envs <- exitEnvelope(t, "k8s.io", "c1", "exec-1", 7)
	f.envs <- exitEnvelope(t, "moby", "c9", "c9", 9)
	f.envs <- exitEnvelope(t, "k8s.io", "c1", "c1", 3)
	want := Exit{ContainerID: "c1", ExitCode: 3, ExitedAt: time.Unix(1700000000, 0)}
	if got := recvExit(t, exits); got.ContainerID != want.ContainerID ||
		got.ExitCode != want.ExitCode || !got.ExitedAt.Equal(want.ExitedAt) {
		t.Errorf("exit = %+v, want %+v", got, want)
	}

	// A broken stream is subscribed again; exits keep coming on the same
	// channel.
	f.breaks <- errors.New("containerd went away")
	waitSubscribed(t, f)
	f.envs <- exitEnvelope(t, "k8s.io", "c2", "c2", 0)
	if got := recvExit(t, exits); got.ContainerID != "c2" || got.ExitCode != 0 {
		t.Errorf("exit after reconnect = %+v, want c2 code 0", got)
	}

	cancel()
	select {
	case _, ok := <-exits:
		if ok {
			t.Error("exit delivered after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Error("exit channel not closed after cancel")
	}
}

func TestDecodeExitSkips(t *testing.T) {
	c := &Containerd{namespace: "k8s.io", log: discardLogger()}
	tests := []struct {
		desc string
		env  *types.Envelope
		ok   bool
	}{
		{"main process", exitEnvelope(t, "k8s.io", "c", "c", 1), true},
		{"exec process", exitEnvelope(t, "k8s.io", "c", "e", 1), false},
		{"other namespace", exitEnvelope(t, "default", "c", "c", 1), false},
		{"no container", exitEnvelope(t, "k8s.io", "", "", 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, ok := c.decodeExit(toEnvelope(tt.env))
			if ok != tt.ok {
				t.Errorf("decodeExit ok = %v, want %v", ok, tt.ok)
			}
		})
	}
}

func toEnvelope(env *types.Envelope) *events.Envelope {
	return &events.Envelope{
		Timestamp: env.Timestamp.AsTime(), Namespace: env.Namespace, Topic: env.Topic, Event: env.Event,
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
