package supervisor

import (
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/runtime"
)

// Labels and annotations vigil keeps on CRI objects. The sandbox carries what
// the pod was made from, each container its restart count and backoff, so a
// restarted vigil can adopt both.
const (
	LabelManaged      = "vigil.dev/managed"
	LabelInstance     = "vigil.dev/instance"
	LabelWorkloadKind = "vigil.dev/workload-kind"
	LabelWorkloadName = "vigil.dev/workload-name"
	LabelTemplateHash = "pod-template-hash"

	AnnotationTemplate  = "vigil.dev/template"
	AnnotationHostPorts = "vigil.dev/host-ports"
	AnnotationCreated   = "vigil.dev/created"
	// AnnotationRestartCount is the kubelet's own key.
	AnnotationRestartCount = "io.kubernetes.container.restartCount"
	AnnotationBackoff      = "vigil.dev/backoff"
	AnnotationBackoffSince = "vigil.dev/backoff-since"
)

func (p *pod) sandboxConfig() *cri.PodSandboxConfig {
	labels := map[string]string{}
	for k, v := range p.template.Labels {
		labels[k] = v
	}
	labels[runtime.LabelPodName] = p.name
	labels[runtime.LabelPodNamespace] = p.namespace
	labels[runtime.LabelPodUID] = p.uid
	labels[LabelManaged] = "true"
	labels[LabelInstance] = p.s.opts.Instance
	labels[LabelWorkloadKind] = p.workloadKind
	labels[LabelWorkloadName] = p.workloadName
	labels[LabelTemplateHash] = p.hash

	annotations := map[string]string{}
	for k, v := range p.template.Annotations {
		annotations[k] = v
	}
	tpl, _ := json.Marshal(p.template)
	annotations[AnnotationTemplate] = string(tpl)
	annotations[AnnotationCreated] = p.created.UTC().Format(time.RFC3339Nano)
	if p.hostPorts != nil {
		ports, _ := json.Marshal(p.hostPorts)
		annotations[AnnotationHostPorts] = string(ports)
	}

	network := cri.NamespaceMode_POD
	hostname := p.name
	if p.hostNetwork {
		// A pod in the node's network shares its UTS namespace too: the
		// runtime must not set a hostname.
		network = cri.NamespaceMode_NODE
		hostname = ""
	}
	return &cri.PodSandboxConfig{
		Metadata: &cri.PodSandboxMetadata{
			Name: p.name, Namespace: p.namespace, Uid: p.uid, Attempt: p.attempt,
		},
		Hostname:     hostname,
		LogDirectory: filepath.Join(p.s.opts.LogDir, p.namespace+"_"+p.name+"_"+p.uid),
		Labels:       labels,
		Annotations:  annotations,
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent: p.cgroupParent(),
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{
					Network: network, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD,
				},
			},
		},
	}
}

// cgroupParent is the pod's own cgroup under the configured parent, so that
// its directories can be found and removed with the pod.
func (p *pod) cgroupParent() string {
	if p.s.opts.CgroupParent == "" {
		return ""
	}
	return path.Join(p.s.opts.CgroupParent, "pod"+p.uid)
}

func (p *pod) containerConfig(c *container, restartCount int32, delay time.Duration, since time.Time) *cri.ContainerConfig {
	env := p.environment(c)
	annotations := map[string]string{
		AnnotationRestartCount: strconv.Itoa(int(restartCount)),
	}
	if delay > 0 {
		annotations[AnnotationBackoff] = delay.String()
		annotations[AnnotationBackoffSince] = since.UTC().Format(time.RFC3339Nano)
	}
	envs := make([]*cri.KeyValue, 0, len(env))
	lookup := map[string]string{}
	for _, kv := range env {
		envs = append(envs, &cri.KeyValue{Key: kv[0], Value: []byte(kv[1])})
		lookup[kv[0]] = kv[1]
	}
	return &cri.ContainerConfig{
		Metadata:   &cri.ContainerMetadata{Name: c.spec.Name, Attempt: uint32(restartCount)},
		Image:      &cri.ImageSpec{Image: c.spec.Image},
		Command:    expandAll(c.spec.Command, lookup),
		Args:       expandAll(c.spec.Args, lookup),
		WorkingDir: c.spec.WorkingDir,
		Envs:       envs,
		Labels: map[string]string{
			runtime.LabelPodName:       p.name,
			runtime.LabelPodNamespace:  p.namespace,
			runtime.LabelPodUID:        p.uid,
			runtime.LabelContainerName: c.spec.Name,
			LabelManaged:               "true",
			LabelInstance:              p.s.opts.Instance,
		},
		Annotations: annotations,
		LogPath:     filepath.Join(c.spec.Name, strconv.Itoa(int(restartCount))+".log"),
		Linux: &cri.LinuxContainerConfig{
			SecurityContext: &cri.LinuxContainerSecurityContext{
				NamespaceOptions: p.sandboxCfg.GetLinux().GetSecurityContext().GetNamespaceOptions(),
			},
		},
	}
}

