package plan_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/engine/plan/internal/schemagen"
)

// TestSchemaUpToDate fails when plan.schema.json is not what the generator
// makes of the current Go types and comments: run `go generate ./engine/plan`.
func TestSchemaUpToDate(t *testing.T) {
	want, err := schemagen.Generate(".")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plan.Schema(), want) {
		t.Fatal("plan.schema.json is stale: run `go generate ./engine/plan`")
	}
	var doc map[string]any
	if err := json.Unmarshal(want, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" || doc["additionalProperties"] != false {
		t.Errorf("schema header: %v %v", doc["$schema"], doc["additionalProperties"])
	}
	for name, def := range doc["$defs"].(map[string]any) {
		if def.(map[string]any)["additionalProperties"] != false {
			t.Errorf("$defs/%s allows additional properties", name)
		}
		for prop, s := range def.(map[string]any)["properties"].(map[string]any) {
			if s.(map[string]any)["description"] == nil {
				t.Errorf("$defs/%s/%s has no description", name, prop)
			}
		}
	}
}

func TestValidateRejects(t *testing.T) {
	cases := []struct {
		doc  string
		want []plan.FieldError
	}{
		// the five the brief names
		{`{"limits": {"max_watts": 10, "max_wats": 5}}`, []plan.FieldError{{"/limits/max_wats", "unknown field"}}},
		{`{"threads": "4"}`, []plan.FieldError{{"/threads", "got string, want integer"}}},
		{`{"limits": {"max_watts": -1}}`, []plan.FieldError{{"/limits/max_watts", "minimum: got -1, want 0"}}},
		{`{"quantization": {"default": "Q5_K_M"}}`, []plan.FieldError{{"/quantization/default", "value must be one of 'source', 'F32', 'F16', 'Q8_0', 'Q6_K', 'Q4_K_M'"}}},
		{`{"threads": 0}`, []plan.FieldError{{"/threads", "minimum: got 0, want 1"}}},
		// more
		{`{"bogus": 1}`, []plan.FieldError{{"/bogus", "unknown field"}}},
		{`{"version": 2}`, []plan.FieldError{{"/version", "value must be 1"}}},
		{`{"backend": "auto"}`, []plan.FieldError{{"/backend", "value must be one of 'cpu-avx2', 'cpu-generic'"}}},
		{`{"quantization": {"overrides": {"output.weight": "Q5_K"}}}`, []plan.FieldError{{"/quantization/overrides/output.weight", "value must be one of 'source', 'F32', 'F16', 'Q8_0', 'Q6_K', 'Q5_0', 'Q4_K'"}}},
		{`{"quantization": {"overrides": {"blk.[.weight": "Q8_0"}}}`, []plan.FieldError{{"/quantization/overrides/blk.[.weight", "malformed glob pattern (path.Match syntax: * ? [...] \\)"}}},
		{`{"scheduler": {"max_batch": 0}}`, []plan.FieldError{{"/scheduler/max_batch", "minimum: got 0, want 1"}}},
		{`{"scheduler": {"max_batch": 4}}`, []plan.FieldError{{"/scheduler/max_batch", "max_batch 4 needs scheduler.mode batching: simple mode runs one request at a time"}}},
		{`{"scheduler": {"policy": "throughput", "max_wait_ms": -5}}`, []plan.FieldError{
			{"/scheduler/max_wait_ms", "minimum: got -5, want 0"},
			{"/scheduler/policy", "value must be one of 'latency', 'cost', 'energy'"},
		}},
		{`{"sampling": {"top_p": 0}}`, []plan.FieldError{{"/sampling/top_p", "exclusiveMinimum: got 0, want 0"}}},
		{`{"sampling": {"top_p": 1.5, "temperature": -0.1, "seed": -1}}`, []plan.FieldError{
			{"/sampling/seed", "minimum: got -1, want 0"},
			{"/sampling/temperature", "minimum: got -0.1, want 0"},
			{"/sampling/top_p", "maximum: got 1.5, want 1"},
		}},
		{`{"sampling": {"seed": 18446744073709551616}}`, []plan.FieldError{{"/sampling/seed", "got number 18446744073709551616, want an integer from 0 to 2^64-1 (no fraction or exponent)"}}},
		{`{"threads": 2.0}`, []plan.FieldError{{"/threads", "got number 2.0, want a 64-bit integer (no fraction or exponent)"}}},
		{`{"limits": {"max_context": 100, "max_tokens": 200}}`, []plan.FieldError{{"/limits/max_tokens", "max_tokens 200 exceeds max_context 100"}}},
		{`{"limits": {"enforcement": "maybe"}, "kv_cache": {"type": "Q8_0"}}`, []plan.FieldError{
			{"/kv_cache/type", "value must be one of 'F32', 'F16'"},
			{"/limits/enforcement", "value must be one of 'strict', 'best_effort'"},
		}},
		{`{"scheduler": null}`, []plan.FieldError{{"/scheduler", "got null, want object"}}},
		{`[]`, []plan.FieldError{{"", "got array, want object"}}},
		{`{"threads": 1,}`, []plan.FieldError{{"", "invalid JSON at byte 15: invalid character '}' looking for beginning of object key string"}}},
		{``, []plan.FieldError{{"", "invalid JSON: empty document"}}},
		{`{} {}`, []plan.FieldError{{"", "invalid JSON: invalid character after top-level value"}}},
	}
	for _, c := range cases {
		// The library reports errors in varying order: run each case a few
		// times to see that the sorted result is stable.
		for range 3 {
			p, errs, err := plan.Validate([]byte(c.doc))
			if err != nil {
				t.Fatalf("%s: %v", c.doc, err)
			}
			if p != nil {
				t.Errorf("%s: got a plan with errors %v", c.doc, errs)
			}
			if fmt.Sprint(errs) != fmt.Sprint(c.want) {
				t.Errorf("%s:\n got  %q\n want %q", c.doc, errs, c.want)
				break
			}
		}
	}
}

