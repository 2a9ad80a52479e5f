package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/client"
)

// TestQueueFullCancelDisconnect32: 32 clients at once on a plan with
// max_batch 4 and max_queue 8. Those beyond the queue get -32013 with a
// retry hint and leave nothing behind (no run, no record); two running and
// two queued runs are cancelled with run.cancel, three streaming clients
// hang up; every accepted run ends with a record saying how it ended, and
// no KV cache is left allocated.
func TestQueueFullCancelDisconnect32(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	admin := dial(t, r.srv.Path)
	model := load(t, admin, "synth-256-Q4_K_M.gguf", nil)
	const clients, maxTokens = 32, 200
	plan := map[string]any{"threads": 2, "scheduler": map[string]any{"mode": "batching", "max_batch": 4, "max_queue": 8}}
	// The lane exists and idles before the burst (its creation on the first
	// request would let the queue fill before anything runs).
	warm, err := admin.Generate(ctxT(t, time.Minute), engine.GenerateRequest{Model: model, Prompt: "warm", MaxTokens: 1, Plan: plan}, nil)
	if err != nil {
		t.Fatal(err)
	}

	type outcome struct {
		res   *engine.GenerateResult
		err   error
		runID string
	}
	var mu sync.Mutex
	outs := make([]outcome, clients)
	conns := make([]*client.Client, clients)
	firstTok := make([]chan string, clients)
	var wg sync.WaitGroup
	for i := range clients {
		conns[i] = dial(t, r.srv.Path)
		firstTok[i] = make(chan string, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := false
			res, err := conns[i].Generate(ctxT(t, 2*time.Minute), engine.GenerateRequest{Model: model, Prompt: fmt.Sprintf("Story %d: once upon a time", i), MaxTokens: maxTokens, Plan: plan},
				func(ev engine.TokenEvent) {
					if !sent {
						sent = true
						firstTok[i] <- ev.RunID
					}
				})
			mu.Lock()
			outs[i] = outcome{res: res, err: err}
			mu.Unlock()
		}()
	}

	// Wait until every request is either refused or accepted.
	rejected := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range outs {
			if re := rpcErr(o.err); re != nil && re.Code == engine.CodeBusy {
				n++
			}
		}
		return n
	}
	finished := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range outs {
			if o.res != nil {
				n++
			}
		}
		return n
	}
	var st *engine.SchedStats
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Outcomes first, then the stats: a run that replies in between
		// is counted in neither (never twice), and the loop goes on.
		ref, fin := rejected(), finished()
		var err error
		st, err = admin.SchedStats(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if ref+fin+st.RunsInProgress == clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests neither refused nor accepted: %d refused, %d finished, %d in progress", ref, fin, st.RunsInProgress)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The queue (8) fills, usually while the first sequences compute (the
	// lane admits between steps, so all 32 may arrive before it admits
	// one: then exactly the queue is accepted; on a slow host the first
	// runs may end while the burst still arrives, and more are accepted);
	// the rest are refused at once.
	accepted := clients - rejected()
	if rejected() == 0 || accepted < 8 {
		t.Fatalf("%d accepted, %d refused: want at least the queue (8) accepted and the rest refused", accepted, rejected())
	}
	for deadline := time.Now().Add(30 * time.Second); st.ActiveSequences == 0 || st.KVBytes == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no KV cache while runs are running: %+v", st)
		}
		time.Sleep(time.Millisecond)
		var err error
		if st, err = admin.SchedStats(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}

	// Once a batch of 4 runs (queued ones join at step boundaries), cancel
	// two running and two queued runs.
	var running, queued []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		list, err := admin.ListRuns(ctxT(t, 10*time.Second), engine.RunListRequest{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		running, queued = nil, nil
		for _, s := range list.Runs {
			switch s.Status {
			case engine.RunRunning:
				running = append(running, s.RunID)
			case engine.RunQueued:
				queued = append(queued, s.RunID)
			}
		}
		if len(running) == 4 && len(queued) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d running, %d queued", len(running), len(queued))
		}
		time.Sleep(time.Millisecond)
	}
	cancelled := map[string]bool{}
	for _, id := range append(running[:2:2], queued[:2]...) {
		res, err := admin.CancelRun(ctxT(t, 10*time.Second), id)
		if err != nil || !res.Cancelled {
			t.Fatalf("cancel %s: %+v %v", id, res, err)
		}
		cancelled[id] = true
	}
	// Three streaming clients whose runs are running (not cancelled) hang up.
	// Only two runs are still running right after the cancels; queued runs
	// join at the next step boundaries, so poll until a third streams.
	hungUp := map[string]bool{}
	polled := make([]bool, clients)
	for deadline := time.Now().Add(30 * time.Second); len(hungUp) < 3 && time.Now().Before(deadline); {
		for i := 0; i < clients && len(hungUp) < 3; i++ {
			if polled[i] {
				continue
			}
			select {
			case id := <-firstTok[i]:
				polled[i] = true
				if !cancelled[id] {
					conns[i].Close()
					hungUp[id] = true
				}
			default:
			}
		}
		time.Sleep(time.Millisecond)
	}
	if len(hungUp) < 3 {
		t.Fatalf("only %d clients were streaming", len(hungUp))
	}
	wg.Wait()

	// Everything ends; nothing holds a KV cache.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var err error
		st, err = admin.SchedStats(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if st.RunsInProgress == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runs still in progress: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.ActiveSequences != 0 || st.KVBytes != 0 {
		t.Fatalf("KV cache not freed: %+v", st)
	}
	for _, o := range outs {
		if re := rpcErr(o.err); re != nil && re.Code == engine.CodeBusy {
			var d engine.BusyData
			if json.Unmarshal(re.Data, &d) != nil || d.RetryAfterMS <= 0 || d.MaxQueue != 8 {
				t.Fatalf("busy error without a retry hint: %+v %s", re, re.Data)
			}
		} else if o.err != nil && !hungUpErr(o.err) {
			t.Fatalf("unexpected error: %v", o.err)
		}
	}

	// One record per accepted run (and the warm-up's), none for the
	// refused ones.
	recs, err := admin.ListRuns(ctxT(t, 10*time.Second), engine.RunListRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs.Runs) != accepted+1 {
		t.Fatalf("%d run records for %d accepted runs and the warm-up (refused runs must leave none)", len(recs.Runs), accepted)
	}
	counts := map[string]int{}
	for _, s := range recs.Runs {
		if s.RunID == warm.RunID {
			continue
		}
		rec, err := admin.GetRun(ctxT(t, 10*time.Second), s.RunID)
		if err != nil {
			t.Fatal(err)
		}
		counts[rec.FinishReason]++
		switch {
		case cancelled[s.RunID] || hungUp[s.RunID]:
			if rec.FinishReason != "cancelled" || len(rec.Tokens) >= maxTokens {
				t.Errorf("%s: cancelled run ended %q with %d tokens", s.RunID, rec.FinishReason, len(rec.Tokens))
			}
		default:
			if rec.FinishReason != "length" || len(rec.Tokens) != maxTokens {
				t.Errorf("%s: ended %q with %d tokens", s.RunID, rec.FinishReason, len(rec.Tokens))
			}
		}
		if rec.PlanHash == "" || rec.Resolved == nil || rec.Resolved.Hash != rec.PlanHash || *rec.Resolved.Plan.Scheduler.MaxQueue != 8 {
			t.Fatalf("%s: record without its resolved plan", s.RunID)
		}
	}
	t.Logf("32 clients: %d refused (-32013 with retry hint), %d accepted: %v; max batch %d", clients-accepted, accepted, counts, maxActive(st))
}

