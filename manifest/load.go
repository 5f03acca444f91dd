package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Load reads every manifest file in dir (see the package doc for which). It
// returns an error only when dir itself cannot be read; every bad file,
// document or object is recorded in Set.Errors and the rest still load.
func Load(dir string) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read manifests directory: %w", err)
	}

	l := newLoader()
	// os.ReadDir sorts by file name, which makes the output deterministic.
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !isManifestName(name) {
			continue
		}
		path := filepath.Join(dir, name)
		if info, err := os.Stat(path); err != nil || info.IsDir() {
			// A dangling symlink or a directory named like a manifest.
			if err != nil {
				l.fail(&Error{File: path, Reason: "cannot read file: " + err.Error()})
			}
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			l.fail(&Error{File: path, Reason: "cannot read file: " + err.Error()})
			continue
		}
		l.loadFile(path, data)
	}
	return l.set, nil
}

// LoadFile is Load for a single file. It returns an error only when the file
// cannot be read.
func LoadFile(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest file: %w", err)
	}
	l := newLoader()
	l.loadFile(path, data)
	return l.set, nil
}

func isManifestName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// loader accumulates one Set and remembers which identities it has seen.
type loader struct {
	set *Set
	// seen maps "Kind namespace/name" to where it was first defined.
	seen map[string]string
}

func newLoader() *loader {
	return &loader{set: &Set{}, seen: map[string]string{}}
}

func (l *loader) fail(errs ...error) {
	l.set.Errors = append(l.set.Errors, errs...)
}

func (l *loader) loadFile(path string, data []byte) {
	if strings.EqualFold(filepath.Ext(path), ".json") {
		// A JSON file holds one document (which may be a List).
		if !json.Valid(data) {
			var v any
			err := json.Unmarshal(data, &v)
			l.fail(&Error{File: path, Object: "document 1", Reason: "invalid JSON: " + err.Error()})
			return
		}
		l.loadDoc(path, "document 1", data)
		return
	}

	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		label := fmt.Sprintf("document %d", n)
		if err != nil {
			// The reader cannot resynchronise after a bad separator.
			l.fail(&Error{File: path, Object: label, Reason: "invalid YAML: " + err.Error()})
			return
		}
		l.loadDoc(path, label, doc)
	}
}

// header is the part of any object read before its kind is known.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	// Items is read only for a List.
	Items []json.RawMessage `json:"items"`
}

// loadDoc decodes one document (or List item) and hands the object to the
// loader for its kind.
func (l *loader) loadDoc(file, label string, doc []byte) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
		l.fail(&Error{File: file, Object: label, Reason: "invalid YAML: " + msg})
		return
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
		return // empty document, or only comments
	}

	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		l.fail(&Error{File: file, Object: label,
			Reason: "not a Kubernetes object: expected a mapping with apiVersion and kind"})
		return
	}
	if h.Kind == "" || h.APIVersion == "" {
		l.fail(&Error{File: file, Object: label, Reason: "apiVersion and kind are required"})
		return
	}
	if h.Kind == "List" && h.APIVersion == "v1" {
		for i, item := range h.Items {
			l.loadDoc(file, fmt.Sprintf("%s item %d", label, i), item)
		}
		return
	}
	if !isKnownKind(h.APIVersion, h.Kind) {
		l.fail(&Error{File: file, Object: label, Reason: fmt.Sprintf(
			"unknown kind %q in apiVersion %q: vigil reads apps/v1 Deployment, v1 Pod, "+
				"v1 Service, v1 Secret and networking.k8s.io/v1 Ingress", h.Kind, h.APIVersion)})
		return
	}

	object := objectName(h.Kind, h.Metadata.Namespace, h.Metadata.Name, label)
	obj, decodeErrs := decodeStrict(file, object, doc)
	if obj == nil {
		l.fail(decodeErrs...)
		return
	}

	switch o := obj.(type) {
	case *appsv1.Deployment:
		l.addDeployment(file, label, o, decodeErrs)
	case *corev1.Pod:
		l.addPod(file, label, o, decodeErrs)
	case *corev1.Service:
		l.addService(file, label, o, decodeErrs)
	case *corev1.Secret:
		l.addSecret(file, label, o, decodeErrs)
	case *networkingv1.Ingress:
		l.addIngress(file, label, o, decodeErrs)
	}
}

