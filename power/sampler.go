package power

import (
	"sync"
	"time"
)

// Sample is one sampler period.
type Sample struct {
	At     time.Time
	Watts  float64 // average power over the period ending At
	Joules float64 // cumulative meter joules at At
	Source string  // SourceRAPL or SourceEstimate
}

// Status is the power state for the status RPC and metrics exposition.
type Status struct {
	Source       string   // the meter's source
	CurrentWatts float64  // watts over the last period (0 before the first sample)
	Joules       float64  // cumulative joules at the last sample
	Samples      []Sample // the ring buffer, oldest first
	CapStatus             // the cap controller's state (zero when none)
	Err          string   // last meter error, "" when the last read succeeded
}

// SamplerConfig configures a Sampler.
type SamplerConfig struct {
	Period time.Duration // default 200 ms
	Size   int           // ring buffer length, default 300 (one minute at 200 ms)
}

// Sampler reads a meter at a fixed period, keeps the last Size samples,
// notifies subscribers (non-blocking: a slow subscriber misses samples) and
// drives an optional cap Controller and RunMeter with each sample.
type Sampler struct {
	meter  Meter
	period time.Duration

	mu     sync.Mutex
	ring   []Sample
	next   int // index of the next write
	n      int // samples held
	last   Reading
	have   bool
	err    error
	subs   map[int]chan Sample
	nextID int
	ctl    *Controller
	rm     *RunMeter

	started   bool
	startOnce sync.Once
	stopOnce  sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// NewSampler returns a stopped sampler over m.
func NewSampler(m Meter, cfg SamplerConfig) *Sampler {
	if cfg.Period <= 0 {
		cfg.Period = 200 * time.Millisecond
	}
	if cfg.Size <= 0 {
		cfg.Size = 300
	}
	return &Sampler{meter: m, period: cfg.Period, ring: make([]Sample, cfg.Size),
		subs: map[int]chan Sample{}, stop: make(chan struct{}), done: make(chan struct{})}
}

// SetController makes the sampler feed each sample to c and report c's
// state in Status.
func (s *Sampler) SetController(c *Controller) {
	s.mu.Lock()
	s.ctl = c
	s.mu.Unlock()
}

// SetRunMeter makes the sampler tick rm with each reading, so overlapping
// runs are split per period.
func (s *Sampler) SetRunMeter(rm *RunMeter) {
	s.mu.Lock()
	s.rm = rm
	s.mu.Unlock()
}

// Start takes a baseline reading and starts sampling every period.
func (s *Sampler) Start() {
	s.startOnce.Do(func() {
		s.mu.Lock()
		s.started = true
		s.mu.Unlock()
		s.step()
		go s.loop()
	})
}

// Close stops sampling and closes the subscriber channels.
func (s *Sampler) Close() {
	s.stopOnce.Do(func() {
		s.startOnce.Do(func() {}) // no Start after Close
		close(s.stop)
		s.mu.Lock()
		started := s.started
		s.mu.Unlock()
		if started {
			<-s.done
		}
		s.mu.Lock()
		for id, ch := range s.subs {
			close(ch)
			delete(s.subs, id)
		}
		s.mu.Unlock()
	})
}

func (s *Sampler) loop() {
	defer close(s.done)
	t := time.NewTicker(s.period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.step()
		}
	}
}

// step takes one reading; the first one is a baseline and makes no sample.
func (s *Sampler) step() {
	r, err := s.meter.Read()
	s.mu.Lock()
	if err != nil {
		s.err = err
		s.mu.Unlock()
		return
	}
	s.err = nil
	prev, had := s.last, s.have
	s.last, s.have = r, true
	ctl, rm := s.ctl, s.rm
	if !had {
		s.mu.Unlock()
		if rm != nil {
			_ = rm.tickWith(r)
		}
		return
	}
	smp := Sample{At: r.At, Joules: r.Joules, Source: r.Source}
	if dt := r.At.Sub(prev.At).Seconds(); dt > 0 {
		smp.Watts = (r.Joules - prev.Joules) / dt
	}
	s.ring[s.next] = smp
	s.next = (s.next + 1) % len(s.ring)
	if s.n < len(s.ring) {
		s.n++
	}
	for _, ch := range s.subs {
		select {
		case ch <- smp:
		default: // subscriber busy: drop
		}
	}
	s.mu.Unlock()
	if rm != nil {
		_ = rm.tickWith(r)
	}
	if ctl != nil {
		ctl.Observe(smp)
	}
}

// Samples returns the buffered samples, oldest first.
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samplesLocked()
}

func (s *Sampler) samplesLocked() []Sample {
	out := make([]Sample, 0, s.n)
	start := (s.next - s.n + len(s.ring)) % len(s.ring)
	for i := 0; i < s.n; i++ {
		out = append(out, s.ring[(start+i)%len(s.ring)])
	}
	return out
}

// Latest returns the newest sample.
func (s *Sampler) Latest() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return Sample{}, false
	}
	return s.ring[(s.next-1+len(s.ring))%len(s.ring)], true
}

// Subscribe returns a channel receiving every new sample (buffered buf,
// minimum 1; samples are dropped while it is full) and a function ending the
// subscription. Close closes all subscriber channels.
func (s *Sampler) Subscribe(buf int) (<-chan Sample, func()) {
	if buf < 1 {
		buf = 1
	}
	ch := make(chan Sample, buf)
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.subs[id] = ch
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c, ok := s.subs[id]; ok {
			delete(s.subs, id)
			close(c)
		}
	}
}

// Status returns the meter source, the current watts, the buffered samples
// and the cap state.
func (s *Sampler) Status() Status {
	s.mu.Lock()
	st := Status{Source: s.meter.Source(), Samples: s.samplesLocked()}
	if s.n > 0 {
		l := s.ring[(s.next-1+len(s.ring))%len(s.ring)]
		st.CurrentWatts, st.Joules = l.Watts, l.Joules
	}
	if s.err != nil {
		st.Err = s.err.Error()
	}
	ctl := s.ctl
	s.mu.Unlock()
	if ctl != nil {
		st.CapStatus = ctl.Status()
	}
	return st
}
