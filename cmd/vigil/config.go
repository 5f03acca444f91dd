package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vigil-agent/vigil/prober"
)

// option is one setting. Every option is a key in the YAML config file
// (nested keys by their dots), an environment variable VIGIL_<KEY> with the
// dots as underscores (VIGIL_PROXY_LISTEN), and a flag --<key>. A flag beats
// the environment, which beats the file, which beats the default.
type option struct {
	key  string
	def  any // string, bool, int, []string or time.Duration
	help string
}

// options lists every setting; README.md's options table mirrors it.
var options = []option{
	{"manifests", "", "directory of Kubernetes manifests to run"},
	{"runtime.endpoint", "unix:///run/containerd/containerd.sock", "CRI endpoint of the container runtime"},
	{"runtime.containerd", "", "containerd socket for exit events and image import (default: the CRI endpoint's socket; \"none\" disables)"},
	{"runtime.namespace", "k8s.io", "containerd namespace the CRI plugin uses"},
	{"runtime.callTimeout", 10 * time.Second, "deadline of each CRI call"},
	{"runtime.pullImages", false, "pull images missing from the runtime's store through the CRI"},
	{"runtime.imagesDir", "", "directory of OCI/docker image archives imported at start"},
	{"runtime.logDir", "/var/log/vigil/pods", "where the runtime writes container logs"},
	{"pods.network", "host", "host: pods share the node's network and get host ports from pods.portRange; cni: pods get their own IP from the runtime"},
	{"pods.portRange", "20000-29999", "host ports handed to host-network pods"},
	{"pods.resyncPeriod", 10 * time.Second, "how often each pod is re-read from the runtime"},
	{"pods.removeOnExit", false, "stop and remove all pods when vigil exits (default: leave them for the next start to adopt)"},
	{"backoff.initial", 10 * time.Second, "first crash-loop backoff delay"},
	{"backoff.max", 300 * time.Second, "crash-loop backoff cap"},
	{"backoff.reset", 10 * time.Minute, "quiet time after which a container's backoff starts over"},
	{"probes.userAgent", "kube-probe/1.37", "User-Agent of HTTP probes"},
	{"probes.allowedHosts", []string{}, "hosts, IPs or CIDRs a probe's host field may name besides the pod and loopback"},
	{"proxy.listen", "127.0.0.1:8080", "address of the ingress proxy (empty disables it)"},
	{"proxy.tlsListen", "", "address of the TLS ingress listener (empty: none)"},
	{"proxy.ingressClass", "vigil", "IngressClass name vigil serves"},
	{"proxy.serveClassless", true, "also serve Ingresses without an ingressClassName"},
	{"proxy.trustedProxies", []string{}, "CIDRs whose X-Forwarded-* headers are kept"},
	{"proxy.accessLog", false, "log every proxied request"},
	{"proxy.directHTTP1", true, "serve plain-HTTP GET and HEAD on the proxy's own HTTP/1.1 loop (false: net/http serves every request)"},
	{"admin.listen", "127.0.0.1:10249", "address of the admin API (/healthz, /metrics, /pods, /events; host:port, required)"},
	{"log.format", "text", "log format: text or json"},
	{"log.level", "info", "log level: debug, info, warn or error"},
	{"instance", "default", "name of this vigil on the runtime: it adopts and removes only pods labelled with it, so vigils with different names can share one runtime"},
	{"lockFile", "", "lock that keeps a second vigil of the same instance off the runtime (default: /run/vigil/<endpoint>.<instance>.lock)"},
}

// Config is the parsed configuration.
type Config struct {
	Manifests string
	Runtime   struct {
		Endpoint    string
		Containerd  string
		Namespace   string
		CallTimeout time.Duration
		PullImages  bool
		ImagesDir   string
		LogDir      string
	}
	Pods struct {
		Network      string
		PortRange    [2]int
		ResyncPeriod time.Duration
		RemoveOnExit bool
	}
	Backoff struct{ Initial, Max, Reset time.Duration }
	Probes  struct {
		UserAgent    string
		AllowedHosts []string
	}
	Proxy struct {
		Listen, TLSListen string
		IngressClass      string
		ServeClassless    bool
		TrustedProxies    []netip.Prefix
		AccessLog         bool
		DirectHTTP1       bool
	}
	Admin    struct{ Listen string }
	Log      struct{ Format, Level string }
	Instance string
	LockFile string
}

