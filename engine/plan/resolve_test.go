package plan_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/kernels"
)

func tinyModel() plan.ModelDesc {
	return plan.ModelDesc{Arch: "llama", NLayers: 1, NCtx: 2048, Tensors: []plan.TensorDesc{
		{Name: "token_embd.weight", Dims: []int64{256, 512}, Type: kernels.F32},
		{Name: "blk.0.attn_norm.weight", Dims: []int64{256}, Type: kernels.F32},
		{Name: "blk.0.attn_q.weight", Dims: []int64{256, 256}, Type: kernels.F32},
		{Name: "output.weight", Dims: []int64{256, 512}, Type: kernels.F32},
	}}
}

func TestResolveDefaults(t *testing.T) {
	r, err := plan.Resolve(nil, tinyModel(), plan.Env{UsableCPUs: 3, HasAVX2: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(r.Plan)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"backend":"cpu-avx2","quantization":{"default":"source","overrides":{},"allow_requantize":false},` +
		`"weight_layout":"x8","threads":3,"scheduler":{"policy":"latency","mode":"simple","max_batch":1,"max_queue":64,"max_wait_ms":0},` +
		`"limits":{"max_watts":0,"enforcement":"strict","max_memory_bytes":0,"max_context":2048,"max_tokens":2048},` +
		`"sampling":{"temperature":0,"top_k":0,"top_p":1,"seed":0},"kv_cache":{"type":"F32","reuse_prefix":true}}`
	if string(got) != want {
		t.Errorf("resolved plan\n got  %s\n want %s", got, want)
	}
	// The resolved plan is itself a valid plan, and resolving it again
	// changes nothing.
	p, errs, err := plan.Validate(got)
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	r2, err := plan.Resolve(p, tinyModel(), plan.Env{UsableCPUs: 3, HasAVX2: true})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Hash != r.Hash {
		t.Errorf("re-resolving the resolved plan changed the hash")
	}
	if fmt.Sprint(r.Kernels) != "map[F32:avx2:f32·f32]" {
		t.Errorf("kernels %v", r.Kernels)
	}

	// No AVX2: the generic backend, written back explicitly.
	r, err = plan.Resolve(&plan.Plan{Scheduler: &plan.Scheduler{Mode: plan.Ptr(plan.ModeBatching)}}, tinyModel(), plan.Env{UsableCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if *r.Plan.Backend != plan.BackendGeneric || *r.Plan.Threads != 1 || *r.Plan.Scheduler.MaxBatch != 8 {
		t.Errorf("backend %s threads %d max_batch %d", *r.Plan.Backend, *r.Plan.Threads, *r.Plan.Scheduler.MaxBatch)
	}
	if fmt.Sprint(r.Kernels) != "map[F32:go:f32·f32]" {
		t.Errorf("kernels %v", r.Kernels)
	}
}

func TestResolveModelLimits(t *testing.T) {
	m := tinyModel()
	var fe plan.FieldErrors
	_, err := plan.Resolve(&plan.Plan{Limits: &plan.Limits{MaxContext: plan.Ptr(4096)}}, m, testEnv)
	if !asFieldErrors(err, &fe) || len(fe) != 1 || fe[0] != (plan.FieldError{Pointer: "/limits/max_context", Message: "max_context 4096 exceeds the model's context length 2048"}) {
		t.Errorf("max_context: %v", err)
	}
	_, err = plan.Resolve(&plan.Plan{Limits: &plan.Limits{MaxTokens: plan.Ptr(4096)}}, m, testEnv)
	if !asFieldErrors(err, &fe) || fe[0].Pointer != "/limits/max_tokens" {
		t.Errorf("max_tokens: %v", err)
	}
	m.NCtx = 0
	_, err = plan.Resolve(nil, m, testEnv)
	if !asFieldErrors(err, &fe) || fe[0].Pointer != "/limits/max_context" {
		t.Errorf("unknown n_ctx: %v", err)
	}
	r, err := plan.Resolve(&plan.Plan{Limits: &plan.Limits{MaxContext: plan.Ptr(512)}}, m, testEnv)
	if err != nil || *r.Plan.Limits.MaxTokens != 512 {
		t.Errorf("explicit max_context on unknown n_ctx: %v", err)
	}
	// Host problems come back from Resolve as FieldErrors too.
	_, err = plan.Resolve(&plan.Plan{Threads: plan.Ptr(3)}, tinyModel(), testEnv)
	if !asFieldErrors(err, &fe) || fe[0].Pointer != "/threads" {
		t.Errorf("threads: %v", err)
	}
}

func TestBestEffortPowerWarns(t *testing.T) {
	p := &plan.Plan{Limits: &plan.Limits{MaxWatts: plan.Ptr(10.0), Enforcement: plan.Ptr(plan.EnforceBestEffort)}}
	r, err := plan.Resolve(p, tinyModel(), plan.Env{UsableCPUs: 2, CapReason: "no powercap"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "no powercap") {
		t.Errorf("warnings %q", r.Warnings)
	}
}

func TestWeightLayout(t *testing.T) {
	for _, c := range []struct {
		backend, layout, want string
		kernel                string
	}{
		{"cpu-avx2", "", "x8", "avx2:q8_0·q8_0 x8"},
		{"cpu-avx2", "rows", "rows", "avx2:q8_0·q8_0"},
		{"cpu-generic", "", "rows", "go:q8_0·q8_0"},
		{"cpu-generic", "x8", "x8", "go:q8_0·q8_0 x8"},
	} {
		p := quantPlan("Q8_0", nil)
		p.Backend = plan.Ptr(c.backend)
		if c.layout != "" {
			p.WeightLayout = plan.Ptr(c.layout)
		}
		r, err := plan.Resolve(p, tinyModel(), testEnv)
		if err != nil {
			t.Fatal(err)
		}
		if *r.Plan.WeightLayout != c.want || r.Kernels["Q8_0"] != c.kernel {
			t.Errorf("%s, layout %q: resolved %s, kernel %q", c.backend, c.layout, *r.Plan.WeightLayout, r.Kernels["Q8_0"])
		}
	}
	_, errs, err := plan.Validate([]byte(`{"weight_layout":"x4"}`))
	if err != nil || len(errs) != 1 || errs[0].Pointer != "/weight_layout" {
		t.Errorf("bad layout: %v %v", errs, err)
	}
}

func TestKernelsFromEnv(t *testing.T) {
	env := testEnv
	env.Kernels = func(backend string, ty kernels.Type) (string, error) {
		if ty == kernels.Q6_K {
			return "", fmt.Errorf("not built")
		}
		return "k-" + ty.String(), nil
	}
	r, err := plan.Resolve(quantPlan("Q8_0", nil), tinyModel(), env)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.Kernels) != "map[Q8_0:k-Q8_0 x8]" {
		t.Errorf("kernels %v", r.Kernels)
	}
	_, err = plan.Resolve(quantPlan("Q4_K_M", nil), tinyModel(), env)
	var fe plan.FieldErrors
	if !asFieldErrors(err, &fe) || fe[0].Pointer != "/backend" || !strings.Contains(fe[0].Message, "Q6_K") {
		t.Errorf("missing kernel: %v", err)
	}
}

func TestHash(t *testing.T) {
	m := loadModel(t, "synth-256-F32.gguf")
	p := quantPlan("Q4_K_M", map[string]string{"blk.0.*": "Q8_0"})
	a, err := plan.Resolve(p, m, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Hash, "sha256:") || len(a.Hash) != 7+64 {
		t.Fatalf("hash %q", a.Hash)
	}
	// Same inputs, same hash: across calls, and across a JSON round trip.
	b, _ := plan.Resolve(p.Clone(), m, testEnv)
	if a.Hash != b.Hash {
		t.Errorf("hash unstable: %s %s", a.Hash, b.Hash)
	}
	raw, _ := json.Marshal(a)
	var back plan.Resolved
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.VerifyHash(); err != nil {
		t.Error(err)
	}
	// Explicitly writing a default does not change the resolved plan.
	p2 := p.Clone()
	p2.Scheduler = &plan.Scheduler{Policy: plan.Ptr("latency")}
	if c, _ := plan.Resolve(p2, m, testEnv); c.Hash != a.Hash {
		t.Errorf("explicit default changed the hash")
	}
	// Any change changes it.
	seen := map[string]string{a.Hash: "base"}
	variants := map[string]func(*plan.Plan, *plan.ModelDesc, *plan.Env){
		"threads": func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) { p.Threads = plan.Ptr(1) },
		"backend": func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) { p.Backend = plan.Ptr(plan.BackendGeneric) },
		"top_p":   func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) { p.Sampling = &plan.Sampling{TopP: plan.Ptr(0.95)} },
		"seed": func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) {
			p.Sampling = &plan.Sampling{Seed: plan.Ptr(uint64(7))}
		},
		"override":    func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) { p.Quantization.Overrides["blk.0.*"] = "Q6_K" },
		"scheme":      func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) { p.Quantization.Default = plan.Ptr("Q6_K") },
		"max_tokens":  func(p *plan.Plan, _ *plan.ModelDesc, _ *plan.Env) { p.Limits = &plan.Limits{MaxTokens: plan.Ptr(10)} },
		"model id":    func(_ *plan.Plan, m *plan.ModelDesc, _ *plan.Env) { m.ID = "sha256:00" },
		"tensor type": func(_ *plan.Plan, m *plan.ModelDesc, _ *plan.Env) { m.Tensors[5].Type = kernels.F16 },
		"kernel set": func(_ *plan.Plan, _ *plan.ModelDesc, e *plan.Env) {
			e.Kernels = func(b string, t kernels.Type) (string, error) { return "x:" + t.String(), nil }
		},
	}
	for name, f := range variants {
		p2, env := p.Clone(), testEnv
		m2 := m
		m2.Tensors = append([]plan.TensorDesc(nil), m.Tensors...)
		f(p2, &m2, &env)
		r, err := plan.Resolve(p2, m2, env)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if prev, dup := seen[r.Hash]; dup {
			t.Errorf("%s: same hash as %s", name, prev)
		}
		seen[r.Hash] = name
	}
	// Equal resolved plans hash equal however they were reached: one
	// usable CPU resolves threads to 1, like an explicit threads: 1.
	env1 := testEnv
	env1.UsableCPUs = 1
	p1 := p.Clone()
	p1.Threads = plan.Ptr(1)
	x, _ := plan.Resolve(p, m, env1)
	y, _ := plan.Resolve(p1, m, testEnv)
	if x.Hash != y.Hash {
		t.Errorf("same resolved plan, different hashes")
	}
	// Tampering is detected.
	back.Tensors[0].Target = kernels.F16
	if back.VerifyHash() == nil {
		t.Error("tampered resolved plan verified")
	}
}

func TestCanonical(t *testing.T) {
	got, err := plan.Canonical(map[string]any{"b": []any{1, "<x>"}, "a": map[string]any{"z": 1.5, "y": nil}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"a":{"y":null,"z":1.5},"b":[1,"<x>"]}` {
		t.Errorf("canonical %s", got)
	}
}
