package e2e_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
)

func checkSpread(t *testing.T, what string, s engine.Spread, n int) {
	t.Helper()
	if s.N != n || s.Median <= 0 || s.P5 > s.Median || s.Median > s.P95 {
		t.Fatalf("%s: %+v (want %d samples, p5 ≤ median ≤ p95)", what, s, n)
	}
}

// TestBenchThreads: bench.run on stories260K with two plans that differ
// only in threads (1 vs 2) returns per-plan medians with their spreads,
// reports identical outputs, interleaves the plans and reports progress;
// the time budget cuts a long benchmark off on time, counting only
// complete runs; a joule budget stops it after the round that spends it.
func TestBenchThreads(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	c := dial(t, r.srv.Path)
	model := load(t, c, "stories260K.gguf", nil)
	ctx := ctxT(t, 2*time.Minute)
	reps := 5
	if raceEnabled {
		reps = 2
	}
	var progress []engine.BenchProgress
	res, err := c.Bench(ctx, engine.BenchRequest{
		Model:    model,
		Plans:    []json.RawMessage{raw(map[string]any{"threads": 1}), raw(map[string]any{"threads": 2})},
		Workload: engine.BenchWorkload{MaxTokens: 16, Repetitions: reps},
	}, func(p engine.BenchProgress) { progress = append(progress, p) })
	if err != nil {
		t.Fatal(err)
	}
	n := reps * 4 // the built-in "stories" set has 4 prompts
	if !res.Completed || res.StoppedBy != "" || res.Runs != 2*n || res.PlannedRuns != 2*n || !res.OutputsIdentical {
		t.Fatalf("bench: %+v", res)
	}
	if len(progress) != 2*n || progress[len(progress)-1].Done != 2*n {
		t.Fatalf("%d progress notifications, want %d", len(progress), 2*n)
	}
	for i, p := range progress { // interleaved: A B A B …
		if want := res.Plans[i%2].Label; p.Plan != want {
			t.Fatalf("round %d ran %s, want %s", i, p.Plan, want)
		}
	}
	if res.Plans[0].Plan.Hash == res.Plans[1].Plan.Hash || res.Plans[0].Threads != 1 || res.Plans[1].Threads != 2 {
		t.Fatalf("plans: %+v", res.Plans)
	}
	for _, p := range res.Plans {
		checkSpread(t, p.Label+" tokens/s", p.TokensPerSecond, n)
		checkSpread(t, p.Label+" ttft", p.TTFTMS, n)
		if !p.Identical || p.Runs != n || p.LatencyP95MS <= 0 || p.AggregateTokensPerSecond <= 0 || p.RatioToFirst <= 0 || p.GeneratedTokens != int64(16*n) {
			t.Fatalf("%s: %+v", p.Label, p)
		}
		if p.EnergySource == engine.EnergyUnavailable {
			if p.Joules != nil || p.TokensPerJoule != nil {
				t.Fatalf("%s: joules without a meter", p.Label)
			}
		} else if p.Joules == nil || p.TokensPerJoule == nil || *p.TokensPerJoule <= 0 {
			t.Fatalf("%s: energy source %s without joules", p.Label, p.EnergySource)
		}
	}
	if res.Plans[0].RatioToFirst != 1 {
		t.Fatalf("first plan's ratio %v", res.Plans[0].RatioToFirst)
	}
	t.Logf("threads 1: %.0f tok/s [%.0f, %.0f]; threads 2: %.0f tok/s [%.0f, %.0f] (ratio %.2f); energy %s",
		res.Plans[0].TokensPerSecond.Median, res.Plans[0].TokensPerSecond.P5, res.Plans[0].TokensPerSecond.P95,
		res.Plans[1].TokensPerSecond.Median, res.Plans[1].TokensPerSecond.P5, res.Plans[1].TokensPerSecond.P95,
		res.Plans[1].RatioToFirst, res.EnergySource)

	// Bench runs are runs: recorded, marked with the bench id.
	list, err := c.ListRuns(ctx, engine.RunListRequest{Limit: 1})
	if err != nil || len(list.Runs) != 1 || list.Runs[0].BenchID != res.BenchID {
		t.Fatalf("run list: %+v %v", list, err)
	}

	// The time budget: far more work than fits in 0.5 s.
	t0 := time.Now()
	cut, err := c.Bench(ctx, engine.BenchRequest{
		Model:    model,
		Plans:    []json.RawMessage{raw("default"), raw(map[string]any{"threads": 1})},
		Workload: engine.BenchWorkload{MaxTokens: 200, Repetitions: 1000},
		Budget:   engine.BenchBudget{MaxSeconds: 0.5},
	}, nil)
	wall := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	if cut.Completed || cut.StoppedBy != "max_seconds" || cut.Runs >= cut.PlannedRuns || cut.ElapsedS > 0.5+0.25 || wall > 2*time.Second {
		t.Fatalf("budget: %+v (wall %v)", cut, wall)
	}
	sum := 0
	for _, p := range cut.Plans {
		sum += p.Runs
		if p.GeneratedTokens != int64(200*p.Runs) {
			t.Fatalf("%s: a run cut by the budget was counted: %+v", p.Label, p)
		}
	}
	if sum != cut.Runs {
		t.Fatalf("runs %d vs per plan %d", cut.Runs, sum)
	}
	t.Logf("max_seconds 0.5: stopped after %.2fs (wall %v) with %d of %d runs", cut.ElapsedS, wall.Round(time.Millisecond), cut.Runs, cut.PlannedRuns)

	// The joule budget (needs a meter: the estimate counts too).
	if res.EnergySource != engine.EnergyUnavailable {
		jb, err := c.Bench(ctx, engine.BenchRequest{Model: model, Plans: []json.RawMessage{raw("default")},
			Workload: engine.BenchWorkload{MaxTokens: 32, Repetitions: 100}, Budget: engine.BenchBudget{MaxJoules: 1e-9}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if jb.StoppedBy != "max_joules" || jb.Runs != 1 {
			t.Fatalf("joule budget: %+v", jb)
		}
	}
	// Bad requests.
	for _, bad := range []engine.BenchRequest{
		{Model: model},
		{Model: model, Plans: []json.RawMessage{raw("nope")}},
		{Model: model, Plans: []json.RawMessage{raw(map[string]any{"threads": 0})}},
		{Model: model, Plans: []json.RawMessage{raw("default")}, Workload: engine.BenchWorkload{Builtin: "x"}},
	} {
		if _, err := c.Bench(ctx, bad, nil); rpcErr(err) == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
}
