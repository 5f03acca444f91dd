package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// badManifests are four broken files next to a good one.
var badManifests = map[string]string{
	"malformed.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: [oops\n",
	"unknown.yaml": `
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec: {}
`,
	"period.yaml": strings.Replace(fmt.Sprintf(failingWeb, 1, 2, 3),
		"name: app\nspec:\n  replicas", "name: negative\nspec:\n  replicas", 1),
	"port.yaml": strings.Replace(fmt.Sprintf(failingWeb, 1, 2, 3),
		"name: app\nspec:\n  replicas", "name: misspelt\nspec:\n  replicas", 1),
}

func init() {
	// The copies need their own selectors, Services and Ingresses out of the
	// way, and each its one defect.
	for _, name := range []string{"period.yaml", "port.yaml"} {
		doc := strings.SplitN(badManifests[name], "\n---\n", 2)[0]
		doc = strings.ReplaceAll(doc, "app: app", "app: "+strings.TrimSuffix(name, ".yaml"))
		badManifests[name] = doc
	}
	badManifests["period.yaml"] = strings.Replace(badManifests["period.yaml"],
		"periodSeconds: 2", "periodSeconds: -1", 1)
	badManifests["port.yaml"] = strings.Replace(badManifests["port.yaml"],
		"httpGet: {path: /health, port: http}", "httpGet: {path: /health, port: htp}", 1)
}