// addFlags registers a flag for every option.
func addFlags(fs *pflag.FlagSet) {
	fs.StringP("config", "c", "", "YAML config file")
	for _, o := range options {
		switch d := o.def.(type) {
		case string:
			fs.String(o.key, d, o.help)
		case bool:
			fs.Bool(o.key, d, o.help)
		case []string:
			fs.StringSlice(o.key, d, o.help)
		case time.Duration:
			// Taken as a string so that a bare number gets the same clear
			// error from the flag as from the file.
			fs.String(o.key, d.String(), o.help)
		}
	}
}

// loadConfig reads the file named by --config (if any), the environment and
// the flags, and validates the result. Errors name the file and key.
func loadConfig(fs *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	for _, o := range options {
		if d, ok := o.def.(time.Duration); ok {
			v.SetDefault(o.key, d.String())
		} else {
			v.SetDefault(o.key, o.def)
		}
	}
	v.SetEnvPrefix("VIGIL")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for _, o := range options {
		if f := fs.Lookup(o.key); f != nil {
			if err := v.BindPFlag(o.key, f); err != nil {
				return nil, err
			}
		}
	}
	source := "defaults"
	if file, _ := fs.GetString("config"); file != "" {
		source = file
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
		if err := checkKeys(v); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
	}
	cfg, err := decode(v)
	if err != nil {
		return nil, fmt.Errorf("config (%s, environment, flags): %w", source, err)
	}
	return cfg, nil
}

// checkKeys rejects keys in the file that are no option, which are almost
// always typos that would otherwise be ignored.
func checkKeys(v *viper.Viper) error {
	known := map[string]bool{}
	for _, o := range options {
		known[strings.ToLower(o.key)] = true
	}
	var unknown []string
	for _, k := range v.AllKeys() {
		if !known[k] && v.InConfig(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown keys %s (see 'vigil run --help' for the options)", strings.Join(unknown, ", "))
	}
	return nil
}

func decode(v *viper.Viper) (*Config, error) {
	var errs []error
	// parsed records the duration keys that parsed, so that a rule across
	// keys is checked only on values that were read.
	parsed := map[string]bool{}
	dur := func(key string) time.Duration {
		d, err := parseDuration(v.Get(key))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return 0
		}
		parsed[key] = true
		return d
	}
	c := &Config{}
	c.Manifests = v.GetString("manifests")
	c.Runtime.Endpoint = v.GetString("runtime.endpoint")
	c.Runtime.Containerd = v.GetString("runtime.containerd")
	c.Runtime.Namespace = v.GetString("runtime.namespace")
	c.Runtime.CallTimeout = dur("runtime.callTimeout")
	c.Runtime.PullImages = v.GetBool("runtime.pullImages")
	c.Runtime.ImagesDir = v.GetString("runtime.imagesDir")
	c.Runtime.LogDir = v.GetString("runtime.logDir")
	c.Pods.Network = v.GetString("pods.network")
	c.Pods.ResyncPeriod = dur("pods.resyncPeriod")
	c.Pods.RemoveOnExit = v.GetBool("pods.removeOnExit")
	c.Backoff.Initial = dur("backoff.initial")
	c.Backoff.Max = dur("backoff.max")
	c.Backoff.Reset = dur("backoff.reset")
	c.Probes.UserAgent = v.GetString("probes.userAgent")
	c.Probes.AllowedHosts = v.GetStringSlice("probes.allowedHosts")
	c.Proxy.Listen = v.GetString("proxy.listen")
	c.Proxy.TLSListen = v.GetString("proxy.tlsListen")
	c.Proxy.IngressClass = v.GetString("proxy.ingressClass")
	c.Proxy.ServeClassless = v.GetBool("proxy.serveClassless")
	c.Proxy.AccessLog = v.GetBool("proxy.accessLog")
	c.Proxy.DirectHTTP1 = v.GetBool("proxy.directHTTP1")
	c.Admin.Listen = v.GetString("admin.listen")
	c.Log.Format = v.GetString("log.format")
	c.Log.Level = v.GetString("log.level")
	c.Instance = v.GetString("instance")
	c.LockFile = v.GetString("lockFile")

	if lo, hi, err := parseRange(v.GetString("pods.portRange")); err != nil {
		errs = append(errs, fmt.Errorf("pods.portRange: %w", err))
	} else {
		c.Pods.PortRange = [2]int{lo, hi}
	}
	for _, s := range v.GetStringSlice("proxy.trustedProxies") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("proxy.trustedProxies: %q is neither a CIDR nor an IP address", s))
				continue
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.Proxy.TrustedProxies = append(c.Proxy.TrustedProxies, pfx)
	}
	if c.Pods.Network != "host" && c.Pods.Network != "cni" {
		errs = append(errs, fmt.Errorf("pods.network: %q is not host or cni", c.Pods.Network))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q is not text or json", c.Log.Format))
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, fmt.Errorf("log.level: %w", err))
	}
	if !strings.HasPrefix(c.Runtime.Endpoint, "unix://") {
		errs = append(errs, fmt.Errorf("runtime.endpoint: %q must be a unix:// socket address", c.Runtime.Endpoint))
	}
	if c.Instance == "" {
		errs = append(errs, errors.New("instance: must not be empty"))
	} else if msgs := validation.IsValidLabelValue(c.Instance); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("instance: %q is not a valid label value: %s", c.Instance, strings.Join(msgs, "; ")))
	}
	for _, l := range []struct {
		key, addr string
		emptyOK   bool
	}{
		{"proxy.listen", c.Proxy.Listen, true},
		{"proxy.tlsListen", c.Proxy.TLSListen, true},
		{"admin.listen", c.Admin.Listen, false},
	} {
		if err := checkListen(l.addr, l.emptyOK); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.key, err))
		}
	}
	if err := (prober.Options{AllowedHosts: c.Probes.AllowedHosts}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("probes.allowedHosts: %w", err))
	}
	if parsed["runtime.callTimeout"] && c.Runtime.CallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("runtime.callTimeout: %s must be positive", c.Runtime.CallTimeout))
	}
	if parsed["backoff.initial"] && c.Backoff.Initial <= 0 {
		errs = append(errs, fmt.Errorf("backoff.initial: %s must be positive", c.Backoff.Initial))
	} else if parsed["backoff.initial"] && parsed["backoff.max"] && c.Backoff.Max < c.Backoff.Initial {
		errs = append(errs, fmt.Errorf("backoff.max: %s is less than backoff.initial (%s)",
			c.Backoff.Max, c.Backoff.Initial))
	}
	return c, errors.Join(errs...)
}

