package plan

// FormatVersion is the only plan format version this package reads and writes.
const FormatVersion = 1

// Backends.
const (
	BackendAVX2    = "cpu-avx2"
	BackendGeneric = "cpu-generic"
)

// Quantization schemes (Quantization.Default).
const (
	QuantSource = "source"
	QuantF32    = "F32"
	QuantF16    = "F16"
	QuantQ8_0   = "Q8_0"
	QuantQ6_K   = "Q6_K"
	QuantQ4_K_M = "Q4_K_M"
)

// Weight layouts (Plan.WeightLayout).
const (
	LayoutX8   = "x8"
	LayoutRows = "rows"
)

// Scheduler policies and modes.
const (
	PolicyLatency = "latency"
	PolicyCost    = "cost"
	PolicyEnergy  = "energy"

	ModeSimple   = "simple"
	ModeBatching = "batching"
)

// Power-limit enforcement.
const (
	EnforceStrict     = "strict"
	EnforceBestEffort = "best_effort"
)

// Plan is an Execution Plan as written: every field is optional and a nil
// field means "the documented default", which Resolve writes back explicitly.
// Plans are built in Go with Ptr, e.g. Plan{Threads: Ptr(2)}.
type Plan struct {
	// Plan format version. Only 1 exists; absent means 1.
	Version *int `json:"version,omitzero"`
	// Compute backend: cpu-avx2 (AVX2+FMA kernels) or cpu-generic (portable Go kernels). Absent: cpu-avx2 when the host has AVX2, else cpu-generic (written back by resolve).
	Backend *string `json:"backend,omitzero" jsonschema:"enum=cpu-avx2,enum=cpu-generic"`
	// Weight quantization: a scheme applied to the whole model plus per-tensor overrides.
	Quantization *Quantization `json:"quantization,omitzero"`
	// Memory layout of weight matrices: x8 repacks Q8_0, Q4_K and Q6_K matrices at load into groups of eight interleaved rows (a one-time copy in anonymous memory, the file's pages released; kernels then compute eight rows at once); rows computes from the file's layout, straight from its memory map. Results are bit-identical either way. Absent: x8 on cpu-avx2, rows on cpu-generic.
	WeightLayout *string `json:"weight_layout,omitzero" jsonschema:"enum=x8,enum=rows"`
	// Worker threads for inference. At most the CPUs usable by the engine. Absent: all usable CPUs.
	Threads *int `json:"threads,omitzero" jsonschema:"minimum=1"`
	// Request scheduling.
	Scheduler *Scheduler `json:"scheduler,omitzero"`
	// Resource limits: power, memory, context and output length.
	Limits *Limits `json:"limits,omitzero"`
	// Default sampling parameters of requests run under this plan.
	Sampling *Sampling `json:"sampling,omitzero"`
	// Key/value cache storage.
	KVCache *KVCache `json:"kv_cache,omitzero"`
}

// Quantization selects the type every weight tensor is computed in.
type Quantization struct {
	// Scheme for the whole model: source keeps every tensor as stored in the file; F32 and F16 convert every weight matrix; Q8_0 and Q6_K quantize weight matrices to that type; Q4_K_M is llama.cpp's Q4_K/Q6_K mix. Norms and other 1-D tensors are never quantized. Absent: source.
	Default *string `json:"default,omitzero" jsonschema:"enum=source,enum=F32,enum=F16,enum=Q8_0,enum=Q6_K,enum=Q4_K_M"`
	// Per-tensor types, keyed by tensor name or glob (path.Match syntax: * ? [...]). An exact name wins over globs; among globs the longest pattern wins. The value source keeps the tensor as stored in the file.
	Overrides map[string]string `json:"overrides,omitzero"`
	// Allow converting a tensor that is already quantized in the file to a different quantized type (lossy twice). Absent: false.
	AllowRequantize *bool `json:"allow_requantize,omitzero"`
}

// Scheduler configures how requests are queued and run.
type Scheduler struct {
	// What the scheduler optimises: latency (first token fast), cost (throughput per CPU second) or energy (tokens per joule). Absent: latency.
	Policy *string `json:"policy,omitzero" jsonschema:"enum=latency,enum=cost,enum=energy"`
	// simple runs one request at a time; batching decodes several requests together. Absent: simple.
	Mode *string `json:"mode,omitzero" jsonschema:"enum=simple,enum=batching"`
	// Most requests decoded together. Must be 1 in simple mode. Absent: 1 (simple) or 8 (batching).
	MaxBatch *int `json:"max_batch,omitzero" jsonschema:"minimum=1"`
	// Most requests waiting; more are refused. Absent: 64.
	MaxQueue *int `json:"max_queue,omitzero" jsonschema:"minimum=1"`
	// Milliseconds the batcher waits for a batch to fill before running it; 0 runs what is queued at once. Absent: 0.
	MaxWaitMS *int `json:"max_wait_ms,omitzero" jsonschema:"minimum=0"`
}