// vigil check names the file, object and field of every problem and fails;
// vigil run still runs the valid manifests.
func TestBadManifestsAreReportedAndTheRestRuns(t *testing.T) {
	const ns = "e2e-bad"
	files := map[string]string{"good.yaml": fmt.Sprintf(failingWeb, 1, 2, 3)}
	for k, v := range badManifests {
		files[k] = v
	}
	v := newVigil(t, ns, files, options{})

	out, err := runVigil(t, v.env, "check", "--config", v.config, "--manifests", v.manifests)
	if err == nil {
		t.Fatalf("vigil check passed bad manifests:\n%s", out)
	}
	want := []string{
		"malformed.yaml: document 1",
		"unknown.yaml",
		"CronJob",
		"period.yaml: Deployment " + ns + "/negative: spec.template.spec.containers[0].livenessProbe.periodSeconds",
		"port.yaml: Deployment " + ns + "/misspelt: spec.template.spec.containers[0].livenessProbe.httpGet.port",
		`"htp"`,
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("vigil check output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "good.yaml") {
		t.Errorf("vigil check complains about the good manifest:\n%s", out)
	}

	v.start()
	v.readyPods("app-", 1, 60*time.Second)
	time.Sleep(time.Second) // give wrongly accepted workloads a chance to show
	for _, p := range v.pods() {
		if !strings.HasPrefix(p.Name, "app-") {
			t.Errorf("pod %s runs from a rejected manifest", p.Name)
		}
	}
	log, _ := os.ReadFile(v.logPath)
	for _, w := range []string{"malformed.yaml", "unknown.yaml", "periodSeconds", "htp"} {
		if !strings.Contains(string(log), w) {
			t.Errorf("vigil's log does not report %q", w)
		}
	}
}

// A config with a bare-number duration or an unknown key is refused with the
// key named; a flag beats the environment, which beats the file.
func TestConfigErrorsAndPrecedence(t *testing.T) {
	e := needEnv(t)
	dir, empty := t.TempDir(), t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bare := write("bare.yaml", "pods:\n  resyncPeriod: 10\n")
	out, err := runVigil(t, e, "check", "--config", bare, "--manifests", empty)
	if err == nil || !strings.Contains(out, "pods.resyncPeriod") || !strings.Contains(out, `"10s"`) {
		t.Errorf("bare number duration: err %v, output %q", err, out)
	}
	typo := write("typo.yaml", "proxy:\n  lisen: 127.0.0.1:1\n")
	out, err = runVigil(t, e, "check", "--config", typo, "--manifests", empty)
	if err == nil || !strings.Contains(out, "proxy.lisen") || !strings.Contains(out, "typo.yaml") {
		t.Errorf("unknown key: err %v, output %q", err, out)
	}
	// The environment's bad value is reported unless a flag overrides it.
	cmd := func(args ...string) (string, error) {
		t.Helper()
		os.Setenv("VIGIL_BACKOFF_INITIAL", "5")
		defer os.Unsetenv("VIGIL_BACKOFF_INITIAL")
		return runVigil(t, e, args...)
	}
	if out, err := cmd("check", "--manifests", empty); err == nil || !strings.Contains(out, "backoff.initial") {
		t.Errorf("env VIGIL_BACKOFF_INITIAL=5 not rejected: %v %q", err, out)
	}
	if out, err := cmd("check", "--manifests", empty, "--backoff.initial", "5s"); err != nil {
		t.Errorf("flag did not override the environment: %v %q", err, out)
	}
}

// vigil check refuses the config values and manifest fields that vigil run
// would refuse or act on wrongly, and run refuses the config with the same
// words; an unknown get resource fails.
func TestCheckRefusesWhatRunRefuses(t *testing.T) {
	e := needEnv(t)
	dir, manifests := t.TempDir(), t.TempDir()
	config := dir + "/bad.yaml"
	if err := os.WriteFile(config, []byte("admin:\n  listen: nohost\n"+
		"probes:\n  allowedHosts: [10.0.0.0/33]\nbackoff:\n  initial: 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantConfig := []string{
		`admin.listen: "nohost": missing port in address`,
		`probes.allowedHosts: "10.0.0.0/33" is not a valid CIDR`,
		`backoff.initial: 10 has no unit`,
	}
	// A runtime socket that does not exist, so a run that got past its
	// config would fail instead of touching the shared containerd.
	isolated := []string{"--manifests", manifests, "--runtime.endpoint", "unix://" + dir + "/none.sock",
		"--runtime.containerd", "none", "--lockFile", dir + "/lock"}
	for _, sub := range []string{"check", "run"} {
		out, err := runVigil(t, e, append([]string{sub, "--config", config}, isolated...)...)
		if err == nil {
			t.Fatalf("vigil %s accepted the config:\n%s", sub, out)
		}
		for _, w := range wantConfig {
			if !strings.Contains(out, w) {
				t.Errorf("vigil %s output lacks %q:\n%s", sub, w, out)
			}
		}
		if strings.Contains(out, "max at least initial") || strings.Count(out, "backoff.") != 1 {
			t.Errorf("vigil %s repeats the backoff complaint:\n%s", sub, out)
		}
	}
	if out, err := runVigil(t, e, append([]string{"run", "--admin.listen=127.0.0.1:99999"}, isolated...)...); err == nil ||
		!strings.Contains(out, `admin.listen: "127.0.0.1:99999": port "99999"`) {
		t.Errorf("run --admin.listen=127.0.0.1:99999: %v\n%s", err, out)
	}

	web := `apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
    - name: app
      image: localhost/vigil-testapp:latest
      imagePullPolicy: Nevr
      livenessProbe: {httpGet: {host: 169.254.169.254, port: 80}}
`
	if err := os.WriteFile(manifests+"/web.yaml", []byte(web), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runVigil(t, e, "check", "--manifests", manifests)
	if err == nil {
		t.Fatalf("vigil check passed:\n%s", out)
	}
	for _, w := range []string{
		"web.yaml: Pod default/web: spec.containers[0].imagePullPolicy: unsupported value \"Nevr\"",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("vigil check output lacks %q:\n%s", w, out)
		}
	}
	// Once the policy is fixed, the probe host is what check reports.
	if err := os.WriteFile(manifests+"/web.yaml", []byte(strings.Replace(web, "Nevr", "Never", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runVigil(t, e, "check", "--manifests", manifests)
	if err == nil || !strings.Contains(out, "web.yaml: Pod default/web: spec.containers[0].livenessProbe.httpGet.host: "+
		`"169.254.169.254" is not the pod's address nor loopback, and not in probes.allowedHosts`) {
		t.Errorf("probe host: %v\n%s", err, out)
	}

	if out, err := runVigil(t, e, "get", "foo"); err == nil || !strings.Contains(out, `unknown resource "foo"`) {
		t.Errorf("vigil get foo: %v\n%s", err, out)
	}
}
