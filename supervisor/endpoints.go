package supervisor

import (
	"net"
	"reflect"
	"sort"
	"strconv"

	"github.com/vigil-agent/vigil/proxy"
)

// publishEndpoints recomputes the ready endpoints of every Service and hands
// them to the sink when they changed. A pod counts while it is Ready and not
// terminating; its address is the pod IP (127.0.0.1 for host-network pods)
// with the Service's targetPort resolved against the pod's own ports.
func (s *Supervisor) publishEndpoints() {
	if s.opts.Endpoints == nil {
		return
	}
	s.epMu.Lock()
	defer s.epMu.Unlock()

	s.mu.Lock()
	services := s.services
	pods := make([]*pod, 0, len(s.pods))
	for _, p := range s.pods {
		pods = append(pods, p)
	}
	s.mu.Unlock()

	out := make([]proxy.ServiceEndpoints, 0, len(services))
	for _, svc := range services {
		se := proxy.ServiceEndpoints{Namespace: svc.Namespace, Name: svc.Name, Ports: map[int32][]proxy.Endpoint{}}
		for _, sp := range svc.Spec.Ports {
			se.Ports[sp.Port] = []proxy.Endpoint{}
		}
		for _, p := range pods {
			if !selects(svc, p) {
				continue
			}
			ip, ready := p.endpointState()
			if !ready {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				port, container, ok := p.targetPort(sp.TargetPort)
				if !ok {
					continue
				}
				se.Ports[sp.Port] = append(se.Ports[sp.Port], proxy.Endpoint{
					Address:   net.JoinHostPort(ip, strconv.Itoa(int(port))),
					Namespace: p.namespace,
					Pod:       p.name,
					Container: container,
				})
			}
		}
		for _, eps := range se.Ports {
			sort.Slice(eps, func(i, j int) bool { return eps[i].Address < eps[j].Address })
		}
		out = append(out, se)
	}
	if reflect.DeepEqual(out, s.lastEPs) {
		return
	}
	s.lastEPs = out
	s.opts.Endpoints.SetEndpoints(out)
}

// endpointState returns the pod's address and whether it may get traffic.
func (p *pod) endpointState() (string, bool) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.ip, p.ready && !p.term && p.withheld == 0 && p.ip != ""
}

// Endpoints returns the latest published endpoints.
func (s *Supervisor) Endpoints() []proxy.ServiceEndpoints {
	s.epMu.Lock()
	defer s.epMu.Unlock()
	return s.lastEPs
}
