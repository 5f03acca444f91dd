package manifest

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Defaults applied where the manifest leaves a field vigil uses unset. They
// match pkg/apis/core/v1/defaults.go except where the package doc says not.
const (
	DefaultReplicas                      int32 = 1
	DefaultTerminationGracePeriodSeconds int64 = 30
	DefaultProbeTimeoutSeconds           int32 = 1
	DefaultProbePeriodSeconds            int32 = 10
	DefaultProbeSuccessThreshold         int32 = 1
	DefaultProbeFailureThreshold         int32 = 3
)

// DefaultMaxSurge and DefaultMaxUnavailable are vigil's rolling update
// defaults: start one new pod before stopping an old one.
var (
	DefaultMaxSurge       = intstr.FromInt32(1)
	DefaultMaxUnavailable = intstr.FromInt32(0)
)

func defaultMeta(m *metav1.ObjectMeta) {
	if m.Namespace == "" {
		m.Namespace = metav1.NamespaceDefault
	}
}

func defaultDeployment(d *appsv1.Deployment) {
	defaultMeta(&d.ObjectMeta)
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = new(DefaultReplicas)
	}

	st := &d.Spec.Strategy
	if st.Type == "" {
		st.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if st.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if st.RollingUpdate == nil {
			st.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if st.RollingUpdate.MaxSurge == nil {
			st.RollingUpdate.MaxSurge = new(DefaultMaxSurge)
		}
		if st.RollingUpdate.MaxUnavailable == nil {
			st.RollingUpdate.MaxUnavailable = new(DefaultMaxUnavailable)
			// With no surge allowed, a rollout must take a pod down first;
			// vigil's default of 0 would make the strategy invalid.
			if isZero(*st.RollingUpdate.MaxSurge) {
				st.RollingUpdate.MaxUnavailable = new(intstr.FromInt32(1))
			}
		}
	}
	defaultPodSpec(&d.Spec.Template.Spec)
}

// isZero reports an int-or-percent of 0 or "0%".
func isZero(v intstr.IntOrString) bool {
	if v.Type == intstr.Int {
		return v.IntVal == 0
	}
	return v.StrVal == "0%"
}

func defaultPod(p *corev1.Pod) {
	defaultMeta(&p.ObjectMeta)
	defaultPodSpec(&p.Spec)
}

func defaultPodSpec(spec *corev1.PodSpec) {
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if spec.TerminationGracePeriodSeconds == nil {
		spec.TerminationGracePeriodSeconds = new(DefaultTerminationGracePeriodSeconds)
	}
	for i := range spec.Containers {
		defaultContainer(&spec.Containers[i])
	}
}

func defaultContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		// Deviation: the API server picks Always for ":latest"; see package doc.
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if ref := envFieldRef(&c.Env[i]); ref != nil && ref.APIVersion == "" {
			ref.APIVersion = "v1"
		}
	}
	defaultProbe(c.LivenessProbe)
	defaultProbe(c.ReadinessProbe)
	defaultProbe(c.StartupProbe)
}

func envFieldRef(e *corev1.EnvVar) *corev1.ObjectFieldSelector {
	if e.ValueFrom == nil {
		return nil
	}
	return e.ValueFrom.FieldRef
}

func defaultProbe(p *corev1.Probe) {
	if p == nil {
		return
	}
	// Zero means "use the default", as in the API server; negative values are
	// left for validation to reject.
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = DefaultProbeTimeoutSeconds
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = DefaultProbePeriodSeconds
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = DefaultProbeSuccessThreshold
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = DefaultProbeFailureThreshold
	}
	if h := p.HTTPGet; h != nil {
		if h.Path == "" {
			h.Path = "/"
		}
		if h.Scheme == "" {
			h.Scheme = corev1.URISchemeHTTP
		}
		// The kubelet compares the scheme case-insensitively; store one
		// spelling so consumers need not.
		if up := corev1.URIScheme(strings.ToUpper(string(h.Scheme))); up == corev1.URISchemeHTTP ||
			up == corev1.URISchemeHTTPS {
			h.Scheme = up
		}
	}
}

func defaultService(s *corev1.Service) {
	defaultMeta(&s.ObjectMeta)
	if s.Spec.Type == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		// The API server copies port into an unset targetPort.
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
}

func defaultSecret(s *corev1.Secret) {
	defaultMeta(&s.ObjectMeta)
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	// The API server folds stringData into data on write; stringData wins.
	if len(s.StringData) > 0 {
		if s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	}
}

func defaultIngress(ing *networkingv1.Ingress) {
	defaultMeta(&ing.ObjectMeta)
}
