package power

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestQuotaFor(t *testing.T) {
	for _, c := range []struct {
		cores  float64
		q      int64
		period uint64
	}{
		{0, -1, 20000},
		{-1, -1, 20000},
		{0.3, 6000, 20000},
		{2, 40000, 20000},
		{0.05, 1000, 20000},
		{0.02, 1000, 50000},  // stretched period: quota >= 1 ms
		{0.01, 1000, 100000}, // 1% of one core
		{0.001, 1000, 100000},
	} {
		q, p := quotaFor(c.cores, 20000, 100000)
		if q != c.q || p != c.period {
			t.Errorf("quotaFor(%g) = %d/%d, want %d/%d", c.cores, q, p, c.q, c.period)
		}
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cgroup v2 on a fake unified tree: a service cgroup with cpu delegated.
// (This host's v2 hierarchy has no cpu controller, so v2 cannot run for real.)
func TestCapperV2FakeTree(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	svc := filepath.Join(root, "system.slice/llm-engine.service")
	writeFile(t, filepath.Join(root, "cgroup.controllers"), "cpuset cpu io memory pids")
	writeFile(t, filepath.Join(root, "cgroup.subtree_control"), "cpu memory pids")
	writeFile(t, filepath.Join(root, "system.slice/cgroup.controllers"), "cpu memory pids")
	writeFile(t, filepath.Join(root, "system.slice/cgroup.subtree_control"), "cpu memory pids")
	writeFile(t, filepath.Join(svc, "cgroup.controllers"), "cpu memory pids")
	writeFile(t, filepath.Join(svc, "cgroup.subtree_control"), "")
	writeFile(t, filepath.Join(svc, "cgroup.threads"), "")
	writeFile(t, filepath.Join(proc, "self/cgroup"), "0::/system.slice/llm-engine.service\n")
	// The interface files the kernel creates with the child directory (the
	// library creates missing ones with mode 0, unreadable to non-root).
	child := filepath.Join(svc, "llm-engine-infer")
	for _, f := range []string{"cgroup.type", "cpu.max", "cgroup.threads", "cgroup.procs"} {
		writeFile(t, filepath.Join(child, f), "")
	}

	cfg := CapperConfig{Version: 2, Root: root, procRoot: proc}
	if ok, why := CapabilityFor(cfg); !ok || !strings.Contains(why, "threaded child") {
		t.Fatalf("capability: %v %s", ok, why)
	}
	if ok, why := CapabilityFor(CapperConfig{Root: root, procRoot: proc}); !ok || !strings.Contains(why, "v2") {
		t.Fatalf("auto-detected capability: %v %s", ok, why)
	}
	c, err := NewCapper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() != 2 || c.Path() != child {
		t.Fatalf("version %d path %s", c.Version(), c.Path())
	}
	if got := readFile(t, filepath.Join(svc, "cgroup.subtree_control")); got != "+cpu" {
		t.Errorf("service subtree_control %q, want +cpu", got)
	}
	if got := readFile(t, filepath.Join(child, "cgroup.type")); got != "threaded" {
		t.Errorf("child type %q", got)
	}
	if got := readFile(t, filepath.Join(child, "cpu.max")); got != "max 20000" {
		t.Errorf("initial cpu.max %q", got)
	}
	if err := c.AddThreads(4242); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(child, "cgroup.threads")); got != "4242" {
		t.Errorf("child threads %q", got)
	}
	if err := c.SetQuota(0.3); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(child, "cpu.max")); got != "6000 20000" || !near(c.Quota(), 0.3) {
		t.Errorf("cpu.max %q quota %g", got, c.Quota())
	}
	if err := c.SetQuota(0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(child, "cpu.max")); got != "max 20000" || c.Quota() != 0 {
		t.Errorf("lifted cpu.max %q", got)
	}
	writeFile(t, filepath.Join(child, "cpu.stat"), "usage_usec 1500\nuser_usec 1000\n")
	if u, err := c.Usage(); err != nil || u != 1500*time.Microsecond {
		t.Errorf("usage %v %v", u, err)
	}
	// Close moves the thread back to the service group, then removes the
	// child. The fake kernel: the write to the parent empties the child.
	if err := c.RemoveThreads(4242); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(svc, "cgroup.threads")); got != "4242" {
		t.Errorf("thread not moved back to the service group: %q", got)
	}
	writeFile(t, filepath.Join(child, "cgroup.threads"), "")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(child) {
		t.Error("child cgroup left behind")
	}
	if got := readFile(t, filepath.Join(svc, "cgroup.subtree_control")); got != "-cpu" {
		t.Errorf("subtree_control not restored: %q", got)
	}

	// Not delegated: a clear reason.
	writeFile(t, filepath.Join(svc, "cgroup.controllers"), "memory pids")
	if ok, why := CapabilityFor(cfg); ok || !strings.Contains(why, "Delegate=yes") {
		t.Errorf("undelegated: %v %s", ok, why)
	}
}

