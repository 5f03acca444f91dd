// Package manifest loads Kubernetes objects from a directory of YAML files,
// applies the API server's defaults to the fields vigil uses and validates
// them. A bad object is reported with its file, object and field and left
// out; the rest of the directory still loads.
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
	Kind      string
	Namespace string
	Name      string
	Replicas  int32
	// Template is the pod template, defaulted and validated.
	Template corev1.PodTemplateSpec
	// Strategy is the Deployment's rollout strategy (defaulted: RollingUpdate,
	// maxSurge 1... see defaults.go); zero for bare Pods.
	Strategy appsv1.DeploymentStrategy
	// Hash identifies the template's content; a change means a rollout.
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
