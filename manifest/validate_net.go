package manifest

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateService(s *corev1.Service) field.ErrorList {
	// Service names become DNS labels (<name>.<namespace>.svc).
	errs := validateMeta(&s.ObjectMeta, validation.IsDNS1123Label)
	spec := field.NewPath("spec")

	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	case corev1.ServiceTypeExternalName:
		errs = append(errs, field.Forbidden(spec.Child("type"), "ExternalName Services are not supported by vigil"))
	default:
		errs = append(errs, field.NotSupported(spec.Child("type"), s.Spec.Type, []corev1.ServiceType{
			corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer}))
	}
	errs = append(errs, metavalidation.ValidateLabels(s.Spec.Selector, spec.Child("selector"))...)

	ports := spec.Child("ports")
	if len(s.Spec.Ports) == 0 {
		errs = append(errs, field.Required(ports, "at least one port is required"))
	}
	names := sets.New[string]()
	seen := sets.New[string]()
	for i, p := range s.Spec.Ports {
		pp := ports.Index(i)
		switch {
		case p.Name == "" && len(s.Spec.Ports) > 1:
			errs = append(errs, field.Required(pp.Child("name"), "is required when the Service has more than one port"))
		case p.Name != "":
			errs = append(errs, invalidMsgs(pp.Child("name"), p.Name, validation.IsDNS1123Label(p.Name))...)
			if names.Has(p.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names.Insert(p.Name)
		}
		for _, m := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, m))
		}
		if !validProtocol(p.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, supportedProtocols))
		}
		if key := fmt.Sprintf("%s/%d", p.Protocol, p.Port); seen.Has(key) {
			errs = append(errs, field.Duplicate(pp, key))
		} else {
			seen.Insert(key)
		}
		// A targetPort equal to port was defaulted or is already reported.
		if p.TargetPort != intstr.FromInt32(p.Port) {
			errs = append(errs, validateTargetPort(p.TargetPort, pp.Child("targetPort"))...)
		}
	}
	return errs
}

func validateTargetPort(tp intstr.IntOrString, path *field.Path) field.ErrorList {
	if tp.Type == intstr.String {
		return invalidMsgs(path, tp.StrVal, validation.IsValidPortName(tp.StrVal))
	}
	var errs field.ErrorList
	for _, m := range validation.IsValidPortNum(int(tp.IntVal)) {
		errs = append(errs, field.Invalid(path, tp.IntVal, m))
	}
	return errs
}

func validateSecret(s *corev1.Secret) field.ErrorList {
	errs := validateMeta(&s.ObjectMeta, validation.IsDNS1123Subdomain)
	data := field.NewPath("data")
	for k := range s.Data {
		errs = append(errs, invalidMsgs(data.Key(k), k, validation.IsConfigMapKey(k))...)
	}
	if s.Type != corev1.SecretTypeTLS {
		return errs
	}

	crt, okCrt := s.Data[corev1.TLSCertKey]
	key, okKey := s.Data[corev1.TLSPrivateKeyKey]
	if !okCrt {
		errs = append(errs, field.Required(data.Key(corev1.TLSCertKey), ""))
	}
	if !okKey {
		errs = append(errs, field.Required(data.Key(corev1.TLSPrivateKeyKey), ""))
	}
	if okCrt && okKey {
		if _, err := tls.X509KeyPair(crt, key); err != nil {
			errs = append(errs, field.Invalid(data, "",
				"tls.crt and tls.key do not form a key pair: "+err.Error()))
		}
	}
	return errs
}

// Ingress rules follow pkg/apis/networking/validation.

// invalidPathSequences may not appear in an Exact or Prefix path: they would
// make the matched path differ from the one the backend sees.
var invalidPathSequences = []string{"//", "/./", "/../", "%2f", "%2F"}

var invalidPathSuffixes = []string{"/..", "/."}

