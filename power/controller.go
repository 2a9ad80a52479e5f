package power

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// CapStatus is the state of the power cap.
type CapStatus struct {
	CapWatts     float64 // the cap (0: none)
	QuotaPercent float64 // CPU quota in force, percent of one core (0: unlimited)
	CapEnforced  bool    // a cap is set and a quota is in force on at least one worker thread
	Reason       string  // why not enforced, or how it is enforced
	Loop         string  // "closed" (RAPL feedback), "open" (estimator), "" without a cap
}

// QuotaSetter is what the Controller drives: a Capper, or a fake in tests.
type QuotaSetter interface {
	// SetQuota limits the threads to cores CPUs of time; <= 0 lifts it.
	SetQuota(cores float64) error
	// NumThreads is the number of threads under the quota.
	NumThreads() int
}

// ControllerConfig tunes the Controller. Zero values pick the defaults.
type ControllerConfig struct {
	// Estimator gives the watts-per-core model for the open loop, and the
	// plant gain (WattsPerBusyCore) that normalises the closed loop's gains.
	Estimator EstimatorConfig
	// MinCores is the smallest quota (default 0.01: 1% of one core).
	MinCores float64
	// Kp (default 0.2) and Ki (default 1.0 per second) are the PI gains on
	// the error in watts divided by WattsPerBusyCore.
	Kp, Ki float64
	// Headroom: the closed loop aims at CapWatts × (1 − Headroom)
	// (default 0.02).
	Headroom float64
	// Unavailable says why a Controller built without a QuotaSetter cannot
	// enforce (default: Capability()'s reason).
	Unavailable string
}

// Controller keeps the power under a cap by adjusting the worker threads'
// CPU quota. With a measured meter (RAPL) it runs a closed PI loop on the
// sampled watts, each sample; with the estimator it runs open loop:
//
//	quota = (max_watts − IdleWatts) / WattsPerBusyCore cores
//
// The quota stays within [MinCores, number of capped threads × 1 core].
type Controller struct {
	q      QuotaSetter
	closed bool // closed loop (measured meter)
	cfg    ControllerConfig

	mu       sync.Mutex
	capW     float64
	u        float64 // quota in cores while capped
	ePrev    float64
	havePrev bool
	lastAt   time.Time
	nthreads int
	applied  bool // the quota for the current cap is in force
	err      error
	note     string
}

// NewController returns a controller for meter m's source driving q (nil
// when the host cannot cap: the controller then only reports why).
func NewController(m Meter, q QuotaSetter, cfg ControllerConfig) (*Controller, error) {
	est, err := cfg.Estimator.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg.Estimator = est
	if cfg.MinCores <= 0 {
		cfg.MinCores = 0.01
	}
	if cfg.Kp == 0 && cfg.Ki == 0 {
		cfg.Kp, cfg.Ki = 0.2, 1.0
	}
	if cfg.Headroom == 0 {
		cfg.Headroom = 0.02
	}
	if cfg.Headroom < 0 || cfg.Headroom >= 1 {
		return nil, fmt.Errorf("power: headroom %g outside [0,1)", cfg.Headroom)
	}
	if q == nil && cfg.Unavailable == "" {
		_, cfg.Unavailable = Capability()
	}
	return &Controller{q: q, closed: m.Source() == SourceRAPL, cfg: cfg}, nil
}

func (c *Controller) maxCores() float64 {
	n := 0
	if c.q != nil {
		n = c.q.NumThreads()
	}
	if n < 1 {
		n = 1
	}
	return float64(n)
}

func (c *Controller) clamp(u float64) float64 {
	return math.Min(math.Max(u, c.cfg.MinCores), c.maxCores())
}

