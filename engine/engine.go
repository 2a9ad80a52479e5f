package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/weos/llm-engine/kernels"
)

// Version is the engine's version, reported by engine.info.
var Version = "0.1.0-dev"

// DefaultMaxTokens applies when a generate request does not set max_tokens
// (capped by the plan's limits.max_tokens).
const DefaultMaxTokens = 128

// Options configure an Engine.
type Options struct {
	// StateDir holds plans (plans/, plan-active.json, plan-audit.jsonl) and
	// run records (runs/). "" means a temporary directory removed by Close.
	StateDir string
	CacheDir string
	// CacheMaxBytes bounds the quantization cache (CacheDir/quant): after
	// a load writes or uses an entry, the least recently used entries
	// beyond it are deleted, never one a loaded model maps. 0: unbounded.
	CacheMaxBytes int64
	Threads       int    // worker threads; 0 means runtime.NumCPU()
	Backend       string // kernel set; "" means the best the CPU supports
	Power         PowerOptions
	// MaxRunRecords bounds the run records kept (default
	// DefaultMaxRunRecords); the oldest are deleted beyond it.
	MaxRunRecords int
	// EnergyMeter overrides the meter bench.run and the energy policy read
	// (default: the energy subsystem's meter).
	EnergyMeter EnergyMeter
}

// Engine owns the loaded models, the worker pools, the plans and the run
// records, and runs generations through per-plan schedulers.
type Engine struct {
	opts    Options
	pool    *kernels.Pool // Threads workers: the models compute on it, and plans with all threads
	backend *kernels.Backend
	hasAVX2 bool
	energy  *energy // meter, per-run attribution, power cap (energy.go)

	mu     sync.Mutex // guards models
	models map[string]*loaded

	// compute serialises forward passes: one pass at a time, on the pool
	// of its plan's thread count. The schedulers (engine/sched) interleave
	// sequences on top.
	compute sync.Mutex

	poolsMu   sync.Mutex
	lanePools map[*lane]*kernels.Pool // each live lane's pool (laneThread)

	lanesMu sync.Mutex
	lanes   map[laneKey]*lane

	plans  *planMgr
	memo   resolveMemo // plans resolved for loaded models (models.go)
	runs   *runStore
	events hub

	toks  sync.Map // absolute path → *tokEntry: tokenizers of files that are not loaded (tokenize.go)
	tmpls sync.Map // template source → *chat.Template (chat.go)

	closing    atomic.Bool
	closeOnce  sync.Once
	closeErr   error
	inflight   sync.WaitGroup // generate calls between submit and reply
	kvBytes    atomic.Int64
	activeSeqs atomic.Int64
	recordErr  atomic.Value // string: the last run-record write error
	tmpState   string       // StateDir created by New (removed by Close)
}

// New starts an engine: it creates the worker pool, picks the kernels and
// opens the plan store and the run records in the state directory.
func New(opts Options) (*Engine, error) {
	if opts.Threads <= 0 {
		opts.Threads = runtime.NumCPU()
	}
	be, err := kernels.BackendByName(opts.Backend)
	if err != nil {
		return nil, err
	}
	e := &Engine{opts: opts, backend: be, models: map[string]*loaded{}, lanePools: map[*lane]*kernels.Pool{}, lanes: map[laneKey]*lane{}}
	// cpu-avx2 is a plan's default only when the engine is not held to
	// another backend (the daemon's "backend" setting).
	e.hasAVX2 = slices.Contains(kernels.AvailableBackends(), "cpu-avx2") && (opts.Backend == "" || opts.Backend == "auto" || opts.Backend == "cpu-avx2")
	if e.opts.StateDir == "" {
		if e.tmpState, err = os.MkdirTemp("", "llm-engine-state-"); err != nil {
			return nil, err
		}
		e.opts.StateDir = e.tmpState
	}
	fail := func(err error) (*Engine, error) {
		if e.plans != nil {
			e.plans.close()
		}
		if e.tmpState != "" {
			os.RemoveAll(e.tmpState)
		}
		return nil, err
	}
	if e.plans, err = openPlans(e.opts.StateDir); err != nil {
		return fail(err)
	}
	if e.runs, err = openRuns(filepath.Join(e.opts.StateDir, "runs"), opts.MaxRunRecords); err != nil {
		return fail(err)
	}
	if e.pool, err = kernels.NewPool(opts.Threads); err != nil {
		return fail(err)
	}
	en, err := newEnergy(opts.Power, e.workerTIDs)
	if err != nil {
		e.pool.Close()
		return fail(err)
	}
	e.energy = en
	e.events.pollPower = e.pollPower
	return e, nil
}

