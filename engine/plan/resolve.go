package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/weos/llm-engine/kernels"
)

// Env describes the host a plan is checked and resolved for. The daemon
// fills it from the kernels' CPU feature detection and the power package.
type Env struct {
	// CPUs the engine may run on (affinity mask and CPU quota); 0 = unknown.
	UsableCPUs int
	// The CPU can run the cpu-avx2 kernels.
	HasAVX2 bool
	// limits.max_watts can be enforced on this host.
	CanCapPower bool
	// Why not, when CanCapPower is false (e.g. "no RAPL and no writable cgroup cpu controller").
	CapReason string
	// Kernels names the kernel a backend uses for weights of type t, or
	// fails when it has none. Nil means DefaultKernels.
	Kernels func(backend string, t kernels.Type) (string, error)
}

// DefaultKernels names the matrix-vector kernel of a backend for a weight
// type: "<avx2|go>:<weight>·<activation>" with ggml's type names, the
// activation type being what the kernel quantizes the input vector to
// (q8_K for K-quants, q8_0 for 32-blocks, f32 for float weights).
func DefaultKernels(backend string, t kernels.Type) (string, error) {
	var prefix string
	switch backend {
	case BackendAVX2:
		prefix = "avx2"
	case BackendGeneric:
		prefix = "go"
	default:
		return "", fmt.Errorf("unknown backend %q", backend)
	}
	if !t.Supported() {
		return "", fmt.Errorf("no %s kernel for %s", backend, t)
	}
	var act string
	switch {
	case t.BlockSize() == kernels.QK_K:
		act = "q8_K"
	case t.BlockSize() == 32:
		act = "q8_0"
	default:
		act = "f32"
	}
	return prefix + ":" + ggmlName(t) + "·" + act, nil
}

// ggmlName is ggml's spelling of a type name: q4_K, q8_0, f16, bf16.
func ggmlName(t kernels.Type) string {
	s := strings.ToLower(t.String())
	if k, ok := strings.CutSuffix(s, "_k"); ok {
		return k + "_K"
	}
	return s
}

// TensorDesc describes one tensor of the model file.
type TensorDesc struct {
	Name string
	Dims []int64 // GGUF order: Dims[0] is the row length
	Type kernels.Type
}

// ModelDesc is what Resolve needs to know about a model.
type ModelDesc struct {
	Arch    string // general.architecture, e.g. "llama"
	ID      string // optional identity of the file (e.g. "sha256:…"), recorded in the resolved plan
	Tensors []TensorDesc
	NLayers int // <arch>.block_count (0: derived from the blk.N tensor names)
	NCtx    int // <arch>.context_length (0: unknown; then limits.max_context must be set)
	NExpert int // <arch>.expert_count (0 or 1 for dense models)
}

// Decision rules (TensorDecision.Rule).
const (
	RuleKeep     = "keep"     // never converted (norms, 1-D tensors, …)
	RuleSource   = "source"   // quantization.default is source
	RuleDefault  = "default"  // the scheme's base type
	RuleMix      = "mix"      // a per-tensor rule of the scheme (Q4_K_M, output.weight)
	RuleOverride = "override" // quantization.overrides
)

// TensorDecision is the resolved type of one tensor and why.
type TensorDecision struct {
	Name     string
	Source   kernels.Type // type in the file
	Target   kernels.Type // type the engine computes with
	Rule     string       // RuleKeep, RuleSource, RuleDefault, RuleMix or RuleOverride
	Override string       // the quantization.overrides key that applied (Rule == RuleOverride)
	Fallback bool         // the row length forced a different type than the rule asked for
	FromFile bool         // Target == Source: the tensor is used straight from the file
	Reason   string       // human-readable, e.g. "fallback: row length 172 not a multiple of 256 (Q4_K→Q5_0)"
}

type tensorDecisionJSON struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	Rule     string `json:"rule"`
	Override string `json:"override,omitzero"`
	Fallback bool   `json:"fallback"`
	FromFile bool   `json:"from_file"`
	Reason   string `json:"reason"`
}