func validateIngress(ing *networkingv1.Ingress) field.ErrorList {
	errs := validateMeta(&ing.ObjectMeta, validation.IsDNS1123Subdomain)
	spec := field.NewPath("spec")
	if len(ing.Spec.Rules) == 0 && ing.Spec.DefaultBackend == nil {
		errs = append(errs, field.Invalid(spec, "", "either `defaultBackend` or `rules` must be specified"))
	}
	if ing.Spec.DefaultBackend != nil {
		errs = append(errs, validateBackend(ing.Spec.DefaultBackend, spec.Child("defaultBackend"))...)
	}
	if c := ing.Spec.IngressClassName; c != nil {
		errs = append(errs, invalidMsgs(spec.Child("ingressClassName"), *c, validation.IsDNS1123Subdomain(*c))...)
	}

	for i, r := range ing.Spec.Rules {
		rp := spec.Child("rules").Index(i)
		if r.Host != "" {
			errs = append(errs, validateHost(r.Host, rp.Child("host"))...)
		}
		if r.HTTP == nil {
			// A rule without http routes nothing; the API server allows it.
			continue
		}
		paths := rp.Child("http", "paths")
		if len(r.HTTP.Paths) == 0 {
			errs = append(errs, field.Required(paths, ""))
		}
		for j := range r.HTTP.Paths {
			errs = append(errs, validateIngressPath(&r.HTTP.Paths[j], paths.Index(j))...)
		}
	}

	for i, t := range ing.Spec.TLS {
		tp := spec.Child("tls").Index(i)
		for j, h := range t.Hosts {
			errs = append(errs, validateHost(h, tp.Child("hosts").Index(j))...)
		}
		if t.SecretName == "" {
			errs = append(errs, field.Required(tp.Child("secretName"), "vigil has no default certificate"))
		} else {
			errs = append(errs, invalidMsgs(tp.Child("secretName"), t.SecretName,
				validation.IsDNS1123Subdomain(t.SecretName))...)
		}
	}
	return errs
}

// validateHost accepts a DNS-1123 subdomain or one with a single leading
// "*." label; a bare "*" and IP addresses are invalid.
func validateHost(host string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if isIPLike(host) {
		errs = append(errs, field.Invalid(path, host, "must be a DNS name, not an IP address"))
	}
	if strings.Contains(host, "*") {
		return append(errs, invalidMsgs(path, host, validation.IsWildcardDNS1123Subdomain(host))...)
	}
	return append(errs, invalidMsgs(path, host, validation.IsDNS1123Subdomain(host))...)
}

// isIPLike also catches dotted quads with leading zeros, which net.ParseIP
// rejects but older parsers read as IPv4.
func isIPLike(host string) bool {
	if net.ParseIP(host) != nil {
		return true
	}
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func validateIngressPath(p *networkingv1.HTTPIngressPath, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	pathField := path.Child("path")
	switch {
	case p.PathType == nil:
		errs = append(errs, field.Required(path.Child("pathType"), "pathType must be specified"))
	case *p.PathType == networkingv1.PathTypeExact || *p.PathType == networkingv1.PathTypePrefix:
		if !strings.HasPrefix(p.Path, "/") {
			errs = append(errs, field.Invalid(pathField, p.Path, "must be an absolute path"))
		}
		for _, seq := range invalidPathSequences {
			if strings.Contains(p.Path, seq) {
				errs = append(errs, field.Invalid(pathField, p.Path, "must not contain '"+seq+"'"))
			}
		}
		for _, suf := range invalidPathSuffixes {
			if strings.HasSuffix(p.Path, suf) {
				errs = append(errs, field.Invalid(pathField, p.Path, "cannot end with '"+suf+"'"))
			}
		}
	case *p.PathType == networkingv1.PathTypeImplementationSpecific:
		if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
			errs = append(errs, field.Invalid(pathField, p.Path, "must be an absolute path"))
		}
	default:
		errs = append(errs, field.NotSupported(path.Child("pathType"), *p.PathType, []networkingv1.PathType{
			networkingv1.PathTypeExact, networkingv1.PathTypePrefix, networkingv1.PathTypeImplementationSpecific}))
	}
	return append(errs, validateBackend(&p.Backend, path.Child("backend"))...)
}

func validateBackend(b *networkingv1.IngressBackend, path *field.Path) field.ErrorList {
	switch {
	case b.Resource != nil && b.Service != nil:
		return field.ErrorList{field.Invalid(path, "", "cannot set both resource and service backends")}
	case b.Resource != nil:
		return field.ErrorList{field.Forbidden(path.Child("resource"), "resource backends are not supported by vigil")}
	case b.Service == nil:
		return field.ErrorList{field.Required(path.Child("service"), "a service backend is required")}
	}

	var errs field.ErrorList
	svc := path.Child("service")
	if b.Service.Name == "" {
		errs = append(errs, field.Required(svc.Child("name"), ""))
	} else {
		errs = append(errs, invalidMsgs(svc.Child("name"), b.Service.Name, validation.IsDNS1123Label(b.Service.Name))...)
	}
	port := b.Service.Port
	switch {
	case port.Name != "" && port.Number != 0:
		errs = append(errs, field.Invalid(svc.Child("port"), "", "cannot set both port name & port number"))
	case port.Name != "":
		errs = append(errs, invalidMsgs(svc.Child("port", "name"), port.Name, validation.IsValidPortName(port.Name))...)
	case port.Number != 0:
		for _, m := range validation.IsValidPortNum(int(port.Number)) {
			errs = append(errs, field.Invalid(svc.Child("port", "number"), port.Number, m))
		}
	default:
		errs = append(errs, field.Required(svc.Child("port"), "port name or number is required"))
	}
	return errs
}
