package proxy

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

const (
	exact  = networkingv1.PathTypeExact
	prefix = networkingv1.PathTypePrefix
	implSp = networkingv1.PathTypeImplementationSpecific
)

type rp struct {
	pt   networkingv1.PathType
	path string
}

// lookupService returns the Service a request reaches, "" for none.
func lookupService(p *Proxy, host, path string) string {
	clean, ok := cleanPath(path)
	if !ok {
		return "reject"
	}
	rt := p.table.Load().lookup(hostKey(host), clean)
	if rt == nil {
		return ""
	}
	if rt.pool == nil {
		return "unresolved"
	}
	return rt.pool.key.name
}

// TestPathTypeExamples covers every example of the Kubernetes Ingress docs
// ("Examples" table under "Path types"), plus the ImplementationSpecific
// choice. Path i routes to Service "p<i>".
func TestPathTypeExamples(t *testing.T) {
	tests := []struct {
		desc  string
		paths []rp
		req   string
		want  int // index into paths, -1 for no match
	}{
		{"Prefix / matches all paths", []rp{{prefix, "/"}}, "/anything/at/all", 0},
		{"Prefix / matches root", []rp{{prefix, "/"}}, "/", 0},
		{"Exact /foo matches /foo", []rp{{exact, "/foo"}}, "/foo", 0},
		{"Exact /foo not /bar", []rp{{exact, "/foo"}}, "/bar", -1},
		{"Exact /foo not /foo/", []rp{{exact, "/foo"}}, "/foo/", -1},
		{"Exact /foo/ not /foo", []rp{{exact, "/foo/"}}, "/foo", -1},
		{"Prefix /foo matches /foo", []rp{{prefix, "/foo"}}, "/foo", 0},
		{"Prefix /foo matches /foo/", []rp{{prefix, "/foo"}}, "/foo/", 0},
		{"Prefix /foo/ matches /foo", []rp{{prefix, "/foo/"}}, "/foo", 0},
		{"Prefix /foo/ matches /foo/", []rp{{prefix, "/foo/"}}, "/foo/", 0},
		{"Prefix /aaa/bb not /aaa/bbb", []rp{{prefix, "/aaa/bb"}}, "/aaa/bbb", -1},
		{"Prefix /aaa/bbb matches /aaa/bbb", []rp{{prefix, "/aaa/bbb"}}, "/aaa/bbb", 0},
		{"Prefix /aaa/bbb/ ignores trailing slash", []rp{{prefix, "/aaa/bbb/"}}, "/aaa/bbb", 0},
		{"Prefix /aaa/bbb matches trailing slash", []rp{{prefix, "/aaa/bbb"}}, "/aaa/bbb/", 0},
		{"Prefix /aaa/bbb matches subpath", []rp{{prefix, "/aaa/bbb"}}, "/aaa/bbb/ccc", 0},
		{"Prefix /aaa/bbb not string prefix", []rp{{prefix, "/aaa/bbb"}}, "/aaa/bbbxyz", -1},
		{"Prefix /, /aaa: /aaa/ccc goes to /aaa", []rp{{prefix, "/"}, {prefix, "/aaa"}}, "/aaa/ccc", 1},
		{"Prefix /, /aaa, /aaa/bbb: /aaa/bbb goes to /aaa/bbb",
			[]rp{{prefix, "/"}, {prefix, "/aaa"}, {prefix, "/aaa/bbb"}}, "/aaa/bbb", 2},
		{"Prefix /, /aaa, /aaa/bbb: /ccc goes to /",
			[]rp{{prefix, "/"}, {prefix, "/aaa"}, {prefix, "/aaa/bbb"}}, "/ccc", 0},
		{"Prefix /aaa not /ccc (default backend)", []rp{{prefix, "/aaa"}}, "/ccc", -1},
		{"Mixed Prefix /foo and Exact /foo: Exact wins", []rp{{prefix, "/foo"}, {exact, "/foo"}}, "/foo", 1},
		{"Mixed, Exact listed first", []rp{{exact, "/foo"}, {prefix, "/foo"}}, "/foo", 0},
		{"Mixed: Prefix takes what Exact does not", []rp{{prefix, "/foo"}, {exact, "/foo"}}, "/foo/x", 0},
		{"longest wins regardless of order", []rp{{prefix, "/a/b"}, {prefix, "/a"}}, "/a/b/c", 0},
		{"case-sensitive Exact", []rp{{exact, "/Foo"}}, "/foo", -1},
		{"case-sensitive Prefix", []rp{{prefix, "/foo"}}, "/FOO/bar", -1},
		{"ImplementationSpecific is Prefix", []rp{{implSp, "/foo"}}, "/foo/bar", 0},
		{"ImplementationSpecific element-wise", []rp{{implSp, "/foo"}}, "/foobar", -1},
		{"ImplementationSpecific empty path is /", []rp{{implSp, ""}}, "/x", 0},
		{"dot segments resolved before matching", []rp{{prefix, "/api"}}, "/static/../api/x", 0},
		{"encoded dot segments too", []rp{{prefix, "/api"}}, "/static/%2e%2e/api", 0},
		{"encoded slash does not split", []rp{{prefix, "/a"}}, "/a%2Fb", -1},
		{"encoded slash in later segment", []rp{{prefix, "/a"}}, "/a/b%2Fc", 0},
		{"unreserved escape decoded", []rp{{exact, "/foo"}}, "/f%6Fo", 0},
		{"merged slashes", []rp{{exact, "/a/b"}}, "//a//b", 0},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var paths []networkingv1.HTTPIngressPath
			for i, x := range tc.paths {
				paths = append(paths, pathOf(x.pt, x.path, fmt.Sprintf("p%d", i)))
			}
			ing := ingressOf("ing", 0, ruleOf("", paths...))
			p := New(Options{ServeClassless: true})
			if errs := p.SetConfig(Config{Ingresses: []*networkingv1.Ingress{ing},
				Services: servicesFor(ing)}); len(errs) > 0 {
				t.Fatalf("SetConfig: %v", errs)
			}
			want := ""
			if tc.want >= 0 {
				want = fmt.Sprintf("p%d", tc.want)
			}
			if got := lookupService(p, "example.com", tc.req); got != want {
				t.Errorf("request %q: got service %q, want %q", tc.req, got, want)
			}
		})
	}
}

