package plan_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/kernels"
)

func quantPlan(def string, overrides map[string]string) *plan.Plan {
	return &plan.Plan{Quantization: &plan.Quantization{Default: plan.Ptr(def), Overrides: overrides}}
}

// TestDecisionsMatchLlamaCpp resolves each F32 reference model under the
// scheme llama-quantize was run with and compares every tensor's target type
// with the type in llama.cpp's output file.
func TestDecisionsMatchLlamaCpp(t *testing.T) {
	cases := []struct {
		src, quant, scheme string
		overrides          map[string]string
		fallbacks          int // tensors llama.cpp logged a fallback for
	}{
		{"stories260K.gguf", "stories260K-Q4_K_M.gguf", "Q4_K_M", nil, 36},
		{"stories260K.gguf", "stories260K-Q6_K.gguf", "Q6_K", nil, 36},
		// llama-quantize refuses Q8_0 for the 172-wide ffn_down; the
		// reference file was made with ffn_down forced to F16.
		{"stories260K.gguf", "stories260K-Q8_0.gguf", "Q8_0", map[string]string{"blk.*.ffn_down.weight": "F16"}, 0},
		{"synth-256-F32.gguf", "synth-256-Q4_K_M.gguf", "Q4_K_M", nil, 0},
		{"synth-256-F32.gguf", "synth-256-Q6_K.gguf", "Q6_K", nil, 0},
		{"synth-256-F32.gguf", "synth-256-Q8_0.gguf", "Q8_0", nil, 0},
	}
	for _, c := range cases {
		t.Run(c.quant, func(t *testing.T) {
			src, want := loadModel(t, c.src), loadModel(t, c.quant)
			r, err := plan.Resolve(quantPlan(c.scheme, c.overrides), src, testEnv)
			if err != nil {
				t.Fatal(err)
			}
			wantType := map[string]kernels.Type{}
			for _, tt := range want.Tensors {
				wantType[tt.Name] = tt.Type
			}
			if len(r.Tensors) != len(want.Tensors) {
				t.Fatalf("%d decisions, %s has %d tensors", len(r.Tensors), c.quant, len(want.Tensors))
			}
			fallbacks := 0
			for _, d := range r.Tensors {
				w, ok := wantType[d.Name]
				if !ok {
					t.Errorf("%s: not in %s", d.Name, c.quant)
					continue
				}
				if d.Target != w {
					t.Errorf("%s: resolved %s (%s), llama.cpp wrote %s", d.Name, d.Target, d.Reason, w)
				}
				if d.Fallback {
					fallbacks++
				}
			}
			if fallbacks != c.fallbacks {
				t.Errorf("%d fallbacks, llama.cpp logged %d", fallbacks, c.fallbacks)
			}

			// The quantized file under the same plan: every tensor is
			// already in its target type and used from the file.
			r2, err := plan.Resolve(quantPlan(c.scheme, c.overrides), want, testEnv)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range r2.Tensors {
				if !d.FromFile || d.Target != d.Source {
					t.Errorf("%s in %s: %s→%s (%s), want used from the file", d.Name, c.quant, d.Source, d.Target, d.Reason)
				}
			}
		})
	}
}

