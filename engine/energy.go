package engine

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weos/llm-engine/power"
)

// Energy and power cap of the engine (issue 5). See power/README.md, "The
// engine's energy subsystem", for the attribution rule and the coefficients.

// Cap enforcement modes (a plan's limits.enforcement, power.set_cap's
// enforcement).
const (
	EnforceStrict     = "strict"      // refuse a cap the host cannot enforce
	EnforceBestEffort = "best_effort" // accept it; runs report "cap not enforced"
)

// PowerOptions configure the engine's energy meter and power cap. The zero
// value is the default: RAPL when readable, else the estimator (worker-thread
// CPU time × 10 W per busy core), no cap.
type PowerOptions struct {
	// Meter is "auto" (default: RAPL when readable, else the estimate),
	// "rapl" (RAPL; the estimate only if allowed) or "estimate".
	Meter string
	// NoEstimateFallback makes New fail when RAPL is absent or unreadable
	// instead of falling back to the estimate (ignored with Meter "estimate").
	NoEstimateFallback bool
	// WattsPerBusyCore and IdleWatts are the estimator's coefficients
	// (defaults power.DefaultWattsPerBusyCore, power.DefaultIdleWatts). They
	// also map a cap to a CPU quota (open loop) and normalise the closed
	// loop's gains.
	WattsPerBusyCore float64
	IdleWatts        float64
	// SysfsRoot is where powercap is looked for (default /sys; tests).
	SysfsRoot string
	// SamplePeriod is the sampler's period (default 200 ms).
	SamplePeriod time.Duration
	// Cgroup says where the capped group of worker threads lives. The
	// default is the power package's ("/llm-engine/infer" on cgroup v1, a
	// threaded child "llm-engine-infer" of the process's own group on v2),
	// suffixed "-N" for the N-th engine of a process. The group is created
	// only when a cap is first set.
	Cgroup power.CapperConfig
	// MaxWatts is a cap applied at start, as if by power.set_cap (0: none),
	// with Enforcement (default strict: New fails if the host cannot
	// enforce it).
	MaxWatts    float64
	Enforcement string
}

// PowerSample is one sampler period.
type PowerSample struct {
	At     time.Time `json:"at"`
	Watts  float64   `json:"watts"`  // average over the period ending At
	Joules float64   `json:"joules"` // the meter's cumulative joules at At
}

// PowerStatus answers power.status.
type PowerStatus struct {
	Source       string        `json:"source"` // "rapl" (a measurement) or "estimate" (a model: never a measurement)
	Meter        string        `json:"meter"`  // which meter and why, with the estimator's coefficients
	CurrentWatts float64       `json:"current_watts"`
	Joules       float64       `json:"joules"` // the meter's cumulative joules since the engine started
	Samples      []PowerSample `json:"samples"`
	// The cap in force: the lower of the operator's (power.set_cap, config)
	// and the current plan's; 0: none.
	CapWatts         float64 `json:"cap_watts"`
	Enforcement      string  `json:"enforcement,omitempty"`
	OperatorCapWatts float64 `json:"operator_cap_watts"`
	PlanCapWatts     float64 `json:"plan_cap_watts"`
	QuotaPercent     float64 `json:"quota_percent"` // CPU quota of the worker threads, percent of one core; 0: unlimited
	CapEnforced      bool    `json:"cap_enforced"`
	Loop             string  `json:"loop,omitempty"` // "closed" (RAPL feedback), "open" (estimator)
	Reason           string  `json:"reason"`         // how the cap is enforced, or why not
	CanCap           bool    `json:"can_cap"`        // whether this host can enforce a cap
	Capability       string  `json:"capability"`     // how, or why not
	Cgroup           string  `json:"cgroup,omitempty"`
	WorkerThreads    []int   `json:"worker_threads"` // the OS thread ids that the cap and attribution cover
	Error            string  `json:"error,omitempty"`
}