func TestCapabilityThisHost(t *testing.T) {
	ok, why := Capability()
	t.Logf("Capability() = %v: %s", ok, why)
	if why == "" {
		t.Error("no reason given")
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil && !hasWord(string(b), "cpu") {
		ok2, why2 := CapabilityFor(CapperConfig{Version: 2})
		t.Logf("v2 here: %v: %s", ok2, why2)
		if ok2 || !strings.Contains(why2, "cpu controller is not available") {
			t.Errorf("v2 on a hybrid host without cpu in v2: %v %s", ok2, why2)
		}
	}
	if ok, why := CapabilityFor(CapperConfig{Version: 1, Root: t.TempDir()}); ok || !strings.Contains(why, "no cpu controller") {
		t.Errorf("empty root: %v %s", ok, why)
	}
}

// ---- real cgroup v1 ----

func needV1(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping real cgroup v1 test: not root")
	}
	if ok, why := CapabilityFor(CapperConfig{Version: 1}); !ok {
		t.Skip("skipping real cgroup v1 test: /sys/fs/cgroup/cpu not usable: " + why)
	}
}

// spinner is a CPU-bound goroutine locked to its OS thread. The goroutine
// exits without unlocking, so its (possibly throttled) thread is destroyed
// rather than returned to Go's pool.
type spinner struct {
	tid  int
	stop atomic.Bool
	done chan struct{}
}

func startSpinner(t *testing.T) *spinner {
	s := &spinner{done: make(chan struct{})}
	tidc := make(chan int)
	go func() {
		defer close(s.done)
		runtime.LockOSThread()
		tidc <- unix.Gettid()
		x := 1
		for !s.stop.Load() {
			for i := 0; i < 1000; i++ {
				x = x*1664525 + 1013904223
			}
		}
		_ = x
	}()
	s.tid = <-tidc
	t.Cleanup(func() { s.stop.Store(true); <-s.done })
	return s
}

func (s *spinner) cpu(t *testing.T) time.Duration {
	d, err := ThreadCPUTime(s.tid)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// shieldProcess moves the whole test process into its own cpu cgroup with
// the maximum cpu.shares for the duration of the test. This host is shared
// and uses autogroup scheduling: without it, the other tenants' load starves
// the Go runtime's other threads, which a locked thread needs to get a P back
// after each preemption. The measurements are about our cap, not about the
// neighbours.
func shieldProcess(t *testing.T) {
	root := "/sys/fs/cgroup/cpu"
	orig := threadGroup(t, os.Getpid(), "cpu")
	dir := filepath.Join(root, fmt.Sprintf("llm-engine-test-%d-shield", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cpu.shares"), []byte("262144"), 0); err != nil {
		t.Fatal(err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(root, orig, "cgroup.procs"), pid, 0); err != nil {
			t.Errorf("moving the test process back: %v", err)
		}
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing the shield cgroup: %v", err)
		}
	})
}

// pinger measures round trips between two ordinary goroutines (not locked,
// not in the capped group) every 10 ms.
type pinger struct {
	mu   sync.Mutex
	rtts []time.Duration
	stop atomic.Bool
	done chan struct{}
}

