package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/tokenizer"
	"github.com/weos/llm-engine/kernels"
)

// The synthetic models of ../shared/models/arch (one per architecture and
// feature: qwen2, qwen3, llama3, llama-tied, gemma, gemma2, phi3,
// phi3-longrope) against llama.cpp's outputs in
// ../shared/reference/arch/gen (see reference/arch/INDEX.md).

type archRef struct {
	refGen
	Prompt string         `json:"prompt"`
	Top20  [][][2]float64 `json:"top20_per_step"`
	// Seq holds the logits of llama.cpp's greedy run, token by token: row i
	// picked GenTokens[i] (AllLogits comes from one batch, and llama.cpp's
	// logits depend slightly on the batching).
	Seq []float32
}

// archModels lists the model files of shared/models/arch that have a
// reference, skipping loudly when the data is absent.
func archModels(t testing.TB) (dir string, names []string) {
	t.Helper()
	dir = filepath.Join(sharedDir(t), "models", "arch")
	files, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".gguf")
		if _, err := os.Stat(archRefBase(t, name) + ".json"); err == nil {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		msg := fmt.Sprintf("SKIPPING %s: no models with references under %s", t.Name(), dir)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return dir, names
}

func archRefBase(t testing.TB, name string) string {
	return filepath.Join(sharedDir(t), "reference", "arch", "gen", name, "p1", "f32kv_nofa-t1")
}

