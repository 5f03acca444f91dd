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
		{"listen without port", "admin:\n  listen: nohost\n", []string{`admin.listen: "nohost": missing port in address`}},
		{"listen port range", "proxy:\n  listen: 127.0.0.1:99999\n", []string{"proxy.listen", `port "99999" is not a number from 0 to 65535`}},
		{"tls listen named port", "proxy:\n  tlsListen: 127.0.0.1:https\n", []string{"proxy.tlsListen", `port "https"`}},
		{"admin listen empty", "admin:\n  listen: \"\"\n", []string{"admin.listen: must not be empty"}},
		{"allowed host cidr", "probes:\n  allowedHosts: [10.0.0.0/33]\n", []string{"probes.allowedHosts", `"10.0.0.0/33" is not a valid CIDR`}},
		{"allowed host ip", "probes:\n  allowedHosts: [10.0.0.256]\n", []string{"probes.allowedHosts", `"10.0.0.256" is not a valid IP address`}},
		{"allowed host name", "probes:\n  allowedHosts: [bad_host]\n", []string{"probes.allowedHosts", `"bad_host" is neither an IP, a CIDR nor a valid host name`}},
		{"backoff initial zero", "backoff:\n  initial: 0s\n", []string{"backoff.initial: 0s must be positive"}},
		{"backoff max below initial", "backoff:\n  initial: 20s\n  max: 10s\n", []string{"backoff.max: 10s is less than backoff.initial (20s)"}},
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

// A listen address given by flag is checked as one from the file.
func TestListenFlag(t *testing.T) {
	_, err := loadConfig(flags(t, "--admin.listen=127.0.0.1:99999"))
	if err == nil || !strings.Contains(err.Error(), `admin.listen: "127.0.0.1:99999": port "99999"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestListenAccepted(t *testing.T) {
	for _, addr := range []string{":0", "127.0.0.1:0", "[::1]:8080", "localhost:65535"} {
		if _, err := loadConfig(flags(t, "--admin.listen", addr, "--proxy.listen", addr, "--proxy.tlsListen", addr)); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	cfg, err := loadConfig(flags(t, "--proxy.listen", ""))
	if err != nil || cfg.Proxy.Listen != "" {
		t.Errorf("empty proxy.listen: %v, %q", err, cfg.Proxy.Listen)
	}
}

// A key that fails to parse is reported once, not again by the rules that
// compare it with other keys.
func TestDurationErrorReportedOnce(t *testing.T) {
	for _, tc := range []struct{ body, key string }{
		{"backoff:\n  initial: 10\n", "backoff.initial"},
		{"backoff:\n  max: soon\n", "backoff.max"},
		{"runtime:\n  callTimeout: 5\n", "runtime.callTimeout"},
	} {
		_, err := loadConfig(flags(t, "--config", writeConfig(t, tc.body)))
		if err == nil {
			t.Fatalf("%s accepted", tc.body)
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], tc.key+": ") || !strings.Contains(lines[0], "s\"") {
			t.Errorf("%s: want one error naming %s with a hint, got %q", tc.key, tc.key, err)
		}
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