// MarshalJSON writes types by name ("Q4_K"), not by ggml id.
func (d TensorDecision) MarshalJSON() ([]byte, error) {
	return json.Marshal(tensorDecisionJSON{d.Name, d.Source.String(), d.Target.String(), d.Rule, d.Override, d.Fallback, d.FromFile, d.Reason})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (d *TensorDecision) UnmarshalJSON(b []byte) error {
	var j tensorDecisionJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	src, ok := kernels.ParseType(j.Source)
	if !ok {
		return fmt.Errorf("tensor %q: unknown source type %q", j.Name, j.Source)
	}
	dst, ok := kernels.ParseType(j.Target)
	if !ok {
		return fmt.Errorf("tensor %q: unknown target type %q", j.Name, j.Target)
	}
	*d = TensorDecision{j.Name, src, dst, j.Rule, j.Override, j.Fallback, j.FromFile, j.Reason}
	return nil
}

// ModelSummary identifies the model a plan was resolved for.
type ModelSummary struct {
	Arch    string `json:"arch"`
	ID      string `json:"id,omitzero"`
	NLayers int    `json:"n_layers"`
	NCtx    int    `json:"n_ctx"`
	NExpert int    `json:"n_expert,omitzero"`
}

// Resolved is a plan with every decision explicit: the engine executes this.
type Resolved struct {
	// The plan with every field set.
	Plan Plan `json:"plan"`
	// The model it was resolved for.
	Model ModelSummary `json:"model"`
	// One decision per tensor, in the model's order.
	Tensors []TensorDecision `json:"tensors"`
	// Kernel per weight type used by a matrix (≥2-D) tensor, e.g. "Q4_K": "avx2:q4_K·q8_K".
	Kernels map[string]string `json:"kernels"`
	// Things the plan asked for that this host or model does not honour fully.
	Warnings []string `json:"warnings,omitzero"`
	// "sha256:<hex>" of the canonical JSON of everything above.
	Hash string `json:"hash"`
}

// Resolve decides everything the plan leaves open for this model on this
// host. It fails with FieldErrors (pointers into the plan) when the plan is
// invalid, does not fit the host (see Plan.Check) or cannot be applied to the
// model: a context longer than the model's, a requantization without
// quantization.allow_requantize, a type the engine has no kernel for.
// A nil plan is the empty plan: all defaults.
func Resolve(p *Plan, m ModelDesc, env Env) (*Resolved, error) {
	if p == nil {
		p = &Plan{}
	}
	if es := p.Check(env); len(es) > 0 {
		return nil, FieldErrors(es)
	}
	if env.UsableCPUs < 1 {
		return nil, errors.New("plan: Env.UsableCPUs must be at least 1 to resolve a plan")
	}
	var es []FieldError
	full, derr := withDefaults(p, m, env)
	es = append(es, derr...)

	r := &Resolved{Model: ModelSummary{Arch: m.Arch, ID: m.ID, NLayers: m.NLayers, NCtx: m.NCtx, NExpert: m.NExpert}}
	dec, warn, qerr := decide(full.Quantization, m)
	es = append(es, qerr...)
	r.Tensors = dec
	r.Warnings = append(r.Warnings, warn...)

	kfn := env.Kernels
	if kfn == nil {
		kfn = DefaultKernels
	}
	r.Kernels = map[string]string{}
	var types []kernels.Type
	seen := map[kernels.Type]bool{}
	for i, d := range dec {
		if nDims(m.Tensors[i].Dims) >= 2 && !seen[d.Target] {
			seen[d.Target] = true
			types = append(types, d.Target)
		}
	}
	sort.Slice(types, func(a, b int) bool { return types[a] < types[b] })
	for _, t := range types {
		k, err := kfn(*full.Backend, t)
		if err != nil {
			es = append(es, FieldError{Pointer: "/backend", Message: fmt.Sprintf("backend %s cannot compute %s weights: %v", *full.Backend, t, err)})
			continue
		}
		if *full.WeightLayout == LayoutX8 && kernels.HasX8(t) {
			k += " x8"
		}
		r.Kernels[t.String()] = k
	}
	if l := full.Limits; *l.MaxWatts > 0 && !env.CanCapPower {
		r.Warnings = append(r.Warnings, fmt.Sprintf("limits.max_watts %g is not enforced on this host (%s): enforcement is best_effort, running uncapped", *l.MaxWatts, capReason(env)))
	}
	if len(es) > 0 {
		return nil, FieldErrors(sortErrors(es))
	}
	r.Plan = *full
	h, err := r.ComputeHash()
	if err != nil {
		return nil, err
	}
	r.Hash = h
	return r, nil
}

// Defaults (see README.md).
const (
	DefaultPolicy      = PolicyLatency
	DefaultMode        = ModeSimple
	DefaultMaxQueue    = 64
	DefaultMaxWaitMS   = 0
	DefaultBatchSimple = 1
	DefaultBatchBatch  = 8
	DefaultKVType      = KVF32
)

// withDefaults returns a copy of p with every field set.
func withDefaults(p *Plan, m ModelDesc, env Env) (*Plan, []FieldError) {
	var es []FieldError
	f := p.Clone()
	set := func(dst **int, v int) {
		if *dst == nil {
			*dst = Ptr(v)
		}
	}
	setS := func(dst **string, v string) {
		if *dst == nil {
			*dst = Ptr(v)
		}
	}
	set(&f.Version, FormatVersion)
	if env.HasAVX2 {
		setS(&f.Backend, BackendAVX2)
	} else {
		setS(&f.Backend, BackendGeneric)
	}
	if *f.Backend == BackendAVX2 {
		setS(&f.WeightLayout, LayoutX8)
	} else {
		setS(&f.WeightLayout, LayoutRows)
	}
	if f.Quantization == nil {
		f.Quantization = &Quantization{}
	}
	setS(&f.Quantization.Default, QuantSource)
	if f.Quantization.Overrides == nil {
		f.Quantization.Overrides = map[string]string{}
	}
	if f.Quantization.AllowRequantize == nil {
		f.Quantization.AllowRequantize = Ptr(false)
	}
	set(&f.Threads, env.UsableCPUs)

	if f.Scheduler == nil {
		f.Scheduler = &Scheduler{}
	}
	s := f.Scheduler
	setS(&s.Policy, DefaultPolicy)
	setS(&s.Mode, DefaultMode)
	if *s.Mode == ModeBatching {
		set(&s.MaxBatch, DefaultBatchBatch)
	} else {
		set(&s.MaxBatch, DefaultBatchSimple)
	}
	set(&s.MaxQueue, DefaultMaxQueue)
	set(&s.MaxWaitMS, DefaultMaxWaitMS)

	if f.Limits == nil {
		f.Limits = &Limits{}
	}
	l := f.Limits
	if l.MaxWatts == nil {
		l.MaxWatts = Ptr(0.0)
	}
	setS(&l.Enforcement, EnforceStrict)
	if l.MaxMemoryBytes == nil {
		l.MaxMemoryBytes = Ptr(int64(0))
	}
	switch {
	case l.MaxContext != nil && m.NCtx > 0 && *l.MaxContext > m.NCtx:
		es = append(es, FieldError{Pointer: "/limits/max_context", Message: fmt.Sprintf("max_context %d exceeds the model's context length %d", *l.MaxContext, m.NCtx)})
	case l.MaxContext == nil && m.NCtx <= 0:
		es = append(es, FieldError{Pointer: "/limits/max_context", Message: "the model does not state its context length: set limits.max_context"})
	}
	set(&l.MaxContext, m.NCtx)
	if l.MaxTokens != nil && *l.MaxTokens > *l.MaxContext && p.Limits != nil && p.Limits.MaxContext == nil {
		es = append(es, FieldError{Pointer: "/limits/max_tokens", Message: fmt.Sprintf("max_tokens %d exceeds the model's context length %d", *l.MaxTokens, *l.MaxContext)})
	}
	set(&l.MaxTokens, *l.MaxContext)

	if f.Sampling == nil {
		f.Sampling = &Sampling{}
	}
	sm := f.Sampling
	if sm.Temperature == nil {
		sm.Temperature = Ptr(0.0)
	}
	set(&sm.TopK, 0)
	if sm.TopP == nil {
		sm.TopP = Ptr(1.0)
	}
	if sm.Seed == nil {
		sm.Seed = Ptr(uint64(0))
	}
	if f.KVCache == nil {
		f.KVCache = &KVCache{}
	}
	setS(&f.KVCache.Type, DefaultKVType)
	if f.KVCache.ReusePrefix == nil {
		f.KVCache.ReusePrefix = Ptr(true)
	}
	return f, es
}

// isGlob reports whether an overrides key is a pattern rather than a name.
func isGlob(k string) bool { return strings.ContainsAny(k, `*?[\`) }

// matchOverride returns the overrides key that applies to name: the exact
// name if present, else the longest matching glob (ties: the smallest in
// byte order).
func matchOverride(ov map[string]string, globs []string, name string) (string, bool) {
	if _, ok := ov[name]; ok {
		return name, true
	}
	for _, g := range globs { // sorted longest first
		if ok, _ := path.Match(g, name); ok {
			return g, true
		}
	}
	return "", false
}

// decide computes every tensor's decision.
func decide(q *Quantization, m ModelDesc) ([]TensorDecision, []string, []FieldError) {
	scheme := *q.Default
	var globs []string
	for k := range q.Overrides {
		if isGlob(k) {
			globs = append(globs, k)
		}
	}
	sort.Slice(globs, func(i, j int) bool {
		if len(globs[i]) != len(globs[j]) {
			return len(globs[i]) > len(globs[j])
		}
		return globs[i] < globs[j]
	})
	var x *mix
	if _, ok := schemeBase[scheme]; ok && quantized(schemeBase[scheme]) {
		x = newMix(scheme, m)
	}

	used := map[string]bool{}
	// refusals grouped by (pointer, source, target)
	type refusal struct {
		ptr, msg string
		names    []string
	}
	var refusals []*refusal
	refIdx := map[string]*refusal{}
	refuse := func(ptr, key, msg, name string) {
		r := refIdx[ptr+"\x00"+key]
		if r == nil {
			r = &refusal{ptr: ptr, msg: msg}
			refIdx[ptr+"\x00"+key] = r
			refusals = append(refusals, r)
		}
		r.names = append(r.names, name)
	}

	out := make([]TensorDecision, len(m.Tensors))
	for i, t := range m.Tensors {
		d := TensorDecision{Name: t.Name, Source: t.Type}
		key, hasOv := matchOverride(q.Overrides, globs, t.Name)
		if kr := keepReason(t); kr != "" {
			d.Target, d.Rule, d.Reason, d.FromFile = t.Type, RuleKeep, kr, true
			if hasOv {
				if !isGlob(key) && q.Overrides[key] != QuantSource && q.Overrides[key] != t.Type.String() {
					refuse(Pointer("quantization", "overrides", key), "keep", fmt.Sprintf("cannot override the type of tensors the engine never converts (%s)", kr), t.Name)
				}
				if !isGlob(key) {
					used[key] = true
				}
			}
			out[i] = d
			continue
		}
		row := t.Dims[0]
		ptr := "/quantization/default"
		switch {
		case hasOv:
			used[key] = true
			ptr = Pointer("quantization", "overrides", key)
			d.Rule, d.Override = RuleOverride, key
			v := q.Overrides[key]
			if v == QuantSource {
				d.Target, d.Reason = t.Type, fmt.Sprintf("override %q: source", key)
			} else {
				typ, _ := kernels.ParseType(v)
				d.Target, d.Reason = typ, fmt.Sprintf("override %q → %s", key, typ)
			}
		case scheme == QuantSource:
			d.Target, d.Rule, d.Reason = t.Type, RuleSource, "source"
		case x == nil: // F32, F16
			d.Target, d.Rule, d.Reason = schemeBase[scheme], RuleDefault, "default "+scheme
		default:
			typ, why, changed := x.choose(i, t)
			d.Target, d.Reason, d.Rule = typ, why, RuleDefault
			if changed {
				d.Rule = RuleMix
			}
		}
		if d.Target != t.Type {
			if fb, why := fallback(d.Target, row); why != "" {
				d.Target, d.Fallback = fb, true
				d.Reason += "; " + why
			}
		}
		switch {
		case d.Target == t.Type:
			d.FromFile = true
			d.Reason += fmt.Sprintf("; already %s: used from the file", t.Type)
		case quantized(t.Type) && quantized(d.Target) && !*q.AllowRequantize:
			refuse(ptr, t.Type.String()+">"+d.Target.String(), fmt.Sprintf("%s in the file; requantizing to %s needs quantization.allow_requantize", t.Type, d.Target), t.Name)
		case quantized(t.Type):
			d.Reason += fmt.Sprintf("; requantized from %s (allow_requantize)", t.Type)
			if !quantized(d.Target) {
				d.Reason = strings.Replace(d.Reason, "requantized", "dequantized", 1)
			}
		}
		if !d.Target.Supported() {
			refuse(ptr, "unsupported>"+d.Target.String(), fmt.Sprintf("the engine has no kernels for %s", d.Target), t.Name)
		}
		out[i] = d
	}

	var es []FieldError
	for _, r := range refusals {
		names := r.names
		more := ""
		if len(names) > 3 {
			more = fmt.Sprintf(" and %d more", len(names)-3)
			names = names[:3]
		}
		es = append(es, FieldError{Pointer: r.ptr, Message: fmt.Sprintf("%s: %s%s", r.msg, strings.Join(names, ", "), more)})
	}
	var warn []string
	keys := make([]string, 0, len(q.Overrides))
	for k := range q.Overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !used[k] {
			warn = append(warn, fmt.Sprintf("quantization.overrides %q matches no tensor of this model", k))
		}
	}
	return out, warn, es
}
