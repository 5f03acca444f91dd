// Command crireset stops and removes every pod sandbox (and so every
// container) on a CRI endpoint. test/scripts/containerd.sh runs it before it
// stops its private containerd, because shims outlive the daemon.
//
//	crireset -endpoint unix:///var/lib/vigil-test/containerd/containerd.sock
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/vigil-agent/vigil/runtime"
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI endpoint, unix:///path")
	timeout := flag.Duration("timeout", time.Minute, "bound on the whole reset")
	flag.Parse()
	if *endpoint == "" {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	n, err := reset(ctx, *endpoint)
	fmt.Printf("crireset: removed %d pod sandboxes\n", n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crireset:", err)
		os.Exit(1)
	}
}

func reset(ctx context.Context, endpoint string) (int, error) {
	rt, err := runtime.NewCRI(endpoint, runtime.CRIOptions{})
	if err != nil {
		return 0, err
	}
	defer rt.Close()

	// Containers first: a sandbox whose containers are still running stops
	// them with no grace, and the containers are what a caller expects gone.
	ctrs, err := rt.ListContainers(ctx, nil)
	if err != nil {
		return 0, err
	}
	for _, c := range ctrs {
		if err := rt.StopContainer(ctx, c.Id, 0); ignoreNotFound(err) != nil {
			return 0, err
		}
		if err := rt.RemoveContainer(ctx, c.Id); ignoreNotFound(err) != nil {
			return 0, err
		}
	}

	pods, err := rt.ListPodSandboxes(ctx, nil)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, p := range pods {
		if err := rt.StopPodSandbox(ctx, p.Id); ignoreNotFound(err) != nil {
			return removed, err
		}
		if err := rt.RemovePodSandbox(ctx, p.Id); ignoreNotFound(err) != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

func ignoreNotFound(err error) error {
	if runtime.IsNotFound(err) {
		return nil
	}
	return err
}
