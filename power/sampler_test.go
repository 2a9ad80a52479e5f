package power

import (
	"errors"
	"testing"
	"time"
)

func TestSamplerRingBuffer(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := &fakeMeter{src: SourceRAPL}
	s := NewSampler(m, SamplerConfig{Period: time.Hour, Size: 4})
	sub, cancel := s.Subscribe(2)
	m.set(0, t0)
	s.step() // baseline: no sample
	if _, ok := s.Latest(); ok {
		t.Fatal("baseline produced a sample")
	}
	// Six periods of 200 ms at 10, 20, ... 60 W.
	j := 0.0
	for i := 1; i <= 6; i++ {
		j += float64(i*10) * 0.2
		m.set(j, t0.Add(time.Duration(i)*200*time.Millisecond))
		s.step()
	}
	got := s.Samples()
	if len(got) != 4 {
		t.Fatalf("%d samples, want 4", len(got))
	}
	for i, smp := range got {
		want := float64((i + 3) * 10)
		if !near(smp.Watts, want) || smp.Source != SourceRAPL || !smp.At.Equal(t0.Add(time.Duration(i+3)*200*time.Millisecond)) {
			t.Errorf("sample %d = %+v, want %g W", i, smp, want)
		}
	}
	st := s.Status()
	if !near(st.CurrentWatts, 60) || !near(st.Joules, j) || st.Source != SourceRAPL || len(st.Samples) != 4 || st.CapWatts != 0 {
		t.Errorf("status %+v", st)
	}
	// The subscriber was not read: it holds the first two samples, the
	// rest were dropped without blocking the sampler.
	if a, b := <-sub, <-sub; !near(a.Watts, 10) || !near(b.Watts, 20) {
		t.Errorf("subscriber got %g, %g", a.Watts, b.Watts)
	}
	select {
	case x := <-sub:
		t.Errorf("unexpected buffered sample %+v", x)
	default:
	}
	cancel()
	if _, open := <-sub; open {
		t.Error("cancelled subscription still open")
	}
	cancel() // idempotent

	m.mu.Lock()
	m.err = errors.New("boom")
	m.mu.Unlock()
	s.step()
	if st := s.Status(); st.Err != "boom" || len(st.Samples) != 4 {
		t.Errorf("after an error: %+v", st)
	}
}

func TestSamplerRunning(t *testing.T) {
	m := &fakeMeter{src: SourceEstimate, clk: time.Now}
	start := time.Now()
	m.fn = func() float64 { return 5 * time.Since(start).Seconds() } // 5 W
	s := NewSampler(m, SamplerConfig{Period: 20 * time.Millisecond})
	sub, _ := s.Subscribe(16)
	s.Start()
	var got []Sample
	for len(got) < 3 {
		select {
		case smp := <-sub:
			got = append(got, smp)
		case <-time.After(2 * time.Second):
			t.Fatal("no samples")
		}
	}
	s.Close()
	if _, open := <-drain(sub); open {
		t.Error("subscriber channel not closed by Close")
	}
	for _, smp := range got {
		if smp.Watts < 4 || smp.Watts > 6 || smp.Source != SourceEstimate {
			t.Errorf("sample %+v, want ~5 W estimate", smp)
		}
	}
	s.Close() // idempotent
	NewSampler(m, SamplerConfig{}).Close()
}

// drain empties a channel and then reports whether it is still open.
func drain(ch <-chan Sample) <-chan Sample {
	out := make(chan Sample)
	go func() {
		for range ch {
		}
		close(out)
	}()
	return out
}

func TestSamplerTicksRunMeter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := &fakeMeter{src: SourceRAPL}
	var cpu, all time.Duration
	rm := NewRunMeter(m, RunMeterConfig{
		TotalCPU:  func() (time.Duration, error) { return all, nil },
		ThreadCPU: func(int) (time.Duration, error) { return cpu, nil },
	})
	s := NewSampler(m, SamplerConfig{Period: time.Hour})
	s.SetRunMeter(rm)
	m.set(0, t0)
	s.step()
	run, err := rm.Start([]int{7})
	if err != nil {
		t.Fatal(err)
	}
	// The run's thread uses all the CPU for 1 s (10 J), then a quarter of it
	// for 1 s (another 10 J): sampled per period, the run gets 10 + 2.5 J.
	cpu, all = time.Second, time.Second
	m.set(10, t0.Add(time.Second))
	s.step()
	cpu, all = 1250*time.Millisecond, 2*time.Second
	m.set(20, t0.Add(2*time.Second))
	res, err := run.Stop()
	if err != nil || !near(res.Joules, 12.5) || !near(res.AvgWatts, 6.25) {
		t.Fatalf("run %+v %v, want 12.5 J over 2 s", res, err)
	}
}
