package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vigil-agent/vigil/admin"
	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
	"github.com/vigil-agent/vigil/supervisor"
)

// run wires the runtime, prober, supervisor, proxy and admin API together
// and runs them until ctx ends.
func run(ctx context.Context, cfg *Config) error {
	log := newLogger(cfg.Log.Format, cfg.Log.Level)
	slog.SetDefault(log)

	unlock, err := lockRuntime(cfg.lockPath())
	if err != nil {
		return err
	}
	defer unlock()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	cri, err := runtime.NewCRI(cfg.Runtime.Endpoint, runtime.CRIOptions{
		CallTimeout: cfg.Runtime.CallTimeout, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("connect to runtime %s: %w", cfg.Runtime.Endpoint, err)
	}
	defer cri.Close()

	var exits runtime.ExitWatcher
	if addr := cfg.containerdAddress(); addr != "" {
		ctrd, err := runtime.NewContainerd(addr, cfg.Runtime.Namespace)
		if err != nil {
			log.Warn("containerd API unavailable: exits are seen at the periodic resync only",
				"address", addr, "err", err)
		} else {
			ctrd.SetLogger(log)
			defer ctrd.Close()
			exits = ctrd
			if err := importImageDir(ctx, log, ctrd, cfg.Runtime.ImagesDir); err != nil {
				return err
			}
		}
	}

	px := proxy.New(proxy.Options{
		IngressClass:   cfg.Proxy.IngressClass,
		ServeClassless: cfg.Proxy.ServeClassless,
		TrustedProxies: cfg.Proxy.TrustedProxies,
		AccessLog:      cfg.Proxy.AccessLog,
		NetHTTPOnly:    !cfg.Proxy.DirectHTTP1,
		Logger:         log,
		Registerer:     reg,
	})

	var sup *supervisor.Supervisor
	pm := prober.NewManager(prober.Options{
		OnUpdate:     func(u prober.Update) { sup.ProbeResult(u) },
		UserAgent:    cfg.Probes.UserAgent,
		AllowedHosts: cfg.Probes.AllowedHosts,
		Logger:       log,
		Registerer:   reg,
	})
	defer pm.Stop()
	node, _ := os.Hostname()
	rec := supervisor.NewRecorder(log, node, 1000)
	sup = supervisor.New(supervisor.Options{
		// cri itself stays for Close and the health check's Status.
		Runtime:          runtime.Instrument(cri, reg),
		Exits:            exits,
		Prober:           pm,
		Endpoints:        px,
		Recorder:         rec,
		Logger:           log,
		Registerer:       reg,
		NodeName:         node,
		Instance:         cfg.Instance,
		HostNetwork:      cfg.Pods.Network == "host",
		PortRange:        cfg.Pods.PortRange,
		BackoffInitial:   cfg.Backoff.Initial,
		BackoffMax:       cfg.Backoff.Max,
		BackoffReset:     cfg.Backoff.Reset,
		ResyncPeriod:     cfg.Pods.ResyncPeriod,
		RemovePodsOnExit: cfg.Pods.RemoveOnExit,
		LogDir:           cfg.Runtime.LogDir,
		PullImages:       cfg.Runtime.PullImages,
	})

	// Listeners open before anything runs, so a port clash fails the start
	// instead of leaving pods without their proxy.
	adminLn, err := listen(cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	adminSrv := &http.Server{
		Handler: admin.NewHandler(admin.Options{
			Sources: admin.Sources{
				Pods:      sup.PodList,
				Events:    rec.List,
				Endpoints: sup.Endpoints,
				Changes:   rec.Subscribe,
				Healthy: func() error {
					sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_, err := cri.Status(sctx)
					return err
				},
			},
			Gatherer: reg,
			Logger:   log,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "err", err)
		}
	}()
	defer adminSrv.Close()

	watcher := newManifestWatcher(cfg.Manifests, log)
	apply := func() {
		set := watcher.reload()
		sup.SetManifests(set)
		for _, err := range px.SetConfig(proxy.Config{
			Ingresses: set.Ingresses, Services: set.Services, Secrets: set.Secrets,
		}) {
			log.Warn("ingress configuration problem", "err", err)
		}
	}
	apply()

	proxyCtx, stopProxy := context.WithCancel(context.Background())
	defer stopProxy()
	proxyDone := make(chan error, 1)
	if cfg.Proxy.Listen != "" {
		go func() { proxyDone <- px.Serve(proxyCtx, cfg.Proxy.Listen, cfg.Proxy.TLSListen) }()
	}

	go watcher.watch(ctx, apply)

	log.Info("vigil running", "version", version, "runtime", cfg.Runtime.Endpoint,
		"manifests", cfg.Manifests, "proxy", cfg.Proxy.Listen, "admin", cfg.Admin.Listen)
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(ctx) }()

	select {
	case err = <-supDone:
	case err = <-proxyDone:
		if err != nil {
			err = fmt.Errorf("proxy.listen: %w", err)
		}
		// The supervisor still has to stop; ctx is not cancelled here, so
		// leave its pods for the next start.
		return err
	}
	// The proxy outlives the supervisor so pods being removed drain.
	stopProxy()
	log.Info("vigil stopped")
	return err
}

func listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
}

// lockRuntime takes an exclusive lock that keeps a second vigil off the same
// runtime: two supervisors adopting the same pods would fight over them.
func lockRuntime(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("another vigil (pid %s) already runs against this runtime (lock %s)",
			string(owner), path)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	return func() { f.Close() }, nil
}

// importImageDir imports every image archive in dir.
func importImageDir(ctx context.Context, log *slog.Logger, ctrd *runtime.Containerd, dir string) error {
	if dir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return fmt.Errorf("runtime.imagesDir: %w", err)
	}
	if len(files) == 0 {
		return nil
	}
	names, err := ctrd.ImportImages(ctx, files...)
	if err != nil {
		return fmt.Errorf("runtime.imagesDir: import %s: %w", dir, err)
	}
	log.Info("imported images", "dir", dir, "images", names)
	return nil
}
