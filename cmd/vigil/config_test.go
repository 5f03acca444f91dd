package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	addFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := t.TempDir() + "/vigil.yaml"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	cfg, err := loadConfig(flags(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime.Endpoint != "unix:///run/containerd/containerd.sock" || cfg.Proxy.Listen != "127.0.0.1:8080" ||
		cfg.Admin.Listen != "127.0.0.1:10249" || cfg.Backoff.Max != 300*time.Second ||
		cfg.Pods.PortRange != [2]int{20000, 29999} || !cfg.Proxy.ServeClassless {
		t.Errorf("defaults = %+v", cfg)
	}
	if got := cfg.containerdAddress(); got != "/run/containerd/containerd.sock" {
		t.Errorf("containerd address = %q", got)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, "proxy:\n  listen: 127.0.0.1:1001\nadmin:\n  listen: 127.0.0.1:2001\nbackoff:\n  initial: 3s\n")
	t.Setenv("VIGIL_PROXY_LISTEN", "127.0.0.1:1002")
	t.Setenv("VIGIL_BACKOFF_INITIAL", "4s")
	cfg, err := loadConfig(flags(t, "--config", file, "--backoff.initial", "5s"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != "127.0.0.1:2001" {
		t.Errorf("file value lost: admin.listen = %s", cfg.Admin.Listen)
	}
	if cfg.Proxy.Listen != "127.0.0.1:1002" {
		t.Errorf("env did not beat the file: proxy.listen = %s", cfg.Proxy.Listen)
	}
	if cfg.Backoff.Initial != 5*time.Second {
		t.Errorf("flag did not beat env and file: backoff.initial = %s", cfg.Backoff.Initial)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		desc, body string
		want       []string
	}{
		{"bare number", "pods:\n  resyncPeriod: 10\n", []string{"pods.resyncPeriod", `"10s"`}},
		{"bare number string", "pods:\n  resyncPeriod: \"10\"\n", []string{"pods.resyncPeriod", "no unit"}},
		{"not a duration", "backoff:\n  max: soon\n", []string{"backoff.max", "not a duration"}},
		{"unknown key", "proxy:\n  lisen: x\n", []string{"proxy.lisen", "unknown"}},
		{"bad range", "pods:\n  portRange: 30-20\n", []string{"pods.portRange"}},
		{"bad network", "pods:\n  network: bridge\n", []string{"pods.network"}},
		{"bad endpoint", "runtime:\n  endpoint: tcp://x\n", []string{"runtime.endpoint"}},
		{"bad cidr", "proxy:\n  trustedProxies: [nope]\n", []string{"proxy.trustedProxies"}},
		{"malformed yaml", "proxy: [\n", []string{"vigil.yaml"}},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			file := writeConfig(t, tc.body)
			_, err := loadConfig(flags(t, "--config", file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// Every option is documented in the README's table and in configs/vigil.yaml.
func TestOptionsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../../configs/vigil.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range options {
		if !strings.Contains(string(readme), "| `"+o.key+"` |") {
			t.Errorf("README.md's options table lacks %s", o.key)
		}
		leaf := o.key[strings.LastIndex(o.key, ".")+1:]
		if !strings.Contains(string(example), leaf+":") {
			t.Errorf("configs/vigil.yaml lacks %s", o.key)
		}
	}
}

func TestExampleConfigLoads(t *testing.T) {
	if _, err := loadConfig(flags(t, "--config", "../../configs/vigil.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(flags(t, "--config", "../../configs/demo.yaml")); err != nil {
		t.Fatal(err)
	}
}

// The shipped examples pass vigil check.
func TestExamplesPassCheck(t *testing.T) {
	cfg, err := loadConfig(flags(t, "--manifests", "../../configs/examples"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := check(&out, cfg); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "2 workloads, 2 services, 1 ingresses") {
		t.Errorf("check output: %s", out.String())
	}
}