func TestHostMatching(t *testing.T) {
	ings := []*networkingv1.Ingress{
		ingressOf("a", 0,
			ruleOf("foo.com", pathOf(prefix, "/", "exact-foo")),
			ruleOf("*.foo.com", pathOf(prefix, "/", "wild-foo")),
			ruleOf("api.example.com", pathOf(prefix, "/v1", "api-v1")),
			ruleOf("", pathOf(prefix, "/any", "any-host")),
		),
		// A second Ingress adds paths to a host the first one has.
		ingressOf("b", 1, ruleOf("API.example.com", pathOf(prefix, "/v2", "api-v2"))),
	}
	p := New(Options{ServeClassless: true})
	if errs := p.SetConfig(Config{Ingresses: ings, Services: servicesFor(ings...)}); len(errs) > 0 {
		t.Fatalf("SetConfig: %v", errs)
	}
	tests := []struct {
		desc, host, path, want string
	}{
		{"exact host", "foo.com", "/", "exact-foo"},
		{"case-insensitive", "FoO.CoM", "/", "exact-foo"},
		{"port ignored", "foo.com:8080", "/", "exact-foo"},
		{"trailing dot", "foo.com.", "/", "exact-foo"},
		{"wildcard covers one label", "bar.foo.com", "/", "wild-foo"},
		{"wildcard case-insensitive with port", "BAR.foo.com:443", "/", "wild-foo"},
		{"wildcard not two labels", "baz.bar.foo.com", "/", ""},
		{"wildcard not the bare domain", "foo.com", "/x", "exact-foo"},
		{"merged from first ingress", "api.example.com", "/v1/users", "api-v1"},
		{"merged from second ingress", "api.example.com", "/v2/users", "api-v2"},
		{"host without matching path falls to hostless rules", "api.example.com", "/any", "any-host"},
		{"hostless rule matches every host", "unknown.org", "/any/thing", "any-host"},
		{"hostless rule matches empty Host", "", "/any", "any-host"},
		{"IPv6 literal with port", "[::1]:80", "/any", "any-host"},
		{"nothing matches", "unknown.org", "/", ""},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := lookupService(p, tc.host, tc.path); got != tc.want {
				t.Errorf("host %q path %q: got %q, want %q", tc.host, tc.path, got, tc.want)
			}
		})
	}
}

