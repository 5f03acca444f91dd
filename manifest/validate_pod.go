package manifest

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validateMeta checks an object's name, namespace, labels and annotations.
// nameFn is the rule for this kind's names.
func validateMeta(m *metav1.ObjectMeta, nameFn func(string) []string) field.ErrorList {
	path := field.NewPath("metadata")
	var errs field.ErrorList
	if m.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	} else {
		errs = append(errs, invalidMsgs(path.Child("name"), m.Name, nameFn(m.Name))...)
	}
	errs = append(errs, invalidMsgs(path.Child("namespace"), m.Namespace,
		validation.IsDNS1123Label(m.Namespace))...)
	errs = append(errs, metavalidation.ValidateLabels(m.Labels, path.Child("labels"))...)
	errs = append(errs, apivalidation.ValidateAnnotations(m.Annotations, path.Child("annotations"))...)
	return errs
}

func validateDeployment(d *appsv1.Deployment) field.ErrorList {
	errs := validateMeta(&d.ObjectMeta, validation.IsDNS1123Subdomain)
	spec := field.NewPath("spec")
	errs = append(errs, nonNegative(spec.Child("replicas"), *d.Spec.Replicas)...)
	errs = append(errs, validateSelector(d.Spec.Selector, d.Spec.Template.Labels, spec)...)
	errs = append(errs, validateStrategy(&d.Spec.Strategy, spec.Child("strategy"))...)

	tpl := spec.Child("template")
	tplMeta := tpl.Child("metadata")
	errs = append(errs, metavalidation.ValidateLabels(d.Spec.Template.Labels, tplMeta.Child("labels"))...)
	errs = append(errs, apivalidation.ValidateAnnotations(d.Spec.Template.Annotations,
		tplMeta.Child("annotations"))...)
	errs = append(errs, validateOverrides(d.Spec.Template.Annotations, &d.Spec.Template.Spec,
		tplMeta.Child("annotations"))...)
	// A Deployment's pods always come back, so the API server allows only
	// Always here.
	errs = append(errs, validatePodSpec(&d.Spec.Template.Spec, tpl.Child("spec"), true)...)
	return errs
}

func validatePod(p *corev1.Pod) field.ErrorList {
	errs := validateMeta(&p.ObjectMeta, validation.IsDNS1123Subdomain)
	errs = append(errs, validateOverrides(p.Annotations, &p.Spec,
		field.NewPath("metadata", "annotations"))...)
	errs = append(errs, validatePodSpec(&p.Spec, field.NewPath("spec"), false)...)
	return errs
}

func validateSelector(sel *metav1.LabelSelector, tplLabels map[string]string, spec *field.Path) field.ErrorList {
	path := spec.Child("selector")
	if sel == nil {
		return field.ErrorList{field.Required(path, "")}
	}
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		return field.ErrorList{field.Invalid(path, "", "empty selector is invalid for a Deployment")}
	}
	errs := metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, path)
	if len(errs) > 0 {
		return errs
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return field.ErrorList{field.Invalid(path, "", err.Error())}
	}
	if !s.Matches(labels.Set(tplLabels)) {
		return field.ErrorList{field.Invalid(spec.Child("template", "metadata", "labels"), "",
			"`selector` does not match template `labels`")}
	}
	return nil
}

func validateStrategy(st *appsv1.DeploymentStrategy, path *field.Path) field.ErrorList {
	switch st.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if st.RollingUpdate != nil {
			return field.ErrorList{field.Forbidden(path.Child("rollingUpdate"),
				"may not be specified when strategy `type` is 'Recreate'")}
		}
		return nil
	case appsv1.RollingUpdateDeploymentStrategyType:
	default:
		return field.ErrorList{field.NotSupported(path.Child("type"), st.Type,
			[]appsv1.DeploymentStrategyType{appsv1.RecreateDeploymentStrategyType,
				appsv1.RollingUpdateDeploymentStrategyType})}
	}

	ru := path.Child("rollingUpdate")
	surge, unavail := *st.RollingUpdate.MaxSurge, *st.RollingUpdate.MaxUnavailable
	errs := validateIntOrPercent(surge, ru.Child("maxSurge"))
	errs = append(errs, validateIntOrPercent(unavail, ru.Child("maxUnavailable"))...)
	if len(errs) > 0 {
		return errs
	}
	if unavail.Type == intstr.String && percent(unavail.StrVal) > 100 {
		errs = append(errs, field.Invalid(ru.Child("maxUnavailable"), unavail.StrVal,
			"must not be greater than 100%"))
	}
	if isZero(surge) && isZero(unavail) {
		errs = append(errs, field.Invalid(ru.Child("maxUnavailable"), unavail.String(),
			"may not be 0 when `maxSurge` is 0"))
	}
	return errs
}

