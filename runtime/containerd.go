package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"
)

// DefaultNamespace is the containerd namespace where the CRI plugin keeps its
// pods, containers and images.
const DefaultNamespace = "k8s.io"

// Snapshotter the CRI runs containers on; imported images are unpacked for it.
const Snapshotter = "overlayfs"

// Backoff of Watch between reconnects of a broken event stream.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
	// watchHealthy is how long a stream must last before the backoff resets.
	watchHealthy = 10 * time.Second
)

// Containerd talks to containerd's own API for what the CRI lacks: a push
// stream of task exits and importing image archives. It is safe for
// concurrent use.
type Containerd struct {
	client    *client.Client
	namespace string
	log       *slog.Logger
}

var _ ExitWatcher = (*Containerd)(nil)

// NewContainerd connects to the containerd socket at address (a plain path,
// e.g. /run/containerd/containerd.sock) and works in namespace, DefaultNamespace
// when empty. The connection is made lazily.
func NewContainerd(address, namespace string) (*Containerd, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	c, err := client.New(address, client.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("connect containerd %q: %w", address, err)
	}
	return &Containerd{client: c, namespace: namespace, log: slog.New(slog.DiscardHandler)}, nil
}

// SetLogger sets where Watch reports broken streams. Call it before Watch.
func (c *Containerd) SetLogger(l *slog.Logger) {
	if l != nil {
		c.log = l
	}
}

// Close closes the connection; running Watch streams end and reconnect
// attempts fail until their ctx ends.
func (c *Containerd) Close() error {
	if err := c.client.Close(); err != nil {
		return fmt.Errorf("close containerd connection: %w", err)
	}
	return nil
}

// Watch implements ExitWatcher. It delivers the exits of containers' main
// processes (pod sandboxes' pause processes included, under the sandbox id)
// and skips exec processes. Exits that happen while the stream is broken are
// lost: callers resync from ContainerStatus.
func (c *Containerd) Watch(ctx context.Context) <-chan Exit {
	out := make(chan Exit, 64)
	go func() {
		defer close(out)
		c.watch(ctx, out)
	}()
	return out
}

func (c *Containerd) watch(ctx context.Context, out chan<- Exit) {
	backoff := watchBackoffMin
	for ctx.Err() == nil {
		start := time.Now()
		err := c.subscribeOnce(ctx, out)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > watchHealthy {
			backoff = watchBackoffMin
		}
		c.log.Warn("containerd event stream broke, reconnecting",
			"err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// subscribeOnce forwards exits from one event stream until it breaks or ctx
// ends. A panic is logged and returned as an error so Watch reconnects.
func (c *Containerd) subscribeOnce(ctx context.Context, out chan<- Exit) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("containerd event stream panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	filter := fmt.Sprintf(`topic=="/tasks/exit",namespace==%q`, c.namespace)
	envs, errs := c.client.Subscribe(ctx, filter)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				err = fmt.Errorf("stream closed")
			}
			return err
		case env, ok := <-envs:
			if !ok {
				return fmt.Errorf("stream closed")
			}
			exit, ok := c.decodeExit(env)
			if !ok {
				continue
			}
			select {
			case out <- exit:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// decodeExit turns a /tasks/exit envelope into an Exit; false for events of
// other namespaces and for exec processes, whose ID is the exec id.
func (c *Containerd) decodeExit(env *events.Envelope) (Exit, bool) {
	if env == nil || env.Event == nil || env.Namespace != c.namespace {
		return Exit{}, false
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		c.log.Warn("decode containerd event", "topic", env.Topic, "err", err)
		return Exit{}, false
	}
	te, ok := v.(*apievents.TaskExit)
	if !ok || te.ContainerID == "" || te.ID != te.ContainerID {
		return Exit{}, false
	}
	exit := Exit{ContainerID: te.ContainerID, ExitCode: int32(te.ExitStatus)}
	if te.ExitedAt != nil {
		exit.ExitedAt = te.ExitedAt.AsTime()
	} else {
		exit.ExitedAt = env.Timestamp
	}
	return exit, true
}

// ImportImages imports OCI or Docker image archives into the namespace and
// unpacks them for the CRI's snapshotter, so containers can run from them at
// once without a pull. It returns the names of the images created.
func (c *Containerd) ImportImages(ctx context.Context, files ...string) ([]string, error) {
	var names []string
	for _, file := range files {
		n, err := c.importImage(ctx, file)
		if err != nil {
			return names, err
		}
		names = append(names, n...)
	}
	return names, nil
}

func (c *Containerd) importImage(ctx context.Context, file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w", file, err)
	}
	defer f.Close()

	// The CRI plugin of containerd 2.x lists only images with this label;
	// 1.6 ignores it.
	labels := map[string]string{"io.cri-containerd.image": "managed"}
	imgs, err := c.client.Import(ctx, f, client.WithImageLabels(labels))
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w", file, err)
	}
	names := make([]string, 0, len(imgs))
	for _, img := range imgs {
		if err := client.NewImage(c.client, img).Unpack(ctx, Snapshotter); err != nil {
			return names, fmt.Errorf("unpack image %s: %w", img.Name, err)
		}
		names = append(names, img.Name)
	}
	return names, nil
}
