package power

import (
	"sync"
	"testing"
	"time"
)

// fakeMeter is a meter whose cumulative joules tests set.
type fakeMeter struct {
	mu     sync.Mutex
	joules float64
	at     time.Time
	src    string
	err    error
	clk    func() time.Time
	fn     func() float64 // when set, Read returns fn()
}

func (m *fakeMeter) Read() (Reading, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return Reading{}, m.err
	}
	at := m.at
	if m.clk != nil {
		at = m.clk()
	}
	j := m.joules
	if m.fn != nil {
		j = m.fn()
	}
	return Reading{Joules: j, At: at, Source: m.src}, nil
}
func (m *fakeMeter) Source() string { return m.src }
func (m *fakeMeter) set(j float64, at time.Time) {
	m.mu.Lock()
	m.joules, m.at = j, at
	m.mu.Unlock()
}

func TestAttributionFunc(t *testing.T) {
	for _, c := range []struct {
		j        float64
		run, all time.Duration
		want     float64
	}{
		{100, time.Second, 4 * time.Second, 25},
		{100, 0, time.Second, 0},
		{100, time.Second, 0, 0},
		{100, 2 * time.Second, time.Second, 100}, // clamped
		{-5, time.Second, time.Second, 0},
	} {
		if got := Attribution(c.j, c.run, c.all); !near(got, c.want) {
			t.Errorf("Attribution(%g, %v, %v) = %g, want %g", c.j, c.run, c.all, got, c.want)
		}
	}
}

// Two overlapping runs. Threads 1 and 2 belong to run A, thread 3 to run B
// only, and thread 2 is shared by A and B from B's start (pool threads
// serving a batch). Another process uses the rest of the package's CPU.
func TestRunMeterOverlappingRuns(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := &fakeMeter{src: SourceRAPL}
	cpu := map[int]time.Duration{1: 0, 2: 0, 3: 0}
	var all time.Duration
	rm := NewRunMeter(m, RunMeterConfig{
		TotalCPU:  func() (time.Duration, error) { return all, nil },
		ThreadCPU: func(tid int) (time.Duration, error) { return cpu[tid], nil },
	})
	m.set(0, t0)
	a, err := rm.Start([]int{1, 2})
	if err != nil {
		t.Fatal(err)
	}

	// Interval 1 (1 s, A alone): E += 10 J; thread 1 +0.5 s, thread 2 +0.3 s,
	// whole package 1.0 s (0.2 s someone else's). A gets 10 × 0.8 = 8 J.
	cpu[1], cpu[2], all = 500*time.Millisecond, 300*time.Millisecond, time.Second
	m.set(10, t0.Add(time.Second))
	b, err := rm.Start([]int{3, 2})
	if err != nil {
		t.Fatal(err)
	}

	// Interval 2 (1 s, A and B): E += 20 J; thread 1 +0.4, thread 2 +0.6
	// (shared: 0.3 each), thread 3 +0.6, package +2.0 s (0.4 other).
	// A: 0.4+0.3 = 0.7 → 7 J; B: 0.6+0.3 = 0.9 → 9 J.
	cpu[1], cpu[2], cpu[3], all = 900*time.Millisecond, 900*time.Millisecond, 600*time.Millisecond, 3*time.Second
	m.set(30, t0.Add(2*time.Second))
	if err := rm.Tick(); err != nil {
		t.Fatal(err)
	}
	// Interval 3 (1 s): B weighs 3 in the shared thread (3 of the 4
	// sequences of the batch). E += 20 J; thread 1 +0.2, thread 2 +0.8
	// (A 0.2, B 0.6), thread 3 +0.4, package +2.0 s (0.6 other).
	// A: 0.4 → 4 J; B: 1.0 → 10 J.
	b.SetWeight(3)
	cpu[1], cpu[2], cpu[3], all = 1100*time.Millisecond, 1700*time.Millisecond, time.Second, 5*time.Second
	m.set(50, t0.Add(3*time.Second))
	ra, err := a.Stop()
	if err != nil {
		t.Fatal(err)
	}
	// Interval 4 (1 s, B alone): E += 5 J; thread 2 +0.1, thread 3 +0.2,
	// package +0.5 s. B: 0.3 → 3 J.
	cpu[2], cpu[3], all = 1800*time.Millisecond, 1200*time.Millisecond, 5500*time.Millisecond
	m.set(55, t0.Add(4*time.Second))
	rb, err := b.Stop()
	if err != nil {
		t.Fatal(err)
	}

	if !near(ra.Joules, 8+7+4) || !near(ra.CPUSeconds, 0.8+0.7+0.4) || ra.Wall != 3*time.Second || !near(ra.AvgWatts, 19.0/3) || ra.Source != SourceRAPL {
		t.Errorf("run A: %+v, want 19 J, 1.9 CPU s, 3 s", ra)
	}
	if !near(rb.Joules, 9+10+3) || !near(rb.CPUSeconds, 0.9+1.0+0.3) || rb.Wall != 3*time.Second {
		t.Errorf("run B: %+v, want 22 J, 2.2 CPU s, 3 s", rb)
	}
	if ra.Joules+rb.Joules > 55 {
		t.Errorf("runs got %g J of 55", ra.Joules+rb.Joules)
	}
	if _, err := a.Stop(); err == nil {
		t.Error("second Stop: want an error")
	}
}

// With threads' CPU counted more finely than the package's (schedstat ns
// vs /proc/stat ticks), runs never get more than the window's energy.
func TestRunMeterNeverExceedsWindow(t *testing.T) {
	m := &fakeMeter{src: SourceEstimate}
	cpu := map[int]time.Duration{}
	var all time.Duration
	rm := NewRunMeter(m, RunMeterConfig{
		TotalCPU:  func() (time.Duration, error) { return all, nil },
		ThreadCPU: func(tid int) (time.Duration, error) { return cpu[tid], nil },
	})
	t0 := time.Unix(0, 0)
	m.set(0, t0)
	a, _ := rm.Start([]int{1})
	b, _ := rm.Start([]int{2})
	cpu[1], cpu[2], all = 600*time.Millisecond, 600*time.Millisecond, time.Second // 1.2 > 1.0
	m.set(12, t0.Add(time.Second))
	ra, _ := a.Stop()
	rb, _ := b.Stop()
	if !near(ra.Joules+rb.Joules, 12) || !near(ra.Joules, 6) || ra.Source != SourceEstimate {
		t.Fatalf("a %+v b %+v: want 6 J each", ra, rb)
	}
}