func TestConflictsOldestWins(t *testing.T) {
	older := ingressOf("older", 0, ruleOf("h.com", pathOf(prefix, "/x", "old")))
	oldDef, newDef := pathOf(prefix, "/", "old-default"), pathOf(prefix, "/", "new-default")
	older.Spec.DefaultBackend = &oldDef.Backend
	newer := ingressOf("newer", 5, ruleOf("h.com", pathOf(prefix, "/x/", "new"),
		pathOf(exact, "/y", "new-y")))
	newer.Spec.DefaultBackend = &newDef.Backend
	p := New(Options{ServeClassless: true})
	// Input order must not matter: the newer one comes first here.
	errs := p.SetConfig(Config{Ingresses: []*networkingv1.Ingress{newer, older},
		Services: servicesFor(older, newer)})
	if len(errs) != 2 {
		t.Fatalf("got errors %v, want 2 (duplicate path, second defaultBackend)", errs)
	}
	for _, err := range errs {
		if !strings.Contains(err.Error(), "ingress default/newer") {
			t.Errorf("error %q should name the newer ingress", err)
		}
	}
	if got := lookupService(p, "h.com", "/x"); got != "old" {
		t.Errorf("duplicate path: got %q, want old", got)
	}
	if got := lookupService(p, "h.com", "/y"); got != "new-y" {
		t.Errorf("non-conflicting path of newer ingress: got %q, want new-y", got)
	}
	if got := lookupService(p, "other.com", "/"); got != "old-default" {
		t.Errorf("default backend: got %q, want old-default", got)
	}
}

func TestBackendPorts(t *testing.T) {
	byName := pathOf(prefix, "/name", "web")
	byName.Backend.Service.Port = networkingv1.ServiceBackendPort{Name: "metrics"}
	badName := pathOf(prefix, "/badname", "web")
	badName.Backend.Service.Port = networkingv1.ServiceBackendPort{Name: "nope"}
	badNum := pathOf(prefix, "/badnum", "web")
	badNum.Backend.Service.Port = networkingv1.ServiceBackendPort{Number: 81}
	noSvc := pathOf(prefix, "/nosvc", "missing")
	ing := ingressOf("ing", 0, ruleOf("", pathOf(prefix, "/num", "web"), byName, badName, badNum, noSvc))
	web := serviceOf("web", corev1.ServicePort{Name: "http", Port: 80},
		corev1.ServicePort{Name: "metrics", Port: 9090})

	p := New(Options{ServeClassless: true})
	errs := p.SetConfig(Config{Ingresses: []*networkingv1.Ingress{ing},
		Services: []*corev1.Service{web}})
	if len(errs) != 3 {
		t.Fatalf("got errors %v, want 3", errs)
	}
	tbl := p.table.Load()
	for _, tc := range []struct {
		path string
		port int32 // 0: unresolved
	}{{"/num", 80}, {"/name", 9090}, {"/badname", 0}, {"/badnum", 0}, {"/nosvc", 0}} {
		rt := tbl.lookup("h", tc.path)
		switch {
		case rt == nil:
			t.Errorf("%s: no route; an unresolved backend must still answer (503)", tc.path)
		case tc.port == 0 && rt.pool != nil:
			t.Errorf("%s: resolved to %s, want unresolved", tc.path, rt.pool.label)
		case tc.port != 0 && (rt.pool == nil || rt.pool.key.port != tc.port):
			t.Errorf("%s: got %+v, want port %d", tc.path, rt.pool, tc.port)
		}
	}
}