// rejected records an object's decoding errors and then its validation
// errors, and reports whether there were any: such an object is not loaded.
func (l *loader) rejected(file, object string, decodeErrs []error, invalid field.ErrorList) bool {
	l.fail(decodeErrs...)
	l.fail(toErrors(file, object, invalid)...)
	return len(decodeErrs)+len(invalid) > 0
}

// objectName renders "Kind namespace/name" for Error.Object, falling back to
// the document label when the object has no name.
func objectName(kind, namespace, name, label string) string {
	if namespace == "" {
		namespace = metav1NamespaceDefault
	}
	if name == "" {
		return fmt.Sprintf("%s %s/<unnamed> (%s)", kind, namespace, label)
	}
	return fmt.Sprintf("%s %s/%s", kind, namespace, name)
}

// claim records an object's identity; for a duplicate it returns the error
// to report on this, the later, definition.
func (l *loader) claim(file, label, object, name string) error {
	if name == "" {
		return nil // reported by metadata validation
	}
	where := file + " " + label
	if first, ok := l.seen[object]; ok {
		return &Error{File: file, Object: object, Field: "metadata.name",
			Reason: "duplicate object: already defined in " + first}
	}
	l.seen[object] = where
	return nil
}

func (l *loader) addDeployment(file, label string, d *appsv1.Deployment, decodeErrs []error) {
	defaultDeployment(d)
	object := objectName("Deployment", d.Namespace, d.Name, label)
	if err := l.claim(file, label, object, d.Name); err != nil {
		l.fail(append(decodeErrs, err)...)
		return
	}
	if l.rejected(file, object, decodeErrs, validateDeployment(d)) {
		return
	}
	l.set.Workloads = append(l.set.Workloads, &Workload{
		Kind:      "Deployment",
		Namespace: d.Namespace,
		Name:      d.Name,
		Replicas:  *d.Spec.Replicas,
		Template:  d.Spec.Template,
		Strategy:  d.Spec.Strategy,
		Hash:      templateHash(&d.Spec.Template),
		File:      file,
	})
}

func (l *loader) addPod(file, label string, p *corev1.Pod, decodeErrs []error) {
	defaultPod(p)
	object := objectName("Pod", p.Namespace, p.Name, label)
	if err := l.claim(file, label, object, p.Name); err != nil {
		l.fail(append(decodeErrs, err)...)
		return
	}
	if l.rejected(file, object, decodeErrs, validatePod(p)) {
		return
	}
	tpl := corev1.PodTemplateSpec{Spec: p.Spec}
	tpl.Labels = p.Labels
	tpl.Annotations = p.Annotations
	l.set.Workloads = append(l.set.Workloads, &Workload{
		Kind:      "Pod",
		Namespace: p.Namespace,
		Name:      p.Name,
		Replicas:  1,
		Template:  tpl,
		Hash:      templateHash(&tpl),
		File:      file,
	})
}

func (l *loader) addService(file, label string, s *corev1.Service, decodeErrs []error) {
	defaultService(s)
	object := objectName("Service", s.Namespace, s.Name, label)
	if err := l.claim(file, label, object, s.Name); err != nil {
		l.fail(append(decodeErrs, err)...)
		return
	}
	if l.rejected(file, object, decodeErrs, validateService(s)) {
		return
	}
	l.set.Services = append(l.set.Services, s)
}

func (l *loader) addSecret(file, label string, s *corev1.Secret, decodeErrs []error) {
	defaultSecret(s)
	object := objectName("Secret", s.Namespace, s.Name, label)
	if err := l.claim(file, label, object, s.Name); err != nil {
		l.fail(append(decodeErrs, err)...)
		return
	}
	if l.rejected(file, object, decodeErrs, validateSecret(s)) {
		return
	}
	if s.Type == corev1.SecretTypeTLS {
		l.set.Secrets = append(l.set.Secrets, s)
	}
}

func (l *loader) addIngress(file, label string, ing *networkingv1.Ingress, decodeErrs []error) {
	defaultIngress(ing)
	object := objectName("Ingress", ing.Namespace, ing.Name, label)
	if err := l.claim(file, label, object, ing.Name); err != nil {
		l.fail(append(decodeErrs, err)...)
		return
	}
	if l.rejected(file, object, decodeErrs, validateIngress(ing)) {
		return
	}
	l.set.Ingresses = append(l.set.Ingresses, ing)
}