// SetCap sets the power cap in watts; 0 lifts it (unlimited quota).
func (c *Controller) SetCap(maxWatts float64) error {
	if maxWatts < 0 || math.IsNaN(maxWatts) || math.IsInf(maxWatts, 0) {
		return fmt.Errorf("power: invalid cap %g W", maxWatts)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capW, c.havePrev, c.lastAt, c.note = maxWatts, false, time.Time{}, ""
	if c.q == nil {
		c.applied = false
		if maxWatts > 0 {
			return errors.New("power: cannot enforce a cap: " + c.cfg.Unavailable)
		}
		return nil
	}
	if maxWatts == 0 {
		c.u = 0
		c.err = c.q.SetQuota(0)
		c.applied = c.err == nil
		return c.err
	}
	// Open loop, and the closed loop's starting point: the estimator's
	// inverse.
	raw := c.cfg.Estimator.CoresFor(maxWatts)
	if raw < c.cfg.MinCores {
		c.note = fmt.Sprintf("%.3g W is at or below the estimate's idle share plus the minimum quota: quota at the minimum", maxWatts)
	}
	c.u = c.clamp(raw)
	return c.apply()
}

func (c *Controller) apply() error {
	c.nthreads = c.q.NumThreads()
	c.err = c.q.SetQuota(c.u)
	c.applied = c.err == nil
	return c.err
}

// Observe feeds one sample to the controller (the Sampler calls it each
// period).
func (c *Controller) Observe(s Sample) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.q == nil || c.capW == 0 {
		return
	}
	threadsChanged := c.q.NumThreads() != c.nthreads
	if !c.closed || s.Source != SourceRAPL {
		if threadsChanged || !c.applied {
			c.u = c.clamp(c.cfg.Estimator.CoresFor(c.capW))
			_ = c.apply()
		}
		return
	}
	if c.lastAt.IsZero() {
		// This sample's period straddles the quota change: start next time.
		c.lastAt = s.At
		return
	}
	dt := s.At.Sub(c.lastAt).Seconds()
	c.lastAt = s.At
	if dt <= 0 {
		return
	}
	e := c.capW*(1-c.cfg.Headroom) - s.Watts
	du := c.cfg.Ki * dt * e
	if c.havePrev {
		du += c.cfg.Kp * (e - c.ePrev)
	}
	c.ePrev, c.havePrev = e, true
	u := c.clamp(c.u + du/c.cfg.Estimator.WattsPerBusyCore)
	c.note = ""
	if u <= c.cfg.MinCores && s.Watts > c.capW {
		c.note = fmt.Sprintf("cap not reachable: at the minimum quota the package still draws %.1f W (idle power or other load)", s.Watts)
	}
	if u != c.u || threadsChanged || !c.applied {
		c.u = u
		_ = c.apply()
	}
}

// Status returns the cap state.
func (c *Controller) Status() CapStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := CapStatus{CapWatts: c.capW}
	if c.capW == 0 {
		st.Reason = "no cap"
		if c.q == nil {
			st.Reason = "no cap; cannot enforce one: " + c.cfg.Unavailable
		}
		return st
	}
	st.Loop = "open"
	if c.closed {
		st.Loop = "closed"
	}
	switch {
	case c.q == nil:
		st.Reason = "cannot enforce: " + c.cfg.Unavailable
	case c.err != nil:
		st.Reason = "quota not applied: " + c.err.Error()
	case c.q.NumThreads() == 0:
		st.QuotaPercent = c.u * 100
		st.Reason = "no worker threads in the capped group"
	default:
		st.QuotaPercent = c.u * 100
		st.CapEnforced = c.applied
		if st.Loop == "closed" {
			st.Reason = fmt.Sprintf("closed loop on RAPL: quota %.1f%% of one core adjusted each sample", st.QuotaPercent)
		} else {
			st.Reason = fmt.Sprintf("open loop on the estimate: (%.3g W − %.3g W idle) / %.3g W per core = %.1f%% of one core",
				c.capW, c.cfg.Estimator.IdleWatts, c.cfg.Estimator.WattsPerBusyCore, st.QuotaPercent)
		}
		if c.note != "" {
			st.Reason += "; " + c.note
		}
	}
	return st
}
