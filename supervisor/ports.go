package supervisor

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// portAllocator hands out host ports to pods that share the node's network
// namespace, so that replicas of one workload do not collide. A port is
// skipped when something outside vigil already listens on it.
type portAllocator struct {
	lo, hi int

	mu    sync.Mutex
	used  map[int]string // port -> owning pod UID
	probe func(port int) bool
	next  int
}

func newPortAllocator(lo, hi int) *portAllocator {
	return &portAllocator{lo: lo, hi: hi, used: map[int]string{}, probe: portFree, next: lo}
}

// portFree reports whether nothing listens on the loopback port now.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// allocate returns n free ports for owner.
func (a *portAllocator) allocate(owner string, n int) ([]int32, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var got []int32
	size := a.hi - a.lo + 1
	for tried := 0; tried < size && len(got) < n; tried++ {
		p := a.next
		a.next++
		if a.next > a.hi {
			a.next = a.lo
		}
		if _, taken := a.used[p]; taken || !a.probe(p) {
			continue
		}
		a.used[p] = owner
		got = append(got, int32(p))
	}
	if len(got) < n {
		for _, p := range got {
			delete(a.used, int(p))
		}
		return nil, fmt.Errorf("allocate %d host ports: range %d-%d exhausted", n, a.lo, a.hi)
	}
	return got, nil
}

// reserve marks ports of an adopted pod as taken.
func (a *portAllocator) reserve(owner string, ports []int32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range ports {
		a.used[int(p)] = owner
	}
}

// release frees every port owner holds.
func (a *portAllocator) release(owner string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, o := range a.used {
		if o == owner {
			delete(a.used, p)
		}
	}
}
