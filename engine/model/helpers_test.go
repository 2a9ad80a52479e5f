package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// findShared locates the shared reference data: $LLM_ENGINE_SHARED, else a
// "shared" folder beside the repository (../shared from the repo root),
// found by walking up from the package directory.
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
			if st, err := os.Stat(filepath.Join(c, "reference")); err == nil && st.IsDir() {
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

func sharedDir(t testing.TB) string {
	t.Helper()
	if d := findShared(); d != "" {
		return d
	}
	msg := fmt.Sprintf("SKIPPING %s: shared reference data not found (set LLM_ENGINE_SHARED, or put it at ../shared from the repository root)", t.Name())
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

type refModel struct {
	file string // under models/
	dir  string // under reference/gen/
}

var (
	stories    = refModel{"stories260K.gguf", "stories260K-F32"}
	synth      = refModel{"synth-256-F32.gguf", "synth-256-F32"}
	tinyRandom = refModel{"llama-2-tiny-random.gguf", "llama-2-tiny-random-F16"}
	storiesQ8  = refModel{"stories260K-Q8_0.gguf", "stories260K-Q8_0"}
	synthQ8    = refModel{"synth-256-Q8_0.gguf", "synth-256-Q8_0"}
	storiesQ4  = refModel{"stories260K-Q4_K_M.gguf", "stories260K-Q4_K_M"}
	storiesQ6  = refModel{"stories260K-Q6_K.gguf", "stories260K-Q6_K"}
	synthQ4    = refModel{"synth-256-Q4_K_M.gguf", "synth-256-Q4_K_M"}
	synthQ6    = refModel{"synth-256-Q6_K.gguf", "synth-256-Q6_K"}
)

type refGen struct {
	PromptTokens []int32 `json:"prompt_tokens"`
	GenTokens    []int32 `json:"gen_tokens"`
	NVocab       int     `json:"n_vocab"`
	// AllLogits holds teacher-forced logits for positions First, First+1,
	// ... of prompt_tokens + gen_tokens[:-1]: every position when the
	// reference has all_logits, else (llama-2-tiny-random) the rows of the
	// greedy logits file, which start at the last prompt position.
	AllLogits []float32
	First     int
}

func loadRef(t testing.TB, m refModel, prompt string) *refGen {
	t.Helper()
	return loadRefConfig(t, m, prompt, "f32kv_nofa-t1")
}

// loadRefConfig is loadRef for another llama.cpp configuration (default-t1:
// F16 KV cache and flash attention).
func loadRefConfig(t testing.TB, m refModel, prompt, config string) *refGen {
	t.Helper()
	base := filepath.Join(sharedDir(t), "reference", "gen", m.dir, prompt, config)
	js, err := os.ReadFile(base + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var g refGen
	if err := json.Unmarshal(js, &g); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(base + ".all_logits.f32")
	if os.IsNotExist(err) {
		raw, err = os.ReadFile(base + ".logits.f32")
		g.First = len(g.PromptTokens) - 1
	}
	if err != nil {
		t.Fatal(err)
	}
	g.AllLogits = make([]float32, len(raw)/4)
	for i := range g.AllLogits {
		g.AllLogits[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if want := (len(g.PromptTokens) + len(g.GenTokens) - 1 - g.First) * g.NVocab; len(g.AllLogits) != want {
		t.Fatalf("%s: %d logits, want %d", base, len(g.AllLogits), want)
	}
	return &g
}

// raceEnabled is set under -race, where the pure-Go kernels run ~30× slower:
// the heavy tests then cover fewer prompts and tokens (as with -short).
var raceEnabled bool

func reduced() bool { return raceEnabled || testing.Short() }

var (
	poolsMu sync.Mutex
	pools   = map[int]*kernels.Pool{}
)

// testPool returns a shared pool of n threads (pools live for the whole test
// binary: creating OS threads per test would dominate the run time).
func testPool(t testing.TB, n int) *kernels.Pool {
	poolsMu.Lock()
	defer poolsMu.Unlock()
	if p, ok := pools[n]; ok {
		return p
	}
	// LLM_ENGINE_CALLER_SPIN / LLM_ENGINE_WORKER_SPIN (durations) tune the
	// pool's handoff for benchmarking.
	var o kernels.PoolOptions
	if d, err := time.ParseDuration(os.Getenv("LLM_ENGINE_CALLER_SPIN")); err == nil {
		o.CallerSpin = d
	}
	if d, err := time.ParseDuration(os.Getenv("LLM_ENGINE_WORKER_SPIN")); err == nil {
		o.WorkerSpin = d
	}
	p, err := kernels.NewPoolWith(n, o)
	if err != nil {
		t.Fatal(err)
	}
	pools[n] = p
	return p
}

func openModel(t testing.TB, m refModel, threads int) *Model {
	t.Helper()
	return openModelWith(t, m, threads, kernels.GenericBackend())
}

func openModelWith(t testing.TB, m refModel, threads int, b *kernels.Backend) *Model {
	t.Helper()
	return openModelLayout(t, m, threads, b, kernels.LayoutRows)
}

func openModelLayout(t testing.TB, m refModel, threads int, b *kernels.Backend, layout kernels.Layout) *Model {
	t.Helper()
	f, err := gguf.Open(filepath.Join(sharedDir(t), "models", m.file))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	md, err := Load(f, Options{Pool: testPool(t, threads), Backend: b, Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { md.Close() })
	return md
}

// needFormats skips when a colleague's block format is not in the tree yet.
func needFormats(t testing.TB, types ...kernels.Type) {
	t.Helper()
	for _, ty := range types {
		if err := kernels.GenericBackend().Supports(ty); err != nil {
			msg := fmt.Sprintf("SKIPPING %s: %v", t.Name(), err)
			fmt.Fprintln(os.Stderr, msg)
			t.Skip(msg)
		}
	}
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

func maxAbsDiff(a, b []float32) (float64, int) {
	var m float64
	at := -1
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d > m || math.IsNaN(d) {
			m, at = d, i
			if math.IsNaN(d) {
				return math.Inf(1), i
			}
		}
	}
	return m, at
}
