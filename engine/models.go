package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/model"
	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/engine/tokenizer"
	"github.com/weos/llm-engine/kernels"
)

// A loaded model is one GGUF file computed under one set of load-time
// decisions of a plan: the per-tensor quantization, the backend and the
// weight layout. The same file may be loaded several times under plans that
// differ there; each instance has its own model id. Run-time decisions (threads, scheduler,
// limits, sampling) may differ between the runs of one instance.

// modelKey identifies a loaded instance.
type modelKey struct {
	path    string // absolute
	quant   string // per-tensor conversions ("" when every tensor is used from the file)
	backend string
	layout  string // weight_layout
}

// keyFor is the instance key of a resolved plan for the file at abs.
func keyFor(abs string, r *plan.Resolved) modelKey {
	return modelKey{abs, quantKey(r), *r.Plan.Backend, *r.Plan.WeightLayout}
}

type loaded struct {
	info  ModelInfo
	key   modelKey
	file  *gguf.File
	model *model.Model
	tok   *tokenizer.Tokenizer
	desc  plan.ModelDesc
	// weightBytes is the tensor data the model computes with.
	weightBytes int64

	runs     sync.WaitGroup // runs holding the instance (queued or running)
	unloaded bool           // guarded by Engine.mu
}

// quantKey is the canonical list of the tensors a resolved plan converts.
func quantKey(r *plan.Resolved) string {
	var b strings.Builder
	for _, d := range r.Tensors {
		if d.Target != d.Source {
			fmt.Fprintf(&b, "%s=%s;", d.Name, d.Target)
		}
	}
	return b.String()
}

// loaderConverts reports whether the loader converts tensors to the types a
// plan resolves to (quantize at load time: model.Options.Types). When it is
// false a plan that converts any tensor is refused with a "not yet" error
// (-32040), never run with the file's types.
var loaderConverts = true

// conversions lists the tensors a resolved plan converts: name → target.
func conversions(r *plan.Resolved) map[string]kernels.Type {
	out := map[string]kernels.Type{}
	for _, d := range r.Tensors {
		if d.Target != d.Source {
			out[d.Name] = d.Target
		}
	}
	return out
}

func notYetConverting(r *plan.Resolved) error {
	conv := conversions(r)
	if len(conv) == 0 || loaderConverts {
		return nil
	}
	names := make([]string, 0, len(conv))
	for n := range conv {
		names = append(names, n)
	}
	sort.Strings(names)
	var es []plan.FieldError
	for i, n := range names {
		if i == 3 {
			es = append(es, plan.FieldError{Pointer: "/quantization", Message: fmt.Sprintf("… and %d more tensors", len(names)-3)})
			break
		}
		es = append(es, plan.FieldError{Pointer: "/quantization", Message: fmt.Sprintf("tensor %s: %s in the file, plan asks for %s", n, sourceOf(r, n), conv[n])})
	}
	return &Error{Code: CodeNotImplemented,
		Msg:  fmt.Sprintf("not yet: this plan converts %d tensors (e.g. %s → %s) and the loader cannot quantize at load time yet; use quantization \"source\" or a file already in the wanted types", len(conv), names[0], conv[names[0]]),
		Data: PlanErrorData{Errors: es}}
}

func sourceOf(r *plan.Resolved, name string) kernels.Type {
	for _, d := range r.Tensors {
		if d.Name == name {
			return d.Source
		}
	}
	return 0
}

// planEnv describes this host to plan resolution.
func (e *Engine) planEnv() plan.Env {
	can, why := e.powerCapability()
	return plan.Env{
		UsableCPUs:  e.opts.Threads,
		HasAVX2:     e.hasAVX2,
		CanCapPower: can,
		CapReason:   why,
	}
}

// resolveMemo remembers plans resolved for loaded models: resolving (and
// hashing the canonical form of every per-tensor decision) costs about
// 0.5 ms for a small model, a tenth of a short generate call. A resolution
// depends only on the plan's content, the model's description and the
// environment, so equal inputs share one *plan.Resolved (read-only).
type resolveMemo struct {
	mu sync.Mutex
	m  map[string]*plan.Resolved
}

const resolveMemoMax = 256

