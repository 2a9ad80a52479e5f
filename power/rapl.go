package power

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs/sysfs"
)

// RAPLConfig configures a RAPL meter.
type RAPLConfig struct {
	// SysfsRoot is the sysfs mount point (default "/sys"); the zones are
	// read from <SysfsRoot>/class/powercap.
	SysfsRoot string

	readEnergy func(path string) (uint64, error) // tests
}

// RAPLPermissionError reports a root-only energy_uj counter.
type RAPLPermissionError struct {
	Path string // the energy_uj file
	Err  error  // the underlying error (EACCES or EPERM)
}

func (e *RAPLPermissionError) Error() string {
	return fmt.Sprintf("power: cannot read RAPL counter %s: %v. "+
		"Since the fix for CVE-2020-8694 (PLATYPUS, Linux 5.10 and stable kernels) energy_uj is readable by root only, "+
		"because fine-grained energy readings leak secrets through a power side channel. "+
		"Fix: let the service's group read the counters, e.g. a tmpfiles.d rule "+
		"`z /sys/class/powercap/intel-rapl:*/energy_uj 0440 root llm-engine` "+
		"(or a udev rule on SUBSYSTEM==\"powercap\" doing the same chgrp/chmod at boot), "+
		"or run the daemon with CAP_DAC_READ_SEARCH (systemd: AmbientCapabilities=CAP_DAC_READ_SEARCH). "+
		"Until then the engine can only estimate energy from CPU time (source \"estimate\")",
		e.Path, e.Err)
}

func (e *RAPLPermissionError) Unwrap() error { return e.Err }

// raplZone is one zone the meter reads.
type raplZone struct {
	key      string // "package-0", "dram-0"...
	pkg      bool   // counts toward Reading.Joules
	path     string // zone directory
	maxUJ    uint64 // max_energy_range_uj: the counter wraps after this
	last     uint64 // last raw energy_uj
	totalUJ  float64
	readOnce bool
}

// RAPLMeter reads the powercap RAPL counters. Package zones of all sockets are
// summed into Reading.Joules; dram, core, uncore and psys zones are reported
// in Reading.Domains only, so nothing is counted twice.
//
// The counters wrap (at max_energy_range_uj, typically 2^32 µJ on AMD and
// ~262 kJ on Intel): Read must be called at least once per wrap period (tens
// of minutes at full load); the Sampler does so every 200 ms.
type RAPLMeter struct {
	mu      sync.Mutex
	root    string
	zones   []*raplZone
	read    func(path string) (uint64, error)
	created time.Time
}

// NewRAPLMeter finds the RAPL zones under <SysfsRoot>/class/powercap and reads
// every counter once, so an unreadable counter (see RAPLPermissionError) is
// reported here rather than on the first Read.
func NewRAPLMeter(cfg RAPLConfig) (*RAPLMeter, error) {
	root := cfg.SysfsRoot
	if root == "" {
		root = sysfs.DefaultMountPoint
	}
	sfs, err := sysfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("power: rapl: %w", err)
	}
	zs, err := sysfs.GetRaplZones(sfs)
	if err != nil {
		return nil, fmt.Errorf("power: rapl: no powercap RAPL zones under %s: %w", filepath.Join(root, "class/powercap"), err)
	}
	m := &RAPLMeter{root: root, read: cfg.readEnergy, created: time.Now()}
	if m.read == nil {
		m.read = func(path string) (uint64, error) {
			return sysfs.RaplZone{Path: path}.GetEnergyMicrojoules()
		}
	}
	m.zones, err = classifyZones(zs)
	if err != nil {
		return nil, fmt.Errorf("power: rapl under %s: %w", filepath.Join(root, "class/powercap"), err)
	}
	if _, err := m.Read(); err != nil {
		return nil, err
	}
	return m, nil
}

// classifyZones picks the zones to read: one package zone per socket (the MSR
// interface "intel-rapl:N" preferred over a duplicate "intel-rapl-mmio:N"),
// and their sub-zones.
func classifyZones(zs []sysfs.RaplZone) ([]*raplZone, error) {
	type cand struct {
		z      sysfs.RaplZone
		socket int
		mmio   bool
		sub    bool
	}
	var cands []cand
	haveMSR := false
	for _, z := range zs {
		base := filepath.Base(z.Path)
		ctl, rest, ok := strings.Cut(base, ":")
		if !ok {
			continue // the control type directory itself ("intel-rapl")
		}
		parts := strings.Split(rest, ":")
		socket, err := strconv.Atoi(parts[0])
		if err != nil {
			socket = z.Index
		}
		c := cand{z: z, socket: socket, mmio: ctl != "intel-rapl", sub: len(parts) > 1}
		if !c.mmio {
			haveMSR = true
		}
		cands = append(cands, c)
	}
	var out []*raplZone
	seen := map[string]bool{}
	npkg := 0
	for _, c := range cands {
		if c.mmio && haveMSR {
			continue // same counters through another interface
		}
		pkg := c.z.Name == "package" && !c.sub
		key := fmt.Sprintf("%s-%d", c.z.Name, c.socket)
		if pkg {
			key = fmt.Sprintf("package-%d", c.z.Index)
		}
		if seen[key] {
			// Two same-named sub-zones on one socket: keep both.
			key = fmt.Sprintf("%s-%d.%s", c.z.Name, c.socket, filepath.Base(c.z.Path))
		}
		seen[key] = true
		if pkg {
			npkg++
		}
		out = append(out, &raplZone{key: key, pkg: pkg, path: c.z.Path, maxUJ: c.z.MaxMicrojoules})
	}
	if npkg == 0 {
		return nil, errors.New("no RAPL package zone")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out, nil
}

// Source returns SourceRAPL.
func (m *RAPLMeter) Source() string { return SourceRAPL }

// Zones returns the keys of the zones read, sorted.
func (m *RAPLMeter) Zones() []string {
	var ks []string
	for _, z := range m.zones {
		ks = append(ks, z.key)
	}
	return ks
}

// Read returns the energy since the meter was created.
func (m *RAPLMeter) Read() (Reading, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	raw := make([]uint64, len(m.zones))
	for i, z := range m.zones {
		path := filepath.Join(z.path, "energy_uj")
		v, err := m.read(z.path)
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return Reading{}, &RAPLPermissionError{Path: path, Err: err}
			}
			return Reading{}, fmt.Errorf("power: rapl: read %s: %w", path, err)
		}
		raw[i] = v
	}
	r := Reading{At: time.Now(), Source: SourceRAPL, Domains: make(map[string]float64, len(m.zones))}
	for i, z := range m.zones {
		cur := raw[i]
		if z.readOnce {
			z.totalUJ += float64(counterDelta(z.last, cur, z.maxUJ))
		}
		z.last, z.readOnce = cur, true
		j := z.totalUJ / 1e6
		r.Domains[z.key] = j
		if z.pkg {
			r.Joules += j
		}
	}
	return r, nil
}

// counterDelta is the increase of a counter that wraps to 0 after max:
// if cur < prev { d = (max - prev) + cur }.
func counterDelta(prev, cur, max uint64) uint64 {
	if cur >= prev {
		return cur - prev
	}
	if max < prev { // inconsistent max: count from zero
		return cur
	}
	return (max - prev) + cur
}

func (m *RAPLMeter) describe() string {
	return fmt.Sprintf("rapl: measured by powercap counters under %s (zones %s)",
		filepath.Join(m.root, "class/powercap"), strings.Join(m.Zones(), ", "))
}
