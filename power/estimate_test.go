package power

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClock is a settable time source.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func durOf(s float64) time.Duration      { return time.Duration(s * float64(time.Second)) }
func constCPU(d *time.Duration) func() (time.Duration, error) {
	return func() (time.Duration, error) { return *d, nil }
}

func TestEstimatorModel(t *testing.T) {
	c, err := EstimatorConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.WattsPerBusyCore != 10 || c.IdleWatts != 0 || c.CPU != CPUProcess {
		t.Fatalf("defaults: %+v", c)
	}
	c = EstimatorConfig{WattsPerBusyCore: 12, IdleWatts: 3}
	if got := c.Joules(durOf(1.5), durOf(2)); !near(got, 1.5*12+2*3) {
		t.Errorf("Joules = %g", got)
	}
	if got := c.Watts(0.5); !near(got, 9) {
		t.Errorf("Watts(0.5) = %g", got)
	}
	if got := c.CoresFor(9); !near(got, 0.5) {
		t.Errorf("CoresFor(9) = %g", got)
	}
	if got := c.CoresFor(2); got >= 0 {
		t.Errorf("CoresFor below idle = %g, want < 0", got)
	}
	for _, bad := range []EstimatorConfig{{WattsPerBusyCore: -1}, {IdleWatts: -1}, {CPU: "gpu"}, {CPU: CPUThreads}} {
		if _, err := NewEstimateMeter(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestEstimateMeterProcess(t *testing.T) {
	clk := newFakeClock()
	var cpu time.Duration = 5 * time.Second // CPU before the meter existed: not charged
	m, err := NewEstimateMeter(EstimatorConfig{WattsPerBusyCore: 10, IdleWatts: 2, procCPU: constCPU(&cpu), now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	cpu += 1500 * time.Millisecond // 1.5 cores busy for a second
	r, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.Joules, 1.5*10+1*2) || r.Source != SourceEstimate || r.Domains != nil {
		t.Fatalf("reading %+v, want 17 J estimate", r)
	}
	clk.add(2 * time.Second) // idle: only the idle share
	r, _ = m.Read()
	if !near(r.Joules, 17+4) {
		t.Fatalf("idle: %g J, want 21", r.Joules)
	}
	if b, _ := m.BusyCPU(); b != 1500*time.Millisecond {
		t.Fatalf("BusyCPU %v", b)
	}
}

func TestEstimateMeterThreads(t *testing.T) {
	clk := newFakeClock()
	cpu := map[int]time.Duration{1: 10 * time.Second, 2: 3 * time.Second}
	tids := []int{1, 2}
	m, err := NewEstimateMeter(EstimatorConfig{
		CPU:     CPUThreads,
		Threads: func() []int { return tids },
		threadCPU: func(tid int) (time.Duration, error) {
			if c, ok := cpu[tid]; ok {
				return c, nil
			}
			return 0, os.ErrNotExist
		},
		now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	cpu[1] += 800 * time.Millisecond
	cpu[2] += 200 * time.Millisecond
	cpu[3] = 50 * time.Second // a new worker: baselined, not charged
	tids = []int{1, 2, 3}
	r, _ := m.Read()
	if !near(r.Joules, 10) {
		t.Fatalf("1 core-second: %g J, want 10", r.Joules)
	}
	clk.add(time.Second)
	delete(cpu, 2) // exited
	cpu[3] += 500 * time.Millisecond
	r, _ = m.Read()
	if !near(r.Joules, 15) {
		t.Fatalf("after exit and new thread: %g J, want 15", r.Joules)
	}
}

// The real sources on this machine: a locked, spinning thread's schedstat
// grows with wall time, and so does the process's CPU time.
func TestThreadAndProcessCPUTimeReal(t *testing.T) {
	var stop atomic.Bool
	tidc := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tidc <- unix.Gettid()
		for !stop.Load() {
		}
	}()
	tid := <-tidc
	p0, err := ProcessCPUTime(0)
	if err != nil {
		t.Fatal(err)
	}
	t0, err := ThreadCPUTime(tid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	t1, _ := ThreadCPUTime(tid)
	p1, _ := ProcessCPUTime(0)
	stop.Store(true)
	// The machine may be shared: only bound the spin's CPU time by wall time.
	if d := t1 - t0; d <= 0 || d > 400*time.Millisecond {
		t.Errorf("spinning thread ran %v in 300 ms", d)
	}
	if p1-p0 < t1-t0-20*time.Millisecond {
		t.Errorf("process CPU %v < thread CPU %v", p1-p0, t1-t0)
	}
	if _, err := ThreadCPUTime(1 << 30); err == nil {
		t.Error("no error for a missing thread")
	}
	if b, err := SystemBusyCPU(); err != nil || b <= 0 {
		t.Errorf("SystemBusyCPU %v %v", b, err)
	}
	if pc, err := ProcessCPUTime(os.Getppid()); err != nil && !errors.Is(err, os.ErrNotExist) || pc < 0 {
		t.Errorf("parent CPU %v %v", pc, err)
	}
}
