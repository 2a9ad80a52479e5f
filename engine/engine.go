package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/model"
	"github.com/weos/llm-engine/engine/sample"
	"github.com/weos/llm-engine/engine/tokenizer"
	"github.com/weos/llm-engine/kernels"
)

// Version is the engine's version, reported by engine.info.
var Version = "0.1.0-dev"

// DefaultMaxTokens applies when a generate request does not set max_tokens.
const DefaultMaxTokens = 128

// Options configure an Engine.
type Options struct {
	StateDir string
	CacheDir string
	Threads  int    // worker threads; 0 means runtime.NumCPU()
	Backend  string // kernel set; "" means the best the CPU supports
}

// Engine owns the loaded models and the worker pool, and runs generations.
type Engine struct {
	opts    Options
	pool    *kernels.Pool
	backend *kernels.Backend

	mu     sync.Mutex // guards models
	models map[string]*loaded

	// compute serialises forward passes: the pool runs one parallel job at a
	// time. The scheduler (engine/sched) interleaves sequences on top.
	compute sync.Mutex
	runSeq  atomic.Uint64
}

type loaded struct {
	info  ModelInfo
	file  *gguf.File
	model *model.Model
	tok   *tokenizer.Tokenizer
}

// New starts an engine: it creates the worker pool and picks the kernels.
func New(opts Options) (*Engine, error) {
	if opts.Threads <= 0 {
		opts.Threads = runtime.NumCPU()
	}
	be, err := kernels.BackendByName(opts.Backend)
	if err != nil {
		return nil, err
	}
	pool, err := kernels.NewPool(opts.Threads)
	if err != nil {
		return nil, err
	}
	return &Engine{opts: opts, pool: pool, backend: be, models: map[string]*loaded{}}, nil
}

// Close unloads every model and stops the worker threads.
func (e *Engine) Close() error {
	e.mu.Lock()
	for id, m := range e.models {
		m.file.Close()
		delete(e.models, id)
	}
	e.mu.Unlock()
	e.compute.Lock()
	defer e.compute.Unlock()
	e.pool.Close()
	return nil
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

// LoadModel loads a GGUF model (or returns the already-loaded one for the
// same path).
func (e *Engine) LoadModel(ctx context.Context, req LoadRequest) (*ModelInfo, error) {
	if req.Path == "" {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"path\" is required")
	}
	m, err := e.load(req.Path)
	if err != nil {
		return nil, err
	}
	info := m.info
	return &info, nil
}

func (e *Engine) load(path string) (*loaded, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, errorf(CodeModelNotFound, "model %s: %v", path, err)
	}
	e.mu.Lock()
	for _, m := range e.models {
		if m.info.Path == abs {
			e.mu.Unlock()
			return m, nil
		}
	}
	e.mu.Unlock()

	start := time.Now()
	f, err := gguf.Open(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errorf(CodeModelNotFound, "model %s: no such file", path)
		}
		return nil, errorf(CodeModelInvalid, "model %s: %v", path, err)
	}
	arch, _ := f.String("general.architecture")
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		f.Close()
		return nil, errorf(CodeModelInvalid, "model %s: tokenizer: %v", path, err)
	}
	mdl, err := model.Load(f, model.Options{Backend: e.backend, Pool: e.pool})
	if err != nil {
		f.Close()
		return nil, errorf(CodeModelInvalid, "model %s: %v", path, err)
	}
	info := ModelInfo{
		Path:        abs,
		Arch:        arch,
		TensorTypes: map[string]int{},
		NVocab:      mdl.Config.Vocab,
		NCtx:        mdl.Config.Ctx,
	}
	for i := range f.Tensors {
		info.NParams += f.Tensors[i].NumElements()
		info.TensorTypes[f.Tensors[i].Type.String()]++
	}
	info.LoadMS = ms(time.Since(start))
	m := &loaded{info: info, file: f, model: mdl, tok: tok}

	e.mu.Lock()
	defer e.mu.Unlock()
	for _, other := range e.models { // lost a race with a concurrent load
		if other.info.Path == abs {
			f.Close()
			return other, nil
		}
	}
	m.info.ModelID = e.newModelID(abs)
	e.models[m.info.ModelID] = m
	return m, nil
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

// UnloadModel drops a model. Runs in progress keep their reference until they
// finish; the memory map is released after the compute lock is free.
func (e *Engine) UnloadModel(id string) error {
	e.mu.Lock()
	m, ok := e.models[id]
	if ok {
		delete(e.models, id)
	}
	e.mu.Unlock()
	if !ok {
		return errorf(CodeModelNotFound, "model %q is not loaded", id)
	}
	e.compute.Lock()
	defer e.compute.Unlock()
	return m.file.Close()
}

// resolveModel finds a model by id, or loads it by path.
func (e *Engine) resolveModel(ref string) (*loaded, error) {
	if ref == "" {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"model\" is required")
	}
	e.mu.Lock()
	m, ok := e.models[ref]
	e.mu.Unlock()
	if ok {
		return m, nil
	}
	if strings.ContainsRune(ref, '/') || strings.HasSuffix(ref, ".gguf") {
		return e.load(ref)
	}
	if _, err := os.Stat(ref); err == nil {
		return e.load(ref)
	}
	return nil, errorf(CodeModelNotFound, "model %q is neither a loaded model id nor a file", ref)
}