// PowerCapRequest is power.set_cap's params.
type PowerCapRequest struct {
	MaxWatts    float64 `json:"max_watts"`             // 0 lifts the operator's cap
	Enforcement string  `json:"enforcement,omitempty"` // strict (default) or best_effort
}

// RunPowerCap is the cap a run started under.
type RunPowerCap struct {
	MaxWatts    float64 `json:"max_watts"`
	Enforcement string  `json:"enforcement"`
	Enforced    bool    `json:"enforced"`
	Note        string  `json:"note"` // how it is enforced, or "cap not enforced: <why>"
}

// energy is the engine's energy subsystem: a meter, a sampler, per-run
// attribution and the power cap of the worker threads.
type energy struct {
	tids    func() []int // the pool's worker thread ids
	meter   power.Meter
	desc    string
	est     power.EstimatorConfig // the coefficients in use (open loop, gains)
	sampler *power.Sampler
	rm      *power.RunMeter
	cgcfg   power.CapperConfig
	m       *metrics

	mu       sync.Mutex
	operator capSetting
	plan     capSetting
	capper   *power.Capper     // nil until a cap is first set
	ctl      *power.Controller // with capper
	applied  capSetting        // the cap last given to ctl (SetCap resets the loop: only on a change)
	capErr   string            // why the cap in force is not enforced (no capper)
	closed   bool
}

type capSetting struct {
	watts       float64
	enforcement string
}

var engineSeq atomic.Int64

func newEnergy(o PowerOptions, tids func() []int) (*energy, error) {
	est := power.EstimatorConfig{
		WattsPerBusyCore: o.WattsPerBusyCore,
		IdleWatts:        o.IdleWatts,
		CPU:              power.CPUThreads,
		Threads:          tids,
	}
	if est.WattsPerBusyCore == 0 {
		est.WattsPerBusyCore = power.DefaultWattsPerBusyCore
	}
	meter, err := power.NewMeter(power.Config{
		Prefer:                o.Meter,
		AllowEstimateFallback: !o.NoEstimateFallback,
		SysfsRoot:             o.SysfsRoot,
		Estimator:             est,
	})
	if err != nil {
		return nil, fmt.Errorf("energy meter: %w", err)
	}
	en := &energy{tids: tids, meter: meter, desc: power.Describe(meter), est: est, cgcfg: o.Cgroup, m: newMetrics()}
	if n := engineSeq.Add(1); n > 1 && en.cgcfg.Group == "" {
		if en.cgcfg.Version == 1 || (en.cgcfg.Version == 0 && versionOf(en.cgcfg) == 1) {
			en.cgcfg.Group = fmt.Sprintf("/llm-engine/infer-%d", n)
		} else {
			en.cgcfg.Group = fmt.Sprintf("llm-engine-infer-%d", n)
		}
	}
	en.rm = power.NewRunMeter(meter, power.RunMeterConfig{})
	en.sampler = power.NewSampler(meter, power.SamplerConfig{Period: o.SamplePeriod})
	en.sampler.SetRunMeter(en.rm)
	en.sampler.Start()
	if o.MaxWatts != 0 {
		if err := en.setCap(o.MaxWatts, o.Enforcement); err != nil {
			en.close()
			return nil, err
		}
	}
	return en, nil
}

// versionOf guesses the cgroup version the capper would pick (for naming).
func versionOf(cfg power.CapperConfig) int {
	if cfg.Root == "" || cfg.Root == "/sys/fs/cgroup" {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
			return 2
		}
	}
	return 1
}

// close stops the sampler, moves the worker threads back to their cgroups
// and removes the capped group. Call it before the pool's threads exit.
func (en *energy) close() error {
	en.sampler.Close()
	en.mu.Lock()
	defer en.mu.Unlock()
	if en.closed {
		return nil
	}
	en.closed = true
	if en.capper != nil {
		return en.capper.Close()
	}
	return nil
}

// capability says whether this host can enforce a cap (plan.Env.CanCapPower
// and CapReason).
func (en *energy) capability() (bool, string) {
	return power.CapabilityFor(en.cgcfg)
}

