package supervisor

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/manifest"
)

// withPort gives the workload's container one declared port, so that each
// of its pods takes a host port in host-network mode.
func withPort(wl *manifest.Workload) *manifest.Workload {
	wl.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}
	return wl
}

// oneHostPort starts a host-network supervisor over a fake runtime behind
// the fault injector, with a port range of a single port that is free
// whatever else listens on this host.
func oneHostPort(t *testing.T, reg prometheus.Registerer) (*Supervisor, *fakeRuntime, func()) {
	rt, _, _, opts := faultyOptions(t)
	opts.HostNetwork, opts.PortRange = true, [2]int{45990, 45990}
	opts.ResyncPeriod = time.Second
	opts.Registerer = reg
	s := New(opts)
	s.ports.probe = func(int) bool { return true }
	return s, rt, runSupervisor(s)
}

// settle lets the supervisor act on what it was given.
func settle() {
	time.Sleep(3 * time.Second)
	synctest.Wait()
}

// listed splits the pod list of s into the pods that exist and the
// replicas shown Pending because they could not be placed.
func listed(t *testing.T, s *Supervisor) (placed, pending []corev1.Pod) {
	t.Helper()
	for _, p := range s.PodList().Items {
		if cond := podCondition(p, corev1.PodScheduled); cond.Status == corev1.ConditionFalse {
			pending = append(pending, p)
		} else {
			placed = append(placed, p)
		}
	}
	return placed, pending
}

func podCondition(p corev1.Pod, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}

// checkUnschedulable fails the test unless p is shown as a replica the
// scheduler could not place: Pending, Unschedulable, no node, no containers.
func checkUnschedulable(t *testing.T, p corev1.Pod) {
	t.Helper()
	cond := podCondition(p, corev1.PodScheduled)
	if p.Status.Phase != corev1.PodPending || cond.Reason != ReasonUnschedulable ||
		!strings.Contains(cond.Message, "exhausted") {
		t.Errorf("unplaced replica %s: phase %s, PodScheduled %+v; want Pending, Unschedulable "+
			"with the allocation error", p.Name, p.Status.Phase, cond)
	}
	if p.Spec.NodeName != "" || len(p.Status.ContainerStatuses) != 0 || p.Status.StartTime != nil {
		t.Errorf("unplaced replica %s: node %q, %d container statuses, start %v; want none",
			p.Name, p.Spec.NodeName, len(p.Status.ContainerStatuses), p.Status.StartTime)
	}
}

// Two replicas and one host port: one pod runs, the other replica is listed
// as Pending and Unschedulable under one name across retries, and it never
// reaches the runtime nor the container metrics.
func TestUnplacedReplicaListedPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		s, rt, stop := oneHostPort(t, reg)
		defer stop()
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{
			withPort(deployment("app", 2, corev1.RestartPolicyAlways, "h")),
		}})
		settle()

		placed, pending := listed(t, s)
		if len(placed) != 1 || placed[0].Status.Phase != corev1.PodRunning || len(pending) != 1 {
			t.Fatalf("%d pods placed (%v), %d pending; want 1 Running and 1 Pending",
				len(placed), phases(placed), len(pending))
		}
		checkUnschedulable(t, pending[0])
		p := pending[0]
		if !strings.HasPrefix(p.Name, "app-h-") || p.Labels[LabelTemplateHash] != "h" ||
			len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Name != "app" {
			t.Errorf("unplaced replica %s, labels %v, owners %v; want a replica of app-h",
				p.Name, p.Labels, p.OwnerReferences)
		}
		if n := rt.callsOf("RunPodSandbox"); n != 1 {
			t.Errorf("%d RunPodSandbox calls, want 1: the unplaced replica must not reach the runtime", n)
		}

		// Further retries fail the same way and keep the entry as it was.
		settle()
		_, again := listed(t, s)
		if len(again) != 1 || again[0].Name != p.Name || again[0].UID != p.UID {
			t.Errorf("after more retries the pending replicas are %v, want %s still", names(again), p.Name)
		}

		// The metrics know only the pod that runs.
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range families {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "pod" && l.GetValue() == p.Name {
						t.Errorf("metric %s has a series for the unplaced replica %s", mf.GetName(), p.Name)
					}
				}
			}
		}
	})
}

