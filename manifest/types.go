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
