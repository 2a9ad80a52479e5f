package power

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// CPU-time sources for the estimator.
const (
	// CPUProcess counts the whole process's CPU time (user+system).
	CPUProcess = "process"
	// CPUThreads counts only the worker threads given by EstimatorConfig.Threads
	// (schedstat of each).
	CPUThreads = "threads"
)

// Default estimator coefficients. See README.md for the rationale.
const (
	// DefaultWattsPerBusyCore is the power charged per fully busy core
	// (hardware thread as the OS counts it).
	DefaultWattsPerBusyCore = 10.0
	// DefaultIdleWatts is the share of idle/static power charged to the
	// engine: none by default.
	DefaultIdleWatts = 0.0
)

// EstimatorConfig holds the coefficients and CPU-time source of the estimate:
//
//	joules = busy CPU-seconds × WattsPerBusyCore + elapsed seconds × IdleWatts
type EstimatorConfig struct {
	// WattsPerBusyCore: watts per core kept 100% busy (default 10).
	WattsPerBusyCore float64
	// IdleWatts: the share of the machine's idle/static power charged to the
	// engine while it runs (default 0).
	IdleWatts float64
	// CPU is CPUProcess (default) or CPUThreads.
	CPU string
	// PID is the process for CPUProcess (0: this process).
	PID int
	// Threads returns the worker thread IDs for CPUThreads. It is called on
	// every Read; threads may come and go.
	Threads func() []int

	threadCPU func(tid int) (time.Duration, error) // tests
	procCPU   func() (time.Duration, error)        // tests
	now       func() time.Time                     // tests
}

// withDefaults fills zero coefficients. A negative IdleWatts is an error; an
// explicit 0 idle share is the default anyway.
func (c EstimatorConfig) withDefaults() (EstimatorConfig, error) {
	if c.WattsPerBusyCore == 0 {
		c.WattsPerBusyCore = DefaultWattsPerBusyCore
	}
	if c.WattsPerBusyCore < 0 || c.IdleWatts < 0 {
		return c, fmt.Errorf("power: estimator coefficients must be >= 0 (watts per busy core %g, idle watts %g)", c.WattsPerBusyCore, c.IdleWatts)
	}
	if c.CPU == "" {
		c.CPU = CPUProcess
	}
	switch c.CPU {
	case CPUProcess:
	case CPUThreads:
		if c.Threads == nil {
			return c, errors.New("power: estimator CPU source \"threads\" needs EstimatorConfig.Threads")
		}
	default:
		return c, fmt.Errorf("power: unknown estimator CPU source %q (want process or threads)", c.CPU)
	}
	if c.threadCPU == nil {
		c.threadCPU = ThreadCPUTime
	}
	if c.procCPU == nil {
		pid := c.PID
		c.procCPU = func() (time.Duration, error) { return ProcessCPUTime(pid) }
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Joules applies the model to a busy CPU time and an elapsed time.
func (c EstimatorConfig) Joules(busy, elapsed time.Duration) float64 {
	return busy.Seconds()*c.WattsPerBusyCore + elapsed.Seconds()*c.IdleWatts
}

// Watts applies the model to a number of busy cores (1.5 = one and a half
// cores fully busy).
func (c EstimatorConfig) Watts(busyCores float64) float64 {
	return busyCores*c.WattsPerBusyCore + c.IdleWatts
}

// CoresFor inverts the model: how many busy cores fit in maxWatts. It may
// be <= 0 when maxWatts does not even cover IdleWatts.
func (c EstimatorConfig) CoresFor(maxWatts float64) float64 {
	if c.WattsPerBusyCore <= 0 {
		return 0
	}
	return (maxWatts - c.IdleWatts) / c.WattsPerBusyCore
}

// EstimateMeter estimates energy from CPU time with the EstimatorConfig
// model. Its readings carry Source "estimate".
type EstimateMeter struct {
	cfg      EstimatorConfig
	fallback error // why RAPL was not used, when chosen as a fallback

	mu      sync.Mutex
	started bool
	last    time.Time
	lastCPU time.Duration         // CPUProcess: last process CPU time
	tids    map[int]time.Duration // CPUThreads: last CPU time per thread
	busy    time.Duration         // accumulated busy CPU time
	joules  float64               // accumulated joules
}

// NewEstimateMeter returns an estimator. Its zero point is now.
func NewEstimateMeter(cfg EstimatorConfig) (*EstimateMeter, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &EstimateMeter{cfg: c, tids: map[int]time.Duration{}}
	if _, err := m.Read(); err != nil {
		return nil, err
	}
	return m, nil
}

// Source returns SourceEstimate.
func (m *EstimateMeter) Source() string { return SourceEstimate }

// Config returns the coefficients in use (defaults filled in).
func (m *EstimateMeter) Config() EstimatorConfig { return m.cfg }

// Fallback returns the RAPL error that made NewMeter fall back to this
// estimator, or nil.
func (m *EstimateMeter) Fallback() error { return m.fallback }

// Read returns the estimated energy since the meter was created.
func (m *EstimateMeter) Read() (Reading, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.advance(); err != nil {
		return Reading{}, err
	}
	return Reading{Joules: m.joules, At: m.last, Source: SourceEstimate}, nil
}

// BusyCPU returns the busy CPU time the estimate has counted since the
// meter was created: the CPU time its energy covers. RunMeter uses it as the
// denominator of attribution.
func (m *EstimateMeter) BusyCPU() (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.advance(); err != nil {
		return 0, err
	}
	return m.busy, nil
}

func (m *EstimateMeter) advance() error {
	now := m.cfg.now()
	var dBusy time.Duration
	switch m.cfg.CPU {
	case CPUProcess:
		cpu, err := m.cfg.procCPU()
		if err != nil {
			return fmt.Errorf("power: estimate: process cpu time: %w", err)
		}
		if m.started && cpu > m.lastCPU {
			dBusy = cpu - m.lastCPU
		}
		m.lastCPU = cpu
	case CPUThreads:
		// Each thread's CPU time is baselined when first seen, so time it
		// ran before it became a worker is not charged; a thread that exits
		// between two reads loses at most one read interval.
		cur := map[int]time.Duration{}
		for _, tid := range m.cfg.Threads() {
			if _, dup := cur[tid]; dup {
				continue
			}
			t, err := m.cfg.threadCPU(tid)
			if err != nil {
				continue // exited
			}
			if prev, ok := m.tids[tid]; ok && t > prev {
				dBusy += t - prev
			}
			cur[tid] = t
		}
		m.tids = cur
	}
	if m.started {
		elapsed := now.Sub(m.last)
		if elapsed < 0 {
			elapsed = 0
		}
		m.busy += dBusy
		m.joules += m.cfg.Joules(dBusy, elapsed)
	}
	m.started, m.last = true, now
	return nil
}

func (m *EstimateMeter) describe() string {
	src := "whole-process CPU time"
	if m.cfg.CPU == CPUThreads {
		src = "worker-thread CPU time (schedstat)"
	}
	s := fmt.Sprintf("estimate: %g W per busy core × %s + %g W idle share (not a measurement)",
		m.cfg.WattsPerBusyCore, src, m.cfg.IdleWatts)
	if model := cpuModel(); model != "" {
		s += "; CPU " + model
	}
	if m.fallback != nil {
		s += "; RAPL not used: " + m.fallback.Error()
	}
	return s
}