// When the port frees up, because the workload holding it is scaled down
// or removed, the Pending replica is placed: a real pod takes its name and
// UID, and nothing is left Pending.
func TestUnplacedReplicaPlacedWhenPortFrees(t *testing.T) {
	tests := []struct {
		desc string
		// free is the manifest set that gives up the port of "holder".
		free func(holder, waiter *manifest.Workload) []*manifest.Workload
	}{
		{"holder scaled to zero", func(holder, waiter *manifest.Workload) []*manifest.Workload {
			holder.Replicas = 0
			return []*manifest.Workload{holder, waiter}
		}},
		{"holder removed", func(_, waiter *manifest.Workload) []*manifest.Workload {
			return []*manifest.Workload{waiter}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, rt, stop := oneHostPort(t, nil)
				defer stop()
				holder := withPort(deployment("holder", 1, corev1.RestartPolicyAlways, "h"))
				waiter := withPort(deployment("waiter", 1, corev1.RestartPolicyAlways, "h"))
				s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{holder}})
				settle()
				s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{holder, waiter}})
				settle()
				_, pending := listed(t, s)
				if len(pending) != 1 || !strings.HasPrefix(pending[0].Name, "waiter-h-") {
					t.Fatalf("pending replicas %v, want one of waiter", names(pending))
				}
				checkUnschedulable(t, pending[0])
				want := pending[0]

				s.SetManifests(&manifest.Set{Workloads: tt.free(holder, waiter)})
				settle()
				placed, pending := listed(t, s)
				if len(pending) != 0 {
					t.Errorf("pending replicas %v after the port was freed, want none", names(pending))
				}
				if len(placed) != 1 || placed[0].Name != want.Name || placed[0].UID != want.UID ||
					placed[0].Status.Phase != corev1.PodRunning {
					t.Fatalf("pods %v (%v), want %s Running in the pending replica's place",
						names(placed), phases(placed), want.Name)
				}
				if rt.running("holder") != 0 || rt.running("waiter") != 1 {
					t.Errorf("running holder %d, waiter %d; want 0 and 1",
						rt.running("holder"), rt.running("waiter"))
				}
			})
		})
	}
}

// Scaling down to the replicas that have ports drops the Pending replica,
// and the pod that runs stays.
func TestUnplacedReplicaGoneOnScaleDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, rt, stop := oneHostPort(t, nil)
		defer stop()
		wl := withPort(deployment("app", 2, corev1.RestartPolicyAlways, "h"))
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{wl}})
		settle()
		before, pending := listed(t, s)
		if len(before) != 1 || len(pending) != 1 {
			t.Fatalf("%d pods placed, %d pending; want 1 and 1", len(before), len(pending))
		}

		scaled := withPort(deployment("app", 1, corev1.RestartPolicyAlways, "h"))
		s.SetManifests(&manifest.Set{Workloads: []*manifest.Workload{scaled}})
		settle()
		after, pending := listed(t, s)
		if len(pending) != 0 {
			t.Errorf("pending replicas %v after scaling to 1, want none", names(pending))
		}
		if len(after) != 1 || after[0].UID != before[0].UID {
			t.Errorf("pods %v after scaling to 1, want %s still", names(after), before[0].Name)
		}
		if n := rt.callsOf("RunPodSandbox"); n != 1 || rt.running("app") != 1 {
			t.Errorf("%d sandboxes made, %d containers running; want 1 and 1", n, rt.running("app"))
		}
	})
}

func names(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func phases(pods []corev1.Pod) []corev1.PodPhase {
	var out []corev1.PodPhase
	for _, p := range pods {
		out = append(out, p.Status.Phase)
	}
	return out
}