// Limits bounds the resources runs under this plan may use.
type Limits struct {
	// Average package power cap in watts for the inference threads; 0 means no cap. Absent: 0.
	MaxWatts *float64 `json:"max_watts,omitzero" jsonschema:"minimum=0"`
	// What to do when max_watts cannot be enforced on this host: strict refuses the plan, best_effort runs uncapped and says so. Absent: strict.
	Enforcement *string `json:"enforcement,omitzero" jsonschema:"enum=strict,enum=best_effort"`
	// Memory budget in bytes for weights, KV cache and buffers; 0 means no limit. Absent: 0.
	MaxMemoryBytes *int64 `json:"max_memory_bytes,omitzero" jsonschema:"minimum=0"`
	// Context length in tokens (prompt + generated). At most the model's. Absent: the model's context length.
	MaxContext *int `json:"max_context,omitzero" jsonschema:"minimum=1"`
	// Most tokens one request may generate. Absent: max_context.
	MaxTokens *int `json:"max_tokens,omitzero" jsonschema:"minimum=1"`
}

// Sampling holds the default sampling parameters.
type Sampling struct {
	// Softmax temperature; 0 is greedy (argmax, lowest token id on ties). Absent: 0.
	Temperature *float64 `json:"temperature,omitzero" jsonschema:"minimum=0"`
	// Keep only the k most likely tokens; 0 disables. Absent: 0.
	TopK *int `json:"top_k,omitzero" jsonschema:"minimum=0"`
	// Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p; 1 disables. Absent: 1.
	TopP *float64 `json:"top_p,omitzero" jsonschema:"exclusiveMinimum=0,maximum=1"`
	// PRNG seed; 0 means a seed is drawn per run and recorded in the run record. Absent: 0.
	Seed *uint64 `json:"seed,omitzero" jsonschema:"minimum=0"`
}

// The KV cache element types (kv_cache.type).
const (
	KVF32 = "F32"
	KVF16 = "F16"
)

// KVCache configures the attention key/value cache.
type KVCache struct {
	// Element type of cached keys and values: F32, or F16 (half the memory and the attention's cache reads; keys and values rounded to binary16 as they are stored, as llama.cpp's default cache does). Absent: F32.
	Type *string `json:"type,omitzero" jsonschema:"enum=F32,enum=F16"`
	// Continue from another sequence's cache when it holds a prefix of the prompt (a finished sequence's kept cache, or a sequence joining at the same step; bit-identical logits, only the prompt's time changes; a faster first token can tell a client that another one sent the same prefix). false: the run computes its whole prompt and leaves its cache to no other run's prefix. Absent: true.
	ReusePrefix *bool `json:"reuse_prefix,omitzero"`
}

// Ptr returns a pointer to v: Plan{Threads: plan.Ptr(4)}.
func Ptr[T any](v T) *T { return &v }

// overrideTypes are the values accepted in Quantization.Overrides.
var overrideTypes = []string{"source", "F32", "F16", "Q8_0", "Q6_K", "Q5_0", "Q4_K"}

// OverrideTypes lists the values accepted in quantization.overrides.
func OverrideTypes() []string { return append([]string(nil), overrideTypes...) }

// Clone returns a deep copy of p.
func (p *Plan) Clone() *Plan {
	if p == nil {
		return nil
	}
	c := *p
	c.Version = clonePtr(p.Version)
	c.Backend = clonePtr(p.Backend)
	c.WeightLayout = clonePtr(p.WeightLayout)
	c.Threads = clonePtr(p.Threads)
	if q := p.Quantization; q != nil {
		c.Quantization = &Quantization{Default: clonePtr(q.Default), AllowRequantize: clonePtr(q.AllowRequantize)}
		if q.Overrides != nil {
			c.Quantization.Overrides = make(map[string]string, len(q.Overrides))
			for k, v := range q.Overrides {
				c.Quantization.Overrides[k] = v
			}
		}
	}
	if s := p.Scheduler; s != nil {
		c.Scheduler = &Scheduler{clonePtr(s.Policy), clonePtr(s.Mode), clonePtr(s.MaxBatch), clonePtr(s.MaxQueue), clonePtr(s.MaxWaitMS)}
	}
	if l := p.Limits; l != nil {
		c.Limits = &Limits{clonePtr(l.MaxWatts), clonePtr(l.Enforcement), clonePtr(l.MaxMemoryBytes), clonePtr(l.MaxContext), clonePtr(l.MaxTokens)}
	}
	if s := p.Sampling; s != nil {
		c.Sampling = &Sampling{clonePtr(s.Temperature), clonePtr(s.TopK), clonePtr(s.TopP), clonePtr(s.Seed)}
	}
	if k := p.KVCache; k != nil {
		c.KVCache = &KVCache{clonePtr(k.Type), clonePtr(k.ReusePrefix)}
	}
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