func startPinger(t *testing.T) *pinger {
	p := &pinger{done: make(chan struct{})}
	req, resp := make(chan struct{}), make(chan struct{})
	go func() { // responder
		for range req {
			resp <- struct{}{}
		}
	}()
	go func() {
		defer close(p.done)
		defer close(req)
		for !p.stop.Load() {
			t0 := time.Now()
			req <- struct{}{}
			<-resp
			d := time.Since(t0)
			p.mu.Lock()
			p.rtts = append(p.rtts, d)
			p.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { p.stop.Store(true); <-p.done })
	return p
}

// take returns the number of round trips since the last take, their max
// and 99th percentile.
func (p *pinger) take() (n int, max, p99 time.Duration) {
	p.mu.Lock()
	r := p.rtts
	p.rtts = nil
	p.mu.Unlock()
	if len(r) == 0 {
		return 0, 0, 0
	}
	sort.Slice(r, func(i, j int) bool { return r[i] < r[j] })
	return len(r), r[len(r)-1], r[len(r)*99/100]
}

func threadGroup(t *testing.T, tid int, ctl string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/cgroup", tid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 {
			for _, c := range strings.Split(f[1], ",") {
				if c == ctl {
					return f[2]
				}
			}
		}
	}
	return ""
}

// newTestCapper creates a capper on the real v1 hierarchy under a per-test
// top directory and checks that Close leaves nothing behind. The group gets
// the maximum cpu.shares so other tenants of this shared machine do not
// starve it below its quota (the quota, not the competition, is measured).
func newTestCapper(t *testing.T) *Capper {
	top := fmt.Sprintf("/llm-engine-test-%d-%s", os.Getpid(), strings.ToLower(t.Name()))
	c, err := NewCapper(CapperConfig{Version: 1, Group: top + "/infer"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{c.Path(), filepath.Dir(c.Path())} {
		if err := os.WriteFile(filepath.Join(d, "cpu.shares"), []byte("262144"), 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		for _, ctl := range []string{"cpu", "cpuacct"} {
			if d := filepath.Join("/sys/fs/cgroup", ctl, top); exists(d) {
				t.Errorf("cgroup left behind: %s", d)
			}
		}
	})
	return c
}

// A worker thread capped at what the estimator maps 3 W to (30% of one
// core at 10 W per busy core) gets 30% ± 10% of a core over 10 s, while an
// uncapped goroutine keeps answering within 50 ms; lifting the cap gives
// the thread its speed back; Close moves it back and removes the group.
func TestCapperV1Real(t *testing.T) {
	needV1(t)
	shieldProcess(t)
	p := startPinger(t)
	sp := startSpinner(t)
	c := newTestCapper(t)
	est, err := NewEstimateMeter(EstimatorConfig{WattsPerBusyCore: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := NewController(est, c, ControllerConfig{Estimator: est.Config()})
	if err != nil {
		t.Fatal(err)
	}
	memBefore := threadGroup(t, sp.tid, "memory")
	cpuBefore, acctBefore := threadGroup(t, sp.tid, "cpu"), threadGroup(t, sp.tid, "cpuacct")

	// Uncapped baseline.
	time.Sleep(300 * time.Millisecond)
	_, bmax, bp99 := p.take()
	t.Logf("baseline ping: max %v p99 %v", bmax, bp99)

	if err := c.AddThreads(sp.tid); err != nil {
		t.Fatal(err)
	}
	if g := threadGroup(t, sp.tid, "cpu"); !strings.HasSuffix(g, "/infer") {
		t.Fatalf("thread in cpu group %q", g)
	}
	if g := threadGroup(t, sp.tid, "memory"); g != memBefore {
		t.Fatalf("thread left its memory cgroup: %q -> %q", memBefore, g)
	}
	if err := ctl.SetCap(3); err != nil {
		t.Fatal(err)
	}
	st := ctl.Status()
	if !st.CapEnforced || !near(st.QuotaPercent, 30) {
		t.Fatalf("status %+v", st)
	}
	t.Logf("cap: %+v", st)
	if q := readFile(t, filepath.Join(c.Path(), "cpu.cfs_quota_us")); q != "6000" {
		t.Fatalf("cfs_quota_us %s", q)
	}
	time.Sleep(100 * time.Millisecond)
	p.take()
	c0, w0 := sp.cpu(t), time.Now()
	u0, _ := c.Usage()
	time.Sleep(10 * time.Second)
	c1, w1 := sp.cpu(t), time.Now()
	u1, _ := c.Usage()
	n, pmax, pp99 := p.take()
	share := float64(c1-c0) / float64(w1.Sub(w0))
	t.Logf("capped at 30%%: thread CPU %v in %v = %.1f%% of one core (cpuacct %v); ping n=%d max %v p99 %v",
		c1-c0, w1.Sub(w0).Round(time.Millisecond), share*100, u1-u0, n, pmax, pp99)
	if share < 0.27 || share > 0.33 {
		t.Errorf("capped share %.3f, want 0.30 ± 10%%", share)
	}
	if n < 100 || pmax >= 50*time.Millisecond {
		t.Errorf("uncapped goroutine: %d pings, max %v (want < 50 ms)", n, pmax)
	}

	// Lift the cap.
	if err := ctl.SetCap(0); err != nil {
		t.Fatal(err)
	}
	if q := readFile(t, filepath.Join(c.Path(), "cpu.cfs_quota_us")); q != "-1" {
		t.Fatalf("lifted cfs_quota_us %s", q)
	}
	c0, w0 = sp.cpu(t), time.Now()
	time.Sleep(1500 * time.Millisecond)
	c1, w1 = sp.cpu(t), time.Now()
	free := float64(c1-c0) / float64(w1.Sub(w0))
	t.Logf("cap lifted: %.1f%% of one core", free*100)
	if free < 0.8 {
		t.Errorf("after lifting the cap the thread ran %.1f%% of a core", free*100)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if g := threadGroup(t, sp.tid, "cpu"); g != cpuBefore {
		t.Errorf("after Close the thread is in cpu group %q, want its original %q", g, cpuBefore)
	}
	if g := threadGroup(t, sp.tid, "cpuacct"); g != acctBefore {
		t.Errorf("after Close the thread is in cpuacct group %q, want its original %q", g, acctBefore)
	}
}

// Closed loop on a fake RAPL meter whose energy grows with the workers' real
// CPU time: 15 W per busy core + 3 W idle, while the estimator assumes 10 W
// per core (so the feed-forward is wrong and the PI loop must correct it).
// The cap must hold at <= max_watts + 5% after 5 s.
func TestClosedLoopRealCgroup(t *testing.T) {
	needV1(t)
	shieldProcess(t)
	const wCore, idle, capW = 15.0, 3.0, 9.0
	a, b := startSpinner(t), startSpinner(t)
	c := newTestCapper(t)
	if err := c.AddThreads(a.tid, b.tid); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a0, b0 := a.cpu(t), b.cpu(t)
	m := &fakeMeter{src: SourceRAPL, clk: time.Now}
	m.fn = func() float64 {
		return idle*time.Since(start).Seconds() + wCore*(a.cpu(t)-a0+b.cpu(t)-b0).Seconds()
	}
	ctl, err := NewController(m, c, ControllerConfig{Estimator: EstimatorConfig{WattsPerBusyCore: 10}})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSampler(m, SamplerConfig{Period: 200 * time.Millisecond})
	s.SetController(ctl)
	s.Start()
	defer s.Close()
	if err := ctl.SetCap(capW); err != nil {
		t.Fatal(err)
	}
	capAt := time.Now()
	time.Sleep(8 * time.Second)
	s.Close()
	var trace []string
	var settled []Sample
	for _, smp := range s.Samples() {
		since := smp.At.Sub(capAt)
		trace = append(trace, fmt.Sprintf("%.1fs:%.1fW", since.Seconds(), smp.Watts))
		if since > 5*time.Second {
			settled = append(settled, smp)
		}
	}
	t.Logf("trace: %s", strings.Join(trace, " "))
	t.Logf("final: %+v", ctl.Status())
	if len(settled) < 10 {
		t.Fatalf("only %d samples after 5 s", len(settled))
	}
	// 1 s windows after 5 s, and the whole settled span.
	var sumJ float64
	for i := 0; i+5 <= len(settled); i += 5 {
		w := (settled[i+4].Joules - settled[i].Joules) / settled[i+4].At.Sub(settled[i].At).Seconds()
		if w > capW*1.05 {
			t.Errorf("1 s window at %v: %.2f W > %.2f W", settled[i].At.Sub(capAt).Round(100*time.Millisecond), w, capW*1.05)
		}
	}
	first, last := settled[0], settled[len(settled)-1]
	sumJ = last.Joules - first.Joules
	avg := sumJ / last.At.Sub(first.At).Seconds()
	t.Logf("settled average %.2f W (cap %.1f W, true quota ~%.0f%% of a core)", avg, capW, (capW*0.98-idle)/wCore*100)
	if avg > capW*1.05 || avg < capW*0.8 {
		t.Errorf("settled at %.2f W, want <= %.2f and not far below", avg, capW*1.05)
	}
}
