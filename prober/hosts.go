package prober

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// hostPolicy says which hosts a probe's httpGet.host or tcpSocket.host may
// name: the target's own Host and loopback always, others when listed.
type hostPolicy struct {
	names    map[string]bool
	prefixes []netip.Prefix
}

// newHostPolicy parses allowed entries: IP addresses, CIDRs or host names.
// An entry's error says which of the three forms it was taken for.
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
				return nil, fmt.Errorf("%q is not a valid CIDR: %w", e, err)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
		default:
			a, err := netip.ParseAddr(strings.Trim(e, "[]"))
			if err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			if looksLikeIP(e) {
				return nil, fmt.Errorf("%q is not a valid IP address: %w", e, err)
			}
			name := strings.ToLower(e)
			if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
				return nil, fmt.Errorf("%q is neither an IP, a CIDR nor a valid host name: %s",
					e, strings.Join(msgs, "; "))
			}
			p.names[name] = true
		}
	}
	return p, nil
}

// looksLikeIP reports whether s was meant as an address: digits and dots
// only (a host name's last label is never all digits), or a colon or
// brackets, which no host name has.
func looksLikeIP(s string) bool {
	if strings.ContainsAny(s, ":[]") {
		return true
	}
	return strings.Trim(s, "0123456789.") == ""
}

// HostPolicy is the rule a Manager applies to a probe handler's host (see
// Options.AllowedHosts), for callers that check probes before they run.
type HostPolicy struct{ p *hostPolicy }

// NewHostPolicy parses entries as Options.AllowedHosts are parsed.
func NewHostPolicy(entries []string) (*HostPolicy, error) {
	p, err := newHostPolicy(entries)
	if err != nil {
		return nil, err
	}
	return &HostPolicy{p}, nil
}

// Allowed reports whether a handler may name host for a target whose own
// address is own. With own empty (the pod's address is not known yet) only
// loopback and the allowed entries pass.
func (h *HostPolicy) Allowed(host, own string) bool {
	return h.p.allowed(host, own)
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