// resolveLoaded is resolve for the description of a loaded model file
// (path), memoised. The key spells out plan.Env's fields: a new field that
// Resolve reads must join it.
func (e *Engine) resolveLoaded(p *plan.Plan, path string, desc plan.ModelDesc, weightBytes int64) (*plan.Resolved, error) {
	pj, err := json.Marshal(p)
	if err != nil {
		return e.resolve(p, desc, weightBytes)
	}
	env := e.planEnv() // what Resolve reads of it (Kernels: nil, the default)
	key := fmt.Sprintf("%s\x00%d\x00%d|%t|%t|%s\x00%s", path, weightBytes, env.UsableCPUs, env.HasAVX2, env.CanCapPower, env.CapReason, pj)
	e.memo.mu.Lock()
	r, ok := e.memo.m[key]
	e.memo.mu.Unlock()
	if ok {
		return r, nil
	}
	if r, err = e.resolve(p, desc, weightBytes); err != nil {
		return nil, err
	}
	e.memo.mu.Lock()
	if e.memo.m == nil || len(e.memo.m) >= resolveMemoMax {
		e.memo.m = map[string]*plan.Resolved{}
	}
	e.memo.m[key] = r
	e.memo.mu.Unlock()
	return r, nil
}

// resolve resolves a plan for a model description, with the engine's rules.
func (e *Engine) resolve(p *plan.Plan, desc plan.ModelDesc, weightBytes int64) (*plan.Resolved, error) {
	if es := engineRules(p); len(es) > 0 {
		return nil, planInvalid("plan invalid", es)
	}
	r, err := plan.Resolve(p, desc, e.planEnv())
	if err != nil {
		var fes plan.FieldErrors
		if errors.As(err, &fes) {
			return nil, planInvalid("plan cannot run here", fes)
		}
		return nil, errorf(CodeInternal, "resolving the plan: %v", err)
	}
	if lim := *r.Plan.Limits.MaxMemoryBytes; lim > 0 && weightBytes > lim {
		return nil, planInvalid("plan cannot run here", []plan.FieldError{{Pointer: "/limits/max_memory_bytes",
			Message: fmt.Sprintf("the model's weights alone take %d bytes, over max_memory_bytes %d", weightBytes, lim)}})
	}
	return r, nil
}

// resolveFor resolves p for a model reference (a loaded model id or a
// path) without loading anything.
func (e *Engine) resolveFor(ctx context.Context, ref string, p *plan.Plan) (*plan.Resolved, error) {
	if m := e.modelByID(ref); m != nil {
		return e.resolve(p, m.desc, m.weightBytes)
	}
	abs, err := e.modelPath(ref)
	if err != nil {
		return nil, err
	}
	// Reading an arbitrary file of the daemon's host is for admins; others
	// resolve for loaded models.
	if err := needAdmin(ctx, "resolving a plan for a model file that is not loaded ("+ref+")"); err != nil {
		return nil, err
	}
	f, err := openGGUF(abs, ref)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return e.resolve(p, plan.ModelDescFromGGUF(f), tensorBytes(f))
}

func tensorBytes(f *gguf.File) int64 {
	var n int64
	for i := range f.Tensors {
		n += int64(len(f.TensorData(&f.Tensors[i])))
	}
	return n
}

func openGGUF(abs, ref string) (*gguf.File, error) {
	f, err := gguf.Open(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errorf(CodeModelNotFound, "model %s: no such file", ref)
		}
		return nil, errorf(CodeModelInvalid, "model %s: %v", ref, err)
	}
	return f, nil
}

func (e *Engine) modelByID(id string) *loaded {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.models[id]
}

// modelPath turns a reference that is not a loaded model id into an
// absolute path, or fails with "model not found".
func (e *Engine) modelPath(ref string) (string, error) {
	if ref == "" {
		return "", errorf(CodeInvalidParams, "invalid params: field \"model\" is required")
	}
	isPath := strings.ContainsRune(ref, '/') || strings.HasSuffix(ref, ".gguf")
	if !isPath {
		if _, err := os.Stat(ref); err != nil {
			return "", errorf(CodeModelNotFound, "model %q is neither a loaded model id nor a file", ref)
		}
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return "", errorf(CodeModelNotFound, "model %s: %v", ref, err)
	}
	return abs, nil
}

