package e2e_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/client"
)

var otherPrompts = []string{
	"One day, a big dog",
	"Tom had a red ball. He liked to play",
	"The sun was shining",
	"Lily and her mom went to the store to buy",
	"A little bird sat on",
	"Once there was a boy who did not like to share his toys with",
	"The cat",
}

const targetPrompt = "Once upon a time, there was a little girl named"

// plan is a batching plan with the given threads (and quantization, "" for
// the file's): the cost policy waits up to 200 ms for 8 requests, so eight
// requests sent together run as one batch of 8 from their first step.
func batchingPlan(threads int, quant string) map[string]any {
	p := map[string]any{"threads": threads, "scheduler": map[string]any{"mode": "batching", "policy": "cost", "max_batch": 8, "max_wait_ms": 200}}
	if quant != "" {
		p["quantization"] = map[string]any{"default": quant}
	}
	return p
}

func genDigests(t *testing.T, c *client.Client, model, prompt string, plan any, n int) *engine.GenerateResult {
	t.Helper()
	res, err := c.Generate(ctxT(t, 2*time.Minute), engine.GenerateRequest{Model: model, Prompt: prompt, MaxTokens: n, LogitsDigest: true, Plan: plan}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LogitsDigests) != len(res.Tokens) || len(res.Tokens) == 0 {
		t.Fatalf("%d digests for %d tokens", len(res.LogitsDigests), len(res.Tokens))
	}
	return res
}

// TestDeterminismByDigest: the same prompt under the same plan gives
// bit-identical logits at every step (logits_digest) and the same tokens:
// repeated, on 1 and 2 threads, and decoded alone or in one batch with 7
// other, different requests; for F32, Q8_0, Q6_K and Q4_K_M files and for
// F32 quantized to Q4_K_M at load (which computes exactly what
// llama-quantize's Q4_K_M file does); with an F32 and an F16 KV cache.
func TestDeterminismByDigest(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	c := dial(t, r.srv.Path)
	n, reps := 16, 3
	type tcase struct{ file, quant, kv string }
	cases := []tcase{
		{"stories260K.gguf", "", ""},
		{"stories260K-Q8_0.gguf", "", ""},
		{"synth-256-Q6_K.gguf", "", ""},
		{"synth-256-Q4_K_M.gguf", "", ""},
		{"synth-256-Q4_K_M.gguf", "", "F16"},
		{"synth-256-F32.gguf", "", ""},
		{"synth-256-F32.gguf", "Q4_K_M", ""},
	}
	if raceEnabled || testing.Short() {
		n, reps = 6, 1
		cases = []tcase{{"stories260K.gguf", "", ""}, {"synth-256-Q4_K_M.gguf", "", ""}, {"synth-256-Q4_K_M.gguf", "", "F16"}}
	}
	digests := map[string][]string{}
	for _, tc := range cases {
		name := tc.file
		if tc.quant != "" {
			name += "@" + tc.quant
		}
		if tc.kv != "" {
			name += "+kv" + tc.kv
		}
		t.Run(name, func(t *testing.T) {
			var loadPlan any
			if tc.quant != "" {
				loadPlan = map[string]any{"quantization": map[string]any{"default": tc.quant}}
			}
			model := load(t, c, tc.file, loadPlan)
			p1, p2 := batchingPlan(1, tc.quant), batchingPlan(2, tc.quant)
			if tc.kv != "" {
				p1["kv_cache"] = map[string]any{"type": tc.kv}
				p2["kv_cache"] = map[string]any{"type": tc.kv}
			}

			alone := genDigests(t, c, model, targetPrompt, p1, n)
			for i := 0; i < reps; i++ {
				again := genDigests(t, c, model, targetPrompt, p1, n)
				if !slices.Equal(again.LogitsDigests, alone.LogitsDigests) || !slices.Equal(again.Tokens, alone.Tokens) {
					t.Fatalf("repetition %d differs", i)
				}
			}
			two := genDigests(t, c, model, targetPrompt, p2, n)
			if two.PlanHash == alone.PlanHash {
				t.Fatal("threads 1 and 2 resolved to the same plan hash")
			}
			if !slices.Equal(two.LogitsDigests, alone.LogitsDigests) || !slices.Equal(two.Tokens, alone.Tokens) {
				t.Fatal("2 threads give different logits than 1 thread")
			}

			// The target with 7 others, one batch of 8, on 1 thread.
			before := stepsOfSize(t, c, model, 8)
			results := make([]*engine.GenerateResult, 8)
			var wg sync.WaitGroup
			for i := range results {
				prompt := targetPrompt
				if i > 0 {
					prompt = otherPrompts[i-1]
				}
				cc := dial(t, r.srv.Path)
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := cc.Generate(ctxT(t, 2*time.Minute), engine.GenerateRequest{Model: model, Prompt: prompt, MaxTokens: n, LogitsDigest: true, Plan: p1}, nil)
					if err != nil {
						t.Error(err)
						return
					}
					results[i] = res
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			if got := stepsOfSize(t, c, model, 8); got <= before {
				t.Fatalf("no decode step of 8 sequences happened (%d before, %d after)", before, got)
			}
			batched := results[0]
			if batched.PlanHash != alone.PlanHash {
				t.Fatal("the batched run resolved to another plan")
			}
			if !slices.Equal(batched.LogitsDigests, alone.LogitsDigests) || !slices.Equal(batched.Tokens, alone.Tokens) {
				t.Fatal("decoded in a batch of 8, the logits differ from decoding alone")
			}
			// And one of the others against its own solo run.
			solo := genDigests(t, c, model, otherPrompts[5], p1, n)
			if !slices.Equal(results[6].LogitsDigests, solo.LogitsDigests) {
				t.Fatal("another member of the batch differs from its solo run")
			}
			digests[name] = alone.LogitsDigests
			if d, ok := digests[tc.file]; ok && tc.kv == "F16" {
				if slices.Equal(d, alone.LogitsDigests) {
					t.Error("the F16 KV cache gives the F32 cache's logits")
				}
			}
			if d, ok := digests["synth-256-Q4_K_M.gguf"]; ok && tc.quant == "Q4_K_M" && !slices.Equal(d, alone.LogitsDigests) {
				t.Error("synth-256-F32 quantized to Q4_K_M at load differs from llama-quantize's synth-256-Q4_K_M.gguf")
			}
			t.Logf("%s: %d steps bit-identical alone, repeated, 1 vs 2 threads, in a batch of 8 (first digest %.12s…, plan %s)", name, len(alone.LogitsDigests), alone.LogitsDigests[0], alone.Plan)
		})
	}
}

// stepsOfSize sums the decode steps of b sequences of the model's lanes.
func stepsOfSize(t *testing.T, c *client.Client, model string, b int) int64 {
	t.Helper()
	st, err := c.SchedStats(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range st.Lanes {
		if l.ModelID == model {
			n += l.StepsBySize[b]
		}
	}
	return n
}
