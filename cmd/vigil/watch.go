package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/vigil-agent/vigil/manifest"
)

// manifestWatcher loads the manifests directory file by file and keeps, for
// each file, the version that runs. The first time a file is seen its valid
// objects run and the bad ones are reported; once a file runs, an edit that
// breaks it is reported and the running version stays until the file is
// fixed or removed.
type manifestWatcher struct {
	dir     string
	log     *slog.Logger
	running map[string]*manifest.Set // by file path
}

func newManifestWatcher(dir string, log *slog.Logger) *manifestWatcher {
	return &manifestWatcher{dir: dir, log: log, running: map[string]*manifest.Set{}}
}

// manifestFiles lists the manifest files of dir the way manifest.Load picks
// them: *.yaml, *.yml and *.json, no hidden files, sorted by name.
func manifestFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if e.IsDir() || strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		out = append(out, filepath.Join(dir, name))
	}
	return out, nil
}

// reload reads the directory and returns the merged set that should run.
func (w *manifestWatcher) reload() *manifest.Set {
	files, err := manifestFiles(w.dir)
	if err != nil {
		w.log.Error("cannot read manifests directory, keeping what runs", "dir", w.dir, "err", err)
		return w.merge()
	}
	present := map[string]bool{}
	for _, f := range files {
		present[f] = true
		set, err := manifest.LoadFile(f)
		if err != nil {
			w.log.Error("cannot read manifest", "file", f, "err", err)
			continue
		}
		prev, runs := w.running[f]
		for _, e := range set.Errors {
			if runs {
				w.log.Error("manifest rejected, the running version stays", "file", f, "err", e)
			} else {
				w.log.Error("manifest rejected", "file", f, "err", e)
			}
		}
		if len(set.Errors) > 0 && runs {
			_ = prev
			continue
		}
		if !runs || !sameSet(prev, set) {
			w.log.Info("manifest loaded", "file", f, "workloads", len(set.Workloads),
				"services", len(set.Services), "ingresses", len(set.Ingresses))
		}
		set.Errors = nil
		w.running[f] = set
	}
	for f := range w.running {
		if !present[f] {
			w.log.Info("manifest removed", "file", f)
			delete(w.running, f)
		}
	}
	return w.merge()
}

// merge joins the running sets; an object defined in two files runs from the
// first file by name, and the other is reported.
func (w *manifestWatcher) merge() *manifest.Set {
	files := make([]string, 0, len(w.running))
	for f := range w.running {
		files = append(files, f)
	}
	sort.Strings(files)
	out := &manifest.Set{}
	seen := map[string]string{}
	dup := func(file, kind, ns, name string) bool {
		k := kind + " " + ns + "/" + name
		if first, ok := seen[k]; ok {
			w.log.Error("manifest rejected", "file", file,
				"err", fmt.Sprintf("%s: %s: already defined in %s", file, k, first))
			return true
		}
		seen[k] = file
		return false
	}
	for _, f := range files {
		s := w.running[f]
		for _, wl := range s.Workloads {
			if !dup(f, wl.Kind, wl.Namespace, wl.Name) {
				out.Workloads = append(out.Workloads, wl)
			}
		}
		for _, o := range s.Services {
			if !dup(f, "Service", o.Namespace, o.Name) {
				out.Services = append(out.Services, o)
			}
		}
		for _, o := range s.Ingresses {
			if !dup(f, "Ingress", o.Namespace, o.Name) {
				out.Ingresses = append(out.Ingresses, o)
			}
		}
		for _, o := range s.Secrets {
			if !dup(f, "Secret", o.Namespace, o.Name) {
				out.Secrets = append(out.Secrets, o)
			}
		}
	}
	return out
}

func sameSet(a, b *manifest.Set) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.Workloads) != len(b.Workloads) || len(a.Services) != len(b.Services) ||
		len(a.Ingresses) != len(b.Ingresses) {
		return false
	}
	for i := range a.Workloads {
		if a.Workloads[i].Hash != b.Workloads[i].Hash || a.Workloads[i].Replicas != b.Workloads[i].Replicas {
			return false
		}
	}
	return true
}

// watch calls apply after the directory changes, debounced so an editor's
// several writes make one reload. A slow poll backs up the notifications,
// which some filesystems do not deliver.
func (w *manifestWatcher) watch(ctx context.Context, apply func()) {
	const debounce = 300 * time.Millisecond
	var events <-chan fsnotify.Event
	if fw, err := fsnotify.NewWatcher(); err != nil {
		w.log.Warn("cannot watch manifests directory, polling it", "dir", w.dir, "err", err)
	} else if err := fw.Add(w.dir); err != nil {
		w.log.Warn("cannot watch manifests directory, polling it", "dir", w.dir, "err", err)
		fw.Close()
	} else {
		defer fw.Close()
		events = fw.Events
	}
	poll := time.NewTicker(30 * time.Second)
	defer poll.Stop()
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			fire = time.After(debounce)
		case <-poll.C:
			apply()
		case <-fire:
			fire = nil
			apply()
		}
	}
}
