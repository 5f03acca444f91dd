package manifest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// pod wraps container fields (indented for a list item under containers)
// into a bare Pod named p.
func pod(container string) string {
	return `
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: app
      image: app:1
      ports: [{name: http, containerPort: 8080}]
` + container
}

func ingress(spec string) string {
	return `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i}
spec:
` + spec
}

// deploymentOnly is minimalDeployment without its Service.
var deploymentOnly = strings.SplitN(minimalDeployment, "---", 2)[0]

const svcBackend = `{service: {name: web, port: {number: 80}}}`

func TestValidationRules(t *testing.T) {
	const c0 = "spec.containers[0]."
	for _, tc := range []struct {
		desc, body    string
		field, reason string
	}{
		{"no handler", pod("      livenessProbe: {periodSeconds: 1}"),
			c0 + "livenessProbe", "must specify a handler type"},
		{"two handlers", pod("      livenessProbe: {exec: {command: [a]}, tcpSocket: {port: 1}}"),
			c0 + "livenessProbe.tcpSocket", "may not specify more than 1 handler type"},
		{"empty exec", pod("      startupProbe: {exec: {command: []}}"),
			c0 + "startupProbe.exec.command", "is required"},
		{"startup successThreshold", pod("      startupProbe: {exec: {command: [a]}, successThreshold: 3}"),
			c0 + "startupProbe.successThreshold", "must be 1"},
		{"negative failureThreshold", pod("      readinessProbe: {exec: {command: [a]}, failureThreshold: -2}"),
			c0 + "readinessProbe.failureThreshold", "must be greater than or equal to 0"},
		{"probe grace 0", pod("      livenessProbe: {exec: {command: [a]}, terminationGracePeriodSeconds: 0}"),
			c0 + "livenessProbe.terminationGracePeriodSeconds", "must be greater than or equal to 1"},
		{"port number out of range", pod("      livenessProbe: {httpGet: {port: 70000}}"),
			c0 + "livenessProbe.httpGet.port", "invalid port number"},
		{"tcp port name missing", pod("      livenessProbe: {tcpSocket: {port: metrics}}"),
			c0 + "livenessProbe.tcpSocket.port", `port "metrics" not found among the container's ports (declared: http)`},
		{"grpc port", pod("      livenessProbe: {grpc: {port: 0}}"),
			c0 + "livenessProbe.grpc.port", "invalid port number"},
		{"scheme", pod("      livenessProbe: {httpGet: {port: http, scheme: ftp}}"),
			c0 + "livenessProbe.httpGet.scheme", `unsupported value "ftp"`},
		{"header name", pod("      livenessProbe: {httpGet: {port: http, httpHeaders: [{name: 'a b', value: x}]}}"),
			c0 + "livenessProbe.httpGet.httpHeaders[0].name", "valid HTTP header"},
		{"env secretKeyRef", pod("      env: [{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}]"),
			c0 + "env[0].valueFrom", "vigil supports only fieldRef"},
		{"env fieldPath", pod("      env: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]"),
			c0 + "env[0].valueFrom.fieldRef.fieldPath", `unsupported value "spec.nodeName"`},
		{"env name", pod("      env: [{name: 'A=B', value: x}]"),
			c0 + "env[0].name", "printable ASCII characters other than '='"},
		{"envFrom", pod("      envFrom: [{configMapRef: {name: c}}]"),
			c0 + "envFrom", "not supported by vigil"},
		{"port name", pod("    - {name: b, image: b, ports: [{name: Web_1, containerPort: 80}]}"),
			"spec.containers[1].ports[0].name", "must contain only alpha-numeric"},
		{"duplicate port name", pod("    - {name: b, image: b, ports: [{name: w, containerPort: 80}, {name: w, containerPort: 81}]}"),
			"spec.containers[1].ports[1].name", `duplicate value "w"`},
		{"container port 0", pod("    - {name: b, image: b, ports: [{containerPort: 0}]}"),
			"spec.containers[1].ports[0].containerPort", "between 1 and 65535"},
		{"duplicate container", pod("    - {name: app, image: b}"),
			"spec.containers[1].name", `duplicate value "app"`},
		{"container name", pod("    - {name: B, image: b}"),
			"spec.containers[1].name", `"B": a lowercase RFC 1123 label`},
		{"image required", pod("    - {name: b}"), "spec.containers[1].image", "is required"},
		{"imagePullPolicy", pod("      imagePullPolicy: Nevr"), c0 + "imagePullPolicy",
			`unsupported value "Nevr": supported values: "Always", "IfNotPresent", "Never"`},
		{"imagePullPolicy is case-sensitive", pod("      imagePullPolicy: always"), c0 + "imagePullPolicy",
			`unsupported value "always"`},
		{"deployment imagePullPolicy", strings.Replace(deploymentOnly, "image: ", "imagePullPolicy: Nevr\n          image: ", 1),
			"spec.template.spec.containers[0].imagePullPolicy", `unsupported value "Nevr"`},
		{"protocol", pod("    - {name: b, image: b, ports: [{containerPort: 80, protocol: tcp}]}"),
			"spec.containers[1].ports[0].protocol", `unsupported value "tcp"`},
		{"host port range", pod("    - {name: b, image: b, ports: [{containerPort: 80, hostPort: 70000}]}"),
			"spec.containers[1].ports[0].hostPort", "between 1 and 65535"},
		{"container name too long", pod("    - {name: " + strings.Repeat("a", 64) + ", image: b}"),
			"spec.containers[1].name", "must be no more than 63 characters"},
		{"restartPolicy", pod("  restartPolicy: Sometimes"), "spec.restartPolicy", `unsupported value "Sometimes"`},
		{"initContainers", pod("  initContainers: [{name: i, image: i}]"), "spec.initContainers", "not supported"},
		{"pod name", strings.Replace(pod(""), "name: p", "name: P_1", 1), "metadata.name", `"P_1"`},
		{"namespace", strings.Replace(pod(""), "name: p", "name: p\n  namespace: a.b", 1),
			"metadata.namespace", `"a.b": must not contain dots`},

		{"override value", strings.Replace(pod("      readinessProbe: {tcpSocket: {port: http}}"), "name: p",
			"name: p\n  annotations: {probe.vigil.dev/app.readiness-period: fast}", 1),
			"metadata.annotations[probe.vigil.dev/app.readiness-period]", "must be a Go duration"},
		{"override period too short", strings.Replace(pod("      readinessProbe: {tcpSocket: {port: http}}"), "name: p",
			"name: p\n  annotations: {probe.vigil.dev/app.readiness-period: 5ms}", 1),
			"metadata.annotations[probe.vigil.dev/app.readiness-period]", "must be at least 10ms"},
		{"override timeout zero", strings.Replace(pod("      readinessProbe: {tcpSocket: {port: http}}"), "name: p",
			"name: p\n  annotations: {probe.vigil.dev/app.readiness-timeout: 0s}", 1),
			"metadata.annotations[probe.vigil.dev/app.readiness-timeout]", "must be greater than 0"},
		{"override without probe", strings.Replace(pod(""), "name: p",
			"name: p\n  annotations: {probe.vigil.dev/app.liveness-period: 1s}", 1),
			"metadata.annotations[probe.vigil.dev/app.liveness-period]", `container "app" has no livenessProbe`},
		{"override unknown container", strings.Replace(pod(""), "name: p",
			"name: p\n  annotations: {probe.vigil.dev/nope.liveness-period: 1s}", 1),
			"metadata.annotations[probe.vigil.dev/nope.liveness-period]", `container "nope" not found`},
		{"override unknown key", strings.Replace(pod(""), "name: p",
			"name: p\n  annotations: {probe.vigil.dev/app.liveness-delay: 1s}", 1),
			"metadata.annotations[probe.vigil.dev/app.liveness-delay]", "unknown vigil annotation"},

		{"deployment restartPolicy", strings.Replace(deploymentOnly, "      containers:",
			"      restartPolicy: Never\n      containers:", 1),
			"spec.template.spec.restartPolicy", `unsupported value "Never": supported values: "Always"`},
		{"selector mismatch", strings.Replace(deploymentOnly, "selector: {matchLabels: {app: app}}",
			"selector: {matchLabels: {app: other}}", 1),
			"spec.template.metadata.labels", "`selector` does not match template `labels`"},
		{"selector missing", strings.Replace(deploymentOnly, "  selector: {matchLabels: {app: app}}\n", "", 1),
			"spec.selector", "is required"},
		{"negative replicas", strings.Replace(deploymentOnly, "spec:\n  selector:", "spec:\n  replicas: -1\n  selector:", 1),
			"spec.replicas", "must be greater than or equal to 0"},
		{"both zero", strings.Replace(deploymentOnly, "spec:\n  selector:",
			"spec:\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0%}}\n  selector:", 1),
			"spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0"},

		{"service port name required", `
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{name: a, port: 1}, {port: 2}]}`, "spec.ports[1].name", "is required when the Service has more than one port"},
		{"service duplicate port name", `
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{name: a, port: 1}, {name: a, port: 2}]}`, "spec.ports[1].name", `duplicate value "a"`},
		{"service targetPort name", `
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 1, targetPort: "no_such"}]}`, "spec.ports[0].targetPort", `"no_such"`},
		{"service name is a label", `
apiVersion: v1
kind: Service
metadata: {name: a.b}
spec: {ports: [{port: 1}]}`, "metadata.name", "must not contain dots"},

		{"ingress empty", ingress("  tls: []"), "spec", "either `defaultBackend` or `rules` must be specified"},
		{"ingress resource backend", ingress("  defaultBackend: {resource: {kind: Bucket, name: b}}"),
			"spec.defaultBackend.resource", "resource backends are not supported by vigil"},
		{"ingress both backends", ingress("  defaultBackend: {resource: {kind: B, name: b}, service: {name: s, port: {number: 1}}}"),
			"spec.defaultBackend", "cannot set both resource and service backends"},
		{"ingress port both", ingress("  defaultBackend: {service: {name: s, port: {number: 1, name: http}}}"),
			"spec.defaultBackend.service.port", "cannot set both port name & port number"},
		{"ingress port none", ingress("  defaultBackend: {service: {name: s, port: {}}}"),
			"spec.defaultBackend.service.port", "port name or number is required"},
		{"ingress service name", ingress("  defaultBackend: {service: {port: {number: 1}}}"),
			"spec.defaultBackend.service.name", "is required"},
		{"ingress no paths", ingress("  rules: [{host: a.example, http: {paths: []}}]"),
			"spec.rules[0].http.paths", "is required"},
		{"tls secret name", ingress("  defaultBackend: " + svcBackend + "\n  tls: [{hosts: [a.example]}]"),
			"spec.tls[0].secretName", "vigil has no default certificate"},
		{"tls host", ingress("  defaultBackend: " + svcBackend + "\n  tls: [{hosts: ['*'], secretName: s}]"),
			"spec.tls[0].hosts[0]", "wildcard DNS-1123 subdomain"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			set := loadOne(t, tc.body)
			if len(set.Errors) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(set.Errors), set.Errors)
			}
			e := set.Errors[0].(*Error)
			if e.Field != tc.field || !strings.Contains(e.Reason, tc.reason) {
				t.Fatalf("got %s: %q, want %s: containing %q", e.Field, e.Reason, tc.field, tc.reason)
			}
			if n := len(set.Workloads) + len(set.Services) + len(set.Ingresses); n != 0 {
				t.Fatalf("rejected object still loaded (%d objects)", n)
			}
		})
	}
}

