package supervisor

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vigil-agent/vigil/manifest"
)

// A replica that scale wants but cannot place (newPod fails: no free host
// port) has no pod, no worker and nothing on the runtime, yet it is owed.
// PodList shows it as Kubernetes shows a pod the scheduler cannot place:
// phase Pending, PodScheduled=False with reason Unschedulable, no node and
// no containers. It keeps its name and UID from one retry to the next, so
// the list does not churn, and the pod that is finally placed takes both
// over: to a reader the Pending pod turns into a starting one, as it would
// on a cluster. It is forgotten as soon as scale stops asking for it: the
// replica got placed, the workload was scaled down, changed or removed.

// ReasonUnschedulable is the PodScheduled condition's reason on a replica
// that could not be placed, the scheduler's own word for it.
const ReasonUnschedulable = corev1.PodReasonUnschedulable

// unplaced is one replica of a workload that could not be placed.
type unplaced struct {
	name, uid string
	hash      string // the template it was for
	created   time.Time
	view      *corev1.Pod
}

// place starts n new pods of wl. The replicas in waiting, left unplaced by
// an earlier pass, go first, under their own names. What cannot be placed
// is kept in s.unplaced for PodList and the next pass. Caller holds s.mu.
func (s *Supervisor) place(wl *manifest.Workload, n int, waiting []*unplaced) {
	waiting = ofTemplate(waiting, wl.Hash)
	var still []*unplaced
	why := ""
	for i := range n {
		var u *unplaced
		if i < len(waiting) {
			u = waiting[i]
		} else {
			u = newUnplaced(wl)
		}
		if why == "" {
			if why = s.startPod(wl, u.name, u.uid); why == "" {
				continue
			}
		}
		// Every replica of wl asks for the same ports: once one cannot
		// have them, the others of this pass cannot either.
		u.view = s.unplacedView(wl, u, why)
		still = append(still, u)
	}
	s.keepUnplaced(wl, still)
}

// carryUnplaced keeps up to n of the replicas in waiting as they are,
// without trying to place them: a pass that waits for old pods to go before
// it starts new ones still owes them. Caller holds s.mu.
func (s *Supervisor) carryUnplaced(wl *manifest.Workload, n int, waiting []*unplaced) {
	waiting = ofTemplate(waiting, wl.Hash)
	s.keepUnplaced(wl, waiting[:max(min(n, len(waiting)), 0)])
}

func (s *Supervisor) keepUnplaced(wl *manifest.Workload, us []*unplaced) {
	if len(us) > 0 {
		s.unplaced[workloadKey(wl.Kind, wl.Namespace, wl.Name)] = us
	}
}

// ofTemplate returns the replicas that were for the template hash: one for
// an older template is not owed any more, its replacement has a new name.
func ofTemplate(us []*unplaced, hash string) []*unplaced {
	var out []*unplaced
	for _, u := range us {
		if u.hash == hash {
			out = append(out, u)
		}
	}
	return out
}

// newUnplaced names a new replica of wl, as its pod would be named.
func newUnplaced(wl *manifest.Workload) *unplaced {
	name := wl.Name
	if wl.Kind != "Pod" {
		name = fmt.Sprintf("%s-%s-%s", wl.Name, wl.Hash, randomSuffix())
	}
	return &unplaced{name: name, uid: newUID(), hash: wl.Hash, created: time.Now()}
}

// unplacedView is the v1.Pod PodList shows for u: the pod as it would be
// made from wl's template, Pending, with no node, start time or container
// statuses, since nothing of it exists yet.
func (s *Supervisor) unplacedView(wl *manifest.Workload, u *unplaced, message string) *corev1.Pod {
	meta := templateMeta(&wl.Template, wl.Kind, wl.Name, u.hash)
	meta.Name, meta.Namespace, meta.UID = u.name, wl.Namespace, types.UID(u.uid)
	meta.CreationTimestamp = metav1.NewTime(u.created)
	v := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: meta,
		Spec:       *wl.Template.Spec.DeepCopy(),
	}
	v.Spec.HostNetwork = s.opts.HostNetwork || v.Spec.HostNetwork
	v.Status.Phase = corev1.PodPending
	v.Status.Conditions = []corev1.PodCondition{{
		Type:               corev1.PodScheduled,
		Status:             corev1.ConditionFalse,
		Reason:             ReasonUnschedulable,
		Message:            message,
		LastTransitionTime: metav1.NewTime(u.created),
	}}
	return v
}
