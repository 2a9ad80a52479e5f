package plan_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
)

func mustPlan(t *testing.T, doc string) *plan.Plan {
	t.Helper()
	p, errs, err := plan.Validate([]byte(doc))
	if err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}
	return p
}

func TestDiff(t *testing.T) {
	a := mustPlan(t, `{"threads": 2, "quantization": {"default": "Q8_0", "overrides": {"output.weight": "F16", "x.*": "Q8_0"}}, "sampling": {"seed": 1}}`)
	b := mustPlan(t, `{"threads": 4, "quantization": {"default": "Q8_0", "overrides": {"output.weight": "Q6_K"}}, "limits": {"max_watts": 12.5}, "sampling": {"seed": 1}}`)
	got := plan.Diff(a, b)
	raw, _ := json.Marshal(got)
	want := `[{"pointer":"/limits/max_watts","old":null,"new":12.5},` +
		`{"pointer":"/quantization/overrides/output.weight","old":"F16","new":"Q6_K"},` +
		`{"pointer":"/quantization/overrides/x.*","old":"Q8_0","new":null},` +
		`{"pointer":"/threads","old":2,"new":4}]`
	if string(raw) != want {
		t.Errorf("diff\n got  %s\n want %s", raw, want)
	}
	if d := plan.Diff(a, a.Clone()); len(d) != 0 {
		t.Errorf("self diff %v", d)
	}
	if d := plan.Diff(nil, &plan.Plan{}); len(d) != 0 {
		t.Errorf("nil vs empty %v", d)
	}
	// Keys needing escapes.
	c := mustPlan(t, `{"quantization": {"overrides": {"a/b~c": "F16"}}}`)
	if d := plan.Diff(nil, c); fmt.Sprint(d) != "[{/quantization/overrides/a~1b~0c <nil> F16}]" {
		t.Errorf("escaped %v", d)
	}
}

func TestDiffResolved(t *testing.T) {
	m := tinyModel()
	a, err := plan.Resolve(nil, m, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := plan.Resolve(mustPlan(t, `{"quantization": {"default": "Q8_0"}}`), m, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range plan.DiffResolved(a, b) {
		got[c.Pointer] = true
	}
	for _, p := range []string{"/hash", "/plan/quantization/default", "/tensors/2/target", "/kernels/Q8_0", "/kernels/F32"} {
		if !got[p] {
			t.Errorf("missing change at %s in %v", p, got)
		}
	}
	if got["/tensors/1/target"] {
		t.Error("the norm's decision did not change")
	}
}
