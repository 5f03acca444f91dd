package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// certTable picks a certificate by SNI: exact name, then one-label
// wildcard, then the certificate of a spec.tls entry that lists no hosts.
type certTable struct {
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate
	def   *tls.Certificate
}

var errNoCertificate = errors.New("no certificate for server name")

func (c *certTable) get(name string) (*tls.Certificate, error) {
	name = hostKey(name)
	if crt := c.exact[name]; crt != nil {
		return crt, nil
	}
	if pd := parentDomain(name); pd != "" {
		if crt := c.wild[pd]; crt != nil {
			return crt, nil
		}
	}
	if c.def != nil {
		return c.def, nil
	}
	return nil, fmt.Errorf("%w %q", errNoCertificate, name)
}

// buildCerts loads the kubernetes.io/tls Secrets named by spec.tls. Like
// paths, a host claimed twice keeps the oldest Ingress's certificate.
func (b *builder) buildCerts() *certTable {
	ct := &certTable{
		exact: make(map[string]*tls.Certificate),
		wild:  make(map[string]*tls.Certificate),
	}
	loaded := make(map[string]*tls.Certificate)
	for _, ing := range b.ings {
		for _, entry := range ing.Spec.TLS {
			if entry.SecretName == "" {
				b.errorf(ing, "tls entry without secretName; ignored")
				continue
			}
			id := ing.Namespace + "/" + entry.SecretName
			crt, ok := loaded[id]
			if !ok {
				var err error
				crt, err = loadCert(b.secrets[id])
				if err != nil {
					b.errorf(ing, "tls secret %q: %v", entry.SecretName, err)
				}
				loaded[id] = crt
			}
			if crt == nil {
				continue
			}
			if len(entry.Hosts) == 0 && ct.def == nil {
				ct.def = crt
			}
			for _, h := range entry.Hosts {
				h = strings.ToLower(h)
				m, key := ct.exact, h
				if strings.HasPrefix(h, "*.") {
					m, key = ct.wild, h[2:]
				}
				if m[key] == nil {
					m[key] = crt
				}
			}
		}
	}
	return ct
}

func loadCert(s *corev1.Secret) (*tls.Certificate, error) {
	if s == nil {
		return nil, errors.New("not found")
	}
	if s.Type != "" && s.Type != corev1.SecretTypeTLS {
		return nil, fmt.Errorf("type is %q, want %q", s.Type, corev1.SecretTypeTLS)
	}
	field := func(k string) []byte {
		if v, ok := s.Data[k]; ok {
			return v
		}
		return []byte(s.StringData[k])
	}
	crt, err := tls.X509KeyPair(field(corev1.TLSCertKey), field(corev1.TLSPrivateKeyKey))
	if err != nil {
		return nil, fmt.Errorf("load key pair: %w", err)
	}
	return &crt, nil
}

// getCertificate serves tls.Config.GetCertificate from the current table.
func (p *Proxy) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	t := p.table.Load()
	if t == nil || t.certs == nil {
		return nil, errNoCertificate
	}
	return t.certs.get(hello.ServerName)
}

// TLSConfig returns the server TLS configuration Serve uses: SNI over the
// current table's certificates, HTTP/2 and HTTP/1.1 by ALPN.
func (p *Proxy) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: p.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
