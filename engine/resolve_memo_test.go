package engine

import (
	"context"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
)

// TestResolveMemo: plans resolved for a loaded model are remembered by
// content: the same plan again gives the same resolution, another plan
// (another thread count) its own, and runs record the right hash either
// way.
func TestResolveMemo(t *testing.T) {
	e := newTestEngine(t, 2, PowerOptions{})
	path := sharedModel(t, "stories260K.gguf")
	generate(t, e, path, 1)
	ctx := context.Background()
	ch1, err := e.choosePlan(map[string]any{"threads": 1})
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := e.choosePlan(map[string]any{"threads": 2})
	if err != nil {
		t.Fatal(err)
	}
	_, a, err := e.instanceFor(ctx, path, ch1, "generate")
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := e.instanceFor(ctx, path, ch1, "generate")
	if err != nil {
		t.Fatal(err)
	}
	_, c, err := e.instanceFor(ctx, path, ch2, "generate")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("the same plan was resolved twice for a loaded model")
	}
	if a.Hash == c.Hash || *a.Plan.Threads != 1 || *c.Plan.Threads != 2 {
		t.Errorf("different plans share a resolution: %s threads %d, %s threads %d", a.Hash, *a.Plan.Threads, c.Hash, *c.Plan.Threads)
	}
	for _, r := range []*plan.Resolved{a, c} {
		if err := r.VerifyHash(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: "Once", MaxTokens: 2, Plan: map[string]any{"threads": 2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.PlanHash != c.Hash {
		t.Errorf("run recorded plan hash %s, want %s", res.PlanHash, c.Hash)
	}
}