func TestValidEdgeCases(t *testing.T) {
	for _, tc := range []struct{ desc, body string }{
		{"case-insensitive scheme", pod("      livenessProbe: {httpGet: {port: http, scheme: Https}}")},
		{"readiness successThreshold 3", pod("      readinessProbe: {exec: {command: [a]}, successThreshold: 3}")},
		{"liveness probe grace", pod("      livenessProbe: {exec: {command: [a]}, terminationGracePeriodSeconds: 1}")},
		{"supported fieldRefs", pod("      env: [{name: A, valueFrom: {fieldRef: {fieldPath: status.podIP}}}, " +
			"{name: B, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}]")},
		{"other annotations ignored", strings.Replace(pod(""), "name: p",
			"name: p\n  annotations: {example.com/owner: me}", 1)},
		{"service without selector", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1}]}"},
		{"wildcard host", ingress("  rules: [{host: '*.example.com', http: {paths: [{path: /, pathType: Exact, backend: " +
			svcBackend + "}]}}]")},
		{"default backend only", ingress("  defaultBackend: " + svcBackend)},
		{"pull policies", pod("    - {name: b, image: b, imagePullPolicy: Always}\n" +
			"    - {name: c, image: c, imagePullPolicy: Never}\n    - {name: d, image: d, imagePullPolicy: IfNotPresent}")},
		{"opaque secret", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if set := loadOne(t, tc.body); len(set.Errors) != 0 {
				t.Fatalf("unexpected errors: %v", set.Errors)
			}
		})
	}
}