// Close stops the engine: see Shutdown.
func (e *Engine) Close() error { return e.Shutdown(context.Background()) }

// Shutdown stops the engine: new requests are refused, runs still queued
// or running are cancelled (they end "cancelled" and their records are
// written), subscribers are closed, models unloaded and the worker threads
// stopped. ctx bounds the wait for the runs' replies.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.closeOnce.Do(func() { e.closeErr = e.shutdown(ctx) })
	return e.closeErr
}

var errShutdown = errors.New("engine shutting down")

func (e *Engine) shutdown(ctx context.Context) error {
	e.closing.Store(true)
	for _, sr := range e.runs.liveRuns() {
		sr.cancel(errShutdown)
	}
	e.lanesMu.Lock()
	lanes := make([]*lane, 0, len(e.lanes))
	for k, l := range e.lanes {
		lanes = append(lanes, l)
		delete(e.lanes, k)
	}
	e.lanesMu.Unlock()
	for _, l := range lanes {
		l.s.Close()
	}
	done := make(chan struct{})
	go func() { e.inflight.Wait(); close(done) }()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("engine shutdown: runs still replying: %w", ctx.Err()))
	}
	for _, l := range lanes {
		l.idle.close()
	}
	errs = append(errs, e.runs.flush())
	e.events.closeAll("engine stopped")
	e.compute.Lock()
	defer e.compute.Unlock()
	e.mu.Lock()
	for id, m := range e.models {
		m.unloaded = true
		m.model.Close()
		m.file.Close()
		delete(e.models, id)
	}
	e.mu.Unlock()
	e.energy.close() // threads back to their cgroup before they exit
	e.pool.Close()   // the lanes' pools closed with their schedulers
	errs = append(errs, e.plans.close())
	if e.tmpState != "" {
		os.RemoveAll(e.tmpState)
	}
	return errors.Join(errs...)
}

// Info describes the engine and the host.
func (e *Engine) Info() Info {
	return Info{
		Version:     Version,
		GoVersion:   runtime.Version(),
		Backends:    kernels.AvailableBackends(),
		CPUFeatures: kernels.CPUFeatures(),
		NumCPU:      runtime.NumCPU(),
	}
}

// LoadModel loads a GGUF model under a plan (req.Plan: a name, or an inline
// object; absent: the active "default" plan). The instance is keyed by the
// file and the plan's load-time decisions (per-tensor quantization,
// backend): loading the same file under a plan that agrees on those returns
// the loaded instance; under one that does not, a second instance.
func (e *Engine) LoadModel(ctx context.Context, req LoadRequest) (*ModelInfo, error) {
	if req.Path == "" {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"path\" is required")
	}
	if e.closing.Load() {
		return nil, errorf(CodeInternal, "engine shutting down")
	}
	ch, err := e.choosePlan(req.Plan)
	if err != nil {
		return nil, err
	}
	m, _, err := e.instanceFor(ctx, req.Path, ch, "model.load")
	if err != nil {
		return nil, err
	}
	info := m.info
	return &info, nil
}

// load loads path under the active default plan (in-process callers and
// tests).
func (e *Engine) load(path string) (*loaded, error) {
	ch, err := e.choosePlan(nil)
	if err != nil {
		return nil, err
	}
	m, _, err := e.instanceFor(context.Background(), path, ch, "model.load")
	return m, err
}

