package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testCA signs leaf certificates for the SNI tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert, key, pool}
}

// secret returns a kubernetes.io/tls Secret for names.
func (ca *testCA) secret(t *testing.T, name string, names ...string) *corev1.Secret {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		},
	}
}

func TestTLSBySNIAndHTTP2(t *testing.T) {
	ca := newTestCA(t)
	protos := make(chan string, 4)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Header.Get("X-Forwarded-Proto")
		_, _ = io.WriteString(w, "secure")
	})
	ing := ingressOf("tls", 0,
		ruleOf("a.example", pathOf(prefix, "/", "app")),
		ruleOf("x.wild.example", pathOf(prefix, "/", "app")))
	ing.Spec.TLS = []networkingv1.IngressTLS{
		{Hosts: []string{"a.example"}, SecretName: "a"},
		{Hosts: []string{"*.wild.example"}, SecretName: "wild"},
		{Hosts: []string{"broken.example"}, SecretName: "missing"},
	}
	p := New(Options{ServeClassless: true})
	errs := p.SetConfig(Config{
		Ingresses: ingsOf(ing), Services: servicesFor(ing),
		Secrets: []*corev1.Secret{ca.secret(t, "a", "a.example"), ca.secret(t, "wild", "*.wild.example")},
	})
	if len(errs) != 1 {
		t.Fatalf("errors %v, want one for the missing secret", errs)
	}
	p.SetEndpoints([]ServiceEndpoints{epsOf("app", b.addr())})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := p.newServer()
	srv.TLSConfig = p.TLSConfig()
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	for _, tc := range []struct{ sni, wantName string }{
		{"a.example", "a.example"},
		{"x.wild.example", "*.wild.example"},
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: tc.sni, RootCAs: ca.pool})
		if err != nil {
			t.Errorf("SNI %s: %v", tc.sni, err)
			continue
		}
		if got := conn.ConnectionState().PeerCertificates[0].DNSNames[0]; got != tc.wantName {
			t.Errorf("SNI %s: certificate for %s, want %s", tc.sni, got, tc.wantName)
		}
		conn.Close()
	}
	if _, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.example",
		RootCAs: ca.pool}); err == nil {
		t.Errorf("handshake without a certificate for the name succeeded")
	}

	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	res, err := client.Get("https://a.example/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || string(body) != "secure" {
		t.Errorf("got %s %q, want HTTP/2 and the backend's body", res.Proto, body)
	}
	if got := <-protos; got != "https" {
		t.Errorf("X-Forwarded-Proto %q, want https", got)
	}
}

func TestServeShutsDownGracefully(t *testing.T) {
	// A backend that names no Content-Type tells the servers apart:
	// net/http sniffs one, the direct loop relays the head as it is.
	b := newRawBackend(t, func(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	for _, netHTTPOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("NetHTTPOnly=%v", netHTTPOnly), func(t *testing.T) {
			addr := closedAddr(t)
			p := New(Options{ServeClassless: true, NetHTTPOnly: netHTTPOnly})
			if errs := p.SetConfig(Config{Ingresses: ingsOf(ingressOf("app", 0,
				ruleOf("app.test", pathOf("Prefix", "/", "app")))),
				Services: []*corev1.Service{serviceOf("app")}}); len(errs) > 0 {
				t.Fatal(errs)
			}
			p.SetEndpoints([]ServiceEndpoints{epsOf("app", b.addr())})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- p.Serve(ctx, addr, "") }()
			// Wait for the listener by retrying the connect, bounded.
			var res *http.Response
			var err error
			for i := 0; i < 200; i++ {
				if res, err = http.Get("http://" + addr + "/"); err == nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("Serve never listened: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("unknown host: %d, want 404", res.StatusCode)
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			req.Host = "app.test"
			if res, err = http.DefaultClient.Do(req); err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if sniffed := res.Header.Get("Content-Type") != ""; res.StatusCode != 200 || sniffed != netHTTPOnly {
				t.Errorf("status %d, Content-Type %q: served by the wrong server", res.StatusCode,
					res.Header.Get("Content-Type"))
			}
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Serve after cancel: %v", err)
			}
		})
	}
	if err := New(Options{}).Serve(context.Background(), "256.0.0.1:1", ""); err == nil {
		t.Errorf("Serve on a bad address returned nil")
	}
}