// instanceFor returns the loaded instance a request runs on, with its plan
// resolved for it. ref is a loaded model id (the plan must then agree with
// the instance's quantization and backend) or a path (the instance for the
// plan's load-time decisions, loaded if needed: that needs an admin caller).
func (e *Engine) instanceFor(ctx context.Context, ref string, ch *planChoice, what string) (*loaded, *plan.Resolved, error) {
	if m := e.modelByID(ref); m != nil {
		r, err := e.resolveLoaded(ch.p, m.key.path, m.desc, m.weightBytes)
		if err != nil {
			return nil, nil, err
		}
		if k := keyFor(m.key.path, r); k != m.key {
			return nil, nil, mismatch(m, r, ch)
		}
		return m, r, nil
	}
	abs, err := e.modelPath(ref)
	if err != nil {
		return nil, nil, err
	}
	// Describe the file from a loaded instance of it, else by opening it.
	var desc plan.ModelDesc
	var wb int64
	e.mu.Lock()
	for _, m := range e.models {
		if m.key.path == abs {
			desc, wb = m.desc, m.weightBytes
			break
		}
	}
	e.mu.Unlock()
	var f *gguf.File
	loadedDesc := desc.Tensors != nil
	if !loadedDesc {
		if f, err = openGGUF(abs, ref); err != nil {
			return nil, nil, err
		}
		desc, wb = plan.ModelDescFromGGUF(f), tensorBytes(f)
	}
	closeF := func() {
		if f != nil {
			f.Close()
		}
	}
	var r *plan.Resolved
	if loadedDesc {
		r, err = e.resolveLoaded(ch.p, abs, desc, wb)
	} else {
		r, err = e.resolve(ch.p, desc, wb)
	}
	if err != nil {
		closeF()
		return nil, nil, err
	}
	key := keyFor(abs, r)
	e.mu.Lock()
	for _, m := range e.models {
		if m.key == key {
			e.mu.Unlock()
			closeF()
			return m, r, nil
		}
	}
	e.mu.Unlock()
	if err := needAdmin(ctx, what+" with a model that is not loaded (it would load "+ref+")"); err != nil {
		closeF()
		return nil, nil, err
	}
	if err := notYetConverting(r); err != nil {
		closeF()
		return nil, nil, err
	}
	if f == nil {
		if f, err = openGGUF(abs, ref); err != nil {
			return nil, nil, err
		}
	}
	m, err := e.loadInstance(ctx, f, key, r, ch, ref)
	if err != nil {
		return nil, nil, err
	}
	return m, r, nil
}

func mismatch(m *loaded, r *plan.Resolved, ch *planChoice) error {
	what := "quantization"
	ptr := "/quantization"
	switch {
	case m.key.backend != *r.Plan.Backend:
		what, ptr = "backend", "/backend"
	case m.key.layout != *r.Plan.WeightLayout:
		what, ptr = "weight layout", "/weight_layout"
	}
	return &Error{Code: CodePlanInvalid,
		Msg: fmt.Sprintf("model %s was loaded under plan %s with a different %s than plan %s asks for: load the file under this plan (model.load {path, plan}) and use that model id",
			m.info.ModelID, m.info.Plan, what, planLabel(ch.use)),
		Data: PlanErrorData{Errors: []plan.FieldError{{Pointer: ptr, Message: fmt.Sprintf("differs from the %s model %s was loaded with", what, m.info.ModelID)}}}}
}

func planLabel(u PlanUse) string { return u.String() }