func normEnforcement(s string) (string, error) {
	switch s {
	case "", EnforceStrict:
		return EnforceStrict, nil
	case EnforceBestEffort:
		return EnforceBestEffort, nil
	}
	return "", fmt.Errorf("enforcement must be %q or %q, got %q", EnforceStrict, EnforceBestEffort, s)
}

func checkWatts(w float64) error {
	if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
		return fmt.Errorf("max_watts must be a finite number >= 0, got %g", w)
	}
	return nil
}

// setCap sets the operator's cap (power.set_cap, PowerOptions.MaxWatts).
// With strict enforcement, a cap this host cannot enforce is refused and
// the previous one stays; with best_effort it is recorded and reported as
// not enforced.
func (en *energy) setCap(watts float64, enforcement string) error {
	return en.set(&en.operator, watts, enforcement)
}

// setPlanCap sets the cap of the current plan (applyPowerLimit).
func (en *energy) setPlanCap(watts float64, enforcement string) error {
	return en.set(&en.plan, watts, enforcement)
}

func (en *energy) set(which *capSetting, watts float64, enforcement string) error {
	if err := checkWatts(watts); err != nil {
		return errorf(CodeInvalidParams, "invalid params: field \"max_watts\": %v", err)
	}
	enf, err := normEnforcement(enforcement)
	if err != nil {
		return errorf(CodeInvalidParams, "invalid params: field \"enforcement\": %v", err)
	}
	en.mu.Lock()
	defer en.mu.Unlock()
	if en.closed {
		return errorf(CodeInternal, "engine closed")
	}
	prev := *which
	*which = capSetting{watts, enf}
	err = en.applyLocked()
	if err == nil {
		return nil
	}
	if watts > 0 && enf == EnforceStrict {
		*which = prev
		_ = en.applyLocked()
		return errorf(CodeNotImplemented, "max_watts %g cannot be enforced on this host: %v (use enforcement %q to run uncapped)", watts, err, EnforceBestEffort)
	}
	if eff := en.effectiveLocked(); eff.watts > 0 && eff.enforcement == EnforceBestEffort {
		return nil // recorded; status and runs report "cap not enforced"
	}
	return errorf(CodeInternal, "power cap: %v", err)
}

// effectiveLocked is the cap in force: the lowest non-zero of the
// operator's and the plan's.
func (en *energy) effectiveLocked() capSetting {
	a, b := en.operator, en.plan
	switch {
	case a.watts == 0:
		return b
	case b.watts == 0 || a.watts <= b.watts:
		return a
	}
	return b
}

// applyLocked makes the controller follow the cap in force.
func (en *energy) applyLocked() error {
	eff := en.effectiveLocked()
	if en.ctl != nil && eff.watts == en.applied.watts && en.capErr == "" {
		// Unchanged (applyPowerLimit runs for every run): keep the closed
		// loop's state; only follow the pool's threads.
		return en.syncThreadsLocked()
	}
	en.applied = capSetting{}
	if eff.watts == 0 {
		en.capErr = ""
		if en.ctl != nil {
			if err := en.ctl.SetCap(0); err != nil {
				en.capErr = err.Error()
				return err
			}
			en.applied = eff
		}
		return nil
	}
	if err := en.ensureCapperLocked(); err != nil {
		en.capErr = err.Error()
		return err
	}
	en.capErr = ""
	if err := en.syncThreadsLocked(); err != nil {
		en.capErr = err.Error()
		return err
	}
	if err := en.ctl.SetCap(eff.watts); err != nil {
		en.capErr = err.Error()
		return err
	}
	en.applied = eff
	return nil
}

func (en *energy) ensureCapperLocked() error {
	if en.capper != nil {
		return nil
	}
	if ok, why := power.CapabilityFor(en.cgcfg); !ok {
		return errors.New(why)
	}
	c, err := power.NewCapper(en.cgcfg)
	if err != nil {
		return err
	}
	ctl, err := power.NewController(en.meter, c, power.ControllerConfig{Estimator: en.est})
	if err != nil {
		c.Close()
		return err
	}
	en.capper, en.ctl = c, ctl
	en.sampler.SetController(ctl)
	return nil
}