func loadArchRef(t testing.TB, name string) *archRef {
	t.Helper()
	base := archRefBase(t, name)
	js, err := os.ReadFile(base + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var g archRef
	if err := json.Unmarshal(js, &g); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(base + ".all_logits.f32")
	if err != nil {
		t.Fatal(err)
	}
	g.AllLogits = make([]float32, len(raw)/4)
	for i := range g.AllLogits {
		g.AllLogits[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if want := (len(g.PromptTokens) + len(g.GenTokens) - 1) * g.NVocab; len(g.AllLogits) != want {
		t.Fatalf("%s: %d logits, want %d", base, len(g.AllLogits), want)
	}
	if raw, err = os.ReadFile(base + ".logits.f32"); err != nil {
		t.Fatal(err)
	}
	g.Seq = make([]float32, len(raw)/4)
	for i := range g.Seq {
		g.Seq[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if want := len(g.GenTokens) * g.NVocab; len(g.Seq) != want {
		t.Fatalf("%s: %d greedy logits, want %d", base, len(g.Seq), want)
	}
	return &g
}

// archTolerance is the required agreement with llama.cpp's logits.
func archTolerance(name string) float64 {
	switch {
	case strings.HasSuffix(name, "-Q4_K_M"):
		return 0.3
	case strings.HasSuffix(name, "-Q8_0"):
		return 0.05
	case strings.HasPrefix(name, "gemma2-"):
		return 2e-3
	}
	return 1e-3
}

func openArch(t testing.TB, dir, name string, threads int, b *kernels.Backend) (*Model, *gguf.File) {
	t.Helper()
	return openArchLayout(t, dir, name, threads, b, kernels.LayoutRows)
}

func openArchLayout(t testing.TB, dir, name string, threads int, b *kernels.Backend, layout kernels.Layout) (*Model, *gguf.File) {
	t.Helper()
	f, err := gguf.Open(filepath.Join(dir, name+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := Load(f, Options{Pool: testPool(t, threads), Backend: b, Layout: layout})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m, f
}

// defaultLayout is the default plan's weight layout for backend b.
func defaultLayout(b *kernels.Backend) kernels.Layout {
	if b.Name() == kernels.AVX2BackendName {
		return kernels.LayoutX8
	}
	return kernels.LayoutRows
}

// TestArchTeacherForced: every position's logits of prompt + greedy tokens
// fed in one batch, against llama.cpp's all_logits; the prompt tokenized by
// the model's own vocabulary; and greedy decoding token by token, equal to
// llama.cpp's up to the first step whose top-1/top-2 gap is below the
// tolerance (where a tie may legitimately break either way).
func TestArchTeacherForced(t *testing.T) {
	dir, names := archModels(t)
	best, err := kernels.BackendByName("")
	if err != nil {
		t.Fatal(err)
	}
	var report []string
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			tol := archTolerance(name)
			m, f := openArchLayout(t, dir, name, 2, best, defaultLayout(best)) // the default plan's
			g := loadArchRef(t, name)
			V := m.Config.Vocab
			if g.NVocab != V {
				t.Fatalf("vocab %d, reference %d", V, g.NVocab)
			}

			tk, err := tokenizer.FromGGUF(f)
			if err != nil {
				t.Fatalf("tokenizer: %v", err)
			}
			if toks, err := tk.Encode(g.Prompt, true, false); err != nil || !slices.Equal(toks, g.PromptTokens) {
				t.Errorf("tokenizer: %q -> %v (%v), llama.cpp %v", g.Prompt, toks, err, g.PromptTokens)
			}

			toks := append(append([]int32{}, g.PromptTokens...), g.GenTokens[:len(g.GenTokens)-1]...)
			if reduced() {
				toks = toks[:12]
			}
			s := m.NewState(len(toks))
			logits := make([]float32, len(toks)*V)
			if err := m.Forward(s, toks, logits, true); err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			dpos := make([]float64, len(toks))
			for j := range toks {
				d, at := maxAbsDiff(logits[j*V:(j+1)*V], g.AllLogits[j*V:(j+1)*V])
				if d > tol {
					t.Errorf("position %d: |Δ| = %.3g at token %d (got %v, llama.cpp %v), tolerance %g",
						j, d, at, logits[j*V+at], g.AllLogits[j*V+at], tol)
				}
				worst = max(worst, d)
				dpos[j] = d
			}

			// Greedy, one token per Forward. Step i must give llama.cpp's token
			// while its top-1/top-2 gap is at least the tolerance. Moreover,
			// while the tokens agree, step i's context is teacher-forced
			// position j = P-1+i, where our logits (bit-identical whatever the
			// batching) are within dpos[j] of llama.cpp's batched ones, which
			// are within e of its token-by-token ones: a gap above 2(dpos[j]+e)
			// forces the same argmax, so the check goes on to the first step
			// where neither bound holds.
			nGen := min(len(g.GenTokens), len(toks)-len(g.PromptTokens)+1)
			if reduced() {
				nGen = min(nGen, 6)
			}
			steps, strict := nGen, -1
			for i := 0; i < nGen; i++ {
				gap := g.Top20[i][0][1] - g.Top20[i][1][1]
				if gap < tol && strict < 0 {
					strict = i
				}
				j := len(g.PromptTokens) - 1 + i
				e, _ := maxAbsDiff(g.AllLogits[j*V:(j+1)*V], g.Seq[i*V:(i+1)*V])
				if gap < tol && gap <= 2*(dpos[j]+e) {
					steps = i
					break
				}
			}
			if strict < 0 {
				strict = nGen
			}
			got := greedy(t, m, g.PromptTokens, max(steps, 1))
			for i := 0; i < steps; i++ {
				if got[i] != g.GenTokens[i] {
					t.Errorf("greedy token %d = %d, llama.cpp %d (got %v, want %v)", i, got[i], g.GenTokens[i], got[:steps], g.GenTokens[:steps])
					break
				}
			}
			line := fmt.Sprintf("%-22s max|Δlogit| %.3g over %d positions (tolerance %g); greedy = llama.cpp for %d/%d steps (gap ≥ tolerance for the first %d)",
				name, worst, len(toks), tol, steps, nGen, strict)
			t.Log(line)
			report = append(report, line)
		})
	}
	t.Log("\n" + strings.Join(report, "\n"))
}

// TestArchDeterminism: the generic and best backends, and the rows and x8
// layouts, give bit-identical logits on the new architectures too, and
// batch, token-by-token and 1 vs 3 threads agree (the determinism of the
// step holds for every option; a tied embedding repacked to x8 included).
func TestArchDeterminism(t *testing.T) {
	dir, names := archModels(t)
	// one file per architecture: the properties tested are structural
	names = slices.DeleteFunc(names, func(n string) bool {
		return !strings.HasSuffix(n, "-Q8_0") && n != "llama-tied-Q4_K_M"
	})
	if reduced() {
		names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, "gemma2") })
	}
	best, _ := kernels.BackendByName("")
	for _, name := range names {
		g := loadArchRef(t, name)
		toks := append(append([]int32{}, g.PromptTokens...), g.GenTokens[:20]...) // past gemma2's window of 16
		if reduced() {
			toks = toks[:8]
		}
		var ref [32]byte
		for i, c := range []struct {
			be      *kernels.Backend
			threads int
			layout  kernels.Layout
		}{{best, 1, kernels.LayoutRows}, {best, 3, kernels.LayoutX8}, {kernels.GenericBackend(), 2, kernels.LayoutRows}, {kernels.GenericBackend(), 1, kernels.LayoutX8}} {
			if i >= 2 && reduced() {
				break
			}
			m, _ := openArchLayout(t, dir, name, c.threads, c.be, c.layout)
			V := m.Config.Vocab
			s := m.NewState(len(toks))
			batch := make([]float32, len(toks)*V)
			if err := m.Forward(s, toks, batch, true); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				ref = digest(batch)
			} else if digest(batch) != ref {
				t.Errorf("%s: %s %d threads, layout %s: logits differ", name, c.be.Name(), c.threads, c.layout)
			}
			s.Reset()
			seq := make([]float32, len(toks)*V)
			for j, tok := range toks {
				if err := m.Forward(s, []int32{tok}, seq[j*V:(j+1)*V], false); err != nil {
					t.Fatal(err)
				}
			}
			if digest(seq) != ref {
				d, at := maxAbsDiff(seq, batch)
				t.Errorf("%s: token by token differs from the batch (max |Δ| %g at %d)", name, d, at)
			}
		}
	}
}

