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

// BenchmarkBatching8Streams: 8 concurrent streams vs a single stream on
// synth-256 (the Q4_K_M file), through the daemon, same plan (batching,
// max_batch 8, 2 threads). Each iteration runs one single-stream round and
// one 8-stream round of 128 tokens per stream, back to back; it reports
// the medians over iterations of both throughputs and of their ratio (the
// ratio of one iteration's two rounds: on a shared, noisy host the median
// of paired ratios is steadier than a ratio of totals), and fails if any
// stream's tokens differ from its solo run.
//
//	go test -run '^$' -bench Batching8Streams -benchtime 20x ./rpc/e2e/
func BenchmarkBatching8Streams(b *testing.B) {
	r := start(b, daemon.Config{}, engine.Options{Threads: 2})
	c := dial(b, r.srv.Path)
	model := load(b, c, "synth-256-Q4_K_M.gguf", nil)
	const n = 128
	plan := map[string]any{"threads": 2, "scheduler": map[string]any{"mode": "batching", "max_batch": 8}}
	prompts := append([]string{targetPrompt}, otherPrompts...)
	conns := make([]*client.Client, len(prompts))
	for i := range conns {
		conns[i] = dial(b, r.srv.Path)
	}
	gen := func(c *client.Client, prompt string) *engine.GenerateResult {
		res, err := c.Generate(ctxT(b, 5*time.Minute), engine.GenerateRequest{Model: model, Prompt: prompt, MaxTokens: n, Plan: plan}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Tokens) != n {
			b.Fatalf("%d tokens (%s): use a prompt that does not stop early", len(res.Tokens), res.FinishReason)
		}
		return res
	}
	solo := make([][]int32, len(prompts))
	for i, p := range prompts {
		solo[i] = gen(c, p).Tokens
	}
	var singles, aggs, ratios []float64
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		t0 := time.Now()
		gen(c, prompts[it%len(prompts)])
		single := float64(n) / time.Since(t0).Seconds()

		t0 = time.Now()
		out := make([][]int32, len(prompts))
		var wg sync.WaitGroup
		for i, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i] = gen(conns[i], p).Tokens
			}()
		}
		wg.Wait()
		agg := float64(n*len(prompts)) / time.Since(t0).Seconds()
		singles, aggs, ratios = append(singles, single), append(aggs, agg), append(ratios, agg/single)
		for i := range out {
			if !slices.Equal(out[i], solo[i]) {
				b.Fatalf("stream %d: batched tokens differ from its solo run", i)
			}
		}
	}
	b.StopTimer()
	single, agg, ratio := median(singles), median(aggs), median(ratios)
	b.ReportMetric(single, "single_tok/s")
	b.ReportMetric(agg, "8streams_tok/s")
	b.ReportMetric(ratio, "ratio")
	st, _ := c.SchedStats(ctxT(b, 10*time.Second))
	b.Logf("medians over %d rounds: single stream %.0f tok/s, 8 streams %.0f tok/s aggregate, ratio %.2f (range %.2f-%.2f); steps by batch size %v",
		b.N, single, agg, ratio, slices.Min(ratios), slices.Max(ratios), st.Lanes[0].StepsBySize)
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