// loadInstance builds and registers a model instance from an open file
// (which it owns from then on).
func (e *Engine) loadInstance(ctx context.Context, f *gguf.File, key modelKey, r *plan.Resolved, ch *planChoice, ref string) (*loaded, error) {
	start := time.Now()
	be, err := kernels.BackendByName(key.backend)
	if err != nil {
		f.Close()
		return nil, errorf(CodeModelInvalid, "model %s: %v", ref, err)
	}
	arch, _ := f.String("general.architecture")
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		f.Close()
		return nil, errorf(CodeModelInvalid, "model %s: tokenizer: %v", ref, err)
	}
	// Tensors the plan converts are quantized at load (on the pool's
	// threads) and cached in the cache directory.
	use := ch.use
	use.Hash = r.Hash
	caller, _ := ctx.Value(loadProgressKey{}).(func(ModelLoadingEvent))
	phaseProgress := func(phase string) func(done, total int64) {
		lastEvent, lastCaller := -1.0, -1.0
		return func(done, total int64) {
			if total <= 0 {
				return
			}
			f := float64(done) / float64(total)
			ev := ModelLoadingEvent{Path: key.path, Plan: use, Phase: phase, Done: done, Total: total, Fraction: f}
			if f >= lastEvent+0.1 || done == total {
				lastEvent = f
				e.publish(TopicModel, EventModelLoading, ev)
			}
			if caller != nil && (f >= lastCaller+0.01 || done == total) {
				lastCaller = f
				caller(ev)
			}
		}
	}
	progress := phaseProgress("quantize")
	layout := kernels.LayoutRows
	if key.layout == plan.LayoutX8 {
		layout = kernels.LayoutX8
	}
	mdl, err := model.LoadCached(f, key.path, e.opts.CacheDir, model.Options{Backend: be, Pool: e.pool,
		Types: conversions(r), AllowRequantize: *r.Plan.Quantization.AllowRequantize, Progress: progress,
		Layout: layout, RepackProgress: phaseProgress("repack")})
	if err != nil {
		f.Close()
		return nil, errorf(CodeModelInvalid, "model %s: %v", ref, err)
	}
	info := ModelInfo{
		Path:         key.path,
		Arch:         arch,
		TensorTypes:  map[string]int{},
		NVocab:       mdl.Config.Vocab,
		NCtx:         mdl.Config.Ctx,
		Plan:         use,
		Backend:      key.backend,
		ComputeTypes: map[string]int{},
		WeightLayout: key.layout,
	}
	if li := mdl.Layout(); li.Matrices > 0 {
		info.RepackedMatrix = li.Matrices
		info.RepackMS = ms(li.Duration)
	}
	if q := mdl.Quantization(); q.CachePath != "" {
		info.QuantCachePath, info.QuantCacheHit = q.CachePath, q.CacheHit
		info.QuantCachePruned = e.pruneQuantCache(q.CachePath)
	}
	for i := range f.Tensors {
		info.NParams += f.Tensors[i].NumElements()
		info.TensorTypes[f.Tensors[i].Type.String()]++
	}
	for _, d := range r.Tensors {
		info.ComputeTypes[d.Target.String()]++
	}
	info.LoadMS = ms(time.Since(start))
	m := &loaded{info: info, key: key, file: f, model: mdl, tok: tok, desc: plan.ModelDescFromGGUF(f), weightBytes: tensorBytes(f)}

	e.mu.Lock()
	for _, other := range e.models { // lost a race with a concurrent load
		if other.key == key {
			e.mu.Unlock()
			mdl.Close()
			f.Close()
			return other, nil
		}
	}
	if e.closing.Load() {
		e.mu.Unlock()
		mdl.Close()
		f.Close()
		return nil, errorf(CodeInternal, "engine shutting down")
	}
	m.info.ModelID = e.newModelID(key.path)
	e.models[m.info.ModelID] = m
	e.mu.Unlock()
	e.publish(TopicModel, EventModelLoaded, ModelEvent{ModelID: m.info.ModelID, Path: key.path, Plan: use, Actor: actorOf(ctx), Time: time.Now().UTC()})
	return m, nil
}

type loadProgressKey struct{}

// WithLoadProgress returns a context under which a model load (model.load,
// or a generate that loads its model) reports its progress to fn, on the
// loading goroutine, at most every 1% of each phase and at its end.
func WithLoadProgress(ctx context.Context, fn func(ModelLoadingEvent)) context.Context {
	return context.WithValue(ctx, loadProgressKey{}, fn)
}

// newModelID names a model after its file, made unique. Caller holds e.mu.
func (e *Engine) newModelID(abs string) string {
	base := strings.TrimSuffix(filepath.Base(abs), ".gguf")
	id := base
	for n := 2; ; n++ {
		if _, taken := e.models[id]; !taken {
			return id
		}
		id = fmt.Sprintf("%s-%d", base, n)
	}
}

// pruneQuantCache keeps the quantization cache within CacheMaxBytes after a
// load wrote or used the entry at path: the least recently used entries go
// first, never path nor an entry a loaded model maps (deleting it would be
// safe for that model, whose mapping keeps the pages, but its next load
// would convert again). It returns the entries deleted; a failure to
// delete costs only disk space, so it is not the load's error.
func (e *Engine) pruneQuantCache(path string) []string {
	if e.opts.CacheMaxBytes <= 0 || e.opts.CacheDir == "" {
		return nil
	}
	keep := []string{path}
	e.mu.Lock()
	for _, m := range e.models {
		keep = append(keep, m.model.Quantization().CachePath)
	}
	e.mu.Unlock()
	res, _ := model.PruneQuantCache(e.opts.CacheDir, e.opts.CacheMaxBytes, keep...)
	return res.Removed
}
