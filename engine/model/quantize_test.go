package model

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/kernels"
)

// Quantization at load time: the F32 parents of llama.cpp's quantized
// reference files, converted by the engine under a plan, must hold the
// same bytes as llama-quantize's files and give the same logits.

// atLoadCase is a parent model quantized at load under a scheme, and the
// llama.cpp file made from it with that scheme.
type atLoadCase struct {
	parent refModel
	scheme string
	ref    refModel // llama.cpp's file: bytes and logits to match
	tol    float64
}

var atLoadCases = []atLoadCase{
	{synth, plan.QuantQ8_0, synthQ8, 0.03},
	{synth, plan.QuantQ6_K, synthQ6, 0.03},
	{synth, plan.QuantQ4_K_M, synthQ4, 0.03},
	{stories, plan.QuantQ8_0, storiesQ8, 0.5},
	{stories, plan.QuantQ6_K, storiesQ6, 0.5},
	{stories, plan.QuantQ4_K_M, storiesQ4, 0.5},
}

// atLoadCasesToRun is atLoadCases, without synth-256 → Q6_K under -race
// and -short (its Q6_K tensors are covered by the Q4_K_M mix): the pure-Go
// K-quant quantizers are slow under the race detector.
func atLoadCasesToRun() []atLoadCase {
	if !reduced() {
		return atLoadCases
	}
	var cs []atLoadCase
	for _, c := range atLoadCases {
		if c.parent != synth || c.scheme != plan.QuantQ6_K {
			cs = append(cs, c)
		}
	}
	return cs
}

func (c atLoadCase) name() string {
	return strings.TrimSuffix(c.parent.file, ".gguf") + "→" + c.scheme
}

func openShared(t testing.TB, m refModel) (*gguf.File, string) {
	t.Helper()
	path := filepath.Join(sharedDir(t), "models", m.file)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

// planTypes resolves a plan with the given quantization scheme for f and
// returns the per-tensor targets (what the facade passes as Options.Types).
func planTypes(t testing.TB, f *gguf.File, scheme string) map[string]kernels.Type {
	t.Helper()
	r, err := plan.Resolve(&plan.Plan{Quantization: &plan.Quantization{Default: plan.Ptr(scheme)}},
		plan.ModelDescFromGGUF(f), plan.Env{UsableCPUs: 4, HasAVX2: kernels.HasAVX2})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]kernels.Type{}
	for _, d := range r.Tensors {
		types[d.Name] = d.Target
	}
	return types
}

func bestBackend(t testing.TB) *kernels.Backend {
	b, err := kernels.BackendByName("")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// quantCache is one cache directory for the whole test binary, so that each
// conversion is computed once (the pure-Go K-quant quantizers are slow under
// -race) and later loads exercise the cache hit path.
var quantCache struct {
	once sync.Once
	dir  string
}

// TestMain removes the shared quantization cache after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if quantCache.dir != "" {
		os.RemoveAll(quantCache.dir)
	}
	os.Exit(code)
}

func sharedQuantCache(t testing.TB) string {
	quantCache.once.Do(func() {
		d, err := os.MkdirTemp("", "llm-engine-quant-test-")
		if err != nil {
			t.Fatal(err)
		}
		quantCache.dir = d
	})
	return quantCache.dir
}

// loadAtLoad opens c.parent and loads it quantized under c.scheme through
// the cache, on a pool of the given size.
func loadAtLoad(t testing.TB, c atLoadCase, threads int) *Model {
	t.Helper()
	return loadAtLoadLayout(t, c, threads, kernels.LayoutRows)
}