// environment lists the container's variables in order: the host ports vigil
// assigned, then the spec's env with field references resolved and $(VAR)
// references expanded as the kubelet does.
func (p *pod) environment(c *container) [][2]string {
	var env [][2]string
	vars := map[string]string{}
	add := func(k, v string) {
		env = append(env, [2]string{k, v})
		vars[k] = v
	}
	if p.remap {
		for i, cp := range c.spec.Ports {
			port := strconv.Itoa(int(p.hostPorts[portKey(c.spec.Name, cp.ContainerPort)]))
			if i == 0 {
				add("PORT", port)
			}
			if cp.Name != "" {
				add("PORT_"+envName(cp.Name), port)
			}
		}
	}
	for _, e := range c.spec.Env {
		v := expand(e.Value, vars)
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v = p.fieldValue(e.ValueFrom.FieldRef.FieldPath)
		}
		add(e.Name, v)
	}
	return env
}

func (p *pod) fieldValue(path string) string {
	switch path {
	case "metadata.name":
		return p.name
	case "metadata.namespace":
		return p.namespace
	case "metadata.uid":
		return p.uid
	case "status.podIP":
		return p.podIP
	case "status.hostIP":
		return "127.0.0.1"
	case "spec.nodeName":
		return p.s.opts.NodeName
	}
	return ""
}

func envName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}

// expand replaces $(NAME) with the value of an earlier variable; $$ is a
// literal $, and unknown references stay as written, as in Kubernetes.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+end+1])
			}
			i += end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, vars map[string]string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, vars)
	}
	return out
}

func portKey(container string, port int32) string {
	return container + "/" + strconv.Itoa(int(port))
}

// allocatePorts gives every declared container port of the pod a host port.
func (p *pod) allocatePorts() error {
	var keys []string
	for _, c := range p.spec.Containers {
		for _, cp := range c.Ports {
			keys = append(keys, portKey(c.Name, cp.ContainerPort))
		}
	}
	got, err := p.s.ports.allocate(p.uid, len(keys))
	if err != nil {
		return err
	}
	p.hostPorts = make(map[string]int32, len(keys))
	for i, k := range keys {
		p.hostPorts[k] = got[i]
	}
	return nil
}

// reachable maps a declared container port to the port to dial.
func (p *pod) reachable(container string, port int32) int32 {
	if !p.remap {
		return port
	}
	if hp, ok := p.hostPorts[portKey(container, port)]; ok {
		return hp
	}
	return port
}

// portMaps returns c's port names and declared numbers mapped to the ports
// to dial, for its probes.
func (p *pod) portMaps(c *container) (named map[string]int32, numbered map[int32]int32) {
	named = map[string]int32{}
	numbered = map[int32]int32{}
	for _, cp := range c.spec.Ports {
		hp := p.reachable(c.spec.Name, cp.ContainerPort)
		numbered[cp.ContainerPort] = hp
		if cp.Name != "" {
			named[cp.Name] = hp
		}
	}
	return named, numbered
}

// targetPort resolves a Service targetPort (number or container port name)
// against this pod's containers.
func (p *pod) targetPort(tp intstr.IntOrString) (port int32, container string, ok bool) {
	for _, c := range p.spec.Containers {
		for _, cp := range c.Ports {
			if tp.Type == intstr.String && cp.Name == tp.StrVal ||
				tp.Type == intstr.Int && cp.ContainerPort == tp.IntVal {
				return p.reachable(c.Name, cp.ContainerPort), c.Name, true
			}
		}
	}
	if tp.Type == intstr.Int && tp.IntVal > 0 {
		return tp.IntVal, "", true // a port the pod serves without declaring it
	}
	return 0, "", false
}

// addresses lists the pod's dialled addresses, for draining.
func (p *pod) addresses() []string {
	var out []string
	for _, c := range p.spec.Containers {
		for _, cp := range c.Ports {
			out = append(out, fmt.Sprintf("%s:%d", p.podIP, p.reachable(c.Name, cp.ContainerPort)))
		}
	}
	return out
}

// selects reports whether the Service's selector picks this pod.
func selects(svc *corev1.Service, p *pod) bool {
	if svc.Namespace != p.namespace || len(svc.Spec.Selector) == 0 {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if p.template.Labels[k] != v {
			return false
		}
	}
	return true
}
