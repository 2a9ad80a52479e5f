package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/client"
)

// TestPlanRejections: the schema (and the engine's rules) reject an unknown
// field, a wrong type, negative watts, an unknown quantization and threads
// 0, each with the JSON pointer of the field, through plan.validate,
// plan.put and plan.propose; a rejected put or proposal leaves the stored
// plans unchanged and leaves an audit entry of the rejection.
func TestPlanRejections(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	c := dial(t, r.srv.Path)
	ctx := ctxT(t, time.Minute)
	if _, err := c.PutPlan(ctx, "fast", raw(map[string]any{"threads": 1}), "baseline"); err != nil {
		t.Fatal(err)
	}
	snapshot := func() any {
		l, err := c.ListPlans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		g, err := c.GetPlan(ctx, "fast", 0)
		if err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(r.dir, "plans", "*", "*"))
		return []any{l, g, files}
	}
	before := snapshot()

	cases := []struct {
		name, doc, pointer, msg string
	}{
		{"unknown field", `{"threads":1,"limits":{"max_wats":5}}`, "/limits/max_wats", "unknown field"},
		{"wrong type", `{"threads":"two"}`, "/threads", "string"},
		{"negative watts", `{"limits":{"max_watts":-1}}`, "/limits/max_watts", "minimum"},
		{"unknown quantization", `{"quantization":{"default":"Q3_X"}}`, "/quantization/default", "must be one of"},
		{"threads 0", `{"threads":0}`, "/threads", "minimum"},
		{"engine rule: latency never waits", `{"scheduler":{"mode":"batching","max_wait_ms":5}}`, "/scheduler/max_wait_ms", "latency policy"},
		{"not an object", `"fast"`, "", "object"},
	}
	check := func(what string, err error, pointer, msg string) {
		t.Helper()
		re := rpcErr(err)
		if re == nil || re.Code != engine.CodePlanInvalid {
			t.Fatalf("%s: got %v, want -32020", what, err)
		}
		fes := client.PlanErrors(err)
		found := false
		for _, fe := range fes {
			if fe.Pointer == pointer && strings.Contains(fe.Message, msg) {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s: errors %+v lack %q containing %q", what, fes, pointer, msg)
		}
	}
	for _, tc := range cases {
		_, err := c.ValidatePlan(ctx, json.RawMessage(tc.doc), "")
		check(tc.name+": plan.validate", err, tc.pointer, tc.msg)
		_, err = c.PutPlan(ctx, "fast", json.RawMessage(tc.doc), "bad")
		check(tc.name+": plan.put", err, tc.pointer, tc.msg)
		_, err = c.ProposePlan(ctx, engine.PlanProposeRequest{Name: "fast", Plan: json.RawMessage(tc.doc), Rationale: "bad idea"})
		check(tc.name+": plan.propose", err, tc.pointer, tc.msg)
	}
	if after := snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("rejected documents changed the store:\nbefore %+v\nafter  %+v", before, after)
	}
	h, err := c.PlanHistory(ctx, "fast", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 1+2*len(cases) || h.Entries[0].Action != engine.AuditPut {
		t.Fatalf("history: %d entries, want %d", len(h.Entries), 1+2*len(cases))
	}
	for _, e := range h.Entries[1:] {
		if e.Action != engine.AuditReject || len(e.Errors) == 0 || !e.Actor.Known || e.Version != 0 || e.Active != 1 {
			t.Fatalf("rejection entry: %+v", e)
		}
	}

	// Host and model checks: 3 threads on this 2-thread engine; a context
	// longer than the model's.
	model := sharedModel(t, "stories260K.gguf")
	_, err = c.ValidatePlan(ctx, raw(map[string]any{"threads": 3}), "")
	check("threads over the host", err, "/threads", "usable")
	_, err = c.ValidatePlan(ctx, raw(map[string]any{"limits": map[string]any{"max_context": 100000}}), model)
	check("context over the model", err, "/limits/max_context", "exceeds")

	// Valid: resolved for the model, by inline object, name and name@version.
	v, err := c.ValidatePlan(ctx, raw(map[string]any{"threads": 1}), model)
	if err != nil || !v.Valid || v.Resolved == nil || !strings.HasPrefix(v.Resolved.Hash, "sha256:") {
		t.Fatalf("validate: %+v %v", v, err)
	}
	byName, err := c.ResolvePlan(ctx, raw("fast"), model)
	if err != nil || byName.Hash != v.Resolved.Hash || *byName.Plan.Threads != 1 || len(byName.Tensors) == 0 {
		t.Fatalf("resolve fast: %v (hash %s vs %s)", err, byName.Hash, v.Resolved.Hash)
	}
	if _, err := c.ResolvePlan(ctx, raw("fast@1"), model); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResolvePlan(ctx, raw("nope"), model); rpcErr(err) == nil || rpcErr(err).Code != engine.CodePlanNotFound {
		t.Fatalf("unknown plan: %v", err)
	}
	s, err := c.PlanSchema(ctx)
	if err != nil || !strings.Contains(string(s), `"max_watts"`) {
		t.Fatalf("schema: %v", err)
	}
}