func validateIntOrPercent(v intstr.IntOrString, path *field.Path) field.ErrorList {
	if v.Type == intstr.String {
		return invalidMsgs(path, v.StrVal, validation.IsValidPercent(v.StrVal))
	}
	return nonNegative(path, v.IntVal)
}

// percent reads a string already checked by IsValidPercent.
func percent(s string) int {
	n := 0
	for _, r := range strings.TrimSuffix(s, "%") {
		n = n*10 + int(r-'0')
		if n > 1000 {
			break
		}
	}
	return n
}

func validatePodSpec(spec *corev1.PodSpec, path *field.Path, alwaysOnly bool) field.ErrorList {
	var errs field.ErrorList
	if len(spec.InitContainers) > 0 {
		errs = append(errs, field.Forbidden(path.Child("initContainers"),
			"init containers are not supported by vigil"))
	}
	if len(spec.EphemeralContainers) > 0 {
		errs = append(errs, field.Forbidden(path.Child("ephemeralContainers"),
			"ephemeral containers are not supported by vigil"))
	}

	rp := path.Child("restartPolicy")
	switch {
	case alwaysOnly && spec.RestartPolicy != corev1.RestartPolicyAlways:
		errs = append(errs, field.NotSupported(rp, spec.RestartPolicy,
			[]corev1.RestartPolicy{corev1.RestartPolicyAlways}))
	case spec.RestartPolicy != corev1.RestartPolicyAlways &&
		spec.RestartPolicy != corev1.RestartPolicyOnFailure &&
		spec.RestartPolicy != corev1.RestartPolicyNever:
		errs = append(errs, field.NotSupported(rp, spec.RestartPolicy, []corev1.RestartPolicy{
			corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}))
	}
	errs = append(errs, nonNegative(path.Child("terminationGracePeriodSeconds"),
		*spec.TerminationGracePeriodSeconds)...)

	cpath := path.Child("containers")
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(cpath, "at least one container is required"))
	}
	names := sets.New[string]()
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if names.Has(c.Name) && c.Name != "" {
			errs = append(errs, field.Duplicate(cpath.Index(i).Child("name"), c.Name))
		}
		names.Insert(c.Name)
		errs = append(errs, validateContainer(c, cpath.Index(i))...)
	}
	return errs
}

var supportedProtocols = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}

func validProtocol(p corev1.Protocol) bool {
	return p == corev1.ProtocolTCP || p == corev1.ProtocolUDP || p == corev1.ProtocolSCTP
}

func validateContainer(c *corev1.Container, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	} else {
		errs = append(errs, invalidMsgs(path.Child("name"), c.Name, validation.IsDNS1123Label(c.Name))...)
	}
	if c.Image == "" {
		errs = append(errs, field.Required(path.Child("image"), ""))
	}
	// Defaulting filled an empty policy; anything else is as written.
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, field.NotSupported(path.Child("imagePullPolicy"), c.ImagePullPolicy,
			[]corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}))
	}
	errs = append(errs, validatePorts(c.Ports, path.Child("ports"))...)
	errs = append(errs, validateEnv(c.Env, path.Child("env"))...)
	if len(c.EnvFrom) > 0 {
		errs = append(errs, field.Forbidden(path.Child("envFrom"), "envFrom is not supported by vigil"))
	}
	errs = append(errs, validateProbe(c.LivenessProbe, probeLiveness, c, path.Child("livenessProbe"))...)
	errs = append(errs, validateProbe(c.ReadinessProbe, probeReadiness, c, path.Child("readinessProbe"))...)
	errs = append(errs, validateProbe(c.StartupProbe, probeStartup, c, path.Child("startupProbe"))...)
	return errs
}

