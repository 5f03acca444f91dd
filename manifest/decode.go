package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
)

const metav1NamespaceDefault = metav1.NamespaceDefault

// scheme knows only the API groups vigil reads.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic("manifest: register API types: " + err.Error())
		}
	}
	return s
}()

// decoder reads YAML (and so JSON) into the registered types. Strict mode
// reports unknown and duplicated fields as a strict decoding error while
// still returning the object.
var decoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// knownKinds is what vigil acts on. The scheme registers more kinds of the
// same groups (ConfigMap, StatefulSet...), which vigil would silently ignore.
var knownKinds = map[schema.GroupVersionKind]bool{
	appsv1.SchemeGroupVersion.WithKind("Deployment"):    true,
	corev1.SchemeGroupVersion.WithKind("Pod"):           true,
	corev1.SchemeGroupVersion.WithKind("Service"):       true,
	corev1.SchemeGroupVersion.WithKind("Secret"):        true,
	networkingv1.SchemeGroupVersion.WithKind("Ingress"): true,
}

func isKnownKind(apiVersion, kind string) bool {
	return knownKinds[schema.FromAPIVersionAndKind(apiVersion, kind)]
}

// strictFieldRe pulls the field path out of a strict decoding message such
// as `unknown field "spec.replica"`.
var strictFieldRe = regexp.MustCompile(`^(unknown|duplicate) field "(.*)"$`)

// decodeStrict decodes one object of a known kind. A strictness violation
// (unknown or duplicated field) comes back as errors, each on its own, with
// the object as decoded without it, so that its other problems can be
// reported in the same pass; the caller must still reject it. The object is
// nil when the document does not decode at all.
func decodeStrict(file, object string, doc []byte) (runtime.Object, []error) {
	obj, _, err := decoder.Decode(doc, nil, nil)
	if err == nil {
		return obj, nil
	}
	strict, ok := runtime.AsStrictDecodingError(err)
	if !ok {
		return nil, []error{&Error{File: file, Object: object, Reason: "cannot decode: " + err.Error()}}
	}

	var errs []error
	for _, e := range strict.Errors() {
		if m := strictFieldRe.FindStringSubmatch(e.Error()); m != nil {
			errs = append(errs, &Error{File: file, Object: object, Field: m[2], Reason: m[1] + " field"})
			continue
		}
		errs = append(errs, &Error{File: file, Object: object, Reason: e.Error()})
	}
	return obj, errs
}

// templateHash is 10 hex digits of the SHA-256 of the template's JSON.
// encoding/json writes struct fields in declaration order and map keys
// sorted, so equal templates give equal bytes.
func templateHash(tpl *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(tpl)
	if err != nil {
		// A PodTemplateSpec always marshals; a failure here is a bug.
		panic("manifest: marshal pod template: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:10]
}
