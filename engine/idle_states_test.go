package engine

import (
	"context"
	"slices"
	"sync"
	"testing"
)

// TestLaneReusesStates: a lane keeps its finished sequences' KV states (at
// most max_batch) and hands them to its next sequences: a run on a state
// that held another, different sequence gives the tokens and per-step
// logits digests of the same run on a fresh state; a request too long for
// every idle state gets a new one.
func TestLaneReusesStates(t *testing.T) {
	e := newTestEngine(t, 1, PowerOptions{})
	path := sharedModel(t, "stories260K.gguf")
	pl := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "max_batch": 3}}
	ctx := context.Background()
	run := func(prompt string, n int) *GenerateResult {
		t.Helper()
		res, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: n, Plan: pl, LogitsDigest: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	lane := func() LaneStats {
		t.Helper()
		st := e.SchedStats()
		if len(st.Lanes) != 1 {
			t.Fatalf("%d lanes, want 1", len(st.Lanes))
		}
		return st.Lanes[0]
	}
	first := run("Once upon a time", 24) // a fresh state
	if l := lane(); l.IdleStates != 1 || l.IdleKVBytes <= 0 {
		t.Fatalf("after one run: %d idle states, %d bytes; want 1 state", l.IdleStates, l.IdleKVBytes)
	}
	run("The little dog ran to the park and", 8) // reuses it, other content
	again := run("Once upon a time", 24)         // reuses it again
	if l := lane(); l.IdleStates != 1 {
		t.Fatalf("sequential runs left %d idle states, want 1 (reused)", l.IdleStates)
	}
	if !slices.Equal(first.Tokens, again.Tokens) || !slices.Equal(first.LogitsDigests, again.LogitsDigests) || len(again.LogitsDigests) == 0 {
		t.Fatal("a run on a reused state differs from the same run on a fresh state")
	}
	before := lane().IdleKVBytes
	run("Once upon a time", 200) // longer than the idle state: a new one
	if l := lane(); l.IdleStates != 2 || l.IdleKVBytes <= before {
		t.Fatalf("after a longer run: %d idle states, %d bytes (before %d); want 2 and more bytes", l.IdleStates, l.IdleKVBytes, before)
	}
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run("Once upon a time there was", 16+i)
		}()
	}
	wg.Wait()
	if l := lane(); l.IdleStates > 3 || l.IdleStates < 1 {
		t.Fatalf("after concurrent runs: %d idle states; want 1 to max_batch (3)", l.IdleStates)
	}
	if st := e.SchedStats(); st.KVBytes != 0 || st.ActiveSequences != 0 {
		t.Fatalf("no run active, yet %d KV bytes in %d sequences", st.KVBytes, st.ActiveSequences)
	}
}