func loadAtLoadLayout(t testing.TB, c atLoadCase, threads int, layout kernels.Layout) *Model {
	t.Helper()
	f, path := openShared(t, c.parent)
	m, err := LoadCached(f, path, sharedQuantCache(t), Options{
		Pool: testPool(t, threads), Backend: bestBackend(t), Types: planTypes(t, f, c.scheme), Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestQuantizeAtLoadBytes: every tensor of llama.cpp's quantized file has
// the type the plan chose and exactly the bytes the engine produced (from
// the cache entry when converted, else the parent's own bytes).
func TestQuantizeAtLoadBytes(t *testing.T) {
	needFormats(t, kernels.Q4_K, kernels.Q6_K, kernels.Q5_0, kernels.Q8_0, kernels.F16)
	for _, c := range atLoadCasesToRun() {
		t.Run(c.name(), func(t *testing.T) {
			m := loadAtLoad(t, c, 2)
			qi := m.Quantization()
			if qi.CachePath == "" || qi.Tensors == 0 {
				t.Fatalf("no cache entry: %+v", qi)
			}
			entry, err := gguf.Open(qi.CachePath)
			if err != nil {
				t.Fatal(err)
			}
			defer entry.Close()
			parent, _ := openShared(t, c.parent)
			ref, _ := openShared(t, c.ref)
			if len(ref.Tensors) != len(parent.Tensors) {
				t.Fatalf("llama.cpp's file has %d tensors, the parent %d", len(ref.Tensors), len(parent.Tensors))
			}
			converted := 0
			for i := range ref.Tensors {
				rt := &ref.Tensors[i]
				want := ref.TensorData(rt)
				var got []byte
				var typ kernels.Type
				if et, ok := entry.Tensor(rt.Name); ok {
					got, typ = entry.TensorData(et), et.Type
					converted++
				} else if pt, ok := parent.Tensor(rt.Name); ok {
					got, typ = parent.TensorData(pt), pt.Type
				} else {
					t.Fatalf("tensor %s: not in the parent", rt.Name)
				}
				if typ != rt.Type {
					t.Errorf("tensor %s: engine %s, llama.cpp %s", rt.Name, typ, rt.Type)
					continue
				}
				if !bytes.Equal(got, want) {
					t.Errorf("tensor %s (%s): bytes differ from llama.cpp's (first at %d of %d)", rt.Name, typ, firstDiff(got, want), len(want))
				}
			}
			if converted != len(entry.Tensors) || converted != qi.Tensors {
				t.Errorf("%d converted tensors checked, entry holds %d, load reports %d", converted, len(entry.Tensors), qi.Tensors)
			}
			t.Logf("%s: %d tensors converted (%d → %d bytes), all %d tensors byte-identical to %s",
				c.name(), qi.Tensors, qi.SourceBytes, qi.Bytes, len(ref.Tensors), c.ref.file)
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestQuantizedLogits: teacher-forced logits at every position within the
// tolerance of llama.cpp's (f32kv_nofa, same quantization), for llama.cpp's
// quantized files and for their parents quantized at load; stories260K's
// greedy tokens for p1 equal llama.cpp's.
func TestQuantizedLogits(t *testing.T) {
	needFormats(t, kernels.Q4_K, kernels.Q6_K, kernels.Q5_0, kernels.Q8_0, kernels.F16)
	for _, c := range atLoadCasesToRun() {
		for _, atLoad := range []bool{false, true} {
			what := c.ref.file
			if atLoad {
				what = c.name()
			}
			t.Run(what, func(t *testing.T) {
				var m *Model
				if atLoad {
					m = loadAtLoad(t, c, 2)
				} else {
					m = openModelWith(t, c.ref, 2, bestBackend(t))
				}
				g := loadRef(t, c.ref, "p1")
				logits := teacherForced(t, m, g)
				V := m.Config.Vocab
				worst := 0.0
				for j := g.First; j < len(logits)/V; j++ {
					d, at := maxAbsDiff(logits[j*V:(j+1)*V], g.AllLogits[(j-g.First)*V:(j-g.First+1)*V])
					if d > c.tol {
						t.Errorf("position %d: |Δ| = %.3g at token %d, tolerance %g", j, d, at, c.tol)
					}
					worst = max(worst, d)
				}
				t.Logf("%s: %d positions, max |Δlogit| = %.3g (tolerance %g)", what, len(logits)/V, worst, c.tol)
				if c.parent == stories && (c.scheme == plan.QuantQ8_0 || c.scheme == plan.QuantQ4_K_M) {
					got := greedy(t, m, g.PromptTokens, len(g.GenTokens))
					for i := range got {
						if got[i] != g.GenTokens[i] {
							t.Fatalf("greedy token %d = %d, llama.cpp %d\n got %v\nwant %v", i, got[i], g.GenTokens[i], got, g.GenTokens)
						}
					}
				}
			})
		}
	}
}

// TestQuantizedDeterminism: for every weight type (Q8_0, Q6_K, Q4_K, Q5_0,
// F16 and F32, converted at load), logits are bit-identical for 1 to 4
// worker threads, and between a prompt in one batch and token by token.
func TestQuantizedDeterminism(t *testing.T) {
	needFormats(t, kernels.Q4_K, kernels.Q6_K, kernels.Q5_0, kernels.Q8_0, kernels.F16)
	cases := []atLoadCase{
		{parent: synth, scheme: plan.QuantQ8_0},
		{parent: synth, scheme: plan.QuantQ6_K},
		{parent: synth, scheme: plan.QuantQ4_K_M},   // Q4_K + Q6_K
		{parent: stories, scheme: plan.QuantQ4_K_M}, // Q5_0, Q8_0, F16 fallbacks
		{parent: synth, scheme: plan.QuantF16},
	}
	nGen := 12
	if reduced() {
		nGen = 3
		cases = append(cases[:1], cases[2:]...) // no synth-256 → Q6_K (see atLoadCasesToRun)
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			g := loadRef(t, c.parent, "p1")
			toks := append(append([]int32{}, g.PromptTokens...), g.GenTokens[:nGen]...)
			var ref [32]byte
			for run := 0; run < 8; run++ {
				// threads 1-4 with the file's layout, then 1-4 repacked
				threads, layout := run%4+1, kernels.LayoutRows
				if run >= 4 {
					layout = kernels.LayoutX8
				}
				m := loadAtLoadLayout(t, c, threads, layout)
				V := m.Config.Vocab
				s := m.NewState(len(toks))
				batch := make([]float32, len(toks)*V)
				if err := m.Forward(s, toks, batch, true); err != nil {
					t.Fatal(err)
				}
				d := digest(batch)
				if run == 0 {
					ref = d
				} else if d != ref {
					t.Errorf("%d threads, layout %s: logits differ from 1 thread, layout rows", threads, layout)
				}
				s.Reset()
				seq := make([]float32, len(toks)*V)
				for i, tok := range toks {
					if err := m.Forward(s, []int32{tok}, seq[i*V:(i+1)*V], false); err != nil {
						t.Fatal(err)
					}
				}
				if digest(seq) != ref {
					dd, at := maxAbsDiff(seq, batch)
					t.Errorf("%d threads, layout %s: token-by-token logits differ from one batch (max |Δ| %g at %d)", threads, layout, dd, at)
				}
			}
			t.Logf("%s: logits sha256 %x identical for 1-4 threads, layouts rows and x8, batch and token by token", c.name(), ref[:8])
		})
	}
}

// TestQuantCache: the second load maps the entry; a corrupt, truncated or
// foreign entry is detected and rebuilt with the same bytes; the bytes do
// not depend on the thread count; progress is reported.
func TestQuantCache(t *testing.T) {
	needFormats(t, kernels.Q8_0, kernels.Q5_0, kernels.Q6_K)
	f, path := openShared(t, stories)
	types := planTypes(t, f, plan.QuantQ6_K) // Q8_0 fallbacks, F16 ffn_down
	dir := t.TempDir()
	var calls []int64
	var total int64
	opts := Options{Pool: testPool(t, 3), Types: types, Progress: func(done, tot int64) {
		calls = append(calls, done)
		total = tot
	}}
	load := func() (*Model, []byte) {
		t.Helper()
		calls = nil
		m, err := LoadCached(f, path, dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		b, err := os.ReadFile(m.Quantization().CachePath)
		if err != nil {
			t.Fatal(err)
		}
		return m, b
	}
	m1, entry := load()
	q1 := m1.Quantization()
	if q1.CacheHit || q1.Rebuilt != "" || q1.CacheError != "" || q1.Tensors == 0 {
		t.Fatalf("first load: %+v", q1)
	}
	if len(calls) < 2 || calls[0] != 0 || calls[len(calls)-1] != total || total != q1.SourceBytes {
		t.Errorf("progress calls %v, total %d, want 0 … %d", calls, total, q1.SourceBytes)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i] < calls[i-1] {
			t.Errorf("progress went backwards: %v", calls)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sha256")); err != nil {
		t.Errorf("source hash not recorded: %v", err)
	}

	m2, _ := load()
	if q := m2.Quantization(); !q.CacheHit || q.CachePath != q1.CachePath || q.Duration != 0 {
		t.Errorf("second load: %+v", q)
	}

	// In memory (no cache) and on 1 thread: the same bytes.
	mem, err := Load(f, Options{Pool: testPool(t, 1), Types: types})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := gguf.Parse(entry)
	if err != nil {
		t.Fatal(err)
	}
	ffn := mem.Layers[1].Down
	et, _ := cf.Tensor("blk.1.ffn_down.weight")
	if ffn.Type != et.Type || !bytes.Equal(ffn.Data, cf.TensorData(et)) {
		t.Errorf("in-memory conversion differs from the cache entry")
	}

	// An unusable cache directory: the conversion is kept in memory.
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	mm, err := LoadCached(f, path, notDir, Options{Pool: testPool(t, 2), Types: types})
	if err != nil {
		t.Fatal(err)
	}
	if q := mm.Quantization(); q.CacheError == "" || q.CachePath != "" || q.Tensors != q1.Tensors ||
		!bytes.Equal(mm.Layers[1].Down.Data, cf.TensorData(et)) {
		t.Errorf("unusable cache dir: %+v", q)
	}

	corrupt := func(what string, edit func(b []byte) []byte, want string) {
		t.Run(what, func(t *testing.T) {
			b := edit(bytes.Clone(entry))
			if err := os.WriteFile(q1.CachePath, b, 0o644); err != nil {
				t.Fatal(err)
			}
			m, got := load()
			q := m.Quantization()
			if q.CacheHit || !strings.Contains(q.Rebuilt, want) {
				t.Errorf("rebuilt %q (hit %v), want a reason containing %q", q.Rebuilt, q.CacheHit, want)
			}
			if !bytes.Equal(got, entry) {
				t.Errorf("rebuilt entry differs from the first")
			}
			m3, _ := load()
			if !m3.Quantization().CacheHit {
				t.Errorf("the rebuilt entry is not used")
			}
		})
	}
	corrupt("flipped data bit", func(b []byte) []byte { b[len(b)-100] ^= 4; return b }, "checksum")
	corrupt("truncated", func(b []byte) []byte { return b[:len(b)/2] }, "past the end")
	corrupt("not gguf", func(b []byte) []byte { return []byte("hello") }, "gguf")
	corrupt("foreign", func(b []byte) []byte {
		j := bytes.Index(b, []byte(cacheKeyTypes))
		b[j+len(cacheKeyTypes)+4+8] ^= 1 // first hex digit of the types digest
		return b
	}, "other tensor types")
}

func TestQuantizeRefusals(t *testing.T) {
	needFormats(t, kernels.Q8_0, kernels.Q4_K)
	f, _ := openShared(t, synthQ8)
	p := testPool(t, 1)
	_, err := Load(f, Options{Pool: p, Types: map[string]kernels.Type{"blk.0.attn_q.weight": kernels.Q4_K}})
	if err == nil || !strings.Contains(err.Error(), "quantize it twice") {
		t.Errorf("requantization: %v", err)
	}
	m, err := Load(f, Options{Pool: p, Types: map[string]kernels.Type{"blk.0.attn_q.weight": kernels.Q4_K}, AllowRequantize: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.Layers[0].Wq.Type != kernels.Q4_K || m.Layers[1].Wq.Type != kernels.Q8_0 {
		t.Errorf("types %s %s", m.Layers[0].Wq.Type, m.Layers[1].Wq.Type)
	}
	// Dequantizing is not requantizing.
	m, err = Load(f, Options{Pool: p, Types: map[string]kernels.Type{"output.weight": kernels.F32}})
	if err != nil || m.Output.Type != kernels.F32 {
		t.Errorf("dequantize to F32: %v", err)
	}
	_, err = Load(f, Options{Pool: p, Types: map[string]kernels.Type{"blk.9.attn_q.weight": kernels.F32}})
	if err == nil || !strings.Contains(err.Error(), "does not have") {
		t.Errorf("unknown tensor: %v", err)
	}
	fs, _ := openShared(t, stories)
	_, err = Load(fs, Options{Pool: p, Types: map[string]kernels.Type{"blk.0.ffn_down.weight": kernels.Q8_0}})
	if err == nil || !strings.Contains(err.Error(), "not a multiple") {
		t.Errorf("row of 172 as Q8_0: %v", err)
	}
}

func TestSourceSHA256(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.bin")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	cache := filepath.Join(dir, "cache")
	for i := 0; i < 2; i++ {
		h, err := SourceSHA256(p, cache)
		if err != nil || h != abc {
			t.Fatalf("hash %q, %v", h, err)
		}
	}
	recs, _ := filepath.Glob(filepath.Join(cache, "sha256", "*.json"))
	if len(recs) != 1 {
		t.Fatalf("records %v", recs)
	}
	// A record is trusted while the file's identity is unchanged…
	b, _ := os.ReadFile(recs[0])
	fake := strings.Replace(string(b), abc, strings.Repeat("0", 64), 1)
	os.WriteFile(recs[0], []byte(fake), 0o644)
	if h, _ := SourceSHA256(p, cache); h != strings.Repeat("0", 64) {
		t.Errorf("record not used: %s", h)
	}
	// …and not once it changes.
	if err := os.WriteFile(p, []byte("abcd"), 0o644); err != nil {
		t.Fatal(err)
	}
	if h, _ := SourceSHA256(p, cache); h != "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589" {
		t.Errorf("changed file: %s", h)
	}
	if h, _ := SourceSHA256(p, ""); h != "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589" {
		t.Errorf("no cache dir: %s", h)
	}
	if _, err := SourceSHA256(filepath.Join(dir, "nope"), cache); err == nil {
		t.Error("missing file hashed")
	}
}

// TestPruneQuantCache: entries beyond the bound go least recently used
// first, never a kept one; files that are not entries (a renameio temp
// file, anything else) are left alone; a cache hit refreshes an entry's
// use, and a model whose entry was pruned keeps working from its mapping.
func TestPruneQuantCache(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "quant")
	os.MkdirAll(q, 0o755)
	name := func(i int) string {
		return filepath.Join(q, fmt.Sprintf("%016x-%024x.gguf", i, i))
	}
	t0 := time.Now().Add(-time.Hour)
	for i, size := range []int{100, 200, 300, 400} {
		os.WriteFile(name(i), make([]byte, size), 0o644)
		at := t0.Add(time.Duration(i) * time.Minute)
		os.Chtimes(name(i), at, at)
	}
	others := []string{filepath.Join(q, ".0123.gguf4567"), filepath.Join(q, "notes.txt"), filepath.Join(q, "ABCDEF0123456789-000000000000000000000000.gguf")}
	for _, o := range others {
		os.WriteFile(o, make([]byte, 5000), 0o644)
	}
	res, err := PruneQuantCache(dir, 650, name(0))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Removed, []string{name(1), name(2)}) || res.RemovedBytes != 500 || res.KeptBytes != 500 {
		t.Fatalf("pruned %v (%d bytes), kept %d bytes; want entries 1 and 2 (500), 500 kept", res.Removed, res.RemovedBytes, res.KeptBytes)
	}
	for _, p := range append(others, name(0), name(3)) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if res, err := PruneQuantCache(dir, 1<<20); err != nil || len(res.Removed) != 0 {
		t.Errorf("under the bound: removed %v, %v", res.Removed, err)
	}
	if res, err := PruneQuantCache(t.TempDir(), 0); err != nil || len(res.Removed) != 0 {
		t.Errorf("no cache yet: removed %v, %v", res.Removed, err)
	}

	// Real entries: a hit makes an entry the most recently used.
	needFormats(t, kernels.Q8_0, kernels.Q5_0, kernels.Q6_K)
	f, path := openShared(t, stories)
	cache := t.TempDir()
	load := func(qt string) *Model {
		t.Helper()
		m, err := LoadCached(f, path, cache, Options{Pool: testPool(t, 2), Types: planTypes(t, f, qt)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	a := load(plan.QuantQ6_K)
	b := load(plan.QuantQ4_K_M)
	if a.Quantization().CachePath == b.Quantization().CachePath {
		t.Fatal("two quantizations share a cache entry")
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(a.Quantization().CachePath, old, old)
	os.Chtimes(b.Quantization().CachePath, old.Add(time.Minute), old.Add(time.Minute))
	if q := load(plan.QuantQ6_K).Quantization(); !q.CacheHit { // a is used again
		t.Fatalf("reload: %+v", q)
	}
	res, err = PruneQuantCache(cache, 1)
	if err != nil || len(res.Removed) != 2 || res.Removed[0] != b.Quantization().CachePath {
		t.Fatalf("removed %v (%v); want b's entry first (least recently used), then a's", res.Removed, err)
	}
	V := a.Config.Vocab
	logits := make([]float32, V)
	if err := a.Forward(a.NewState(8), []int32{1, 5, 9}, logits, false); err != nil || !finite(logits) {
		t.Fatalf("a model whose entry was pruned: %v", err)
	}
	if q := load(plan.QuantQ6_K).Quantization(); q.CacheHit || q.CachePath == "" {
		t.Errorf("after pruning: %+v; want a rebuilt entry", q)
	}
}

func finite(x []float32) bool {
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}
