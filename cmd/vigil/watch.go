package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/vigil-agent/vigil/manifest"
)

// manifestWatcher loads the manifests directory file by file and keeps, for
// each file, the version that runs. The first time a file is seen its valid
// objects run and the bad ones are reported; once a file runs, an edit that
// breaks it is reported and the running version stays until the file is
// fixed or removed.
//
// An object (kind, namespace, name) runs from one file, its owner. At the
// first load the owner is the first file by name, as manifest.Load has it;
// afterwards a file that runs keeps its objects: a file added or edited
// later that defines one of them again is reported and its copy ignored,
// until the owner stops defining it.
type manifestWatcher struct {
	dir     string
	log     *slog.Logger
	running map[string]*manifest.Set // by file path
	owner   map[string]string        // object key -> file it runs from
	dups    map[string]bool          // "file\x00key" copies reported already
}

func newManifestWatcher(dir string, log *slog.Logger) *manifestWatcher {
	return &manifestWatcher{dir: dir, log: log, running: map[string]*manifest.Set{},
		owner: map[string]string{}, dups: map[string]bool{}}
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
		if (!runs && !set.Empty()) || (runs && !sameSet(prev, set)) {
			w.log.Info("manifest loaded", "file", f, "workloads", len(set.Workloads),
				"services", len(set.Services), "ingresses", len(set.Ingresses), "secrets", len(set.Secrets))
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

// merge joins the running sets, each object from its owner file (see
// manifestWatcher). A copy in another file is reported once, when it first
// appears.
func (w *manifestWatcher) merge() *manifest.Set {
	files := make([]string, 0, len(w.running))
	for f := range w.running {
		files = append(files, f)
	}
	sort.Strings(files)

	// Owners that no longer define their object give it up; the first
	// file by name that does takes it.
	defines := map[string][]string{} // key -> files, by name
	for _, f := range files {
		w.running[f].Each(func(key string) { defines[key] = append(defines[key], f) })
	}
	for key, owner := range w.owner {
		if !slices.Contains(defines[key], owner) {
			delete(w.owner, key)
		}
	}
	dups := map[string]bool{}
	for key, fs := range defines {
		if _, ok := w.owner[key]; !ok {
			w.owner[key] = fs[0]
		}
		for _, f := range fs {
			if f == w.owner[key] {
				continue
			}
			d := f + "\x00" + key
			dups[d] = true
			if !w.dups[d] {
				w.log.Error("manifest rejected", "file", f, "err", &manifest.Error{File: f, Object: key,
					Field: "metadata.name", Reason: "duplicate object: already defined in " + w.owner[key] + ", which runs it"})
			}
		}
	}
	w.dups = dups

	out := &manifest.Set{}
	for _, f := range files {
		out.Append(w.running[f], func(key string) bool { return w.owner[key] == f })
	}
	return out
}

func sameSet(a, b *manifest.Set) bool {
	if a == nil || b == nil {
		return a == b
	}
	return apiequality.Semantic.DeepEqual(a, b)
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