// ListModels returns the loaded models, sorted by id.
func (e *Engine) ListModels() []ModelInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ModelInfo, 0, len(e.models))
	for _, m := range e.models {
		out = append(out, m.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModelID < out[j].ModelID })
	return out
}

// UnloadModel drops a model. Runs already queued or running on it finish
// first; its memory is released after them.
func (e *Engine) UnloadModel(id string) error {
	e.mu.Lock()
	m, ok := e.models[id]
	if ok {
		delete(e.models, id)
		m.unloaded = true
	}
	e.mu.Unlock()
	if !ok {
		return errorf(CodeModelNotFound, "model %q is not loaded", id)
	}
	e.lanesMu.Lock()
	var ls []*lane
	for k, l := range e.lanes {
		if k.model == m {
			ls = append(ls, l)
			delete(e.lanes, k)
		}
	}
	e.lanesMu.Unlock()
	for _, l := range ls {
		l.s.Drain()
	}
	release := func() {
		m.runs.Wait()
		for _, l := range ls {
			<-l.s.Done()
			l.idle.close()
		}
		e.compute.Lock()
		defer e.compute.Unlock()
		m.model.Close()
		m.file.Close()
	}
	if len(ls) == 0 {
		release()
	} else {
		go release()
	}
	e.publish(TopicModel, EventModelUnloaded, ModelEvent{ModelID: id, Path: m.key.path, Plan: m.info.Plan, Time: time.Now().UTC()})
	return nil
}

// SchedStats answers sched.stats: each scheduler's queue and batch
// counters, runs in progress, sequences holding a KV cache and its bytes.
func (e *Engine) SchedStats() SchedStats {
	out := SchedStats{Lanes: []LaneStats{}, ActiveSequences: int(e.activeSeqs.Load()), KVBytes: e.kvBytes.Load()}
	out.RunsInProgress = len(e.runs.liveRuns())
	e.events.mu.Lock()
	out.Subscribers = len(e.events.subs)
	e.events.mu.Unlock()
	if s, ok := e.recordErr.Load().(string); ok {
		out.RecordError = s
	}
	e.lanesMu.Lock()
	for k, l := range e.lanes {
		st := l.s.Stats()
		idle, idleBytes := l.idle.stats()
		out.Lanes = append(out.Lanes, LaneStats{IdleStates: idle, IdleKVBytes: idleBytes, ModelID: k.model.info.ModelID, Threads: l.pool.Threads(), Mode: k.mode, Policy: k.policy,
			MaxBatch: k.maxBatch, Queued: st.Queued, Active: st.Active, MaxActive: st.MaxActive, Rejected: st.Rejected,
			Completed: st.Completed, Cancelled: st.Cancelled, Steps: st.Steps, StepsBySize: st.StepsBySize, EnergyTarget: st.EnergyTarget})
	}
	e.lanesMu.Unlock()
	sort.Slice(out.Lanes, func(i, j int) bool {
		a, b := out.Lanes[i], out.Lanes[j]
		if a.ModelID != b.ModelID {
			return a.ModelID < b.ModelID
		}
		return fmt.Sprint(a.Threads, a.Mode, a.Policy, a.MaxBatch) < fmt.Sprint(b.Threads, b.Mode, b.Policy, b.MaxBatch)
	})
	return out
}

func validateSampling(s Sampling) error {
	switch {
	case s.Temperature < 0 || math.IsNaN(float64(s.Temperature)):
		return errorf(CodeInvalidParams, "invalid params: field \"sampling.temperature\" must be ≥ 0")
	case s.TopK < 0:
		return errorf(CodeInvalidParams, "invalid params: field \"sampling.top_k\" must be ≥ 0")
	case s.TopP < 0 || s.TopP > 1 || math.IsNaN(float64(s.TopP)):
		return errorf(CodeInvalidParams, "invalid params: field \"sampling.top_p\" must be in [0, 1]")
	}
	return nil
}

// logitsDigest is the sha256 of the little-endian float32 bytes of logits.
func logitsDigest(logits []float32) string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(logits))), len(logits)*4)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile uses the nearest-rank method on a copy of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	k := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}
