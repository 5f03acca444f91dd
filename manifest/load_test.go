package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// where identifies an error by the three things a user needs to find it.
type where struct{ file, object, field string }

func errorsWhere(t *testing.T, errs []error) []where {
	t.Helper()
	var out []where
	for _, err := range errs {
		var me *Error
		if !errors.As(err, &me) {
			t.Fatalf("error %v is not a *manifest.Error", err)
		}
		out = append(out, where{filepath.Base(me.File), me.Object, me.Field})
	}
	return out
}

func TestLoadGoodDirectory(t *testing.T) {
	set, err := Load("testdata/good")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Errors) != 0 {
		t.Fatalf("unexpected errors: %v", set.Errors)
	}

	var got []string
	for _, w := range set.Workloads {
		got = append(got, w.Kind+" "+w.Namespace+"/"+w.Name)
	}
	want := []string{"Deployment default/web", "Deployment default/api", "Pod tools/debug"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("workloads = %v, want %v (file order; hidden files skipped)", got, want)
	}

	web, api, debug := set.Workloads[0], set.Workloads[1], set.Workloads[2]
	for _, tc := range []struct {
		desc      string
		got, want any
	}{
		{"web replicas", web.Replicas, int32(2)},
		{"api replicas default", api.Replicas, int32(1)},
		{"bare pod replicas", debug.Replicas, int32(1)},
		{"bare pod restartPolicy kept", debug.Template.Spec.RestartPolicy, corev1.RestartPolicyNever},
		{"web file", filepath.Base(web.File), "10-web.yaml"},
		{"web env fieldRef apiVersion", web.Template.Spec.Containers[0].Env[0].ValueFrom.FieldRef.APIVersion, "v1"},
		{"api https scheme normalised", api.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Scheme,
			corev1.URISchemeHTTPS},
		{"api :latest pull policy", api.Template.Spec.Containers[0].ImagePullPolicy, corev1.PullIfNotPresent},
		{"bare pod has no strategy", debug.Strategy.Type, appsv1.DeploymentStrategyType("")},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.desc, tc.got, tc.want)
		}
	}

	if len(set.Services) != 2 || set.Services[0].Name != "web" || set.Services[1].Name != "api" {
		t.Fatalf("services = %v", set.Services)
	}
	if tp := set.Services[0].Spec.Ports[0].TargetPort; tp != intstr.FromString("http") {
		t.Errorf("web targetPort = %v, want http (as written)", tp)
	}
	if tp := set.Services[1].Spec.Ports[0].TargetPort; tp != intstr.FromInt32(9090) {
		t.Errorf("api targetPort = %v, want 9090 (defaulted from port)", tp)
	}

	if len(set.Ingresses) != 1 {
		t.Fatalf("ingresses = %d, want 1", len(set.Ingresses))
	}
	rule := set.Ingresses[0].Spec.Rules[0]
	if rule.Host != "localhost" || len(rule.HTTP.Paths) != 2 {
		t.Fatalf("ingress rule = %+v", rule)
	}
	for i, want := range []struct{ path, svc string }{{"/", "web"}, {"/api", "api"}} {
		p := rule.HTTP.Paths[i]
		if p.Path != want.path || p.Backend.Service.Name != want.svc || *p.PathType != networkingv1.PathTypePrefix {
			t.Errorf("path %d = %s -> %s (%v), want %s -> %s Prefix", i, p.Path,
				p.Backend.Service.Name, *p.PathType, want.path, want.svc)
		}
	}
}

