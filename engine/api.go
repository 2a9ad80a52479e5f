// Package engine is the facade the daemon drives: it owns loaded models and
// runs generation requests. The wire types of the JSON-RPC API live here so
// that rpc/ and daemon/ share one definition with the engine.
package engine

// Info answers engine.info.
type Info struct {
	Version     string   `json:"version"`
	GoVersion   string   `json:"go_version"`
	Backends    []string `json:"backends"`     // backends this host can run, e.g. ["cpu-avx2","cpu-generic"]
	CPUFeatures []string `json:"cpu_features"` // e.g. ["avx2","fma","f16c"]
	NumCPU      int      `json:"num_cpu"`
}

// LoadRequest is model.load's params.
type LoadRequest struct {
	Path string `json:"path"`
	// Plan is optional: a plan name or an inline plan object (issue 4). Kept
	// raw here so the plan package owns its validation.
	Plan any `json:"plan,omitempty"`
}

// ModelInfo describes a loaded model (model.load result, model.list entries).
type ModelInfo struct {
	ModelID     string         `json:"model_id"`
	Path        string         `json:"path"`
	Arch        string         `json:"arch"`
	NParams     int64          `json:"n_params"`
	TensorTypes map[string]int `json:"tensor_types"` // type name -> tensor count
	LoadMS      float64        `json:"load_ms"`
	NVocab      int            `json:"n_vocab"`
	NCtx        int            `json:"n_ctx"`
	// The plan the model was loaded under (its quantization and backend
	// define this loaded instance) and the types it computes with.
	Plan         PlanUse        `json:"plan"`
	Backend      string         `json:"backend,omitempty"`
	ComputeTypes map[string]int `json:"compute_types,omitempty"` // type name -> tensor count
	// The layout of the matrix weights (the plan's weight_layout): x8
	// (repacked at load: how many matrices, how long it took) or rows.
	WeightLayout   string  `json:"weight_layout,omitempty"`
	RepackedMatrix int     `json:"repacked_matrices,omitempty"`
	RepackMS       float64 `json:"repack_ms,omitempty"`
	// The quantization cache entry the converted tensors are mapped from
	// (none when the plan converts nothing), whether it existed, and the
	// least recently used entries this load deleted to keep the cache
	// within its bound (Options.CacheMaxBytes).
	QuantCachePath   string   `json:"quant_cache_path,omitempty"`
	QuantCacheHit    bool     `json:"quant_cache_hit,omitempty"`
	QuantCachePruned []string `json:"quant_cache_pruned,omitempty"`
}

// Sampling selects the next token. Temperature 0 means greedy (argmax,
// lowest id on ties). Seed 0 with temperature > 0 means "pick one"; the seed
// actually used is reported back in the result.
type Sampling struct {
	Temperature float32 `json:"temperature"`
	TopK        int     `json:"top_k,omitempty"`
	TopP        float32 `json:"top_p,omitempty"`
	Seed        uint64  `json:"seed,omitempty"`
}

// GenerateRequest is generate's params.
type GenerateRequest struct {
	Model        string    `json:"model"` // a model_id or a path (loaded on demand)
	Prompt       string    `json:"prompt"`
	MaxTokens    int       `json:"max_tokens,omitempty"`
	Sampling     *Sampling `json:"sampling,omitempty"`
	Stream       bool      `json:"stream,omitempty"`
	Logprobs     int       `json:"logprobs,omitempty"`
	LogitsDigest bool      `json:"logits_digest,omitempty"`
	Plan         any       `json:"plan,omitempty"`
}

// TokenEvent is one streamed token (the generate.token notification).
// Text holds only complete UTF-8: a token that ends mid-character contributes
// its bytes to a later event.
type TokenEvent struct {
	RunID string `json:"run_id"`
	Index int    `json:"index"`
	Token int32  `json:"token"`
	Text  string `json:"text"`
}

// TokenLogprob is one candidate of a step's logprobs.
type TokenLogprob struct {
	Token   int32   `json:"token"`
	Logprob float32 `json:"logprob"`
}

// RunMetrics are the timing figures of one run.
type RunMetrics struct {
	PromptTokens    int     `json:"prompt_tokens"`
	GeneratedTokens int     `json:"generated_tokens"`
	PromptMS        float64 `json:"prompt_ms"`
	DecodeMS        float64 `json:"decode_ms"`
	TTFTMS          float64 `json:"ttft_ms"`
	TokensPerSecond float64 `json:"tokens_per_second"` // generated tokens / decode time
	LatencyP50MS    float64 `json:"latency_p50_ms"`    // inter-token latency
	LatencyP95MS    float64 `json:"latency_p95_ms"`
	// Prompt tokens whose keys and values came from a finished sequence's
	// cache (the longest common prefix; identical results), not computed.
	PromptCachedTokens int `json:"prompt_cached_tokens"`
	// Prompt tokens computed / prompt time; time queued before the run
	// started; queued → finished.
	PromptTokensPerSecond float64 `json:"prompt_tokens_per_second"`
	QueueMS               float64 `json:"queue_ms"`
	TotalMS               float64 `json:"total_ms"`

	// Energy of the run's compute (prompt and decode), its share of the
	// meter's energy by its worker threads' CPU time (power/README.md).
	// EnergySource "rapl" is a measurement, "estimate" a model of CPU time
	// (never a measurement); "" when the meter failed (EnergyError says why).
	Joules         float64      `json:"joules"`
	AvgWatts       float64      `json:"avg_watts"`
	TokensPerJoule float64      `json:"tokens_per_joule"` // generated tokens / joules
	EnergySource   string       `json:"energy_source"`
	CPUSeconds     float64      `json:"cpu_seconds"` // worker-thread CPU time charged to the run
	EnergyError    string       `json:"energy_error,omitempty"`
	PowerCap       *RunPowerCap `json:"power_cap,omitempty"` // the cap the run started under
}

// GenerateResult is generate's result.
type GenerateResult struct {
	RunID         string           `json:"run_id"`
	ModelID       string           `json:"model_id"`
	PromptTokens  []int32          `json:"prompt_tokens"`
	Tokens        []int32          `json:"tokens"`
	Text          string           `json:"text"`
	FinishReason  string           `json:"finish_reason"` // "length", "eos" or "cancelled"
	Sampling      Sampling         `json:"sampling"`
	Metrics       RunMetrics       `json:"metrics"`
	Logprobs      [][]TokenLogprob `json:"logprobs,omitempty"`
	LogitsDigests []string         `json:"logits_digests,omitempty"`
	// The plan the run executed: name@version (or inline) and the hash of
	// its resolved plan (the full resolved plan is in the run record).
	Plan     PlanUse `json:"plan"`
	PlanHash string  `json:"plan_hash"`
}
