package proxy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// table is one immutable routing table. SetConfig builds a new one and
// swaps it in; requests read whichever they loaded.
type table struct {
	exact map[string]*hostRoutes // by lower-case host
	wild  map[string]*hostRoutes // "*.foo.com" keyed by "foo.com"
	any   *hostRoutes            // rules without host
	def   *route                 // the defaultBackend, or nil
	certs *certTable
}

// hostRoutes holds the paths of one host, merged over every Ingress.
type hostRoutes struct {
	exact    map[string]*route
	prefixes []prefixRoute // longest key first
}

type prefixRoute struct {
	key string // rule path without its trailing slash
	rt  *route
}

// route is where a matched request goes.
type route struct {
	ingress string // "namespace/name"
	pool    *pool  // nil when the backend could not be resolved: 503
	m       *routeMetrics
}

// lookup finds the route for a cleaned path on a host key. The most
// specific host that has a matching path wins: exact host, then one-label
// wildcard, then rules without host, then the default backend.
func (t *table) lookup(host, path string) *route {
	if h := t.exact[host]; h != nil {
		if rt := h.match(path); rt != nil {
			return rt
		}
	}
	if len(t.wild) > 0 {
		if pd := parentDomain(host); pd != "" {
			if h := t.wild[pd]; h != nil {
				if rt := h.match(path); rt != nil {
					return rt
				}
			}
		}
	}
	if t.any != nil {
		if rt := t.any.match(path); rt != nil {
			return rt
		}
	}
	return t.def
}

// match applies the Ingress rules: an Exact path equal to the request wins
// (it is as long as any Prefix that matches, and Exact wins ties); else the
// longest matching Prefix.
func (h *hostRoutes) match(path string) *route {
	if rt, ok := h.exact[path]; ok {
		return rt
	}
	for i := range h.prefixes {
		if prefixMatch(h.prefixes[i].key, path) {
			return h.prefixes[i].rt
		}
	}
	return nil
}

// SetConfig builds a routing table from cfg and swaps it in. It returns one
// error per problem found; what is valid is applied regardless.
func (p *Proxy) SetConfig(cfg Config) []error {
	p.mu.Lock()
	defer p.mu.Unlock()

	b := &builder{
		p:        p,
		services: make(map[string]*corev1.Service),
		secrets:  make(map[string]*corev1.Secret),
		routes:   make(map[string]*route),
		refs:     make(map[poolKey]bool),
		t: &table{
			exact: make(map[string]*hostRoutes),
			wild:  make(map[string]*hostRoutes),
		},
	}
	for _, s := range cfg.Services {
		if s != nil {
			b.services[s.Namespace+"/"+s.Name] = s
		}
	}
	for _, s := range cfg.Secrets {
		if s != nil {
			b.secrets[s.Namespace+"/"+s.Name] = s
		}
	}
	b.build(cfg.Ingresses)
	b.t.certs = b.buildCerts()

	p.referenced = b.refs
	p.table.Store(b.t)
	p.gcPoolsLocked()
	p.metrics.keepRoutes(b.routes)
	return b.errs
}

type builder struct {
	p        *Proxy
	services map[string]*corev1.Service
	secrets  map[string]*corev1.Secret
	routes   map[string]*route // by ingress and service label, shared
	refs     map[poolKey]bool
	t        *table
	errs     []error
	ings     []*networkingv1.Ingress // the served ones, oldest first
}

func (b *builder) errorf(ing *networkingv1.Ingress, format string, args ...any) {
	prefix := fmt.Sprintf("ingress %s/%s: ", ing.Namespace, ing.Name)
	b.errs = append(b.errs, fmt.Errorf(prefix+format, args...))
}

// build merges the rules of every served Ingress. Conflicts (the same host
// and path twice, two default backends) go to the oldest Ingress, then by
// namespace and name, as ingress-nginx does.
func (b *builder) build(all []*networkingv1.Ingress) {
	for _, ing := range all {
		if ing != nil && b.p.wantClass(ing) {
			b.ings = append(b.ings, ing)
		}
	}
	slices.SortStableFunc(b.ings, func(x, y *networkingv1.Ingress) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(x.Namespace, y.Namespace), strings.Compare(x.Name, y.Name))
	})

	for _, ing := range b.ings {
		if db := ing.Spec.DefaultBackend; db != nil {
			if b.t.def != nil {
				b.errorf(ing, "defaultBackend conflicts with ingress %s; ignored", b.t.def.ingress)
			} else {
				b.t.def = b.route(ing, db)
			}
		}
		for _, rule := range ing.Spec.Rules {
			hr := b.hostRoutes(ing, rule.Host)
			if hr == nil || rule.HTTP == nil {
				continue
			}
			for i := range rule.HTTP.Paths {
				b.addPath(ing, rule.Host, hr, &rule.HTTP.Paths[i])
			}
		}
	}
	for _, hr := range b.allHosts() {
		slices.SortStableFunc(hr.prefixes, func(x, y prefixRoute) int {
			return len(y.key) - len(x.key)
		})
	}
}

func (b *builder) allHosts() []*hostRoutes {
	var out []*hostRoutes
	for _, h := range b.t.exact {
		out = append(out, h)
	}
	for _, h := range b.t.wild {
		out = append(out, h)
	}
	if b.t.any != nil {
		out = append(out, b.t.any)
	}
	return out
}