// Without the override, Q8_0 on stories260K falls back to F16 for the
// 172-wide ffn_down (llama.cpp refuses): same types as the reference file.
func TestQ8_0FallbackWithoutOverride(t *testing.T) {
	src, want := loadModel(t, "stories260K.gguf"), loadModel(t, "stories260K-Q8_0.gguf")
	r, err := plan.Resolve(quantPlan("Q8_0", nil), src, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	wm := map[string]kernels.Type{}
	for _, tt := range want.Tensors {
		wm[tt.Name] = tt.Type
	}
	for _, d := range r.Tensors {
		if d.Target != wm[d.Name] {
			t.Errorf("%s: %s, want %s", d.Name, d.Target, wm[d.Name])
		}
		if strings.Contains(d.Name, "ffn_down") {
			if !d.Fallback || !strings.Contains(d.Reason, "row length 172 not a multiple of 32 (Q8_0→F16") {
				t.Errorf("%s: reason %q", d.Name, d.Reason)
			}
		}
	}
}

func decisionMap(r *plan.Resolved) map[string]plan.TensorDecision {
	m := map[string]plan.TensorDecision{}
	for _, d := range r.Tensors {
		m[d.Name] = d
	}
	return m
}

func TestDecisionReasons(t *testing.T) {
	src := loadModel(t, "stories260K.gguf")
	r, err := plan.Resolve(quantPlan("Q4_K_M", nil), src, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	m := decisionMap(r)
	want := map[string]struct {
		target kernels.Type
		rule   string
		reason string
	}{
		"output_norm.weight":    {kernels.F32, plan.RuleKeep, "norm weights stay F32"},
		"output.weight":         {kernels.Q8_0, plan.RuleMix, "Q4_K_M mix: output.weight with row length 64 (not a multiple of 256) → Q8_0"},
		"token_embd.weight":     {kernels.Q5_0, plan.RuleDefault, "default Q4_K_M: Q4_K; fallback: row length 64 not a multiple of 256 (Q4_K→Q5_0)"},
		"blk.2.ffn_down.weight": {kernels.F16, plan.RuleMix, "Q4_K_M mix: ffn_down #2 of 5 gets more bits (use_more_bits) → Q6_K; fallback: row length 172 not a multiple of 256 (Q6_K→Q8_0) nor of 32 (→F16)"},
		"blk.1.ffn_down.weight": {kernels.F16, plan.RuleDefault, "default Q4_K_M: Q4_K; fallback: row length 172 not a multiple of 256 (Q4_K→Q5_0) nor of 32 (→F16)"},
		"blk.2.attn_v.weight":   {kernels.Q8_0, plan.RuleMix, "Q4_K_M mix: attn_v #2 of 5 gets more bits (use_more_bits) → Q6_K; fallback: row length 64 not a multiple of 256 (Q6_K→Q8_0)"},
		"blk.3.attn_v.weight":   {kernels.Q5_0, plan.RuleDefault, "default Q4_K_M: Q4_K; fallback: row length 64 not a multiple of 256 (Q4_K→Q5_0)"},
		"blk.4.ffn_norm.weight": {kernels.F32, plan.RuleKeep, "norm weights stay F32"},
		"blk.4.ffn_gate.weight": {kernels.Q5_0, plan.RuleDefault, "default Q4_K_M: Q4_K; fallback: row length 64 not a multiple of 256 (Q4_K→Q5_0)"},
	}
	for name, w := range want {
		d := m[name]
		if d.Target != w.target || d.Rule != w.rule || d.Reason != w.reason {
			t.Errorf("%s: got %s %s %q\nwant %s %s %q", name, d.Target, d.Rule, d.Reason, w.target, w.rule, w.reason)
		}
	}
	for l := 0; l < 5; l++ {
		d := m[fmt.Sprintf("blk.%d.attn_v.weight", l)]
		more := strings.Contains(d.Reason, "use_more_bits")
		if wantMore := l == 2 || l == 4; more != wantMore {
			t.Errorf("blk.%d.attn_v: use_more_bits %v, llama.cpp's log says %v", l, more, wantMore)
		}
	}
}

func TestSourceAndFloatSchemes(t *testing.T) {
	src := loadModel(t, "synth-256-Q4_K_M.gguf")
	r, err := plan.Resolve(nil, src, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Tensors {
		if !d.FromFile || d.Target != d.Source {
			t.Errorf("source: %s %s→%s", d.Name, d.Source, d.Target)
		}
	}
	// Dequantizing to F16 is not requantizing: allowed.
	r, err = plan.Resolve(quantPlan("F16", nil), src, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Tensors {
		want := kernels.F16
		if d.Rule == plan.RuleKeep {
			want = kernels.F32
		}
		if d.Target != want {
			t.Errorf("F16: %s → %s (%s)", d.Name, d.Target, d.Reason)
		}
	}
	if got := r.Kernels; len(got) != 1 || got["F16"] != "avx2:f16·f32" {
		t.Errorf("kernels %v", got)
	}
}

func TestRequantizeRefused(t *testing.T) {
	src := loadModel(t, "synth-256-Q4_K_M.gguf")
	_, err := plan.Resolve(quantPlan("Q8_0", nil), src, testEnv)
	var fe plan.FieldErrors
	if !asFieldErrors(err, &fe) {
		t.Fatalf("want FieldErrors, got %v", err)
	}
	if len(fe) != 2 || fe[0].Pointer != "/quantization/default" || !strings.Contains(fe[0].Message, "allow_requantize") {
		t.Fatalf("errors %v", fe)
	}
	// Q4_K_M on its own output is a no-op; Q6_K is not.
	p := quantPlan("Q6_K", nil)
	p.Quantization.AllowRequantize = plan.Ptr(true)
	r, err := plan.Resolve(p, src, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	d := decisionMap(r)["blk.0.attn_q.weight"]
	if d.Target != kernels.Q6_K || !strings.Contains(d.Reason, "requantized from Q4_K") {
		t.Errorf("%+v", d)
	}
	// An override is blamed at its own pointer.
	_, err = plan.Resolve(quantPlan("source", map[string]string{"output.weight": "Q8_0"}), src, testEnv)
	if !asFieldErrors(err, &fe) || len(fe) != 1 || fe[0].Pointer != "/quantization/overrides/output.weight" {
		t.Fatalf("override refusal: %v", err)
	}
}

func TestOverrides(t *testing.T) {
	src := loadModel(t, "synth-256-F32.gguf")
	p := quantPlan("Q4_K_M", map[string]string{
		"blk.*.ffn_*.weight":     "Q8_0",
		"blk.*.ffn_down.weight":  "Q6_K", // longer glob wins
		"blk.0.ffn_down.weight":  "F16",  // exact name wins
		"blk.*.attn_norm.weight": "F16",  // globs skip norms
		"nothing.*":              "Q8_0",
	})
	r, err := plan.Resolve(p, src, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	m := decisionMap(r)
	for name, want := range map[string]kernels.Type{
		"blk.0.ffn_down.weight":  kernels.F16,
		"blk.1.ffn_down.weight":  kernels.Q6_K,
		"blk.1.ffn_up.weight":    kernels.Q8_0,
		"blk.1.attn_q.weight":    kernels.Q4_K,
		"blk.2.attn_v.weight":    kernels.Q6_K,
		"blk.1.attn_norm.weight": kernels.F32,
		"output.weight":          kernels.Q6_K,
	} {
		if m[name].Target != want {
			t.Errorf("%s: %s (%s), want %s", name, m[name].Target, m[name].Reason, want)
		}
	}
	if d := m["blk.1.ffn_up.weight"]; d.Rule != plan.RuleOverride || d.Override != "blk.*.ffn_*.weight" {
		t.Errorf("%+v", d)
	}
	if len(r.Warnings) != 2 || !strings.Contains(strings.Join(r.Warnings, "\n"), `"nothing.*" matches no tensor`) {
		t.Errorf("warnings %q", r.Warnings)
	}
	// Naming a norm exactly is an error, not a silent no-op.
	_, err = plan.Resolve(quantPlan("source", map[string]string{"output_norm.weight": "Q8_0"}), src, testEnv)
	var fe plan.FieldErrors
	if !asFieldErrors(err, &fe) || fe[0].Pointer != "/quantization/overrides/output_norm.weight" {
		t.Fatalf("norm override: %v", err)
	}
}

// Tied embeddings (no output.weight): llama.cpp quantizes token_embd as the
// output matrix, Q6_K in Q4_K_M.
func TestTiedEmbeddings(t *testing.T) {
	m := plan.ModelDesc{Arch: "llama", NLayers: 1, NCtx: 128, Tensors: []plan.TensorDesc{
		{Name: "token_embd.weight", Dims: []int64{256, 1000}, Type: kernels.F32},
		{Name: "blk.0.attn_v.weight", Dims: []int64{256, 256}, Type: kernels.F32},
		{Name: "blk.0.attn_norm.weight", Dims: []int64{256}, Type: kernels.F32},
	}}
	r, err := plan.Resolve(quantPlan("Q4_K_M", nil), m, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Tensors[0]; d.Target != kernels.Q6_K || d.Rule != plan.RuleMix {
		t.Errorf("tied token_embd: %+v", d)
	}
	// n=1: use_more_bits(0, 1) is true (0 >= 7/8 = 0).
	if d := r.Tensors[1]; d.Target != kernels.Q6_K {
		t.Errorf("attn_v: %+v", d)
	}
}

func TestUseMoreBitsLayers(t *testing.T) {
	// llama.cpp's rule for 32 layers: first 4, last 4, and every third in between.
	var ts []plan.TensorDesc
	for l := 0; l < 32; l++ {
		ts = append(ts, plan.TensorDesc{Name: fmt.Sprintf("blk.%d.ffn_down.weight", l), Dims: []int64{256, 256}, Type: kernels.F16})
	}
	r, err := plan.Resolve(quantPlan("Q4_K_M", nil), plan.ModelDesc{Arch: "llama", NLayers: 32, NCtx: 1, Tensors: ts}, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	var six []int
	for l, d := range r.Tensors {
		if d.Target == kernels.Q6_K {
			six = append(six, l)
		}
	}
	want := []int{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
	if fmt.Sprint(six) != fmt.Sprint(want) {
		t.Errorf("Q6_K layers %v, want %v", six, want)
	}
}