func hungUpErr(err error) bool { return errors.Is(err, client.ErrClosed) }

func maxActive(st *engine.SchedStats) int {
	m := 0
	for _, l := range st.Lanes {
		m = max(m, l.MaxActive)
	}
	return m
}

// TestUnloadAndShutdownWithRuns: unloading a model lets its running and
// queued runs finish; stopping the engine cancels the runs in progress,
// which still reply "cancelled" and leave their records.
func TestUnloadAndShutdownWithRuns(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	admin := dial(t, r.srv.Path)
	model := load(t, admin, "synth-256-Q4_K_M.gguf", nil)
	ctx := ctxT(t, time.Minute)
	type out struct {
		res *engine.GenerateResult
		err error
	}
	startRun := func(n int) (chan out, chan struct{}) {
		ch, first := make(chan out, 1), make(chan struct{})
		c := dial(t, r.srv.Path)
		go func() {
			once := false
			res, err := c.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "Once upon a time", MaxTokens: n}, func(engine.TokenEvent) {
				if !once {
					once = true
					close(first)
				}
			})
			ch <- out{res, err}
		}()
		return ch, first
	}
	a, first := startRun(150)
	b, _ := startRun(20) // queued behind a (simple mode)
	<-first
	if err := admin.UnloadModel(ctx, model); err != nil {
		t.Fatal(err)
	}
	if ra := <-a; ra.err != nil || ra.res.FinishReason != "length" || len(ra.res.Tokens) != 150 {
		t.Fatalf("running run after unload: %+v", ra)
	}
	if rb := <-b; rb.err != nil || rb.res.FinishReason != "length" {
		t.Fatalf("queued run after unload: %+v", rb)
	}
	if _, err := admin.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "x", MaxTokens: 1}, nil); rpcErr(err) == nil || rpcErr(err).Code != engine.CodeModelNotFound {
		t.Fatalf("generate on an unloaded model: %v", err)
	}

	model = load(t, admin, "synth-256-Q4_K_M.gguf", nil)
	c, first := startRun(250)
	<-first
	go r.srv.Stop()
	rc := <-c
	if rc.err != nil || rc.res.FinishReason != "cancelled" || len(rc.res.Tokens) >= 250 {
		t.Fatalf("run at shutdown: %+v", rc)
	}
	if err := r.eng.Close(); err != nil {
		t.Fatal(err)
	}
	rec, err := r.eng.GetRun(context.Background(), engine.RunIDRequest{RunID: rc.res.RunID})
	if err != nil || rec.FinishReason != "cancelled" {
		t.Fatalf("record of the cancelled run: %+v %v", rec, err)
	}
}
