package main

import (
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/manifest"
	"github.com/vigil-agent/vigil/prober"
)

// check validates the manifests and prints one line per problem, each naming
// the file, the object and the field. It fails when there is any.
func check(out io.Writer, cfg *Config) error {
	set, err := manifest.Load(cfg.Manifests)
	if err != nil {
		return fmt.Errorf("--manifests: %w", err)
	}
	hosts, err := prober.NewHostPolicy(cfg.Probes.AllowedHosts)
	if err != nil {
		// loadConfig has validated the same entries.
		return fmt.Errorf("probes.allowedHosts: %w", err)
	}
	problems := append(set.Errors, probeHostErrors(set.Workloads, hosts)...)
	for _, e := range problems {
		fmt.Fprintln(out, e)
	}
	if n := len(problems); n > 0 {
		return fmt.Errorf("%d problem(s) in %s", n, cfg.Manifests)
	}
	fmt.Fprintf(out, "%s: %d workloads, %d services, %d ingresses, %d secrets: ok\n", cfg.Manifests,
		len(set.Workloads), len(set.Services), len(set.Ingresses), len(set.Secrets))
	return nil
}

// probeHostErrors reports the probe handlers whose host the prober would
// refuse at every run. The pod's own address is known only once it runs,
// so only loopback and the allowed hosts pass here.
func probeHostErrors(workloads []*manifest.Workload, hosts *prober.HostPolicy) []error {
	var errs []error
	for _, w := range workloads {
		spec := "spec."
		if w.Kind == "Deployment" {
			spec = "spec.template.spec."
		}
		for i, c := range w.Template.Spec.Containers {
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
			}{
				{"livenessProbe", c.LivenessProbe},
				{"readinessProbe", c.ReadinessProbe},
				{"startupProbe", c.StartupProbe},
			} {
				if p.probe == nil {
					continue
				}
				var handler, host string
				switch h := p.probe.ProbeHandler; {
				case h.HTTPGet != nil:
					handler, host = "httpGet", h.HTTPGet.Host
				case h.TCPSocket != nil:
					handler, host = "tcpSocket", h.TCPSocket.Host
				}
				if host == "" || hosts.Allowed(host, "") {
					continue
				}
				errs = append(errs, &manifest.Error{
					File:   w.File,
					Object: fmt.Sprintf("%s %s/%s", w.Kind, w.Namespace, w.Name),
					Field:  fmt.Sprintf("%scontainers[%d].%s.%s.host", spec, i, p.name, handler),
					Reason: fmt.Sprintf("%q is not the pod's address nor loopback, and not in "+
						"probes.allowedHosts: the prober would refuse it", host),
				})
			}
		}
	}
	return errs
}