// TestArchForwardBatch: Batch.Forward (several sequences per step) is
// bit-identical to decoding each sequence alone, on every architecture.
func TestArchForwardBatch(t *testing.T) {
	dir, names := archModels(t)
	names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasSuffix(n, "-Q8_0") })
	nGen := 18 // past gemma2's window
	if reduced() {
		names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, "gemma2") && !strings.HasPrefix(n, "qwen") })
		nGen = 4
	}
	best, _ := kernels.BackendByName("")
	for _, name := range names {
		m, _ := openArch(t, dir, name, 2, best)
		V := m.Config.Vocab
		prompts := [][]int32{{1, 403, 407}, {1, 291, 376, 400, 428}, {1, 7}}
		want := make([][][32]byte, len(prompts))
		for i, p := range prompts {
			want[i] = solo(t, m, p, nGen)
		}
		states := make([]*State, len(prompts))
		last := make([]float32, len(prompts)*V)
		for i, p := range prompts {
			states[i] = m.NewState(len(p) + nGen + 1)
			if err := m.Forward(states[i], p, last[i*V:(i+1)*V], false); err != nil {
				t.Fatal(err)
			}
		}
		b := m.NewBatch(len(prompts))
		toks := make([]int32, len(prompts))
		logits := make([]float32, len(prompts)*V)
		for step := 0; step < nGen; step++ {
			for i := range prompts {
				toks[i] = argmaxF(last[i*V : (i+1)*V])
			}
			if err := b.Forward(nil, states, toks, logits); err != nil {
				t.Fatal(err)
			}
			for i := range prompts {
				if sum(logits[i*V:(i+1)*V]) != want[i][step+1] {
					t.Fatalf("%s: sequence %d step %d: batched logits differ from solo", name, i, step)
				}
			}
			copy(last, logits)
		}
	}
}

