package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weos/llm-engine/power"
)

// findShared locates the shared models: $LLM_ENGINE_SHARED, else a "shared"
// folder beside the repository, found by walking up from here.
func findShared() string {
	if d := os.Getenv("LLM_ENGINE_SHARED"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		for _, c := range []string{filepath.Join(dir, "shared"), filepath.Join(dir, "..", "shared")} {
			if st, err := os.Stat(filepath.Join(c, "models")); err == nil && st.IsDir() {
				return c
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func sharedModel(t testing.TB, name string) string {
	t.Helper()
	d := findShared()
	p := filepath.Join(d, "models", name)
	if _, err := os.Stat(p); d == "" || err != nil {
		msg := fmt.Sprintf("SKIPPING %s: shared model %s not found (set LLM_ENGINE_SHARED)", t.Name(), name)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return p
}

func newTestEngine(t testing.TB, threads int, po PowerOptions) *Engine {
	t.Helper()
	e, err := New(Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: threads, Power: po})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func generate(t testing.TB, e *Engine, model string, n int) *GenerateResult {
	t.Helper()
	res, err := e.Generate(context.Background(), GenerateRequest{Model: model, Prompt: "Once upon a time", MaxTokens: n}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func raplReadable() bool {
	_, err := power.NewRAPLMeter(power.RAPLConfig{})
	return err == nil
}

// On this machine (no RAPL) a run's metrics carry the estimate: joules > 0,
// avg watts, tokens per joule = generated tokens / joules, source
// "estimate"; the engine's counters add them up.
func TestRunEnergyEstimate(t *testing.T) {
	model := sharedModel(t, "stories260K.gguf")
	e := newTestEngine(t, 1, PowerOptions{})
	if raplReadable() {
		t.Skip("SKIPPING: RAPL is readable on this host, the default meter is rapl (see TestRunEnergyFakeRAPL)")
	}
	res := generate(t, e, model, 64)
	m := res.Metrics
	t.Logf("%d tokens in %.1f ms: %.4f J, %.3f W, %.1f tokens/J, %.4f CPU-s, source %s",
		m.GeneratedTokens, m.PromptMS+m.DecodeMS, m.Joules, m.AvgWatts, m.TokensPerJoule, m.CPUSeconds, m.EnergySource)
	if m.EnergySource != power.SourceEstimate || m.EnergyError != "" {
		t.Fatalf("source %q error %q", m.EnergySource, m.EnergyError)
	}
	if m.Joules <= 0 || m.AvgWatts <= 0 || m.CPUSeconds <= 0 {
		t.Fatalf("joules %g avg_watts %g cpu %g", m.Joules, m.AvgWatts, m.CPUSeconds)
	}
	if want := float64(m.GeneratedTokens) / m.Joules; math.Abs(m.TokensPerJoule-want) > 1e-9*want {
		t.Errorf("tokens_per_joule %g, want %g", m.TokensPerJoule, want)
	}
	// The estimate is CPU time × 10 W: one worker thread cannot use more
	// than one core, so avg watts ≤ 10 W (+ rounding), and joules match the
	// run's CPU share.
	if m.AvgWatts > 10.5 {
		t.Errorf("avg watts %g above one busy core's 10 W", m.AvgWatts)
	}
	if math.Abs(m.Joules-10*m.CPUSeconds) > 0.05*m.Joules+1e-6 {
		t.Errorf("joules %g vs 10 W × %g CPU-s", m.Joules, m.CPUSeconds)
	}
	if m.PowerCap != nil {
		t.Errorf("power_cap %+v without a cap", m.PowerCap)
	}

	res2 := generate(t, e, model, 16)
	mt := e.Counters()
	est := mt.Energy[power.SourceEstimate]
	if mt.Runs != 2 || mt.RunsByFinishReason["length"] != 2 || mt.GeneratedTokens != int64(m.GeneratedTokens+res2.Metrics.GeneratedTokens) ||
		est.Runs != 2 || math.Abs(est.Joules-(m.Joules+res2.Metrics.Joules)) > 1e-9 || mt.TokensPerJouleSource != "estimate" || mt.TokensPerJoule <= 0 {
		t.Errorf("metrics: %+v", mt)
	}
	if mt.LastRun == nil || mt.LastRun.RunID != res2.RunID || mt.DecodeSeconds.Count != 2 {
		t.Errorf("last run / histogram: %+v %+v", mt.LastRun, mt.DecodeSeconds)
	}
	if _, ok := mt.Energy[power.SourceRAPL]; ok {
		t.Errorf("an estimate was counted as rapl: %+v", mt.Energy)
	}
	st := e.PowerStatus() // worker threads: the loading pool's and the lane's
	if st.Source != "estimate" || !strings.Contains(st.Meter, "not a measurement") || st.CapWatts != 0 || st.Reason != "no cap" || len(st.WorkerThreads) != 2 {
		t.Errorf("status: %+v", st)
	}
}

// fakeRAPL is a powercap tree whose package counter grows at watts while
// running, written atomically (rename) so that a reader never sees a
// partial file.
type fakeRAPL struct {
	root string
	stop chan struct{}
	done chan struct{}
	// maxStale is the longest time (ns) the counter file went without
	// covering the energy since its previous value's instant: the ticker
	// goroutine runs late on a loaded machine, and a reader then sees an
	// old value.
	maxStale atomic.Int64
}

func startFakeRAPL(t *testing.T, watts float64) *fakeRAPL {
	f := &fakeRAPL{root: t.TempDir(), stop: make(chan struct{}), done: make(chan struct{})}
	zone := filepath.Join(f.root, "class/powercap/intel-rapl:0")
	if err := os.MkdirAll(zone, 0o755); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(f.root, "class/powercap/intel-rapl"), 0o755)
	write := func(name string, v uint64) {
		tmp := filepath.Join(zone, "."+name)
		if err := os.WriteFile(tmp, []byte(strconv.FormatUint(v, 10)+"\n"), 0o644); err != nil {
			t.Error(err)
		}
		if err := os.Rename(tmp, filepath.Join(zone, name)); err != nil {
			t.Error(err)
		}
	}
	os.WriteFile(filepath.Join(zone, "name"), []byte("package-0\n"), 0o644)
	const max = 262_143_328_850
	write("max_energy_range_uj", max)
	uj := uint64(max - 50_000) // wraps around shortly after the start
	write("energy_uj", uj)
	go func() {
		defer close(f.done)
		tk := time.NewTicker(fakeRAPLTick)
		defer tk.Stop()
		last := time.Now()
		for {
			select {
			case <-f.stop:
				return
			case now := <-tk.C:
				uj = (uj + uint64(watts*1e6*now.Sub(last).Seconds())) % max
				write("energy_uj", uj)
				// Until this write, readers saw the value of instant last.
				if stale := int64(time.Since(last)); stale > f.maxStale.Load() {
					f.maxStale.Store(stale)
				}
				last = now
			}
		}
	}()
	t.Cleanup(func() { close(f.stop); <-f.done })
	return f
}

// fakeRAPLTick is how often the fake RAPL counter advances.
const fakeRAPLTick = time.Millisecond

// With a RAPL powercap tree (fake sysfs root) the runs are metered by RAPL:
// source "rapl", joules > 0 (the run's CPU share of the package energy).
func TestRunEnergyFakeRAPL(t *testing.T) {
	model := sharedModel(t, "stories260K.gguf")
	f := startFakeRAPL(t, 20)
	e := newTestEngine(t, 1, PowerOptions{Meter: "rapl", NoEstimateFallback: true, SysfsRoot: f.root, SamplePeriod: 50 * time.Millisecond})
	res := generate(t, e, model, 128)
	m := res.Metrics
	t.Logf("%d tokens: %.4f J, %.3f W, %.1f tokens/J, source %s", m.GeneratedTokens, m.Joules, m.AvgWatts, m.TokensPerJoule, m.EnergySource)
	if m.EnergySource != power.SourceRAPL || m.Joules <= 0 || m.AvgWatts <= 0 || m.TokensPerJoule <= 0 {
		t.Fatalf("metrics %+v", m)
	}
	// The run's share cannot exceed the package's 20 W, give or take how
	// stale the counter was when the run's window opened (a value older
	// than the window's start, read against a current one at its end,
	// adds that much energy to a run of a few ms).
	dur := m.Joules / m.AvgWatts
	stale := time.Duration(f.maxStale.Load()) + fakeRAPLTick
	if limit := 20 * (1 + stale.Seconds()/dur) * 1.05; m.AvgWatts > limit {
		t.Errorf("avg watts %g above the package's 20 W (limit %.1f W for a %.0f ms window, counter up to %v stale)", m.AvgWatts, limit, dur*1e3, stale)
	}
	time.Sleep(120 * time.Millisecond)
	st := e.PowerStatus() // worker threads: the loading pool's and the lane's
	if st.Source != "rapl" || len(st.Samples) == 0 || st.CurrentWatts < 10 || st.CurrentWatts > 30 {
		t.Errorf("status: source %s, %d samples, %.1f W", st.Source, len(st.Samples), st.CurrentWatts)
	}
	if mt := e.Counters(); mt.Energy["rapl"].Runs != 1 || mt.Energy["estimate"].Runs != 0 {
		t.Errorf("metrics energy: %+v", mt.Energy)
	}

	// Without RAPL and without the fallback, the engine refuses to start
	// (with the reason); with the fallback it runs on the estimate.
	empty := t.TempDir()
	if _, err := New(Options{Threads: 1, Power: PowerOptions{SysfsRoot: empty, NoEstimateFallback: true}}); err == nil || !strings.Contains(err.Error(), "energy meter") {
		t.Errorf("no RAPL, no fallback: %v", err)
	}
	e2 := newTestEngine(t, 1, PowerOptions{SysfsRoot: empty})
	if st := e2.PowerStatus(); st.Source != "estimate" || !strings.Contains(st.Meter, "RAPL not used") {
		t.Errorf("fallback status: %+v", st)
	}
}

// A host that cannot cap (a cgroup root without a cpu controller): a strict
// cap is refused with the reason; a best-effort one is recorded and the runs
// say "cap not enforced". applyPowerLimit (the plan hook) behaves the same.
func TestPowerCapNotEnforceable(t *testing.T) {
	model := sharedModel(t, "stories260K.gguf")
	cg := power.CapperConfig{Version: 1, Root: t.TempDir()}
	e := newTestEngine(t, 1, PowerOptions{Meter: "estimate", Cgroup: cg})
	if ok, why := e.powerCapability(); ok || !strings.Contains(why, "no cpu controller") {
		t.Fatalf("capability %v %s", ok, why)
	}
	_, err := e.SetPowerCap(PowerCapRequest{MaxWatts: 3})
	var ee *Error
	if !errors.As(err, &ee) || ee.Code != CodeNotImplemented || !strings.Contains(ee.Msg, "no cpu controller") || !strings.Contains(ee.Msg, "best_effort") {
		t.Fatalf("strict cap: %v", err)
	}
	if st := e.PowerStatus(); st.CapWatts != 0 || st.CanCap {
		t.Fatalf("a refused cap was recorded: %+v", st)
	}
	for _, bad := range []PowerCapRequest{{MaxWatts: -1}, {MaxWatts: math.NaN()}, {MaxWatts: 1, Enforcement: "sometimes"}} {
		if _, err := e.SetPowerCap(bad); !errors.As(err, &ee) || ee.Code != CodeInvalidParams {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	st, err := e.SetPowerCap(PowerCapRequest{MaxWatts: 3, Enforcement: EnforceBestEffort})
	if err != nil {
		t.Fatal(err)
	}
	if st.CapWatts != 3 || st.CapEnforced || !strings.HasPrefix(st.Reason, "cap not enforced: ") {
		t.Fatalf("best-effort status %+v", st)
	}
	res := generate(t, e, model, 8)
	if pc := res.Metrics.PowerCap; pc == nil || pc.Enforced || pc.MaxWatts != 3 || pc.Enforcement != "best_effort" || !strings.HasPrefix(pc.Note, "cap not enforced: ") {
		t.Fatalf("run power_cap %+v", res.Metrics.PowerCap)
	}
	t.Logf("run: %+v", *res.Metrics.PowerCap)

	// The plan's cap: strict refused, best effort recorded; the lower cap
	// is in force; 0 lifts the plan's cap only.
	if err := e.applyPowerLimit(2, EnforceStrict); err == nil {
		t.Fatal("strict plan cap accepted on a host that cannot cap")
	}
	if err := e.applyPowerLimit(2, EnforceBestEffort); err != nil {
		t.Fatal(err)
	}
	if st := e.PowerStatus(); st.CapWatts != 2 || st.PlanCapWatts != 2 || st.OperatorCapWatts != 3 {
		t.Fatalf("plan cap status %+v", st)
	}
	if err := e.applyPowerLimit(0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetPowerCap(PowerCapRequest{}); err != nil {
		t.Fatal(err)
	}
	if st := e.PowerStatus(); st.CapWatts != 0 || st.Reason != "no cap" {
		t.Fatalf("lifted: %+v", st)
	}
	if res := generate(t, e, model, 4); res.Metrics.PowerCap != nil {
		t.Fatalf("power_cap after lifting: %+v", res.Metrics.PowerCap)
	}
}

// A failing run still has its energy counted, under finish reason "error".
func TestRunEnergyAbort(t *testing.T) {
	e := newTestEngine(t, 1, PowerOptions{Meter: "estimate"})
	r := e.energy.startRun()
	e.pool.Run(e.pool.Threads(), func(w, s, end int) { // some CPU on the workers
		t0 := time.Now()
		for time.Since(t0) < 20*time.Millisecond {
		}
	})
	r.abort()
	r.abort()
	mt := e.Counters()
	if mt.RunsByFinishReason["error"] != 1 || mt.Runs != 1 || mt.Energy["estimate"].Joules <= 0 || mt.Energy["estimate"].Runs != 0 {
		t.Fatalf("metrics after an aborted run: %+v", mt)
	}
	t.Logf("aborted run: %.3f J, %.3f CPU-s", mt.Energy["estimate"].Joules, mt.Energy["estimate"].CPUSeconds)
}

// Two overlapping runs on the same pool split the worker threads' energy
// (the RunMeter splits each thread's CPU time equally among the active
// runs that list it): together they get the window's energy, not twice it.
func TestOverlappingRunsSplit(t *testing.T) {
	e := newTestEngine(t, 2, PowerOptions{Meter: "estimate"})
	busy := func(d time.Duration) {
		e.pool.Run(e.pool.Threads(), func(w, s, end int) {
			t0 := time.Now()
			for time.Since(t0) < d {
			}
		})
	}
	a := e.energy.startRun()
	busy(30 * time.Millisecond)
	b := e.energy.startRun()
	busy(60 * time.Millisecond)
	ea := a.stop()
	busy(30 * time.Millisecond)
	eb := b.stop()
	t.Logf("a: %.3f J %.3f CPU-s, b: %.3f J %.3f CPU-s", ea.Joules, ea.CPUSeconds, eb.Joules, eb.CPUSeconds)
	// a alone ~60 ms CPU (2 threads × 30 ms) + half of ~120 ms; b the other
	// half + ~60 ms alone: about equal, and a+b ≈ 10 W × all CPU.
	if ea.Joules <= 0 || eb.Joules <= 0 || math.Abs(ea.Joules-eb.Joules) > 0.5*math.Max(ea.Joules, eb.Joules) {
		t.Errorf("split a %.3f J, b %.3f J", ea.Joules, eb.Joules)
	}
	if tot := ea.CPUSeconds + eb.CPUSeconds; math.Abs(ea.Joules+eb.Joules-10*tot) > 0.05*(ea.Joules+eb.Joules) {
		t.Errorf("a+b = %.3f J for %.3f CPU-s at 10 W/core", ea.Joules+eb.Joules, tot)
	}
}

// Sanity of concurrent use: status, metrics and runs from many goroutines
// (go test -race).
func TestEnergyConcurrentUse(t *testing.T) {
	model := sharedModel(t, "stories260K.gguf")
	e := newTestEngine(t, 1, PowerOptions{Meter: "estimate", SamplePeriod: 10 * time.Millisecond})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); generate(t, e, model, 8) }()
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				_ = e.PowerStatus()
				_ = e.Counters()
			}
		}()
	}
	wg.Wait()
	if mt := e.Counters(); mt.Runs != 3 {
		t.Fatalf("runs %d", mt.Runs)
	}
}