// resyncThreads makes the capped group hold exactly the pools' worker
// threads now (a lane's pool is about to close: its threads leave the
// group while they still exist).
func (en *energy) resyncThreads() {
	en.mu.Lock()
	defer en.mu.Unlock()
	if err := en.syncThreadsLocked(); err != nil {
		en.capErr = err.Error()
	}
}

// syncThreadsLocked makes the capped group hold exactly the pool's worker
// threads.
func (en *energy) syncThreadsLocked() error {
	if en.capper == nil {
		return nil
	}
	want := map[int]bool{}
	for _, t := range en.tids() {
		want[t] = true
	}
	var gone []int
	for _, t := range en.capper.Threads() {
		if !want[t] {
			gone = append(gone, t)
		}
		delete(want, t)
	}
	var add []int
	for t := range want {
		add = append(add, t)
	}
	return errors.Join(en.capper.RemoveThreads(gone...), en.capper.AddThreads(add...))
}

// runCapLocked describes the cap a run starts under (nil: none).
func (en *energy) runCapLocked() *RunPowerCap {
	eff := en.effectiveLocked()
	if eff.watts == 0 {
		return nil
	}
	rc := &RunPowerCap{MaxWatts: eff.watts, Enforcement: eff.enforcement}
	switch {
	case en.ctl == nil:
		rc.Note = "cap not enforced: " + en.capErr
	default:
		st := en.ctl.Status()
		rc.Enforced = st.CapEnforced
		if st.CapEnforced {
			rc.Note = st.Reason
		} else {
			rc.Note = "cap not enforced: " + st.Reason
		}
	}
	return rc
}

// status answers power.status.
func (en *energy) status() PowerStatus {
	st := en.sampler.Status()
	out := PowerStatus{
		Source:       st.Source,
		Meter:        en.desc,
		CurrentWatts: st.CurrentWatts,
		Joules:       st.Joules,
		Samples:      make([]PowerSample, len(st.Samples)),
		QuotaPercent: st.QuotaPercent,
		CapEnforced:  st.CapEnforced,
		Loop:         st.Loop,
		Reason:       st.Reason,
		Error:        st.Err,
	}
	for i, s := range st.Samples {
		out.Samples[i] = PowerSample{At: s.At, Watts: s.Watts, Joules: s.Joules}
	}
	out.CanCap, out.Capability = en.capability()
	out.WorkerThreads = en.tids()
	en.mu.Lock()
	defer en.mu.Unlock()
	eff := en.effectiveLocked()
	out.CapWatts, out.Enforcement = eff.watts, eff.enforcement
	out.OperatorCapWatts, out.PlanCapWatts = en.operator.watts, en.plan.watts
	if en.capper != nil {
		out.Cgroup = en.capper.Path()
	}
	if en.ctl == nil {
		out.QuotaPercent, out.CapEnforced, out.Loop = 0, false, ""
		if eff.watts > 0 {
			out.Reason = "cap not enforced: " + en.capErr
		} else {
			out.Reason = "no cap"
		}
	} else if eff.watts > 0 && !out.CapEnforced && en.capErr != "" {
		out.Reason = "cap not enforced: " + en.capErr
	}
	return out
}

// runEnergy meters one run: startRun at the beginning of its compute, stop
// (or finishRun) at the end.
type runEnergy struct {
	en    *energy
	run   *power.Run
	err   error
	cap   *RunPowerCap
	once  sync.Once
	res   power.RunEnergy
	ended bool // finishRun or abort counted it
}

// startRun begins metering a run computed by the worker threads tids
// (default: all the pools' workers). It never fails: a meter error is
// reported in the run's metrics. Overlapping runs that list the same
// threads split those threads' CPU time, hence their energy, equally.
func (en *energy) startRun(tids ...int) *runEnergy {
	r := &runEnergy{en: en}
	en.mu.Lock()
	if en.capper != nil {
		if err := en.syncThreadsLocked(); err != nil {
			en.capErr = err.Error()
		}
	}
	r.cap = en.runCapLocked()
	en.mu.Unlock()
	if len(tids) == 0 {
		tids = en.tids()
	}
	r.run, r.err = en.rm.Start(tids)
	return r
}