// hostRoutes returns the bucket for a rule host, or nil for an invalid one.
func (b *builder) hostRoutes(ing *networkingv1.Ingress, host string) *hostRoutes {
	host = strings.ToLower(host)
	newHR := func() *hostRoutes { return &hostRoutes{exact: make(map[string]*route)} }
	switch {
	case host == "":
		if b.t.any == nil {
			b.t.any = newHR()
		}
		return b.t.any
	case strings.HasPrefix(host, "*."):
		parent := host[2:]
		if parent == "" || strings.ContainsAny(parent, "*:/") {
			b.errorf(ing, "invalid wildcard host %q", host)
			return nil
		}
		if b.t.wild[parent] == nil {
			b.t.wild[parent] = newHR()
		}
		return b.t.wild[parent]
	case strings.ContainsAny(host, "*:/[]"):
		b.errorf(ing, "invalid host %q", host)
		return nil
	}
	if b.t.exact[host] == nil {
		b.t.exact[host] = newHR()
	}
	return b.t.exact[host]
}

func (b *builder) addPath(ing *networkingv1.Ingress, host string, hr *hostRoutes,
	hp *networkingv1.HTTPIngressPath) {
	path, ok := rulePath(hp.Path)
	if !ok {
		b.errorf(ing, "host %q: invalid path %q", host, hp.Path)
		return
	}
	pt := networkingv1.PathTypeImplementationSpecific
	if hp.PathType != nil {
		pt = *hp.PathType
	}
	rt := b.route(ing, &hp.Backend)
	switch pt {
	case networkingv1.PathTypeExact:
		if old, dup := hr.exact[path]; dup {
			b.errorf(ing, "host %q: Exact path %q already routed by ingress %s; ignored",
				host, path, old.ingress)
			return
		}
		hr.exact[path] = rt
	case networkingv1.PathTypePrefix, networkingv1.PathTypeImplementationSpecific:
		key := prefixKey(path)
		for _, pr := range hr.prefixes {
			if pr.key == key {
				b.errorf(ing, "host %q: Prefix path %q already routed by ingress %s; ignored",
					host, hp.Path, pr.rt.ingress)
				return
			}
		}
		hr.prefixes = append(hr.prefixes, prefixRoute{key: key, rt: rt})
	default:
		b.errorf(ing, "host %q: path %q: unknown pathType %q", host, hp.Path, pt)
	}
}

// route resolves a backend to its pool. An unresolvable backend still gets
// a route, so its requests answer 503 instead of falling through to
// another rule.
func (b *builder) route(ing *networkingv1.Ingress, be *networkingv1.IngressBackend) *route {
	ingName := ing.Namespace + "/" + ing.Name
	key, err := b.resolve(ing, be)
	label := ""
	if err != nil {
		b.errorf(ing, "%v", err)
	} else {
		label = poolLabel(key)
	}
	id := ingName + "\x00" + label
	if rt := b.routes[id]; rt != nil {
		return rt
	}
	rt := &route{ingress: ingName, m: b.p.metrics.forRoute(ingName, label)}
	if err == nil {
		rt.pool = b.p.poolLocked(key)
		b.refs[key] = true
		b.setPolicy(ing, rt.pool)
	}
	b.routes[id] = rt
	return rt
}

func (b *builder) resolve(ing *networkingv1.Ingress, be *networkingv1.IngressBackend) (poolKey, error) {
	if be.Service == nil {
		return poolKey{}, fmt.Errorf("backend without service is not supported")
	}
	name := be.Service.Name
	svc := b.services[ing.Namespace+"/"+name]
	if svc == nil {
		return poolKey{}, fmt.Errorf("backend names unknown service %q", name)
	}
	want := be.Service.Port
	for _, sp := range svc.Spec.Ports {
		if (want.Name != "" && sp.Name == want.Name) || (want.Name == "" && sp.Port == want.Number) {
			return poolKey{ing.Namespace, name, sp.Port}, nil
		}
	}
	if want.Name != "" {
		return poolKey{}, fmt.Errorf("service %q has no port named %q", name, want.Name)
	}
	return poolKey{}, fmt.Errorf("service %q has no port %d", name, want.Number)
}

func (b *builder) setPolicy(ing *networkingv1.Ingress, pl *pool) {
	svc := b.services[pl.key.namespace+"/"+pl.key.name]
	pol := roundRobin
	switch v := svc.Annotations[lbAnnotation]; v {
	case "", "round-robin":
	case "least-request":
		pol = leastRequest
	default:
		b.errorf(ing, "service %q: unknown %s %q; using round-robin", pl.key.name, lbAnnotation, v)
	}
	pl.policy.Store(int32(pol))
}

// wantClass applies Options.IngressClass and ServeClassless.
func (p *Proxy) wantClass(ing *networkingv1.Ingress) bool {
	class := ""
	if c := ing.Spec.IngressClassName; c != nil {
		class = *c
	} else {
		class = ing.Annotations["kubernetes.io/ingress.class"]
	}
	if class == "" {
		return p.opts.ServeClassless
	}
	return class == p.opts.IngressClass
}

func poolLabel(k poolKey) string {
	return fmt.Sprintf("%s/%s:%d", k.namespace, k.name, k.port)
}
