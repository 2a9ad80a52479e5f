package daemontest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/weos/llm-engine/engine"
)

// FakeEngine is a deterministic rpc.Engine for protocol tests. Generate's
// behaviour depends on the model name:
//
//	"block": streams a token every 5ms until ctx is cancelled
//	"big":   streams tokens of 8 KiB of text as fast as possible until ctx is cancelled
//	"slow":  max_tokens tokens (default 4), one every 20ms
//	"panic": panics
//	"echo":  one token whose text is the prompt (as the engine received it)
//	other:   max_tokens tokens "t0 ", "t1 ", … (default 4)
type FakeEngine struct {
	mu     sync.Mutex
	models map[string]engine.ModelInfo

	// Started receives the run id when a "block" or "big" run starts;
	// Cancelled when a run observes ctx.Done. Both have a buffer of 16.
	Started   chan string
	Cancelled chan string
	runs      int
	shutdown  bool
}

// Shutdown records that the daemon shut the engine down (the daemon calls
// it on its way out); later runs fail.
func (f *FakeEngine) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdown = true
	return nil
}

// IsShutdown reports whether Shutdown was called.
func (f *FakeEngine) IsShutdown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shutdown
}

// NewFakeEngine returns a FakeEngine with no models loaded. LoadModel
// panics for path "panic", fails with code -32010 for paths starting with
// "/missing", and otherwise "loads" models m1, m2, …
func NewFakeEngine() *FakeEngine {
	return &FakeEngine{
		models:    map[string]engine.ModelInfo{},
		Started:   make(chan string, 16),
		Cancelled: make(chan string, 16),
	}
}

// codedErr is an engine error with a JSON-RPC code and data.
type codedErr struct {
	code int64
	msg  string
}

func (e *codedErr) Error() string  { return e.msg }
func (e *codedErr) RPCCode() int64 { return e.code }
func (e *codedErr) RPCData() any   { return map[string]string{"hint": "test"} }

func (f *FakeEngine) Info() engine.Info {
	return engine.Info{Version: "9.9.9-test", GoVersion: runtime.Version(), Backends: []string{"cpu-generic"}, CPUFeatures: []string{}, NumCPU: 2}
}

func (f *FakeEngine) LoadModel(ctx context.Context, req engine.LoadRequest) (*engine.ModelInfo, error) {
	switch {
	case req.Path == "panic":
		panic("boom in LoadModel")
	case strings.HasPrefix(req.Path, "/missing"):
		return nil, &codedErr{-32010, "model not found: " + req.Path}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("m%d", len(f.models)+1)
	mi := engine.ModelInfo{ModelID: id, Path: req.Path, Arch: "llama", NParams: 1000, TensorTypes: map[string]int{"F32": 3}, NVocab: 32, NCtx: 128}
	f.models[id] = mi
	return &mi, nil
}

func (f *FakeEngine) ListModels() []engine.ModelInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.ModelInfo
	for _, m := range f.models {
		out = append(out, m)
	}
	return out
}

func (f *FakeEngine) UnloadModel(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.models[id]; !ok {
		return &codedErr{-32010, "model not found: " + id}
	}
	delete(f.models, id)
	return nil
}

func (f *FakeEngine) Generate(ctx context.Context, req engine.GenerateRequest, onToken func(engine.TokenEvent)) (*engine.GenerateResult, error) {
	f.mu.Lock()
	f.runs++
	runID := fmt.Sprintf("run%d", f.runs)
	f.mu.Unlock()
	res := &engine.GenerateResult{RunID: runID, ModelID: req.Model, PromptTokens: []int32{1, 2}, Tokens: []int32{}}
	if req.Sampling != nil {
		res.Sampling = *req.Sampling
	}
	emit := func(i int, text string) {
		res.Tokens = append(res.Tokens, int32(i))
		res.Text += text
		if onToken != nil {
			onToken(engine.TokenEvent{RunID: runID, Index: i, Token: int32(i), Text: text})
		}
	}
	switch req.Model {
	case "panic":
		panic("boom in Generate")
	case "echo":
		emit(0, req.Prompt)
		res.FinishReason = "length"
		return res, nil
	case "block", "big":
		f.Started <- runID
		text := "x"
		if req.Model == "big" {
			text = strings.Repeat("y", 8192)
		}
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				f.Cancelled <- runID
				res.FinishReason = "cancelled"
				return res, nil
			default:
			}
			emit(i, text)
			if req.Model == "block" {
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	n := req.MaxTokens
	if n == 0 {
		n = 4
	}
	for i := range n {
		if req.Model == "slow" {
			select {
			case <-ctx.Done():
				f.Cancelled <- runID
				res.FinishReason = "cancelled"
				return res, nil
			case <-time.After(20 * time.Millisecond):
			}
		}
		emit(i, fmt.Sprintf("t%d ", i))
	}
	res.FinishReason = "length"
	res.Metrics = engine.RunMetrics{PromptTokens: 2, GeneratedTokens: n, DecodeMS: 1, TokensPerSecond: 1000}
	return res, nil
}