// selfSigned returns a PEM certificate and key for localhost.
func selfSigned(t *testing.T) (crt, key []byte) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestTLSSecret(t *testing.T) {
	crt, key := selfSigned(t)
	_, otherKey := selfSigned(t)
	b64 := base64.StdEncoding.EncodeToString
	secret := func(data string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ntype: kubernetes.io/tls\ndata:\n" + data
	}

	for _, tc := range []struct {
		desc, body    string
		field, reason string // empty field: valid
	}{
		{"good pair", secret("  tls.crt: " + b64(crt) + "\n  tls.key: " + b64(key)), "", ""},
		{"mismatched key", secret("  tls.crt: " + b64(crt) + "\n  tls.key: " + b64(otherKey)),
			"data", "tls.crt and tls.key do not form a key pair"},
		{"missing key", secret("  tls.crt: " + b64(crt)), "data[tls.key]", "is required"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			set := loadOne(t, tc.body)
			if tc.field == "" {
				if len(set.Errors) != 0 || len(set.Secrets) != 1 {
					t.Fatalf("errors %v, secrets %d; want a loaded secret", set.Errors, len(set.Secrets))
				}
				return
			}
			if len(set.Errors) != 1 || len(set.Secrets) != 0 {
				t.Fatalf("errors %v, secrets %d; want one error", set.Errors, len(set.Secrets))
			}
			if e := set.Errors[0].(*Error); e.Field != tc.field || !strings.Contains(e.Reason, tc.reason) {
				t.Fatalf("got %s: %q, want %s: %q", e.Field, e.Reason, tc.field, tc.reason)
			}
		})
	}

	// Other secret types are accepted and left out.
	if set := loadOne(t, "apiVersion: v1\nkind: Secret\nmetadata: {name: o}\nstringData: {a: b}"); len(set.Secrets) != 0 {
		t.Errorf("an Opaque secret was returned")
	}
}
