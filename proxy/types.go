package proxy

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Config is the routing input taken from manifests.
type Config struct {
	Ingresses []*networkingv1.Ingress
	Services  []*corev1.Service
	// Secrets of type kubernetes.io/tls referenced by Ingress TLS entries.
	Secrets []*corev1.Secret
}

// Endpoint is one backend address of a Service port.
type Endpoint struct {
	// Address is host:port as dialled.
	Address   string
	Namespace string
	Pod       string
	Container string
}

// ServiceEndpoints lists the ready endpoints of one Service, keyed by the
// Service port number (ServicePort.Port).
type ServiceEndpoints struct {
	Namespace, Name string
	Ports           map[int32][]Endpoint
}