func validatePorts(ports []corev1.ContainerPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i, p := range ports {
		pp := path.Index(i)
		if p.Name != "" {
			errs = append(errs, invalidMsgs(pp.Child("name"), p.Name, validation.IsValidPortName(p.Name))...)
			if names.Has(p.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names.Insert(p.Name)
		}
		for _, m := range validation.IsValidPortNum(int(p.ContainerPort)) {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), p.ContainerPort, m))
		}
		if p.HostPort != 0 {
			for _, m := range validation.IsValidPortNum(int(p.HostPort)) {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), p.HostPort, m))
			}
		}
		if !validProtocol(p.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, supportedProtocols))
		}
	}
	return errs
}

// supportedFieldRefs are the pod fields vigil can put into the environment.
var supportedFieldRefs = []string{
	"metadata.name", "metadata.namespace", "metadata.uid", "status.podIP", "status.hostIP",
}

func validateEnv(env []corev1.EnvVar, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, e := range env {
		ep := path.Index(i)
		// The API server applies the relaxed rule since
		// RelaxedEnvironmentVariableValidation went GA.
		if e.Name == "" {
			errs = append(errs, field.Required(ep.Child("name"), ""))
		} else {
			errs = append(errs, invalidMsgs(ep.Child("name"), e.Name, validation.IsRelaxedEnvVarName(e.Name))...)
		}
		if e.ValueFrom == nil {
			continue
		}
		vf := ep.Child("valueFrom")
		if e.Value != "" {
			errs = append(errs, field.Invalid(vf, "", "may not be specified when `value` is not empty"))
		}
		if e.ValueFrom.FieldRef == nil {
			errs = append(errs, field.Forbidden(vf, "vigil supports only fieldRef ("+
				strings.Join(supportedFieldRefs, ", ")+"); secretKeyRef, configMapKeyRef, "+
				"resourceFieldRef and fileKeyRef are not supported"))
			continue
		}
		ref := e.ValueFrom.FieldRef
		if ref.APIVersion != "v1" {
			errs = append(errs, field.NotSupported(vf.Child("fieldRef", "apiVersion"), ref.APIVersion,
				[]string{"v1"}))
		}
		if !sets.New(supportedFieldRefs...).Has(ref.FieldPath) {
			errs = append(errs, field.NotSupported(vf.Child("fieldRef", "fieldPath"), ref.FieldPath,
				supportedFieldRefs))
		}
	}
	return errs
}

// Probe kinds as they appear in ProbeOverrides and the override annotations.
const (
	probeLiveness  = "liveness"
	probeReadiness = "readiness"
	probeStartup   = "startup"
)

func validateProbe(p *corev1.Probe, kind string, c *corev1.Container, path *field.Path) field.ErrorList {
	if p == nil {
		return nil
	}
	errs := validateHandler(&p.ProbeHandler, c, path)
	errs = append(errs, nonNegative(path.Child("initialDelaySeconds"), p.InitialDelaySeconds)...)
	errs = append(errs, nonNegative(path.Child("timeoutSeconds"), p.TimeoutSeconds)...)
	errs = append(errs, nonNegative(path.Child("periodSeconds"), p.PeriodSeconds)...)
	errs = append(errs, nonNegative(path.Child("successThreshold"), p.SuccessThreshold)...)
	errs = append(errs, nonNegative(path.Child("failureThreshold"), p.FailureThreshold)...)

	// Liveness and startup act on the first success, so a higher threshold
	// would mean nothing.
	if kind != probeReadiness && p.SuccessThreshold > 0 && p.SuccessThreshold != 1 {
		errs = append(errs, field.Invalid(path.Child("successThreshold"), p.SuccessThreshold, "must be 1"))
	}
	if g := p.TerminationGracePeriodSeconds; g != nil {
		gp := path.Child("terminationGracePeriodSeconds")
		switch {
		case kind == probeReadiness:
			// A failing readiness probe never kills, so a grace period is moot.
			errs = append(errs, field.Invalid(gp, *g, "must not be set for readinessProbes"))
		case *g < 1:
			errs = append(errs, field.Invalid(gp, *g, "must be greater than or equal to 1"))
		}
	}
	return errs
}

