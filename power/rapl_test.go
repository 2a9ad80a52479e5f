package power

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSysfs is a powercap tree in a temp dir.
type fakeSysfs struct {
	t    *testing.T
	root string
}

func newFakeSysfs(t *testing.T) *fakeSysfs {
	t.Helper()
	f := &fakeSysfs{t: t, root: t.TempDir()}
	// The control type directory has no "name" and is not a zone.
	if err := os.MkdirAll(filepath.Join(f.root, "class/powercap/intel-rapl"), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeSysfs) zone(dir, name string, max, energy uint64) {
	f.t.Helper()
	d := filepath.Join(f.root, "class/powercap", dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		f.t.Fatal(err)
	}
	for file, v := range map[string]string{
		"name":                name,
		"max_energy_range_uj": strconv.FormatUint(max, 10),
		"energy_uj":           strconv.FormatUint(energy, 10),
	} {
		if err := os.WriteFile(filepath.Join(d, file), []byte(v+"\n"), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fakeSysfs) set(dir string, energy uint64) {
	f.t.Helper()
	p := filepath.Join(f.root, "class/powercap", dir, "energy_uj")
	if err := os.WriteFile(p, []byte(strconv.FormatUint(energy, 10)+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// twoSockets: two packages with core sub-zones, a dram zone on socket 0 and
// an MMIO duplicate of package 0 that must not be counted.
func twoSockets(t *testing.T) *fakeSysfs {
	f := newFakeSysfs(t)
	f.zone("intel-rapl:0", "package-0", 1_000_000, 100_000)
	f.zone("intel-rapl:0:0", "core", 1_000_000, 50_000)
	f.zone("intel-rapl:0:1", "dram", 1_000_000, 10_000)
	f.zone("intel-rapl:1", "package-1", 2_000_000, 200_000)
	f.zone("intel-rapl:1:0", "core", 2_000_000, 70_000)
	f.zone("intel-rapl-mmio:0", "package-0", 1_000_000, 999)
	return f
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestRAPLTwoPackagesDramWraparound(t *testing.T) {
	f := twoSockets(t)
	m, err := NewRAPLMeter(RAPLConfig{SysfsRoot: f.root})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(m.Zones(), ","), "core-0,core-1,dram-0,package-0,package-1"; got != want {
		t.Fatalf("zones %s, want %s", got, want)
	}
	// Fake thread CPU for a run spanning the wraparound: the run's thread
	// has half of all CPU time, so it gets half the package energy.
	var runCPU, allCPU time.Duration
	rm := NewRunMeter(m, RunMeterConfig{
		TotalCPU:  func() (time.Duration, error) { return allCPU, nil },
		ThreadCPU: func(int) (time.Duration, error) { return runCPU, nil },
	})
	run, err := rm.Start([]int{1})
	if err != nil {
		t.Fatal(err)
	}

	// Step 1: +0.3 J on package 0, +0.5 J on package 1, +0.2 J dram, +0.1 J core.
	f.set("intel-rapl:0", 400_000)
	f.set("intel-rapl:1", 700_000)
	f.set("intel-rapl:0:1", 210_000)
	f.set("intel-rapl:0:0", 150_000)
	runCPU, allCPU = 100*time.Millisecond, 200*time.Millisecond
	r, err := m.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.Joules, 0.8) || r.Source != SourceRAPL {
		t.Fatalf("step 1: %+v, want 0.8 J rapl (dram and core not added)", r)
	}
	if !near(r.Domains["dram-0"], 0.2) || !near(r.Domains["core-0"], 0.1) || !near(r.Domains["package-1"], 0.5) {
		t.Fatalf("step 1 domains: %v", r.Domains)
	}
	if err := rm.Tick(); err != nil {
		t.Fatal(err)
	}

	// Step 2: package 0 wraps: 400000 -> 1000000 (max) -> 50000: +0.65 J.
	// Package 1 +0.1 J.
	f.set("intel-rapl:0", 50_000)
	f.set("intel-rapl:1", 800_000)
	runCPU, allCPU = 200*time.Millisecond, 400*time.Millisecond
	r, err = m.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.Joules, 0.8+0.65+0.1) {
		t.Fatalf("after wraparound: %.6f J, want 1.55", r.Joules)
	}
	if !near(r.Domains["package-0"], 0.3+0.65) {
		t.Fatalf("package-0 %.6f, want 0.95", r.Domains["package-0"])
	}
	res, err := run.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if !near(res.Joules, 1.55/2) || res.Source != SourceRAPL || !near(res.CPUSeconds, 0.2) {
		t.Fatalf("run across the wraparound: %+v, want 0.775 J rapl, 0.2 CPU s", res)
	}
}

func TestCounterDelta(t *testing.T) {
	for _, c := range []struct{ prev, cur, max, want uint64 }{
		{10, 25, 100, 15},
		{90, 5, 100, 15},
		{100, 0, 100, 0},
		{5, 5, 100, 0},
		{200, 5, 100, 5}, // inconsistent max
	} {
		if got := counterDelta(c.prev, c.cur, c.max); got != c.want {
			t.Errorf("counterDelta(%d,%d,%d) = %d, want %d", c.prev, c.cur, c.max, got, c.want)
		}
	}
}

func checkCVEMessage(t *testing.T, err error) {
	t.Helper()
	var pe *RAPLPermissionError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("want a RAPLPermissionError wrapping EACCES, got %T %v", err, err)
	}
	msg := err.Error()
	for _, want := range []string{"CVE-2020-8694", "energy_uj", "z /sys/class/powercap/intel-rapl:*/energy_uj 0440 root llm-engine", "CAP_DAC_READ_SEARCH", "udev"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
}

// The kernel's answer to a non-root open of a root-only energy_uj, injected:
// root ignores file modes, so chmod 000 alone would not fail here.
func eaccesOn(zone string) func(string) (uint64, error) {
	return func(path string) (uint64, error) {
		p := filepath.Join(path, "energy_uj")
		if filepath.Base(path) == zone {
			return 0, &fs.PathError{Op: "open", Path: p, Err: syscall.EACCES}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
}

func TestRAPLPermissionInjected(t *testing.T) {
	f := twoSockets(t)
	_, err := NewRAPLMeter(RAPLConfig{SysfsRoot: f.root, readEnergy: eaccesOn("intel-rapl:1")})
	checkCVEMessage(t, err)
}

// TestRAPLPermissionRealEACCES gets a real EACCES from the kernel: a thread
// of this (root) process drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
// its effective set, as a non-root service would lack them, and reads a
// mode-000 energy_uj. The same thread with CAP_DAC_READ_SEARCH reads it:
// that is the capability fix.
func TestRAPLPermissionRealEACCES(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop capabilities per thread (non-root: covered by the injected test)")
	}
	f := twoSockets(t)
	p := filepath.Join(f.root, "class/powercap/intel-rapl:0/energy_uj")
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	onThreadWithout := func(drop uint32, fn func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Never unlocked: the thread exits with this goroutine, so its
			// reduced capabilities never reach other goroutines.
			runtime.LockOSThread()
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				t.Error(err)
				return
			}
			data[0].Effective &^= drop
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				t.Error(err)
				return
			}
			fn()
		}()
		<-done
	}
	var err error
	onThreadWithout(1<<unix.CAP_DAC_OVERRIDE|1<<unix.CAP_DAC_READ_SEARCH, func() {
		_, err = NewRAPLMeter(RAPLConfig{SysfsRoot: f.root})
	})
	checkCVEMessage(t, err)

	onThreadWithout(1<<unix.CAP_DAC_OVERRIDE, func() {
		_, err = NewRAPLMeter(RAPLConfig{SysfsRoot: f.root})
	})
	if err != nil {
		t.Fatalf("with CAP_DAC_READ_SEARCH the counter should be readable: %v", err)
	}
}

func TestNewMeterFallback(t *testing.T) {
	f := twoSockets(t)
	denied := eaccesOn("intel-rapl:0")

	// Readable RAPL wins.
	m, err := NewMeter(Config{SysfsRoot: f.root, AllowEstimateFallback: true})
	if err != nil || m.Source() != SourceRAPL {
		t.Fatalf("readable RAPL: %v %v", m, err)
	}
	if d := Describe(m); !strings.HasPrefix(d, "rapl:") {
		t.Errorf("describe: %s", d)
	}

	// Unreadable, fallback not allowed: the permission error.
	_, err = NewMeter(Config{SysfsRoot: f.root, readEnergy: denied})
	checkCVEMessage(t, err)

	// Unreadable, fallback allowed: the estimator, saying why.
	m, err = NewMeter(Config{SysfsRoot: f.root, readEnergy: denied, AllowEstimateFallback: true})
	if err != nil || m.Source() != SourceEstimate {
		t.Fatalf("fallback: %v %v", m, err)
	}
	if d := Describe(m); !strings.Contains(d, "not a measurement") || !strings.Contains(d, "CVE-2020-8694") {
		t.Errorf("describe: %s", d)
	}
	if r, err := m.Read(); err != nil || r.Source != SourceEstimate {
		t.Fatalf("estimate reading %+v %v", r, err)
	}

	// No powercap at all (this machine): error, or the estimate if allowed.
	empty := t.TempDir()
	if _, err := NewMeter(Config{SysfsRoot: empty}); err == nil {
		t.Fatal("no powercap: want an error")
	}
	if m, err := NewMeter(Config{SysfsRoot: empty, AllowEstimateFallback: true}); err != nil || m.Source() != SourceEstimate {
		t.Fatalf("no powercap with fallback: %v %v", m, err)
	}
	// Only a psys zone: no package.
	g := newFakeSysfs(t)
	g.zone("intel-rapl:1", "psys", 1000, 1)
	if _, err := NewMeter(Config{SysfsRoot: g.root}); err == nil || !strings.Contains(err.Error(), "no RAPL package zone") {
		t.Fatalf("psys only: %v", err)
	}
	if _, err := NewMeter(Config{Prefer: "bogus"}); err == nil {
		t.Fatal("bogus preference accepted")
	}
}