func TestLoadBadDirectory(t *testing.T) {
	set, err := Load("testdata/bad")
	if err != nil {
		t.Fatal(err)
	}

	const (
		c0   = "spec.template.spec.containers[0]."
		pths = "spec.rules[0].http.paths"
	)
	want := []struct {
		where
		reason string // a substring of Reason; empty to skip
	}{
		{where{"01-malformed.yaml", "document 2", ""}, "invalid YAML: yaml: line 5: mapping values"},
		{where{"02-unknown-kind.yaml", "document 1", ""}, `unknown kind "CronJob" in apiVersion "batch/v1"`},
		{where{"02-unknown-kind.yaml", "document 2", ""}, `unknown kind "Ingress" in apiVersion "extensions/v1beta1"`},
		{where{"02-unknown-kind.yaml", "document 3", ""}, `unknown kind "ConfigMap"`},
		{where{"03-probes.yaml", "Deployment default/negative-period", c0 + "livenessProbe.periodSeconds"},
			"must be greater than or equal to 0"},
		{where{"03-probes.yaml", "Deployment default/port-typo", c0 + "readinessProbe.httpGet.port"},
			`port "htp" not found among the container's ports (declared: http)`},
		{where{"03-probes.yaml", "Deployment default/liveness-threshold", c0 + "livenessProbe.successThreshold"},
			"must be 1"},
		{where{"03-probes.yaml", "Deployment default/readiness-grace",
			c0 + "readinessProbe.terminationGracePeriodSeconds"}, "must not be set for readinessProbes"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[0].path"}, "must not contain '//'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[1].path"}, "must not contain '/./'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[2].path"}, "must not contain '/../'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[3].path"}, "must not contain '%2f'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[4].path"}, "must not contain '%2F'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[5].path"}, "cannot end with '/..'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[6].path"}, "cannot end with '/.'"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[7].path"}, "must be an absolute path"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[8].pathType"}, "pathType must be specified"},
		{where{"04-ingress.yaml", "Ingress default/bad-paths", pths + "[9].pathType"}, `unsupported value "Regex"`},
		{where{"04-ingress.yaml", "Ingress default/bad-hosts", "spec.rules[0].host"}, `"*": a wildcard`},
		{where{"04-ingress.yaml", "Ingress default/bad-hosts", "spec.rules[1].host"}, `"*.*.example.com": a wildcard`},
		{where{"04-ingress.yaml", "Ingress default/bad-hosts", "spec.rules[2].host"}, `"foo.*.example.com": a wildcard`},
		{where{"04-ingress.yaml", "Ingress default/bad-hosts", "spec.rules[3].host"}, `"*example.com": a wildcard`},
		{where{"04-ingress.yaml", "Ingress default/bad-hosts", "spec.rules[4].host"}, "not an IP address"},
		{where{"04-ingress.yaml", "Ingress default/bad-hosts", "spec.rules[5].host"}, "RFC 1123 subdomain"},
		{where{"05-unknown-field.yaml", "Deployment default/typo", "spec.replica"}, "unknown field"},
		{where{"05-unknown-field.yaml", "Deployment default/typo", c0 + "livenesProbe"}, "unknown field"},
		{where{"06-duplicate.yaml", "Service default/survivor", "metadata.name"},
			"duplicate object: already defined in testdata/bad/01-malformed.yaml document 1"},
	}

	got := errorsWhere(t, set.Errors)
	if len(got) != len(want) {
		t.Errorf("got %d errors, want %d:", len(got), len(want))
		for _, e := range set.Errors {
			t.Log(e)
		}
	}
	for i := 0; i < min(len(got), len(want)); i++ {
		if got[i] != want[i].where {
			t.Errorf("error %d at %+v, want %+v", i, got[i], want[i].where)
			continue
		}
		if r := set.Errors[i].(*Error).Reason; !strings.Contains(r, want[i].reason) {
			t.Errorf("error %d reason %q, want it to contain %q", i, r, want[i].reason)
		}
	}

	// The valid objects of the same files still load.
	if len(set.Workloads) != 1 || set.Workloads[0].Name != "survivor" {
		t.Errorf("workloads = %+v, want only survivor", set.Workloads)
	}
	var svcs []string
	for _, s := range set.Services {
		svcs = append(svcs, s.Namespace+"/"+s.Name)
	}
	if strings.Join(svcs, ",") != "default/survivor,other/survivor" {
		t.Errorf("services = %v, want the first default/survivor and other/survivor", svcs)
	}
	if set.Services[0].Spec.Ports[0].Port != 80 {
		t.Errorf("the first definition must win, got port %d", set.Services[0].Spec.Ports[0].Port)
	}
	if len(set.Ingresses) != 1 || set.Ingresses[0].Name != "good-wildcard" {
		t.Errorf("ingresses = %v, want only good-wildcard", set.Ingresses)
	}
}

func TestLoadMissingDirectory(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("Load of a missing directory succeeded")
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Fatal("LoadFile of a missing file succeeded")
	}
}