func TestArchConfig(t *testing.T) {
	dir, names := archModels(t)
	seen := map[string]bool{}
	for _, name := range names {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "-F32"), "-Q8_0"), "-Q4_K_M")
		if seen[base] {
			continue
		}
		seen[base] = true
		m, _ := openArch(t, dir, name, 1, nil)
		c := m.Config
		t.Logf("%s: %+v", base, c)
		check := func(what string, ok bool) {
			if !ok {
				t.Errorf("%s: %s (config %+v)", base, what, c)
			}
		}
		switch base {
		case "qwen2":
			check("qwen2", c.Arch == "qwen2" && c.RopeNeox && !c.TiedOutput && m.Layers[0].Bq != nil && c.RopeBase == 1e6)
		case "qwen3":
			check("qwen3", c.RopeNeox && c.QDim() == 512 && c.Dim == 256 && m.Layers[0].QNorm != nil && c.AttnScale == 0.125)
		case "llama3":
			check("llama3", !c.RopeNeox && c.RopeBase == 5e5 && len(m.RopeFreqs) == 32 && m.RopeFreqs[0] == 1 && m.RopeFreqs[31] == 8)
		case "llama-tied":
			check("llama-tied", c.TiedOutput && m.Output.Data != nil && &m.Output.Data[0] == &m.TokEmb.Data[0])
		case "gemma":
			check("gemma", c.EmbedScale == 16 && c.GELU && c.ScaleQ && c.TiedOutput && c.KVHeads == 1 && c.FinalSoftcap == 0)
		case "gemma2":
			check("gemma2", c.AttnSoftcap == 0.5 && c.FinalSoftcap == 2 && c.SlidingWindow == 16 && m.Layers[0].SWA && !m.Layers[1].SWA &&
				m.Layers[2].SWA && !m.Layers[3].SWA && m.Layers[0].PostFFNNorm != nil && c.AttnScale == 0.125)
		case "phi3":
			check("phi3", c.ScaleQ && m.Layers[0].Wq.Rows == 256 && m.Layers[0].Wv.Rows == 128 && m.Layers[0].Gate.Rows == 768 && m.RopeShort == nil && c.SlidingWindow == 0)
		case "phi3-longrope":
			check("phi3-longrope", c.RopeOrigCtx == 4096 && c.Ctx == 131072 && math.Abs(float64(c.RopeAttnFactor)-1.1902381) < 1e-6 && len(m.RopeShort) == 32 && len(m.RopeLong) == 32)
		}
	}
	if len(seen) < 8 {
		t.Logf("only %d architectures present", len(seen))
	}
}

// TestLongRopeFactors: the state's context picks LongRoPE's factors as
// llama.cpp does (long above rope.scaling.original_context_length).
func TestLongRopeFactors(t *testing.T) {
	dir, names := archModels(t)
	if !slices.Contains(names, "phi3-longrope-Q8_0") {
		t.Skip("no phi3-longrope-Q8_0")
	}
	m, _ := openArch(t, dir, "phi3-longrope-Q8_0", 1, nil)
	c := &m.Config
	ts := kernels.RopeThetaScale(c.RopeBase, c.RopeDim)
	for _, tc := range []struct {
		ctx  int
		want []float32
	}{{256, m.RopeShort}, {4096, m.RopeShort}, {4097, m.RopeLong}, {300, m.RopeShort}, {5000, m.RopeLong}} {
		// The states' shared table (grown by earlier, shorter requests,
		// or longer than asked) equals a table made for this context.
		rope := m.ropeFor(tc.ctx)
		fresh := make([]float32, tc.ctx*c.RopeDim)
		m.ropeTable(fresh, tc.ctx)
		if !slices.Equal(rope, fresh) {
			t.Errorf("context %d: the shared RoPE table differs from a fresh one", tc.ctx)
		}
		p := tc.ctx - 1
		cs := make([]float32, c.RopeDim)
		kernels.RopeCacheExt(cs, p, ts, 1, c.RopeAttnFactor, tc.want)
		if !slices.Equal(cs, rope[p*c.RopeDim:]) {
			t.Errorf("context %d: wrong LongRoPE factors", tc.ctx)
		}
	}
}

