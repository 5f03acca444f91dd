package prober

import (
	"fmt"
	"net/netip"
	"strings"
)

// hostPolicy says which hosts a probe's httpGet.host or tcpSocket.host may
// name: the target's own Host and loopback always, others when listed.
type hostPolicy struct {
	names    map[string]bool
	prefixes []netip.Prefix
}

// newHostPolicy parses allowed entries: IP addresses, CIDRs or host names.
func newHostPolicy(entries []string) (*hostPolicy, error) {
	p := &hostPolicy{names: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
			continue
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("parse allowed host %q: %w", e, err)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
		default:
			if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			if strings.ContainsAny(e, " :@?#") {
				return nil, fmt.Errorf("parse allowed host %q: neither an IP, a CIDR nor a host name", e)
			}
			p.names[strings.ToLower(e)] = true
		}
	}
	return p, nil
}

// allowed reports whether host may be probed for a target whose own host is own.
func (p *hostPolicy) allowed(host, own string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, own) || strings.EqualFold(host, "localhost") {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if a.IsLoopback() {
			return true
		}
		if o, err := netip.ParseAddr(own); err == nil && o.Unmap() == a {
			return true
		}
		for _, pfx := range p.prefixes {
			if pfx.Contains(a) {
				return true
			}
		}
		return false
	}
	return p.names[strings.ToLower(host)]
}
