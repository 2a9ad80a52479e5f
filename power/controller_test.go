package power

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQuota records quotas; n threads.
type fakeQuota struct {
	mu    sync.Mutex
	n     int
	cores float64
	calls int
}

func (f *fakeQuota) SetQuota(c float64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c <= 0 {
		c = 0
	}
	f.cores = c
	f.calls++
	return nil
}

func (f *fakeQuota) NumThreads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *fakeQuota) get() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cores
}

func TestControllerOpenLoop(t *testing.T) {
	q := &fakeQuota{n: 2}
	est := EstimatorConfig{WattsPerBusyCore: 10, IdleWatts: 1}
	c, err := NewController(&fakeMeter{src: SourceEstimate}, q, ControllerConfig{Estimator: est})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.CapWatts != 0 || st.CapEnforced || st.Reason != "no cap" {
		t.Errorf("initial status %+v", st)
	}
	// (4 W − 1 W) / 10 W per core = 0.3 cores.
	if err := c.SetCap(4); err != nil {
		t.Fatal(err)
	}
	if !near(q.get(), 0.3) {
		t.Fatalf("quota %g, want 0.3", q.get())
	}
	st := c.Status()
	if !st.CapEnforced || st.Loop != "open" || !near(st.QuotaPercent, 30) || !strings.Contains(st.Reason, "open loop") {
		t.Errorf("status %+v", st)
	}
	// Samples do not move an open loop...
	c.Observe(Sample{At: time.Now(), Watts: 50, Source: SourceEstimate})
	if !near(q.get(), 0.3) {
		t.Errorf("open loop moved to %g", q.get())
	}
	// ...but bounds follow the thread count: max = threads × 1 core.
	if err := c.SetCap(100); err != nil {
		t.Fatal(err)
	}
	if !near(q.get(), 2) {
		t.Errorf("quota %g, want the 2-thread maximum", q.get())
	}
	q.mu.Lock()
	q.n = 3
	q.mu.Unlock()
	c.Observe(Sample{At: time.Now(), Source: SourceEstimate})
	if !near(q.get(), 3) {
		t.Errorf("after a third thread: %g, want 3", q.get())
	}
	// Below idle: the minimum, 1% of one core, with a reason.
	if err := c.SetCap(0.5); err != nil {
		t.Fatal(err)
	}
	if !near(q.get(), 0.01) || !strings.Contains(c.Status().Reason, "minimum") {
		t.Errorf("tiny cap: quota %g, %q", q.get(), c.Status().Reason)
	}
	// Lifting the cap restores an unlimited quota.
	if err := c.SetCap(0); err != nil {
		t.Fatal(err)
	}
	if q.get() != 0 || c.Status().CapEnforced || c.Status().QuotaPercent != 0 {
		t.Errorf("lifted: quota %g, status %+v", q.get(), c.Status())
	}
	if err := c.SetCap(-1); err == nil {
		t.Error("negative cap accepted")
	}
}

func TestControllerWithoutCapper(t *testing.T) {
	c, err := NewController(&fakeMeter{src: SourceRAPL}, nil, ControllerConfig{Unavailable: "no writable cpu controller"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCap(10); err == nil || !strings.Contains(err.Error(), "no writable cpu controller") {
		t.Errorf("SetCap: %v", err)
	}
	if st := c.Status(); st.CapEnforced || st.CapWatts != 10 || !strings.Contains(st.Reason, "cannot enforce") {
		t.Errorf("status %+v", st)
	}
}

// simulate drives the closed loop against a plant drawing
// idle + wPerCore × quota watts (plus ±noise), one sample per 200 ms, and
// returns the watts of each period.
func simulate(t *testing.T, wPerCore, idle, capW, noise float64, steps int) []float64 {
	t.Helper()
	q := &fakeQuota{n: 2}
	c, err := NewController(&fakeMeter{src: SourceRAPL}, q, ControllerConfig{Estimator: EstimatorConfig{WattsPerBusyCore: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCap(capW); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(0, 0)
	var ws []float64
	for i := 0; i < steps; i++ {
		at = at.Add(200 * time.Millisecond)
		w := idle + wPerCore*q.get() + noise*math.Sin(float64(i)*1.7)
		ws = append(ws, w)
		c.Observe(Sample{At: at, Watts: w, Source: SourceRAPL})
	}
	if st := c.Status(); st.Loop != "closed" || !st.CapEnforced {
		t.Errorf("status %+v", st)
	}
	return ws
}

// The PI loop settles within 5 s (25 samples) at <= cap + 5% even when the
// real watts per core are 0.3× to 2.5× what the estimator assumes.
func TestControllerClosedLoopSimulated(t *testing.T) {
	for _, g := range []float64{0.3, 0.6, 1, 1.5, 2.5} {
		ws := simulate(t, 10*g, 3, 9, 0.2, 50)
		settled := ws[25:]
		var sum float64
		for _, w := range settled {
			sum += w
			if w > 9*1.05 {
				t.Errorf("gain %g: %.2f W after 5 s (cap 9 W): %v", g, w, ws)
				break
			}
		}
		if avg := sum / float64(len(settled)); avg < 9*0.9 {
			t.Errorf("gain %g: settled at %.2f W, far below the 9 W cap", g, avg)
		}
	}
	// An unreachable cap (idle alone exceeds it) pins the minimum and says so.
	q := &fakeQuota{n: 2}
	c, _ := NewController(&fakeMeter{src: SourceRAPL}, q, ControllerConfig{})
	_ = c.SetCap(2)
	at := time.Unix(0, 0)
	for i := 0; i < 40; i++ {
		at = at.Add(200 * time.Millisecond)
		c.Observe(Sample{At: at, Watts: 5 + 10*q.get(), Source: SourceRAPL})
	}
	if !near(q.get(), 0.01) || !strings.Contains(c.Status().Reason, "not reachable") {
		t.Errorf("unreachable cap: quota %g, %q", q.get(), c.Status().Reason)
	}
}

func TestSamplerDrivesController(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := &fakeMeter{src: SourceRAPL}
	q := &fakeQuota{n: 1}
	c, _ := NewController(m, q, ControllerConfig{})
	s := NewSampler(m, SamplerConfig{Period: time.Hour})
	s.SetController(c)
	_ = c.SetCap(5) // feed-forward 0.5 cores
	m.set(0, t0)
	s.step()
	m.set(2, t0.Add(200*time.Millisecond)) // 10 W
	s.step()                               // straddles the change: ignored
	m.set(4, t0.Add(400*time.Millisecond)) // 10 W
	s.step()
	st := s.Status()
	if st.CapWatts != 5 || st.Loop != "closed" || st.QuotaPercent >= 50 || !st.CapEnforced || !near(st.CurrentWatts, 10) {
		t.Errorf("status %+v", st)
	}
}
