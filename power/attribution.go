package power

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Attribution is the share of a window's energy charged to a run:
//
//	windowJoules × runCPU / allCPU
//
// where runCPU is the CPU time the run's worker threads spent in the window
// and allCPU the CPU time the meter's energy covers in the same window (for
// RAPL: every busy CPU of the package, /proc/stat; for the estimate: the CPU
// time it counted). The ratio is clamped to [0, 1]; allCPU <= 0 gives 0.
func Attribution(windowJoules float64, runCPU, allCPU time.Duration) float64 {
	if allCPU <= 0 || runCPU <= 0 || windowJoules <= 0 {
		return 0
	}
	r := float64(runCPU) / float64(allCPU)
	if r > 1 {
		r = 1
	}
	return windowJoules * r
}

// RunEnergy is the energy attributed to one run.
type RunEnergy struct {
	Joules     float64       // attributed energy
	AvgWatts   float64       // Joules / Wall
	CPUSeconds float64       // CPU time of the run's threads (its share of shared threads)
	Wall       time.Duration // Start to Stop
	Source     string        // SourceRAPL or SourceEstimate
}

// RunMeterConfig configures a RunMeter. Zero values pick the defaults.
type RunMeterConfig struct {
	// TotalCPU returns the cumulative CPU time the meter's energy covers
	// (the attribution denominator). Default: the meter's BusyCPU when it
	// has one (the estimator), else SystemBusyCPU (RAPL: the package).
	TotalCPU func() (time.Duration, error)
	// ThreadCPU returns a thread's cumulative CPU time (default
	// ThreadCPUTime).
	ThreadCPU func(tid int) (time.Duration, error)
}

// RunMeter attributes a meter's energy to runs. One RunMeter serves all runs
// of an engine; each run is wrapped by Start/Stop.
//
// At every boundary (a Start, a Stop, a Tick — the Sampler ticks it each
// period) the RunMeter reads the meter, the denominator CPU time and the CPU
// time of every thread of an active run, and splits the interval since the
// previous boundary:
//
//   - a thread's CPU delta is split among the active runs that list it, in
//     proportion to their weights (1 unless SetWeight changed it): runs that
//     share pool threads share their CPU time, equally by default;
//   - a run is charged ΔE × c_run / max(ΔT, Σ c), where ΔE is the energy of
//     the interval, c_run its CPU share, ΔT the denominator's delta and Σ c
//     the CPU of all tracked threads (so the runs together never get more
//     than ΔE even when the counters' resolutions differ).
type RunMeter struct {
	meter     Meter
	totalCPU  func() (time.Duration, error)
	threadCPU func(tid int) (time.Duration, error)

	mu     sync.Mutex
	runs   map[*Run]struct{}
	have   bool // a snapshot exists
	lastE  float64
	lastT  time.Duration
	lastAt time.Time
	tids   map[int]time.Duration // last CPU time of tracked threads
}

// Run is one run being metered.
type Run struct {
	rm      *RunMeter
	tids    []int
	weight  float64
	start   time.Time
	joules  float64
	cpu     time.Duration
	source  string
	stopped bool
}

// NewRunMeter returns a RunMeter over m.
func NewRunMeter(m Meter, cfg RunMeterConfig) *RunMeter {
	rm := &RunMeter{meter: m, totalCPU: cfg.TotalCPU, threadCPU: cfg.ThreadCPU,
		runs: map[*Run]struct{}{}, tids: map[int]time.Duration{}}
	if rm.totalCPU == nil {
		if b, ok := m.(interface{ BusyCPU() (time.Duration, error) }); ok {
			rm.totalCPU = b.BusyCPU
		} else {
			rm.totalCPU = SystemBusyCPU
		}
	}
	if rm.threadCPU == nil {
		rm.threadCPU = ThreadCPUTime
	}
	return rm
}

// Start begins metering a run whose work is done by the threads tids.
func (rm *RunMeter) Start(tids []int) (*Run, error) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if err := rm.advance(nil); err != nil {
		return nil, err
	}
	r := &Run{rm: rm, tids: dedup(tids), weight: 1, start: rm.lastAt, source: rm.meter.Source()}
	for _, tid := range r.tids {
		if _, ok := rm.tids[tid]; !ok {
			t, err := rm.threadCPU(tid)
			if err != nil {
				return nil, fmt.Errorf("power: run thread %d: %w", tid, err)
			}
			rm.tids[tid] = t
		}
	}
	rm.runs[r] = struct{}{}
	return r, nil
}

