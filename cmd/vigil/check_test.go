package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkDir runs check on one manifest file with the given flags.
func checkDir(t *testing.T, manifest string, args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(flags(t, append([]string{"--manifests", dir}, args...)...))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err = check(&out, cfg)
	return out.String(), err
}

const hostDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: app:1
          ports: [{name: http, containerPort: 8080}]
          livenessProbe: {httpGet: {host: HOST, port: http}}
`

func TestCheckProbeHost(t *testing.T) {
	const field = "Deployment default/web: spec.template.spec.containers[0].livenessProbe.httpGet.host"
	for _, tc := range []struct {
		desc, host string
		args       []string
		wantErr    bool
	}{
		{"metadata address", "169.254.169.254", nil, true},
		{"other name", "example.com", nil, true},
		{"loopback", "127.0.0.1", nil, false},
		{"localhost", "localhost", nil, false},
		{"allowed CIDR", "169.254.169.254", []string{"--probes.allowedHosts", "169.254.0.0/16"}, false},
		{"allowed name", "example.com", []string{"--probes.allowedHosts", "Example.com"}, false},
		{"other allowed", "example.com", []string{"--probes.allowedHosts", "example.org"}, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			out, err := checkDir(t, strings.Replace(hostDeployment, "HOST", tc.host, 1), tc.args...)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("check failed: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("check passed:\n%s", out)
			}
			want := field + `: "` + tc.host + `" is not the pod's address nor loopback, and not in probes.allowedHosts`
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		})
	}
}

func TestCheckProbeHostPodAndTCP(t *testing.T) {
	out, err := checkDir(t, `
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  containers:
    - name: a
      image: a:1
    - name: b
      image: b:1
      readinessProbe: {tcpSocket: {host: 10.1.2.3, port: 80}}
`)
	if err == nil {
		t.Fatalf("check passed:\n%s", out)
	}
	if !strings.Contains(out, `Pod ns/p: spec.containers[1].readinessProbe.tcpSocket.host: "10.1.2.3"`) {
		t.Errorf("output: %s", out)
	}
}
