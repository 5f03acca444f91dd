// Package manifest loads Kubernetes objects from a directory of manifest
// files, applies the API server's defaults to the fields vigil uses and
// validates them. A bad document or object is reported as an *Error naming
// its file, object and field, and left out; the rest of the directory still
// loads.
//
// # Input
//
// Load reads the *.yaml, *.yml and *.json files directly inside a directory
// (not its subdirectories), in name order, skipping hidden files. A YAML file
// may hold several documents separated by "---"; empty documents are
// ignored. Documents are numbered from 1 in each file, counting empty ones, so
// "document 3" is the third document of its file. A v1 List is unpacked and
// its items are named "document N item M" (items numbered from 0).
//
// Recognised kinds: apps/v1 Deployment, v1 Pod, v1 Service, v1 Secret and
// networking.k8s.io/v1 Ingress. Decoding is strict: an unknown or duplicated
// field rejects the object, which is still validated so that all its errors
// are listed together. Any other kind or apiVersion is rejected.
//
// An object is identified by kind, namespace and name. When the same identity
// appears twice, the later one (in file order, then document order) is
// rejected, whether or not the first one was valid.
//
// # Defaults
//
// Defaults follow the API server (pkg/apis/core/v1/defaults.go) for the fields
// vigil reads, with these deviations:
//
//   - Deployment strategy: RollingUpdate with maxSurge 1 and maxUnavailable 0
//     when unset (the API server uses 25%/25%). A node runs few replicas, and
//     taking one down before its replacement is ready would be an outage.
//     Values the user sets, integer or percent, are kept; a user-set
//     maxSurge of 0 with maxUnavailable unset gets maxUnavailable 1, since
//     0/0 is invalid.
//   - imagePullPolicy: IfNotPresent when unset, even for ":latest" or
//     untagged images (the API server says Always). Vigil does not assume a
//     registry is reachable.
//   - httpGet scheme is upper-cased after a case-insensitive check, as the
//     kubelet accepts "https" as well as "HTTPS".
//
// The rest: namespace "default"; Deployment replicas 1; restartPolicy Always;
// terminationGracePeriodSeconds 30; container port protocol TCP; probe
// timeoutSeconds 1, periodSeconds 10, successThreshold 1, failureThreshold 3
// (zero means default); httpGet path "/" and scheme HTTP; env fieldRef
// apiVersion v1; Service type ClusterIP, port protocol TCP, targetPort equal
// to port; Secret stringData merged into data.
//
// # Validation
//
// Validation follows pkg/apis/core/validation and
// pkg/apis/networking/validation for the fields vigil uses, and rejects what
// vigil cannot honour rather than ignoring it silently:
//
//   - initContainers, ephemeralContainers and envFrom are not supported.
//   - env valueFrom supports only fieldRef with metadata.name,
//     metadata.namespace, metadata.uid, status.podIP or status.hostIP.
//   - A probe's httpGet or tcpSocket port given by name must name one of the
//     container's ports (the kubelet finds that out only when probing).
//   - Ingress resource backends are not supported; a tls entry needs a
//     secretName (vigil has no default certificate). ingressClassName is
//     checked for form and otherwise ignored: vigil serves every Ingress.
//   - Service types ClusterIP, NodePort and LoadBalancer are accepted and all
//     served the same way; ExternalName is rejected. Service and Ingress
//     backend names must be DNS-1123 labels, as they become DNS names.
//
// Environment variable names follow the API server's relaxed rule (printable
// ASCII other than '='). A Service with an empty or missing selector selects
// no pods (the API server would leave its endpoints to be managed by hand,
// which vigil has no way to do). References between objects (Ingress to
// Service, Ingress to Secret) are not checked here: a missing target is a
// routing matter, not a manifest error.
//
// Secrets of type kubernetes.io/tls must hold tls.crt and tls.key that form a
// key pair; they are returned in Set.Secrets. Secrets of any other type are
// checked for their name only and then ignored: vigil has no use for them.
//
// # Probe timing overrides
//
// Kubernetes probes count in whole seconds. Vigil reads two annotations on
// the pod template (on a bare Pod, on the Pod) to set sub-second timings:
//
//	probe.vigil.dev/<container>.<kind>-period:  "250ms"
//	probe.vigil.dev/<container>.<kind>-timeout: "100ms"
//
// where kind is liveness, readiness or startup and the value is a Go duration
// (time.ParseDuration). The period must be at least 10ms and the timeout
// positive. The container and its probe of that kind must exist. An override
// replaces periodSeconds or timeoutSeconds for that probe only. Annotations
// are free-form to the API server, so these manifests stay valid Kubernetes;
// any other key under probe.vigil.dev/ is rejected to catch typos. Because an
// annotation name is at most 63 characters, only containers with names of up
// to 45 characters can carry both overrides. ProbeOverrides reads the values.
package manifest