func TestValidateAccepts(t *testing.T) {
	doc := `{
	  "version": 1, "backend": "cpu-generic", "threads": 2,
	  "quantization": {"default": "Q4_K_M", "overrides": {"blk.*.ffn_down.weight": "F16", "output.weight": "source"}, "allow_requantize": true},
	  "scheduler": {"policy": "energy", "mode": "batching", "max_batch": 4, "max_queue": 16, "max_wait_ms": 2},
	  "limits": {"max_watts": 12.5, "enforcement": "best_effort", "max_memory_bytes": 1073741824, "max_context": 256, "max_tokens": 64},
	  "sampling": {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "seed": 18446744073709551615},
	  "kv_cache": {"type": "F32"}
	}`
	p, errs, err := plan.Validate([]byte(doc))
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	if *p.Threads != 2 || *p.Sampling.Seed != 18446744073709551615 || *p.Limits.MaxWatts != 12.5 || p.Quantization.Overrides["output.weight"] != "source" {
		t.Errorf("decoded %+v", p)
	}
	for _, doc := range []string{`{}`, `{"version":1}`, plan.DefaultPlanJSON} {
		if p, errs, err := plan.Validate([]byte(doc)); err != nil || len(errs) > 0 || p == nil {
			t.Errorf("%s: %v %v", doc, err, errs)
		}
	}
}

func TestCheckEnv(t *testing.T) {
	p := &plan.Plan{
		Backend: plan.Ptr(plan.BackendAVX2),
		Threads: plan.Ptr(8),
		Limits:  &plan.Limits{MaxWatts: plan.Ptr(15.0)},
	}
	env := plan.Env{UsableCPUs: 2, HasAVX2: false, CanCapPower: false, CapReason: "no RAPL and no cgroup cpu controller"}
	got := p.Check(env)
	want := []plan.FieldError{
		{"/backend", "backend cpu-avx2 requested but this CPU has no AVX2 (use cpu-generic)"},
		{"/limits/max_watts", "max_watts 15 cannot be enforced on this host: no RAPL and no cgroup cpu controller (set limits.enforcement to best_effort to run uncapped)"},
		{"/threads", "8 threads requested but only 2 CPUs are usable by the engine"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	p.Limits.Enforcement = plan.Ptr(plan.EnforceBestEffort)
	p.Backend, p.Threads = nil, plan.Ptr(2)
	if got := p.Check(env); len(got) != 0 {
		t.Errorf("best_effort: %v", got)
	}
	// Check also applies the schema to plans built in Go.
	bad := &plan.Plan{Threads: plan.Ptr(0), Scheduler: &plan.Scheduler{MaxBatch: plan.Ptr(0)}}
	if got := bad.Check(testEnv); fmt.Sprint(got) != fmt.Sprint([]plan.FieldError{{"/scheduler/max_batch", "minimum: got 0, want 1"}, {"/threads", "minimum: got 0, want 1"}}) {
		t.Errorf("go-built plan: %q", got)
	}
}
