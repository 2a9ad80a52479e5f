package engine

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
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
	// An F16 cache is never handed to an F32 run, nor the reverse; F32
	// and F16 sequences running together (a lane batches both) are each
	// bit-identical to their solo runs.
	pl16 := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "max_batch": 3}, "kv_cache": map[string]any{"type": "F16"}}
	run16 := func(prompt string, n int) *GenerateResult {
		t.Helper()
		res, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: n, Plan: pl16, LogitsDigest: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	solo16 := run16("Once upon a time", 24)
	if l := lane(); l.IdleStates != 2 {
		t.Fatalf("after an F16 run: %d idle states, want 2 (one per cache type)", l.IdleStates)
	}
	if slices.Equal(solo16.LogitsDigests, first.LogitsDigests) {
		t.Fatal("the F16 cache gave the F32 cache's logits")
	}
	var mixed [2]*GenerateResult
	var mw sync.WaitGroup
	mw.Add(2)
	go func() { defer mw.Done(); mixed[0] = run("Once upon a time", 24) }()
	go func() { defer mw.Done(); mixed[1] = run16("Once upon a time", 24) }()
	mw.Wait()
	if mixed[0] == nil || mixed[1] == nil || !slices.Equal(mixed[0].LogitsDigests, first.LogitsDigests) || !slices.Equal(mixed[1].LogitsDigests, solo16.LogitsDigests) {
		t.Fatal("F32 and F16 sequences run together differ from their solo runs")
	}
	if l := lane(); l.IdleStates != 2 {
		t.Fatalf("after mixed runs: %d idle states, want 2", l.IdleStates)
	}

	before := lane().IdleKVBytes
	run("Once upon a time", 300) // longer than the idle states (256 positions): a new one
	if l := lane(); l.IdleStates != 3 || l.IdleKVBytes <= before {
		t.Fatalf("after a longer run: %d idle states, %d bytes (before %d); want 3 and more bytes", l.IdleStates, l.IdleKVBytes, before)
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

// TestIdleStatesExpire: idle states unused for their lifetime are dropped
// and the others kept, the sweep timer drops them without any other
// activity, and a lane's states go with the engine.
func TestIdleStatesExpire(t *testing.T) {
	e := newTestEngine(t, 1, PowerOptions{})
	path := sharedModel(t, "stories260K.gguf")
	generate(t, e, path, 4)
	e.lanesMu.Lock()
	var l *lane
	for _, x := range e.lanes {
		l = x
	}
	e.lanesMu.Unlock()
	p := &l.idle
	p.close() // the run's state, under the default lifetime
	p.mu.Lock()
	p.ttl, p.max = time.Hour, 4
	p.mu.Unlock()
	m := l.m.model
	p.put(m.NewStateBatch(16, 1), nil)
	p.put(m.NewStateBatch(32, 1), nil)
	p.mu.Lock()
	p.since[0] = p.since[0].Add(-2 * time.Hour) // the first one is old
	p.mu.Unlock()
	p.expire()
	p.mu.Lock()
	if len(p.s) != 1 || p.s[0].Ctx() != 32 {
		t.Fatalf("after a sweep: %d idle states; want only the recent one", len(p.s))
	}
	p.mu.Unlock()

	// The timer alone empties the pool once every state is past its time.
	p.close()
	p.mu.Lock()
	p.ttl = 20 * time.Millisecond
	p.mu.Unlock()
	p.put(m.NewStateBatch(16, 1), nil)
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := p.stats(); n != 0; n, _ = p.stats() {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle states long after their lifetime", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, b := p.stats(); b != 0 {
		t.Fatalf("no idle state, yet %d idle bytes", b)
	}
	p.put(m.NewStateBatch(16, 1), nil)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.stats(); n != 0 {
		t.Fatalf("%d idle states after the engine closed", n)
	}
}

// TestPrefixReuse: a prompt that begins with what a finished sequence's
// cache holds continues from it (prompt_cached_tokens), with the tokens and
// per-step logits digests of the same run on a fresh engine; a prompt
// repeated whole recomputes only its last token.
func TestPrefixReuse(t *testing.T) {
	path := sharedModel(t, "stories260K.gguf")
	pl := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "max_batch": 2}}
	ctx := context.Background()
	gen := func(e *Engine, prompt string, n int) *GenerateResult {
		t.Helper()
		res, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: n, Plan: pl, LogitsDigest: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	const p1 = "Once upon a time, there was a little girl named Lily. She liked to play"
	p2 := p1 + " with her friends in the park every day"
	e := newTestEngine(t, 1, PowerOptions{})
	a := gen(e, p1, 20)
	if a.Metrics.PromptCachedTokens != 0 {
		t.Fatalf("first run: %d cached prompt tokens", a.Metrics.PromptCachedTokens)
	}
	b := gen(e, p1, 20)
	if b.Metrics.PromptCachedTokens != len(b.PromptTokens)-1 {
		t.Fatalf("repeated prompt: %d of %d prompt tokens cached, want all but the last", b.Metrics.PromptCachedTokens, len(b.PromptTokens))
	}
	if !slices.Equal(a.Tokens, b.Tokens) || !slices.Equal(a.LogitsDigests, b.LogitsDigests) {
		t.Fatal("a run continuing from a cached prompt differs from the first")
	}
	c := gen(e, p2, 20)
	fresh := gen(newTestEngine(t, 1, PowerOptions{}), p2, 20)
	if c.Metrics.PromptCachedTokens < len(a.PromptTokens)/2 || fresh.Metrics.PromptCachedTokens != 0 {
		t.Fatalf("extended prompt: %d cached (first prompt %d tokens); fresh engine %d", c.Metrics.PromptCachedTokens, len(a.PromptTokens), fresh.Metrics.PromptCachedTokens)
	}
	if !slices.Equal(c.Tokens, fresh.Tokens) || !slices.Equal(c.LogitsDigests, fresh.LogitsDigests) {
		t.Fatal("a prompt continued from a cached prefix differs from the same prompt on a fresh engine")
	}
	// The plan can turn it off: the whole prompt is computed, same logits.
	off := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "max_batch": 2}, "kv_cache": map[string]any{"reuse_prefix": false}}
	d, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: p1, MaxTokens: 20, Plan: off, LogitsDigest: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Metrics.PromptCachedTokens != 0 || !slices.Equal(d.LogitsDigests, a.LogitsDigests) {
		t.Fatalf("reuse_prefix false: %d prompt tokens cached, digests equal: %v", d.Metrics.PromptCachedTokens, slices.Equal(d.LogitsDigests, a.LogitsDigests))
	}
	// An opted-out run leaves its cache to no other run's prefix.
	e2 := newTestEngine(t, 1, PowerOptions{})
	if _, err := e2.Generate(ctx, GenerateRequest{Model: path, Prompt: p1, MaxTokens: 20, Plan: off}, nil); err != nil {
		t.Fatal(err)
	}
	if r := gen(e2, p1, 20); r.Metrics.PromptCachedTokens != 0 {
		t.Fatalf("a run continued from an opted-out run's cache (%d tokens)", r.Metrics.PromptCachedTokens)
	}
	if got, want := e.Counters().PromptCachedTokens, int64(b.Metrics.PromptCachedTokens+c.Metrics.PromptCachedTokens); got != want {
		t.Errorf("metrics.get prompt_cached_tokens %d, want %d", got, want)
	}
	t.Logf("prompt %d tokens: %d cached; extended prompt %d tokens: %d cached", len(b.PromptTokens), b.Metrics.PromptCachedTokens, len(c.PromptTokens), c.Metrics.PromptCachedTokens)
}