func validateHandler(h *corev1.ProbeHandler, c *corev1.Container, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	set := 0
	check := func(present bool, name string, validate func(*field.Path) field.ErrorList) {
		if !present {
			return
		}
		set++
		if set > 1 {
			errs = append(errs, field.Forbidden(path.Child(name), "may not specify more than 1 handler type"))
			return
		}
		errs = append(errs, validate(path.Child(name))...)
	}

	check(h.Exec != nil, "exec", func(p *field.Path) field.ErrorList {
		if len(h.Exec.Command) == 0 {
			return field.ErrorList{field.Required(p.Child("command"), "")}
		}
		return nil
	})
	check(h.HTTPGet != nil, "httpGet", func(p *field.Path) field.ErrorList {
		return validateHTTPGet(h.HTTPGet, c, p)
	})
	check(h.TCPSocket != nil, "tcpSocket", func(p *field.Path) field.ErrorList {
		return validateProbePort(h.TCPSocket.Port, c, p.Child("port"))
	})
	check(h.GRPC != nil, "grpc", func(p *field.Path) field.ErrorList {
		var errs field.ErrorList
		for _, m := range validation.IsValidPortNum(int(h.GRPC.Port)) {
			errs = append(errs, field.Invalid(p.Child("port"), h.GRPC.Port, "invalid port number: "+m))
		}
		return errs
	})
	if set == 0 {
		errs = append(errs, field.Required(path, "must specify a handler type (exec, httpGet, tcpSocket or grpc)"))
	}
	return errs
}

func validateHTTPGet(h *corev1.HTTPGetAction, c *corev1.Container, path *field.Path) field.ErrorList {
	errs := validateProbePort(h.Port, c, path.Child("port"))
	// Defaulting upper-cased a valid scheme; anything else is left as written.
	if h.Scheme != corev1.URISchemeHTTP && h.Scheme != corev1.URISchemeHTTPS {
		errs = append(errs, field.NotSupported(path.Child("scheme"), h.Scheme,
			[]corev1.URIScheme{corev1.URISchemeHTTP, corev1.URISchemeHTTPS}))
	}
	for i, hdr := range h.HTTPHeaders {
		errs = append(errs, invalidMsgs(path.Child("httpHeaders").Index(i).Child("name"), hdr.Name,
			validation.IsHTTPHeaderName(hdr.Name))...)
	}
	return errs
}

// validateProbePort checks a number, or a name that must be one of the
// container's ports: the kubelet resolves the name only when it probes, and
// a typo would otherwise surface as a failing probe and a restart loop.
func validateProbePort(port intstr.IntOrString, c *corev1.Container, path *field.Path) field.ErrorList {
	if port.Type == intstr.Int {
		var errs field.ErrorList
		for _, m := range validation.IsValidPortNum(int(port.IntVal)) {
			errs = append(errs, field.Invalid(path, port.IntVal, "invalid port number: "+m))
		}
		return errs
	}

	name := port.StrVal
	if msgs := validation.IsValidPortName(name); len(msgs) > 0 {
		return invalidMsgs(path, name, msgs)
	}
	var declared []string
	for _, p := range c.Ports {
		if p.Name == name {
			return nil
		}
		if p.Name != "" {
			declared = append(declared, p.Name)
		}
	}
	list := "none"
	if len(declared) > 0 {
		list = strings.Join(declared, ", ")
	}
	return field.ErrorList{field.Invalid(path, name,
		fmt.Sprintf("port %q not found among the container's ports (declared: %s)", name, list))}
}
