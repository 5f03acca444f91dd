package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func deploymentYAML(name, app string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      containers: [{name: app, image: img}]
`, name, app, app)
}

// An object runs from the file that ran it first: a file added later with
// a copy of it, even one that sorts first, is reported once and ignored
// until the first file gives the object up.
func TestWatcherKeepsTheRunningOwner(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	w := newManifestWatcher(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	webApp := func() string {
		t.Helper()
		set := w.reload()
		if len(set.Workloads) != 1 {
			t.Fatalf("%d workloads run, want 1", len(set.Workloads))
		}
		return set.Workloads[0].Template.Labels["app"]
	}
	rejections := func() int { return strings.Count(logs.String(), "duplicate object") }

	write("web.yaml", deploymentYAML("web", "web"))
	if got := webApp(); got != "web" {
		t.Fatalf("web runs with app=%s, want web", got)
	}
	write("a-dup.yaml", deploymentYAML("web", "dup"))
	if got := webApp(); got != "web" {
		t.Errorf("after a copy was added in a-dup.yaml, web runs with app=%s, want the running web", got)
	}
	if n := rejections(); n != 1 || !strings.Contains(logs.String(), "a-dup.yaml") {
		t.Errorf("%d duplicate reports, want 1 naming a-dup.yaml:\n%s", n, logs.String())
	}
	webApp() // nothing changed: reported once only
	if n := rejections(); n != 1 {
		t.Errorf("%d duplicate reports after a reload with no change, want still 1", n)
	}

	// The owner gives web up: the copy takes over.
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if got := webApp(); got != "dup" {
		t.Errorf("after web.yaml was removed, web runs with app=%s, want a-dup.yaml's", got)
	}

	// At a first load, the first file by name owns it, as vigil check says.
	w2 := newManifestWatcher(dir, slog.New(slog.DiscardHandler))
	write("web.yaml", deploymentYAML("web", "web"))
	if set := w2.reload(); set.Workloads[0].Template.Labels["app"] != "dup" {
		t.Errorf("first load ran app=%s, want a-dup.yaml's (first by name)", set.Workloads[0].Template.Labels["app"])
	}
}