// stop ends the metering (idempotent) and returns the run's energy.
func (r *runEnergy) stop() power.RunEnergy {
	r.once.Do(func() {
		if r.run == nil {
			return
		}
		var err error
		r.res, err = r.run.Stop()
		if err != nil && r.err == nil {
			r.err = err
		}
	})
	return r.res
}

// finishRun stops the run's metering, writes its energy into res.Metrics
// and counts the run in the engine's metrics. Call it once res is complete.
func (en *energy) finishRun(r *runEnergy, res *GenerateResult) {
	e := r.stop()
	m := &res.Metrics
	if r.run != nil {
		m.Joules = e.Joules
		m.AvgWatts = e.AvgWatts
		m.CPUSeconds = e.CPUSeconds
		m.EnergySource = e.Source
		if e.Joules > 0 {
			m.TokensPerJoule = float64(m.GeneratedTokens) / e.Joules
		}
	}
	if r.err != nil {
		m.EnergyError = r.err.Error()
	}
	m.PowerCap = r.cap
	if !r.ended {
		r.ended = true
		en.m.record(res, r.run != nil)
	}
}

// abort stops a run that ends without a result (an error): its energy is
// still counted, under finish reason "error". A no-op after finishRun.
func (r *runEnergy) abort() {
	if r.ended {
		return
	}
	r.ended = true
	e := r.stop()
	res := &GenerateResult{FinishReason: "error"}
	if r.run != nil {
		res.Metrics.Joules, res.Metrics.CPUSeconds, res.Metrics.EnergySource = e.Joules, e.CPUSeconds, e.Source
	}
	r.en.m.recordFailed(res)
}

// ---- the facade ----

// PowerStatus answers power.status: the meter's source and current watts,
// the recent samples, the cap and the CPU quota in force.
func (e *Engine) PowerStatus() PowerStatus { return e.energy.status() }

// SetPowerCap sets the operator's power cap (power.set_cap). Runs are capped
// at the lower of it and their plan's limits.max_watts.
func (e *Engine) SetPowerCap(req PowerCapRequest) (*PowerStatus, error) {
	if err := e.energy.setCap(req.MaxWatts, req.Enforcement); err != nil {
		return nil, err
	}
	st := e.energy.status()
	return &st, nil
}

// applyPowerLimit applies a resolved plan's limits.max_watts and
// limits.enforcement to the worker threads for the runs that follow; call
// it for every run, before its compute starts (0 lifts the plan's cap; the
// operator's cap, if any, still applies). With strict enforcement a cap this
// host cannot enforce is an error (plan validation should have refused it:
// see powerCapability); with best_effort it is recorded and the runs report
// "cap not enforced: <reason>".
func (e *Engine) applyPowerLimit(maxWatts float64, enforcement string) error {
	return e.energy.setPlanCap(maxWatts, enforcement)
}

// powerCapability is plan.Env's CanCapPower and CapReason for this engine.
func (e *Engine) powerCapability() (bool, string) { return e.energy.capability() }

// meterJoules reads the meter's cumulative joules, for the scheduler's
// energy policy (sched.Config.Energy); ok is false when the meter fails.
// The figure carries the meter's source (e.energy.meter.Source()).
func (en *energy) meterJoules() (joules float64, ok bool) {
	r, err := en.meter.Read()
	if err != nil {
		return 0, false
	}
	return r.Joules, true
}

// subscribe returns the sampler's samples as they come (buffered buf; a
// full channel drops samples), e.g. for event.power.sample, and a function
// ending the subscription.
func (en *energy) subscribe(buf int) (<-chan power.Sample, func()) {
	return en.sampler.Subscribe(buf)
}
