package manifest

import (
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// OverridePrefix starts the annotations that set sub-second probe timings;
// see the package doc.
const OverridePrefix = "probe.vigil.dev/"

// MinProbePeriod is the shortest period an override may set: below it the
// probe traffic would cost more than it tells.
const MinProbePeriod = 10 * time.Millisecond

// ProbeOverrides returns the period and timeout the template's annotations
// set for one probe; kind is "liveness", "readiness" or "startup". Each is
// zero when not set. Load has already rejected malformed values, so one that
// does not parse here (a template not from Load) is treated as not set.
func ProbeOverrides(tpl *corev1.PodTemplateSpec, container, kind string) (period, timeout time.Duration) {
	if tpl == nil {
		return 0, 0
	}
	read := func(which string) time.Duration {
		v, ok := tpl.Annotations[OverridePrefix+container+"."+kind+"-"+which]
		if !ok {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0
		}
		return d
	}
	return read("period"), read("timeout")
}

// validateOverrides checks every annotation under OverridePrefix. path is
// the annotations field of the pod template or Pod.
func validateOverrides(annotations map[string]string, spec *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, key := range slices.Sorted(maps.Keys(annotations)) {
		rest, ok := strings.CutPrefix(key, OverridePrefix)
		if !ok {
			continue
		}
		kp := path.Key(key)
		value := annotations[key]

		// Container names are DNS labels, so the first dot ends the name.
		container, suffix, ok1 := strings.Cut(rest, ".")
		kind, which, ok2 := strings.Cut(suffix, "-")
		if !ok1 || !ok2 || (which != "period" && which != "timeout") || !isProbeKind(kind) {
			errs = append(errs, field.Invalid(kp, value, "unknown vigil annotation: expected "+
				OverridePrefix+"<container>.<liveness|readiness|startup>-<period|timeout>"))
			continue
		}
		probe, found := findProbe(spec, container, kind)
		if !found {
			errs = append(errs, field.Invalid(kp, value, "container \""+container+"\" not found in the pod spec"))
			continue
		}
		if probe == nil {
			errs = append(errs, field.Invalid(kp, value, "container \""+container+"\" has no "+kind+"Probe"))
			continue
		}

		d, err := time.ParseDuration(value)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(kp, value, "must be a Go duration such as \"250ms\""))
		case which == "period" && d < MinProbePeriod:
			errs = append(errs, field.Invalid(kp, value, "must be at least "+MinProbePeriod.String()))
		case which == "timeout" && d <= 0:
			errs = append(errs, field.Invalid(kp, value, "must be greater than 0"))
		}
	}
	return errs
}

func isProbeKind(kind string) bool {
	return kind == probeLiveness || kind == probeReadiness || kind == probeStartup
}

// findProbe returns the container's probe of the given kind; found is false
// when there is no such container.
func findProbe(spec *corev1.PodSpec, container, kind string) (probe *corev1.Probe, found bool) {
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if c.Name != container {
			continue
		}
		switch kind {
		case probeLiveness:
			return c.LivenessProbe, true
		case probeReadiness:
			return c.ReadinessProbe, true
		default:
			return c.StartupProbe, true
		}
	}
	return nil, false
}
