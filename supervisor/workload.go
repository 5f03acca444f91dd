package supervisor

import (
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigil-agent/vigil/manifest"
)

// scale brings the pods of one workload toward its desired replicas and
// template. waiting are the workload's replicas that the previous pass could
// not place; they are tried again first. Caller holds s.mu.
//
// Pods whose template hash matches the workload are current, the others old.
// Without old pods, the current ones are scaled to the replica count. During
// a rollout the Deployment's RollingUpdate bounds apply: at most
// replicas+maxSurge pods exist, and an old pod is removed only while at least
// replicas-maxUnavailable pods stay ready. The Recreate strategy, and bare
// Pods (whose name cannot be shared), remove the old pods first.
//
// Old pods that are not ready go first, as the Deployment controller scales
// down unhealthy old replicas first, except pods still settling after
// adoption: their probes started over with the new vigil, so "not ready"
// only means "not probed yet". They are neither counted as ready nor
// removed; the rollout waits for their first readiness result (within one
// probe period), so a template changed while vigil was down rolls like one
// changed while it ran instead of replacing every old pod at once.
func (s *Supervisor) scale(wl *manifest.Workload, pods []*pod, waiting []*unplaced) {
	var current, old []*pod
	terminating := 0
	for _, p := range pods {
		switch {
		case p.terminating():
			terminating++
		case p.hash == wl.Hash:
			current = append(current, p)
		default:
			old = append(old, p)
		}
	}
	want := int(wl.Replicas)

	recreate := wl.Kind == "Pod" || wl.Strategy.Type == appsv1.RecreateDeploymentStrategyType
	if recreate {
		for _, p := range old {
			s.log.Info("replacing pod with a changed template", "pod", p.ref())
			p.terminate()
		}
		if len(old) > 0 || terminating > 0 {
			// Start the new pods once the old ones are gone.
			s.carryUnplaced(wl, want-len(current), waiting)
			return
		}
		old = nil
	}

	if len(old) == 0 {
		s.place(wl, want-len(current), waiting)
		if extra := len(current) - want; extra > 0 {
			for _, p := range removalOrder(current)[:extra] {
				s.log.Info("scaling down", "pod", p.ref())
				p.terminate()
			}
		}
		return
	}

	surge, unavailable := rolloutBounds(wl, want)
	readyCount := 0
	for _, p := range append(current[:len(current):len(current)], old...) {
		if p.isReady() {
			readyCount++
		}
	}
	total := len(current) + len(old) + terminating
	s.place(wl, min(want-len(current), want+surge-total), waiting)
	minReady := want - unavailable
	for _, p := range removalOrder(old) {
		if p.isSettling() {
			continue
		}
		if p.isReady() {
			if readyCount-1 < minReady {
				break
			}
			readyCount--
		}
		s.log.Info("rolling out: removing old pod", "pod", p.ref(), "hash", wl.Hash)
		p.terminate()
	}
}

// rolloutBounds resolves maxSurge and maxUnavailable against replicas the way
// the Deployment controller does: surge rounds up, unavailable down, and both
// zero means a surge of one.
func rolloutBounds(wl *manifest.Workload, replicas int) (surge, unavailable int) {
	surge, unavailable = 1, 0
	ru := wl.Strategy.RollingUpdate
	if ru == nil {
		return surge, unavailable
	}
	if ru.MaxSurge != nil {
		if v, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, replicas, true); err == nil {
			surge = v
		}
	}
	if ru.MaxUnavailable != nil {
		if v, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, replicas, false); err == nil {
			unavailable = v
		}
	}
	if surge == 0 && unavailable == 0 {
		surge = 1
	}
	return surge, unavailable
}

// removalOrder sorts pods so the ones least worth keeping come first: not
// ready before ready, then newest first.
func removalOrder(pods []*pod) []*pod {
	out := append([]*pod(nil), pods...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := out[i].isReady(), out[j].isReady()
		if ri != rj {
			return !ri
		}
		return out[i].created.After(out[j].created)
	})
	return out
}