// TestIdleStatesRope: with LongRoPE (Phi-3), whose factors depend on the
// sequence's capacity, a finished sequence's long-context cache is never
// handed to a short request (which must rotate with the short factors):
// the short run then equals the same run on a fresh engine.
func TestIdleStatesRope(t *testing.T) {
	path := sharedModel(t, "arch/phi3-longrope-Q8_0.gguf")
	ctx := context.Background()
	pl := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "max_batch": 2}}
	e := newTestEngine(t, 1, PowerOptions{})
	const prompt = "Once upon a time"
	// A long request (capacity beyond the original 4096: long factors),
	// cancelled at its first token: its cache goes idle.
	cctx, cancel := context.WithCancel(ctx)
	_, err := e.Generate(cctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: 4200, Plan: pl, Stream: true}, func(TokenEvent) { cancel() })
	if err != nil {
		t.Fatal(err)
	}
	e.lanesMu.Lock()
	var l *lane
	for _, x := range e.lanes {
		l = x
	}
	e.lanesMu.Unlock()
	if n, _ := l.idle.stats(); n != 1 {
		t.Fatalf("%d idle states after the cancelled long run, want 1", n)
	}
	short, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: 8, Plan: pl, LogitsDigest: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := newTestEngine(t, 1, PowerOptions{}).Generate(ctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: 8, Plan: pl, LogitsDigest: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if short.Metrics.PromptCachedTokens != 0 || !slices.Equal(short.LogitsDigests, fresh.LogitsDigests) {
		t.Fatalf("short run after a long one: %d prompt tokens cached, digests equal to a fresh engine's: %v",
			short.Metrics.PromptCachedTokens, slices.Equal(short.LogitsDigests, fresh.LogitsDigests))
	}
	if n, _ := l.idle.stats(); n != 2 {
		t.Fatalf("%d idle states, want 2 (a long and a short cache)", n)
	}
	// A long request again takes the long cache and its prompt.
	cctx, cancel = context.WithCancel(ctx)
	long, err := e.Generate(cctx, GenerateRequest{Model: path, Prompt: prompt, MaxTokens: 4200, Plan: pl, Stream: true}, func(TokenEvent) { cancel() })
	if err != nil {
		t.Fatal(err)
	}
	if long.FinishReason != "cancelled" || long.Metrics.PromptCachedTokens != len(long.PromptTokens)-1 {
		t.Fatalf("second long run: %s, %d of %d prompt tokens cached", long.FinishReason, long.Metrics.PromptCachedTokens, len(long.PromptTokens))
	}
}