// Generate runs one generation to completion (or cancellation). onToken, if
// not nil and req.Stream is set, is called for each token in order.
func (e *Engine) Generate(ctx context.Context, req GenerateRequest, onToken func(TokenEvent)) (*GenerateResult, error) {
	if req.MaxTokens < 0 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"max_tokens\" must be ≥ 0, got %d", req.MaxTokens)
	}
	if req.Logprobs < 0 || req.Logprobs > 20 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"logprobs\" must be between 0 and 20, got %d", req.Logprobs)
	}
	sp := Sampling{}
	if req.Sampling != nil {
		sp = *req.Sampling
	}
	if err := validateSampling(sp); err != nil {
		return nil, err
	}
	m, err := e.resolveModel(req.Model)
	if err != nil {
		return nil, err
	}
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = DefaultMaxTokens
	}
	prompt, err := m.tok.Encode(req.Prompt, true, false)
	if err != nil {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"prompt\": %v", err)
	}
	if len(prompt) == 0 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"prompt\" encodes to no tokens and the model adds no BOS")
	}
	nCtx := m.model.Config.Ctx
	if len(prompt)+maxTokens > nCtx {
		return nil, errorf(CodeContextFull, "prompt (%d tokens) + max_tokens (%d) exceed the model's context of %d", len(prompt), maxTokens, nCtx)
	}

	runID := fmt.Sprintf("run-%d-%d", time.Now().Unix(), e.runSeq.Add(1))
	smp := sample.New(sample.Params{Temperature: sp.Temperature, TopK: sp.TopK, TopP: sp.TopP, Seed: sp.Seed})
	sp.Seed = smp.Seed()
	res := &GenerateResult{RunID: runID, ModelID: m.info.ModelID, PromptTokens: prompt, Tokens: []int32{}, Sampling: sp}

	e.compute.Lock()
	defer e.compute.Unlock()

	state := m.model.NewState(len(prompt) + maxTokens)
	vocab := m.model.Config.Vocab
	logits := make([]float32, vocab)
	dec := m.tok.NewStreamDecoder()
	var text strings.Builder
	var stepTimes []float64

	t0 := time.Now()
	if err := m.model.Forward(state, prompt, logits, false); err != nil {
		return nil, errorf(CodeInternal, "forward pass: %v", err)
	}
	promptDone := time.Now()
	res.Metrics.PromptMS = ms(promptDone.Sub(t0))
	res.FinishReason = "length"
	last := promptDone
	for i := 0; i < maxTokens; i++ {
		if ctx.Err() != nil {
			res.FinishReason = "cancelled"
			break
		}
		if req.LogitsDigest {
			res.LogitsDigests = append(res.LogitsDigests, digest(logits))
		}
		if req.Logprobs > 0 {
			top := sample.TopLogprobs(logits, req.Logprobs)
			lp := make([]TokenLogprob, len(top))
			for j, c := range top {
				lp[j] = TokenLogprob{Token: c.Token, Logprob: c.Logprob}
			}
			res.Logprobs = append(res.Logprobs, lp)
		}
		tok := smp.Sample(logits)
		res.Tokens = append(res.Tokens, tok)
		if i == 0 {
			res.Metrics.TTFTMS = ms(time.Since(t0))
		}
		piece := dec.Push(tok)
		text.WriteString(piece)
		if onToken != nil && req.Stream {
			onToken(TokenEvent{RunID: runID, Index: i, Token: tok, Text: piece})
		}
		if m.tok.IsEOG(tok) {
			res.FinishReason = "eos"
			break
		}
		if i == maxTokens-1 {
			break
		}
		if err := m.model.Forward(state, []int32{tok}, logits, false); err != nil {
			return nil, errorf(CodeInternal, "forward pass: %v", err)
		}
		now := time.Now()
		stepTimes = append(stepTimes, ms(now.Sub(last)))
		last = now
	}
	if rest := dec.Flush(); rest != "" {
		text.WriteString(rest)
		if onToken != nil && req.Stream {
			onToken(TokenEvent{RunID: runID, Index: len(res.Tokens), Token: -1, Text: rest})
		}
	}
	res.Text = text.String()
	end := time.Now()
	res.Metrics.PromptTokens = len(prompt)
	res.Metrics.GeneratedTokens = len(res.Tokens)
	res.Metrics.DecodeMS = ms(end.Sub(promptDone))
	if res.Metrics.DecodeMS > 0 {
		res.Metrics.TokensPerSecond = float64(len(res.Tokens)) / (res.Metrics.DecodeMS / 1000)
	}
	res.Metrics.LatencyP50MS = percentile(stepTimes, 0.50)
	res.Metrics.LatencyP95MS = percentile(stepTimes, 0.95)
	return res, nil
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

// digest is the sha256 of the little-endian float32 bytes of logits.
func digest(logits []float32) string {
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