// TestPlanLifecycle: put, propose, promote, rollback and delete through the
// daemon, what "name" means in generate and model.load, and that a loaded
// model keeps its quantization.
func TestPlanLifecycle(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	c := dial(t, r.srv.Path)
	ctx := ctxT(t, time.Minute)
	model := load(t, c, "stories260K.gguf", nil)
	gen := func(plan any) *engine.GenerateResult {
		t.Helper()
		res, err := c.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "Once upon a time", MaxTokens: 4, Plan: plan}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := gen(nil); res.Plan.Name != "default" || res.Plan.Version != 1 {
		t.Fatalf("no plan: ran %+v", res.Plan)
	}
	p, err := c.PutPlan(ctx, "default", raw(map[string]any{"threads": 1, "sampling": map[string]any{"temperature": 0.8, "seed": 5}}), "one thread")
	if err != nil || p.Version != 2 || p.Active != 2 || p.PreviousActive != 1 || len(p.Changes) != 3 {
		t.Fatalf("put: %+v %v", p, err)
	}
	res := gen(nil)
	if res.Plan.Version != 2 || res.Sampling.Temperature != 0.8 || res.Sampling.Seed != 5 {
		t.Fatalf("default@2 not used: %+v %+v", res.Plan, res.Sampling)
	}
	prop, err := c.ProposePlan(ctx, engine.PlanProposeRequest{Name: "default", Plan: raw(map[string]any{"threads": 2}), Rationale: "two threads", Evidence: raw(map[string]any{"x": 1})})
	if err != nil || prop.Version != 3 || prop.Active != 2 {
		t.Fatalf("propose: %+v %v", prop, err)
	}
	if g, _ := c.GetPlan(ctx, "default", 3); g.Status != "candidate" {
		t.Fatalf("proposal status %q", g.Status)
	}
	if res := gen(nil); res.Plan.Version != 2 {
		t.Fatal("a proposal became active")
	}
	if res := gen("default@3"); res.Plan.Version != 3 {
		t.Fatal("default@3 not used")
	}
	if _, err := c.PromotePlan(ctx, "default", 3, "measured"); err != nil {
		t.Fatal(err)
	}
	if res := gen(nil); res.Plan.Version != 3 {
		t.Fatal("promoted version not used")
	}
	rb, err := c.RollbackPlan(ctx, "default", "regression")
	if err != nil || rb.Active != 2 || rb.PreviousActive != 3 {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	if res := gen(nil); res.Plan.Version != 2 {
		t.Fatal("rollback not used")
	}
	rb, err = c.RollbackPlan(ctx, "default", "")
	if err != nil || rb.Active != 1 {
		t.Fatalf("second rollback: %+v %v", rb, err)
	}
	if _, err := c.RollbackPlan(ctx, "default", ""); rpcErr(err) == nil {
		t.Fatal("rollback past the first version succeeded")
	}
	if _, err := c.DeletePlan(ctx, "default"); rpcErr(err) == nil {
		t.Fatal("deleted the default plan")
	}
	// A quantization the loaded instance does not have is refused with a
	// pointer; loading under it gives a second instance.
	q8 := map[string]any{"quantization": map[string]any{"default": "Q8_0"}}
	_, err = c.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "x", MaxTokens: 1, Plan: q8}, nil)
	if re := rpcErr(err); re == nil || re.Code != engine.CodePlanInvalid || !strings.Contains(string(re.Data), "/quantization") {
		t.Fatalf("quantization mismatch: %v", err)
	}
	mi, err := c.LoadModel(ctx, engine.LoadRequest{Path: sharedModel(t, "stories260K.gguf"), Plan: q8})
	if err != nil || mi.ModelID == model || mi.ComputeTypes["Q8_0"] == 0 {
		t.Fatalf("load under Q8_0: %+v %v", mi, err)
	}
	res, err = c.Generate(ctx, engine.GenerateRequest{Model: mi.ModelID, Prompt: "Once upon a time", MaxTokens: 4, Plan: q8}, nil)
	if err != nil || res.Plan.Name != "" {
		t.Fatalf("generate on the Q8_0 instance: %+v %v", res, err)
	}
	if ms, _ := c.ListModels(ctx); len(ms) != 2 {
		t.Fatalf("%d models loaded, want the same file twice", len(ms))
	}
	// limits.max_memory_bytes bounds a run's weights + KV cache.
	_, err = c.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "x", MaxTokens: 400, Plan: map[string]any{"limits": map[string]any{"max_memory_bytes": 1 << 20}}}, nil)
	if re := rpcErr(err); re == nil || re.Code != engine.CodePlanInvalid || !strings.Contains(string(re.Data), "/limits/max_memory_bytes") {
		t.Fatalf("memory limit: %v", err)
	}
	// The energy policy runs (its target batch starts at max_batch).
	if _, err := c.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "Once", MaxTokens: 3,
		Plan: map[string]any{"scheduler": map[string]any{"mode": "batching", "policy": "energy", "max_batch": 4}}}, nil); err != nil {
		t.Fatal(err)
	}
	// The plan's threads are the threads the run computes on.
	st, err := c.SchedStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, l := range st.Lanes {
		seen[l.Threads] = true
		if l.Policy == "energy" && (l.EnergyTarget != 4 || l.Completed != 1) {
			t.Fatalf("energy lane %+v", l)
		}
	}
	if !seen[1] || !seen[2] {
		t.Fatalf("lanes on 1 and 2 threads expected: %+v", st.Lanes)
	}
	// Run records are lines of the run log in the state directory.
	if raw, err := os.ReadFile(filepath.Join(r.dir, "runs", "runs.jsonl")); err != nil || !strings.Contains(string(raw), `"run_id":"`+res.RunID+`"`) {
		t.Fatalf("run %s not in the run log: %v", res.RunID, err)
	}
}