func TestErrorString(t *testing.T) {
	for _, tc := range []struct {
		err  Error
		want string
	}{
		{Error{"a.yaml", "Deployment default/web", "spec.replicas", "must be greater than or equal to 0"},
			"a.yaml: Deployment default/web: spec.replicas: must be greater than or equal to 0"},
		{Error{File: "a.yaml", Object: "document 2", Reason: "invalid YAML"}, "a.yaml: document 2: invalid YAML"},
		{Error{File: "a.yaml", Reason: "cannot read file"}, "a.yaml: cannot read file"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

// writeManifest writes one manifest file into a fresh directory.
func writeManifest(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadOne(t *testing.T, body string) *Set {
	t.Helper()
	set, err := LoadFile(writeManifest(t, "m.yaml", body))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

const minimalDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: app:latest
          ports: [{containerPort: 8080}]
          livenessProbe:
            httpGet: {port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  ports: [{port: 80}]
`

func TestDefaults(t *testing.T) {
	set := loadOne(t, minimalDeployment)
	if len(set.Errors) != 0 {
		t.Fatal(set.Errors)
	}
	w := set.Workloads[0]
	spec := w.Template.Spec
	c := spec.Containers[0]
	p := c.LivenessProbe
	svc := set.Services[0]

	for _, tc := range []struct {
		desc      string
		got, want any
	}{
		{"namespace", w.Namespace, "default"},
		{"replicas", w.Replicas, int32(1)},
		{"strategy type", w.Strategy.Type, appsv1.RollingUpdateDeploymentStrategyType},
		{"maxSurge", *w.Strategy.RollingUpdate.MaxSurge, intstr.FromInt32(1)},
		{"maxUnavailable", *w.Strategy.RollingUpdate.MaxUnavailable, intstr.FromInt32(0)},
		{"restartPolicy", spec.RestartPolicy, corev1.RestartPolicyAlways},
		{"terminationGracePeriodSeconds", *spec.TerminationGracePeriodSeconds, int64(30)},
		{"imagePullPolicy for :latest", c.ImagePullPolicy, corev1.PullIfNotPresent},
		{"port protocol", c.Ports[0].Protocol, corev1.ProtocolTCP},
		{"probe timeoutSeconds", p.TimeoutSeconds, int32(1)},
		{"probe periodSeconds", p.PeriodSeconds, int32(10)},
		{"probe successThreshold", p.SuccessThreshold, int32(1)},
		{"probe failureThreshold", p.FailureThreshold, int32(3)},
		{"probe initialDelaySeconds", p.InitialDelaySeconds, int32(0)},
		{"httpGet path", p.HTTPGet.Path, "/"},
		{"httpGet scheme", p.HTTPGet.Scheme, corev1.URISchemeHTTP},
		{"service namespace", svc.Namespace, "default"},
		{"service type", svc.Spec.Type, corev1.ServiceTypeClusterIP},
		{"service protocol", svc.Spec.Ports[0].Protocol, corev1.ProtocolTCP},
		{"service targetPort", svc.Spec.Ports[0].TargetPort, intstr.FromInt32(80)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.desc, tc.got, tc.want)
		}
	}
}

func TestStrategyUserValuesKept(t *testing.T) {
	for _, tc := range []struct {
		desc, strategy string
		surge, unavail intstr.IntOrString
		recreate       bool
	}{
		{"percent values", "{rollingUpdate: {maxSurge: 25%, maxUnavailable: 50%}}",
			intstr.FromString("25%"), intstr.FromString("50%"), false},
		{"only surge set", "{rollingUpdate: {maxSurge: 2}}", intstr.FromInt32(2), intstr.FromInt32(0), false},
		{"zero surge needs unavailability", "{rollingUpdate: {maxSurge: 0}}",
			intstr.FromInt32(0), intstr.FromInt32(1), false},
		{"recreate", "{type: Recreate}", intstr.IntOrString{}, intstr.IntOrString{}, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			body := strings.Replace(minimalDeployment, "spec:\n  selector:",
				"spec:\n  strategy: "+tc.strategy+"\n  selector:", 1)
			set := loadOne(t, body)
			if len(set.Errors) != 0 {
				t.Fatal(set.Errors)
			}
			st := set.Workloads[0].Strategy
			if tc.recreate {
				if st.Type != appsv1.RecreateDeploymentStrategyType || st.RollingUpdate != nil {
					t.Fatalf("strategy = %+v, want plain Recreate", st)
				}
				return
			}
			if *st.RollingUpdate.MaxSurge != tc.surge || *st.RollingUpdate.MaxUnavailable != tc.unavail {
				t.Fatalf("maxSurge/maxUnavailable = %v/%v, want %v/%v", st.RollingUpdate.MaxSurge.String(),
					st.RollingUpdate.MaxUnavailable.String(), tc.surge.String(), tc.unavail.String())
			}
		})
	}
}

var hexRe = regexp.MustCompile(`^[0-9a-f]{10}$`)

func TestHash(t *testing.T) {
	a := loadOne(t, minimalDeployment).Workloads[0]
	b := loadOne(t, minimalDeployment).Workloads[0]
	if !hexRe.MatchString(a.Hash) {
		t.Fatalf("hash %q is not 10 hex digits", a.Hash)
	}
	if a.Hash != b.Hash {
		t.Fatalf("same template gave hashes %s and %s", a.Hash, b.Hash)
	}

	// Spelling a default out does not change the hash: it is over the
	// defaulted template.
	explicit := strings.Replace(minimalDeployment, "image: app:latest",
		"image: app:latest\n          imagePullPolicy: IfNotPresent", 1)
	if h := loadOne(t, explicit).Workloads[0].Hash; h != a.Hash {
		t.Errorf("explicit default changed the hash: %s vs %s", h, a.Hash)
	}
	// Replicas and strategy are not part of the template.
	scaled := strings.Replace(minimalDeployment, "spec:\n  selector:", "spec:\n  replicas: 5\n  selector:", 1)
	if h := loadOne(t, scaled).Workloads[0].Hash; h != a.Hash {
		t.Errorf("scaling changed the hash: %s vs %s", h, a.Hash)
	}

	for _, edit := range [][2]string{
		{"image: app:latest", "image: app:v2"},
		{"httpGet: {port: 8080}", "httpGet: {port: 8080, path: /healthz}"},
		{"metadata: {labels: {app: app}}", "metadata: {labels: {app: app}, annotations: {note: hello}}"},
	} {
		body := strings.Replace(minimalDeployment, edit[0], edit[1], 1)
		w := loadOne(t, body).Workloads
		if len(w) != 1 {
			t.Fatalf("edit %q: no workload", edit[1])
		}
		if w[0].Hash == a.Hash {
			t.Errorf("edit %q kept hash %s", edit[1], a.Hash)
		}
	}
}

func TestProbeOverrides(t *testing.T) {
	set, err := Load("testdata/good")
	if err != nil {
		t.Fatal(err)
	}
	tpl := &set.Workloads[0].Template
	for _, tc := range []struct {
		container, kind string
		period, timeout time.Duration
	}{
		{"web", "readiness", 250 * time.Millisecond, 100 * time.Millisecond},
		{"web", "liveness", 0, 0},
		{"other", "readiness", 0, 0},
	} {
		p, to := ProbeOverrides(tpl, tc.container, tc.kind)
		if p != tc.period || to != tc.timeout {
			t.Errorf("ProbeOverrides(%s, %s) = %v, %v, want %v, %v", tc.container, tc.kind, p, to,
				tc.period, tc.timeout)
		}
	}
	if p, to := ProbeOverrides(nil, "web", "readiness"); p != 0 || to != 0 {
		t.Errorf("nil template gave %v, %v", p, to)
	}
}

func TestListAndJSON(t *testing.T) {
	set, err := LoadFile(writeManifest(t, "list.json", `{"apiVersion": "v1", "kind": "List", "items": [
		{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 1}]}},
		{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}, "spec": {"ports": [{"port": 0}]}}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Services) != 1 || set.Services[0].Name != "a" {
		t.Errorf("services = %v, want a", set.Services)
	}
	got := errorsWhere(t, set.Errors)
	if want := []where{{"list.json", "Service default/b", "spec.ports[0].port"}}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("errors = %+v, want %+v", got, want)
	}

	set, err = LoadFile(writeManifest(t, "bad.json", `{"apiVersion": "v1",`))
	if err != nil {
		t.Fatal(err)
	}
	if got := errorsWhere(t, set.Errors); len(got) != 1 || got[0].object != "document 1" {
		t.Errorf("errors = %+v, want one on document 1", got)
	}
}

// An object with an unknown or duplicated field is still validated, so all
// its problems are listed at once; it is not loaded.
func TestStrictAndValidationErrorsTogether(t *testing.T) {
	type fe struct{ field, reason string }
	for _, tc := range []struct {
		desc, body string
		want       []fe
	}{
		{"unknown field and bad values", `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  restartPolicy: Sometimes
  containers:
    - {name: app, image: app:1, imagePullPolicy: Nevr, livenesProbe: {}}
`, []fe{
			{"spec.containers[0].livenesProbe", "unknown field"},
			{"spec.restartPolicy", `unsupported value "Sometimes"`},
			{"spec.containers[0].imagePullPolicy", `unsupported value "Nevr"`},
		}},
		{"duplicate field and bad value", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 1
  replicas: -1
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      containers: [{name: app, image: app:1}]
`, []fe{
			// The YAML layer reports a repeated key by line, not by path.
			{"", `line 7: key "replicas" already set in map`},
			{"spec.replicas", "must be greater than or equal to 0"},
		}},
		{"unknown field on a duplicate object", `
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 1}]}
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 1, nmae: x}]}
`, []fe{
			{"spec.ports[0].nmae", "unknown field"},
			{"metadata.name", "duplicate object"},
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			set := loadOne(t, tc.body)
			if len(set.Errors) != len(tc.want) {
				t.Fatalf("got %d errors, want %d: %v", len(set.Errors), len(tc.want), set.Errors)
			}
			for i, w := range tc.want {
				e := set.Errors[i].(*Error)
				if e.Field != w.field || !strings.Contains(e.Reason, w.reason) {
					t.Errorf("error %d: got %s: %q, want %s: containing %q", i, e.Field, e.Reason, w.field, w.reason)
				}
			}
			if n := len(set.Workloads); n != 0 {
				t.Errorf("rejected object loaded (%d workloads)", n)
			}
			if n := len(set.Services); n > 1 {
				t.Errorf("%d services loaded, want at most the first", n)
			}
		})
	}
}
