package manifest

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Workload is a set of identical pods vigil keeps running: a Deployment, or a
// bare Pod (one replica, its own name).
type Workload struct {
	// Kind is "Deployment" or "Pod".
	Kind string
	// Namespace defaults to "default".
	Namespace string
	Name      string
	// Replicas is the desired pod count: spec.replicas (default 1) for a
	// Deployment, always 1 for a bare Pod.
	Replicas int32
	// Template is the pod template, defaulted and validated.
	Template corev1.PodTemplateSpec
	// Strategy is the Deployment's rollout strategy, defaulted to RollingUpdate
	// with maxSurge 1 and maxUnavailable 0 (see defaults.go); zero for bare
	// Pods.
	Strategy appsv1.DeploymentStrategy
	// Hash identifies the template's content (10 hex digits of the SHA-256 of
	// the defaulted template's JSON); a change means a rollout.
	Hash string
	// File is the manifest file the workload came from.
	File string
}

// Set is everything loaded from a manifests directory.
type Set struct {
	Workloads []*Workload
	Services  []*corev1.Service
	Ingresses []*networkingv1.Ingress
	Secrets   []*corev1.Secret
	// Errors lists every rejected document or object; each is an *Error.
	Errors []error
}

// Error is a rejected manifest object.
type Error struct {
	File   string // path of the manifest file
	Object string // "Kind namespace/name", or "document N" when undecodable
	Field  string // JSON path of the field, e.g. spec.template.spec.containers[0].livenessProbe.periodSeconds
	Reason string
}

func (e *Error) Error() string {
	s := e.File
	if e.Object != "" {
		s += ": " + e.Object
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Reason
}

// Key is an object's identity within a Set, in the form Error.Object uses:
// "Kind namespace/name".
func Key(kind, namespace, name string) string {
	return objectName(kind, namespace, name, "")
}

// Empty reports whether the set holds no object.
func (s *Set) Empty() bool {
	return len(s.Workloads)+len(s.Services)+len(s.Ingresses)+len(s.Secrets) == 0
}

// Each calls fn with the Key of every object in the set.
func (s *Set) Each(fn func(key string)) {
	s.each(func(key string, add func(*Set)) { fn(key) })
}

// Append adds to s the objects of o whose Key keep accepts.
func (s *Set) Append(o *Set, keep func(key string) bool) {
	o.each(func(key string, add func(*Set)) {
		if keep(key) {
			add(s)
		}
	})
}

// each calls fn for every object with its Key and a function that appends
// the object to another set.
func (s *Set) each(fn func(key string, add func(*Set))) {
	for _, wl := range s.Workloads {
		fn(Key(wl.Kind, wl.Namespace, wl.Name), func(d *Set) { d.Workloads = append(d.Workloads, wl) })
	}
	for _, o := range s.Services {
		fn(Key("Service", o.Namespace, o.Name), func(d *Set) { d.Services = append(d.Services, o) })
	}
	for _, o := range s.Ingresses {
		fn(Key("Ingress", o.Namespace, o.Name), func(d *Set) { d.Ingresses = append(d.Ingresses, o) })
	}
	for _, o := range s.Secrets {
		fn(Key("Secret", o.Namespace, o.Name), func(d *Set) { d.Secrets = append(d.Secrets, o) })
	}
}