// Tick folds the interval since the last boundary into the active runs.
// Calling it periodically makes the split of overlapping runs finer; the
// Sampler does it when given the RunMeter.
func (rm *RunMeter) Tick() error {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return rm.advance(nil)
}

// tickWith is Tick with a reading already taken (by the Sampler).
func (rm *RunMeter) tickWith(r Reading) error {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return rm.advance(&r)
}

// SetWeight sets the run's weight in the split of threads it shares with
// other runs (default 1), e.g. its number of sequences in a batch. It
// applies from the next boundary on.
func (r *Run) SetWeight(w float64) {
	r.rm.mu.Lock()
	defer r.rm.mu.Unlock()
	if err := r.rm.advance(nil); err == nil && w >= 0 {
		r.weight = w
	}
}

// Stop ends the run and returns its energy. On a meter error the energy up
// to the last good boundary is returned with the error.
func (r *Run) Stop() (RunEnergy, error) {
	rm := r.rm
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if r.stopped {
		return r.result(rm.lastAt), errors.New("power: run already stopped")
	}
	err := rm.advance(nil)
	r.stopped = true
	delete(rm.runs, r)
	// Forget threads no other run uses.
	used := map[int]bool{}
	for o := range rm.runs {
		for _, tid := range o.tids {
			used[tid] = true
		}
	}
	for tid := range rm.tids {
		if !used[tid] {
			delete(rm.tids, tid)
		}
	}
	return r.result(rm.lastAt), err
}

func (r *Run) result(end time.Time) RunEnergy {
	wall := end.Sub(r.start)
	e := RunEnergy{Joules: r.joules, CPUSeconds: r.cpu.Seconds(), Wall: wall, Source: r.source}
	if wall > 0 {
		e.AvgWatts = r.joules / wall.Seconds()
	}
	return e
}

// advance takes a snapshot and charges the interval since the previous one.
func (rm *RunMeter) advance(rd *Reading) error {
	if rd != nil && rm.have && rd.At.Before(rm.lastAt) {
		rd = nil // older than the last boundary (a Start raced the sampler)
	}
	if rd == nil {
		r, err := rm.meter.Read()
		if err != nil {
			return err
		}
		rd = &r
	}
	total, err := rm.totalCPU()
	if err != nil {
		return fmt.Errorf("power: attribution denominator: %w", err)
	}
	cur := make(map[int]time.Duration, len(rm.tids))
	delta := make(map[int]time.Duration, len(rm.tids))
	var sumThreads time.Duration
	for tid, prev := range rm.tids {
		t, err := rm.threadCPU(tid)
		if err != nil {
			continue // exited: its last interval is lost
		}
		cur[tid] = t
		if t > prev {
			delta[tid] = t - prev
			sumThreads += t - prev
		}
	}
	if rm.have && len(rm.runs) > 0 {
		dE := rd.Joules - rm.lastE
		dT := total - rm.lastT
		den := dT
		if sumThreads > den {
			den = sumThreads
		}
		// Sum of weights of the runs sharing each thread.
		wsum := map[int]float64{}
		for r := range rm.runs {
			for _, tid := range r.tids {
				wsum[tid] += r.weight
			}
		}
		for r := range rm.runs {
			var c float64 // nanoseconds
			for _, tid := range r.tids {
				if ws := wsum[tid]; ws > 0 {
					c += float64(delta[tid]) * r.weight / ws
				}
			}
			r.cpu += time.Duration(c)
			r.joules += Attribution(dE, time.Duration(c), den)
			if rd.Source != r.source {
				r.source = SourceEstimate // mixed sources: not a measurement
			}
		}
	}
	rm.tids = cur
	rm.lastE, rm.lastT, rm.lastAt, rm.have = rd.Joules, total, rd.At, true
	return nil
}

func dedup(tids []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, t := range tids {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}