// TestLongRopeCapacity: state capacities rounded for reuse never cross
// LongRoPE's original context (which would change the factors a request
// rotates with), and RopeSame tells the factor sets apart.
func TestLongRopeCapacity(t *testing.T) {
	dir, names := archModels(t)
	if !slices.Contains(names, "phi3-longrope-Q8_0") {
		t.Skip("no phi3-longrope-Q8_0")
	}
	m, _ := openArch(t, dir, "phi3-longrope-Q8_0", 1, nil)
	if !m.RopeSame(300, 4096) || m.RopeSame(4096, 4097) || !m.RopeSame(4097, 9000) {
		t.Error("RopeSame does not follow the short/long switch at 4096")
	}
	for _, c := range []struct{ ctx, quantum, want int }{
		{300, 256, 512}, {4000, 256, 4096}, {4096, 256, 4096}, {4097, 256, 4352},
		{300, 5000, 300},      // rounding would cross 4096: not rounded
		{4097, 5000, 5000},    // both long
		{131000, 256, 131072}, // the model's context bounds it
	} {
		if got := m.Capacity(c.ctx, c.quantum); got != c.want || !m.RopeSame(got, c.ctx) {
			t.Errorf("Capacity(%d, %d) = %d, want %d", c.ctx, c.quantum, got, c.want)
		}
	}
	plain, _ := openArch(t, dir, "llama3-Q8_0", 1, nil)
	if !plain.RopeSame(10, 100000) {
		t.Error("a model without LongRoPE has one factor set")
	}
}

// TestArchLoadErrors: unsupported architectures and features are load errors
// naming them.
func TestArchLoadErrors(t *testing.T) {
	p := testPool(t, 1)
	for _, c := range []struct {
		name string
		edit func(kv map[string]any, ts map[string]gguf.TensorSpec)
		want string
	}{
		{"arch", func(kv map[string]any, _ map[string]gguf.TensorSpec) { kv["general.architecture"] = "mamba" },
			`architecture "mamba" is not supported (supported: gemma, gemma2, llama, phi3, qwen2, qwen3)`},
		{"moe", func(kv map[string]any, _ map[string]gguf.TensorSpec) { kv["llama.expert_count"] = uint32(8) }, "mixture-of-experts"},
		{"yarn", func(kv map[string]any, _ map[string]gguf.TensorSpec) { kv["llama.rope.scaling.type"] = "yarn" }, `rope scaling "yarn" is not supported`},
		{"scaling type", func(kv map[string]any, _ map[string]gguf.TensorSpec) { kv["llama.rope.scaling.type"] = "llama3" }, `unknown rope scaling type "llama3"`},
		{"extra tensor", func(_ map[string]any, ts map[string]gguf.TensorSpec) {
			ts["blk.0.ffn_gate_inp.weight"] = gguf.TensorSpec{Name: "blk.0.ffn_gate_inp.weight", Dims: []int64{4}, Type: kernels.F32, Data: make([]byte, 16)}
		}, "tensor blk.0.ffn_gate_inp.weight is not used by architecture llama"},
		{"value length", func(kv map[string]any, _ map[string]gguf.TensorSpec) { kv["llama.attention.value_length"] = uint32(4) }, "value_length 4 is not supported"},
	} {
		_, err := Load(tinyFile(t, c.edit), Options{Pool: p})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got error %v, want one containing %q", c.name, err, c.want)
		}
	}
	// linear RoPE scaling is supported: factor 4 quarters the angles
	m, err := Load(tinyFile(t, func(kv map[string]any, _ map[string]gguf.TensorSpec) {
		kv["llama.rope.scaling.type"] = "linear"
		kv["llama.rope.scaling.factor"] = float32(4)
	}), Options{Pool: p})
	if err != nil || m.Config.RopeFreqScale != 0.25 {
		t.Errorf("linear scaling: %v, %+v", err, m)
	}
}

// TestArchDecodeAllocs: a decode step allocates nothing on any architecture.
func TestArchDecodeAllocs(t *testing.T) {
	dir, names := archModels(t)
	names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasSuffix(n, "-Q8_0") })
	runs := 20
	if reduced() {
		names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, "gemma2") })
		runs = 2
	}
	best, _ := kernels.BackendByName("")
	for _, name := range names {
		m, _ := openArch(t, dir, name, 2, best)
		s := m.NewState(64)
		logits := make([]float32, m.Config.Vocab)
		if err := m.Forward(s, []int32{1, 2, 3}, logits, false); err != nil {
			t.Fatal(err)
		}
		tok := []int32{5}
		allocs := testing.AllocsPerRun(runs, func() {
			if s.Pos >= s.Ctx()-1 {
				s.Truncate(3)
			}
			if err := m.Forward(s, tok, logits, false); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per decoded token", name, allocs)
		}
	}
}