func TestIngressClass(t *testing.T) {
	vigil, other := "vigil", "nginx"
	mk := func(name string, class *string, annotation string) *networkingv1.Ingress {
		ing := ingressOf(name, 0, ruleOf(name+".com", pathOf(prefix, "/", name)))
		ing.Spec.IngressClassName = class
		if annotation != "" {
			ing.Annotations = map[string]string{"kubernetes.io/ingress.class": annotation}
		}
		return ing
	}
	ings := []*networkingv1.Ingress{
		mk("ours", &vigil, ""), mk("theirs", &other, ""), mk("none", nil, ""),
		mk("legacy", nil, "vigil"), mk("legacyother", nil, "nginx"),
	}
	for _, tc := range []struct {
		classless bool
		want      map[string]bool
	}{
		{true, map[string]bool{"ours": true, "none": true, "legacy": true}},
		{false, map[string]bool{"ours": true, "legacy": true}},
	} {
		p := New(Options{ServeClassless: tc.classless})
		p.SetConfig(Config{Ingresses: ings, Services: servicesFor(ings...)})
		for _, ing := range ings {
			got := lookupService(p, ing.Name+".com", "/") != ""
			if got != tc.want[ing.Name] {
				t.Errorf("classless=%v: %s served=%v, want %v", tc.classless, ing.Name, got, !got)
			}
		}
	}
}

func TestInvalidInputDoesNotCrash(t *testing.T) {
	bad := ingressOf("bad", 0,
		ruleOf("*", pathOf(prefix, "/", "s")),
		ruleOf("a.*.com", pathOf(prefix, "/", "s")),
		ruleOf("ok.com", pathOf(prefix, "/../x", "s"), pathOf("Regex", "/y", "s")),
		networkingv1.IngressRule{Host: "nohttp.com"},
	)
	bad.Spec.Rules[2].HTTP.Paths = append(bad.Spec.Rules[2].HTTP.Paths,
		networkingv1.HTTPIngressPath{Path: "/nil-type", Backend: networkingv1.IngressBackend{}})
	p := New(Options{ServeClassless: true})
	errs := p.SetConfig(Config{Ingresses: []*networkingv1.Ingress{bad, nil},
		Services: []*corev1.Service{nil, serviceOf("s")}})
	if len(errs) < 4 {
		t.Errorf("got %d errors %v, want at least 4", len(errs), errs)
	}
	if got := lookupService(p, "ok.com", "/nil-type"); got != "unresolved" {
		t.Errorf("resource-less backend: got %q, want unresolved", got)
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/", "/", true},
		{"/a/b/", "/a/b/", true},
		{"/a/./b", "/a/b", true},
		{"/a/b/..", "/a/", true},
		{"/a/b/../c", "/a/c", true},
		{"/a/%2e%2E/c", "/c", true},
		{"/a/.%2e", "/", true},
		{"/a%2Fb/../c", "/c", true},
		{"/a%2fb", "/a%2fb", true},
		{"/%7Euser/%41", "/~user/A", true},
		{"/sp%20ace", "/sp%20ace", true},
		{"//a///b", "/a/b", true},
		{"/.hidden/..x", "/.hidden/..x", true},
		{"/..", "", false},
		{"/a/../..", "", false},
		{"/%2e%2e/etc", "", false},
		{"/bad%zz", "", false},
		{"/bad%2", "", false},
		{"*", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		got, ok := cleanPath(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("cleanPath(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
