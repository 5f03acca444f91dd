package supervisor

import (
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/manifest"
)

// Two vigils with different instance names share one runtime: each labels
// what it creates with its name, and a restarted one adopts its own pods
// and neither adopts nor removes the other's, even with no manifests.
func TestInstancesShareRuntime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		start := func(instance string, wls ...*manifest.Workload) (*Supervisor, func()) {
			opts := testOptions(t, rt)
			opts.Instance = instance
			s := New(opts)
			stop := runSupervisor(s)
			s.SetManifests(&manifest.Set{Workloads: wls})
			time.Sleep(time.Second)
			synctest.Wait()
			return s, stop
		}
		_, stopA := start("a", deployment("one", 1, corev1.RestartPolicyAlways, "h"))
		_, stopB := start("b", deployment("two", 1, corev1.RestartPolicyAlways, "h"))
		stopA()
		stopB()

		byInstance := func() map[string]int {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			n := map[string]int{}
			for _, sb := range rt.sandboxes {
				if sb.State == 0 { // SANDBOX_READY
					n[sb.Labels[LabelInstance]]++
				}
			}
			return n
		}
		if got := byInstance(); got["a"] != 1 || got["b"] != 1 || len(got) != 2 {
			t.Fatalf("ready sandboxes by instance %v, want one each for a and b", got)
		}

		// b restarts with no manifests: its own pod is adopted and removed
		// as an orphan; a's is not touched.
		sb, stop := start("b")
		defer stop()
		if got := byInstance(); got["a"] != 1 || got["b"] != 0 {
			t.Errorf("after b restarted without manifests: ready sandboxes %v, want a:1 b:0", got)
		}
		if n := len(sb.PodList().Items); n != 0 {
			t.Errorf("b shows %d pods, want none", n)
		}
	})
}