// TestSharedPrefixJoining: sequences joining at one step boundary that
// share a long prompt prefix (a system prompt) compute it once: the others
// copy it from the first (prompt_cached_tokens), and every sequence's
// tokens and per-step digests equal its solo run on a fresh engine.
func TestSharedPrefixJoining(t *testing.T) {
	path := sharedModel(t, "stories260K.gguf")
	ctx := context.Background()
	// The cost policy waits for the batch: the four join together.
	pl := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "policy": "cost", "max_batch": 4, "max_wait_ms": 300}}
	system := "Once upon a time, there was a little girl named Lily. She lived in a small house with her mom and dad and her dog. Every day she went to the park"
	prompts := []string{system + " with her friend", system + " and played on the swings", system + " to see the ducks", "The cat sat on the mat"}
	e := newTestEngine(t, 1, PowerOptions{})
	res := make([]*GenerateResult, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.Generate(ctx, GenerateRequest{Model: path, Prompt: p, MaxTokens: 12, Plan: pl, LogitsDigest: true}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			res[i] = r
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	shared := 0
	for i, r := range res[:3] {
		if r.Metrics.PromptCachedTokens > 0 {
			shared++
			if r.Metrics.PromptCachedTokens < MinSharedPrefix {
				t.Errorf("prompt %d: %d tokens shared, under the minimum %d", i, r.Metrics.PromptCachedTokens, MinSharedPrefix)
			}
		}
	}
	if shared != 2 || res[3].Metrics.PromptCachedTokens != 0 {
		t.Fatalf("%d of the 3 system-prompt runs took the shared prefix (want 2: all but the leader); the other run %d",
			shared, res[3].Metrics.PromptCachedTokens)
	}
	fresh := newTestEngine(t, 1, PowerOptions{})
	for i, p := range prompts {
		f, err := fresh.Generate(ctx, GenerateRequest{Model: path, Prompt: p, MaxTokens: 12, Plan: map[string]any{"threads": 1}, LogitsDigest: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(f.Tokens, res[i].Tokens) || !slices.Equal(f.LogitsDigests, res[i].LogitsDigests) {
			t.Fatalf("prompt %d: the run that shared a prefix differs from a fresh solo run", i)
		}
	}
}
