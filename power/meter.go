// Package power measures and limits the energy the engine uses.
//
// It provides energy meters (RAPL powercap counters, or an estimate from CPU
// time), per-thread CPU time, per-run energy attribution, a fixed-period
// sampler, and a power cap that puts the inference worker threads into a
// dedicated cgroup and adjusts its CPU quota.
//
// Every energy figure carries its Source: "rapl" for a measurement, "estimate"
// for the CPU-time model. An estimate is never reported as a measurement.
//
// The package imports nothing else from this module. See README.md.
package power

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Sources of energy figures.
const (
	SourceRAPL     = "rapl"
	SourceEstimate = "estimate"
)

// Reading is one cumulative meter reading.
type Reading struct {
	// Joules consumed since the meter was created. For RAPL this is the sum
	// of the package zones of all sockets (sub-zones are not added in).
	Joules float64
	// At is when the counters were read.
	At time.Time
	// Source is SourceRAPL or SourceEstimate.
	Source string
	// Domains holds cumulative joules per RAPL zone since the meter was
	// created, keyed "<name>-<socket>": "package-0", "dram-0", "core-1",
	// "psys-0"... Sub-zones (core, uncore) are part of their package and
	// dram usually is not; only the "package-*" entries make up Joules.
	// Nil for estimates.
	Domains map[string]float64
}

// Meter reads cumulative energy.
type Meter interface {
	Read() (Reading, error)
	// Source is SourceRAPL or SourceEstimate.
	Source() string
}

// Meter selection modes for Config.Prefer.
const (
	PreferAuto     = "auto"     // RAPL when readable, else the estimate if allowed
	PreferRAPL     = "rapl"     // RAPL or an error (or the estimate if allowed)
	PreferEstimate = "estimate" // the estimate, without trying RAPL
)

// Config selects and configures a meter.
type Config struct {
	// Prefer is PreferAuto (default), PreferRAPL or PreferEstimate.
	Prefer string
	// AllowEstimateFallback lets NewMeter return the estimator when RAPL is
	// absent or unreadable. Without it, NewMeter returns the RAPL error.
	AllowEstimateFallback bool
	// SysfsRoot is the sysfs mount point (default "/sys").
	SysfsRoot string
	// Estimator configures the estimate meter.
	Estimator EstimatorConfig

	// readEnergy overrides how energy_uj is read (tests).
	readEnergy func(path string) (uint64, error)
}

// NewMeter returns the RAPL meter when its counters are readable, else (when
// cfg allows it) the estimator. Describe(m) says which and why.
func NewMeter(cfg Config) (Meter, error) {
	prefer := cfg.Prefer
	if prefer == "" {
		prefer = PreferAuto
	}
	switch prefer {
	case PreferEstimate:
		return NewEstimateMeter(cfg.Estimator)
	case PreferAuto, PreferRAPL:
	default:
		return nil, fmt.Errorf("power: unknown meter preference %q (want auto, rapl or estimate)", prefer)
	}
	r, err := NewRAPLMeter(RAPLConfig{SysfsRoot: cfg.SysfsRoot, readEnergy: cfg.readEnergy})
	if err == nil {
		return r, nil
	}
	if !cfg.AllowEstimateFallback {
		return nil, err
	}
	e, eerr := NewEstimateMeter(cfg.Estimator)
	if eerr != nil {
		return nil, errors.Join(err, eerr)
	}
	e.fallback = err
	return e, nil
}

// Describe says in one line which meter m is and, for an estimator chosen
// as a fallback, why RAPL was not used.
func Describe(m Meter) string {
	switch v := m.(type) {
	case *RAPLMeter:
		return v.describe()
	case *EstimateMeter:
		return v.describe()
	default:
		return "meter with source " + m.Source()
	}
}

// cpuModel returns the "model name" of the first CPU in /proc/cpuinfo, for
// descriptions.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