// parseDuration takes a duration with its unit ("10s", "250ms"). A bare
// number is refused: it is ambiguous between seconds and nanoseconds.
func parseDuration(raw any) (time.Duration, error) {
	switch val := raw.(type) {
	case time.Duration:
		return val, nil
	case string:
		s := strings.TrimSpace(val)
		if _, err := strconv.ParseFloat(s, 64); err == nil {
			return 0, fmt.Errorf("%q has no unit: write it with one, for example \"%ss\"", s, s)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"10s\" or \"250ms\"", s)
		}
		return d, nil
	case int, int64, float64, uint, uint64, int32:
		return 0, fmt.Errorf("%v has no unit: write it as a string with one, for example \"%vs\"", val, val)
	default:
		return 0, fmt.Errorf("%v is not a duration such as \"10s\"", val)
	}
}

// checkListen accepts what net.Listen takes for a TCP address with a
// numeric port: "host:port", ":port", "[v6]:port", with port 0 to 65535.
// Empty is accepted only when emptyOK.
func checkListen(addr string, emptyOK bool) error {
	if addr == "" {
		if emptyOK {
			return nil
		}
		return errors.New("must not be empty")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q: %s", addr, ae.Err)
		}
		return fmt.Errorf("%q: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

func parseRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a port range such as \"20000-29999\"", s)
	}
	return lo, hi, nil
}

// containerdAddress is the plain socket path for containerd's own API, or
// "" when disabled.
func (c *Config) containerdAddress() string {
	switch c.Runtime.Containerd {
	case "none":
		return ""
	case "":
		return strings.TrimPrefix(c.Runtime.Endpoint, "unix://")
	default:
		return strings.TrimPrefix(c.Runtime.Containerd, "unix://")
	}
}

func (c *Config) lockPath() string {
	if c.LockFile != "" {
		return c.LockFile
	}
	name := strings.NewReplacer("/", "_", ":", "_").Replace(strings.TrimPrefix(c.Runtime.Endpoint, "unix://"))
	return "/run/vigil/" + strings.Trim(name, "_") + "." + c.Instance + ".lock"
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
