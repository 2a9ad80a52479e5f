package sched

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSeq decodes n tokens; each step takes stepDur.
type fakeSeq struct {
	ctx      context.Context
	n        int
	got      int
	finished chan error
}

func (f *fakeSeq) Context() context.Context { return f.ctx }

type fakeExec struct {
	mu        sync.Mutex
	stepDur   time.Duration
	batches   []int
	prefills  []int // sequences per Prefill call
	maxActive int
	live      atomic.Int32 // prefilled and not finished (KV held)
	joules    float64
	perStep   func(n int) float64 // joules per step of n sequences
}

func (e *fakeExec) Prefill(seqs []Seq, done []bool, _ []error) {
	e.mu.Lock()
	e.prefills = append(e.prefills, len(seqs))
	e.mu.Unlock()
	for i, s := range seqs {
		e.live.Add(1)
		f := s.(*fakeSeq)
		f.got = 1
		done[i] = f.got >= f.n
	}
}

func (e *fakeExec) Step(seqs []Seq, done []bool) error {
	time.Sleep(e.stepDur)
	e.mu.Lock()
	e.batches = append(e.batches, len(seqs))
	e.maxActive = max(e.maxActive, len(seqs))
	if e.perStep != nil {
		e.joules += e.perStep(len(seqs))
	}
	e.mu.Unlock()
	for i, s := range seqs {
		f := s.(*fakeSeq)
		f.got++
		done[i] = f.got >= f.n
	}
	return nil
}

func (e *fakeExec) Finish(s Seq, err error) {
	f := s.(*fakeSeq)
	if f.got > 0 {
		e.live.Add(-1)
	}
	f.finished <- err
}

func newSeq(ctx context.Context, n int) *fakeSeq {
	return &fakeSeq{ctx: ctx, n: n, finished: make(chan error, 1)}
}

func wait(t *testing.T, f *fakeSeq) error {
	t.Helper()
	select {
	case err := <-f.finished:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("sequence never finished")
		return nil
	}
}

func TestSimpleRunsOneAtATime(t *testing.T) {
	ex := &fakeExec{stepDur: time.Millisecond}
	s, err := New(Config{Mode: ModeSimple, Policy: PolicyLatency, MaxBatch: 1, MaxQueue: 16}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var seqs []*fakeSeq
	for i := 0; i < 5; i++ {
		f := newSeq(context.Background(), 4)
		if err := s.Submit(f); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, f)
	}
	for _, f := range seqs {
		if err := wait(t, f); err != nil || f.got != 4 {
			t.Fatalf("err %v got %d", err, f.got)
		}
	}
	if ex.maxActive != 1 {
		t.Fatalf("simple mode ran %d sequences together", ex.maxActive)
	}
	st := s.Stats()
	if st.Completed != 5 || st.Steps != 15 || st.StepsBySize[1] != 15 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCostWaitsToFillBatch(t *testing.T) {
	ex := &fakeExec{stepDur: time.Millisecond}
	s, err := New(Config{Mode: ModeBatching, Policy: PolicyCost, MaxBatch: 4, MaxQueue: 16, MaxWait: 5 * time.Second}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var seqs []*fakeSeq
	for i := 0; i < 4; i++ {
		f := newSeq(context.Background(), 3)
		seqs = append(seqs, f)
		if err := s.Submit(f); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // arrivals spread out: cost still waits
	}
	for _, f := range seqs {
		if err := wait(t, f); err != nil {
			t.Fatal(err)
		}
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	for _, b := range ex.batches {
		if b != 4 {
			t.Fatalf("cost policy ran batches %v, want all of 4", ex.batches)
		}
	}
	if len(ex.prefills) != 1 || ex.prefills[0] != 4 {
		t.Fatalf("prefills of %v sequences, want the four prompts in one call", ex.prefills)
	}
}

// TestPrefillErrorsAndEarlyFinish: a joiner that fails its prefill or
// finishes on its first token is finished with that outcome; the others
// of the same prefill decode on.
func TestPrefillErrorsAndEarlyFinish(t *testing.T) {
	ex := &failingPrefill{fakeExec: fakeExec{}}
	s, err := New(Config{Mode: ModeBatching, Policy: PolicyCost, MaxBatch: 3, MaxQueue: 16, MaxWait: 5 * time.Second}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad, one, ok := newSeq(context.Background(), 5), newSeq(context.Background(), 1), newSeq(context.Background(), 4)
	ex.bad = bad
	for _, f := range []*fakeSeq{bad, one, ok} {
		if err := s.Submit(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait(t, bad); err == nil || err.Error() != "prompt too long" {
		t.Fatalf("failed prefill finished with %v", err)
	}
	if err := wait(t, one); err != nil || one.got != 1 {
		t.Fatalf("one-token sequence: %v after %d tokens", err, one.got)
	}
	if err := wait(t, ok); err != nil || ok.got != 4 {
		t.Fatalf("healthy sequence: %v after %d tokens", err, ok.got)
	}
	st := s.Stats()
	if st.Failed != 1 || st.Completed != 2 || st.StepsBySize[1] != 3 || len(st.StepsBySize) != 1 {
		t.Fatalf("stats %+v: want 1 failed, 2 completed, 3 decode steps of 1", st)
	}
}

type failingPrefill struct {
	fakeExec
	bad *fakeSeq
}

func (e *failingPrefill) Prefill(seqs []Seq, done []bool, errs []error) {
	e.fakeExec.Prefill(seqs, done, errs)
	for i, s := range seqs {
		if s == Seq(e.bad) {
			errs[i] = errors.New("prompt too long")
		}
	}
}

func TestCostMaxWaitRunsPartialBatch(t *testing.T) {
	ex := &fakeExec{}
	s, err := New(Config{Mode: ModeBatching, Policy: PolicyCost, MaxBatch: 8, MaxQueue: 16, MaxWait: 50 * time.Millisecond}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := newSeq(context.Background(), 2)
	start := time.Now()
	s.Submit(f)
	if err := wait(t, f); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 3*time.Second {
		t.Fatalf("a lone request ran after %v, want ≈ max_wait 50ms", d)
	}
}

func TestContinuousBatchingJoinsAndLeaves(t *testing.T) {
	ex := &fakeExec{stepDur: 2 * time.Millisecond}
	s, err := New(Config{Mode: ModeBatching, Policy: PolicyLatency, MaxBatch: 3, MaxQueue: 16}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	long := newSeq(context.Background(), 40)
	s.Submit(long)
	time.Sleep(10 * time.Millisecond)
	var short []*fakeSeq
	for i := 0; i < 5; i++ {
		f := newSeq(context.Background(), 3)
		short = append(short, f)
		s.Submit(f)
	}
	for _, f := range short {
		if err := wait(t, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait(t, long); err != nil {
		t.Fatal(err)
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.maxActive != 3 {
		t.Fatalf("max batch %d, want 3 (batches %v)", ex.maxActive, ex.batches)
	}
	if ex.batches[0] != 1 {
		t.Fatalf("the first step should have run the long sequence alone: %v", ex.batches)
	}
}

func TestQueueFullNothingHalfDone(t *testing.T) {
	ex := &fakeExec{stepDur: 5 * time.Millisecond}
	s, err := New(Config{Mode: ModeSimple, Policy: PolicyLatency, MaxBatch: 1, MaxQueue: 2}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	running := newSeq(context.Background(), 1000)
	s.Submit(running)
	for s.Stats().Active != 1 {
		time.Sleep(time.Millisecond)
	}
	a, b, c := newSeq(context.Background(), 1), newSeq(context.Background(), 1), newSeq(context.Background(), 1)
	if s.Submit(a) != nil || s.Submit(b) != nil {
		t.Fatal("queue of 2 refused")
	}
	err = s.Submit(c)
	var qf *QueueFullError
	if !errors.As(err, &qf) || !errors.Is(err, ErrQueueFull) || qf.RetryAfter <= 0 || qf.MaxQueue != 2 {
		t.Fatalf("third submit: %v", err)
	}
	if c.got != 0 || len(c.finished) != 0 {
		t.Fatal("a refused sequence was touched")
	}
	if st := s.Stats(); st.Rejected != 1 || st.Queued != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCancelQueuedAndRunning(t *testing.T) {
	ex := &fakeExec{stepDur: time.Millisecond}
	s, err := New(Config{Mode: ModeBatching, Policy: PolicyLatency, MaxBatch: 2, MaxQueue: 8}, ex)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx1, cancel1 := context.WithCancelCause(context.Background())
	ctx2, cancel2 := context.WithCancelCause(context.Background())
	ctx3, cancel3 := context.WithCancelCause(context.Background())
	r1, r2, q := newSeq(ctx1, 1<<30), newSeq(ctx2, 1<<30), newSeq(ctx3, 5)
	s.Submit(r1)
	s.Submit(r2)
	for s.Stats().Active != 2 {
		time.Sleep(time.Millisecond)
	}
	s.Submit(q) // waits: the batch is full
	why := errors.New("run.cancel")
	cancel3(why)
	if err := wait(t, q); !errors.Is(err, why) {
		t.Fatalf("queued: %v", err)
	}
	cancel1(why)
	if err := wait(t, r1); !errors.Is(err, why) {
		t.Fatalf("running: %v", err)
	}
	if ex.live.Load() != 1 {
		t.Fatalf("%d sequences hold a KV cache, want 1", ex.live.Load())
	}
	cancel2(context.Canceled)
	if err := wait(t, r2); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if ex.live.Load() != 0 {
		t.Fatal("KV not freed")
	}
	if st := s.Stats(); st.Cancelled != 3 || st.Active != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseFinishesEverything(t *testing.T) {
	ex := &fakeExec{stepDur: time.Millisecond}
	s, err := New(Config{Mode: ModeSimple, Policy: PolicyLatency, MaxBatch: 1, MaxQueue: 8}, ex)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newSeq(context.Background(), 1<<30), newSeq(context.Background(), 3)
	s.Submit(a)
	s.Submit(b)
	for s.Stats().Active != 1 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	if err := wait(t, a); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if err := wait(t, b); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if s.Submit(newSeq(context.Background(), 1)) != ErrClosed {
		t.Fatal("submit after close accepted")
	}
}

func TestDrainFinishesThenStops(t *testing.T) {
	ex := &fakeExec{}
	s, _ := New(Config{Mode: ModeSimple, Policy: PolicyLatency, MaxBatch: 1, MaxQueue: 8}, ex)
	a := newSeq(context.Background(), 50)
	s.Submit(a)
	s.Drain()
	if s.Submit(newSeq(context.Background(), 1)) != ErrClosed {
		t.Fatal("submit while draining accepted")
	}
	if err := wait(t, a); err != nil || a.got != 50 {
		t.Fatalf("drain cut a run short: %v %d", err, a.got)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("drained scheduler did not stop")
	}
}

// The energy policy moves to the batch size with the best measured tokens
// per joule: here 2 sequences cost as much as 1 per step, 3 and 4 cost 4×.
func TestEnergyPicksBestTokensPerJoule(t *testing.T) {
	ex := &fakeExec{perStep: func(n int) float64 {
		if n <= 2 {
			return 1
		}
		return 4
	}}
	s, _ := New(Config{Mode: ModeBatching, Policy: PolicyEnergy, MaxBatch: 4, MaxQueue: 64, EnergyMinSteps: 4,
		Energy: func() (float64, bool) { ex.mu.Lock(); defer ex.mu.Unlock(); return ex.joules, true }}, ex)
	defer s.Close()
	if st := s.Stats(); st.EnergyTarget != 4 {
		t.Fatalf("before any measurement the target is max_batch: %+v", st)
	}
	// Natural load: batches of 4 (4 tok/J) then of 2 (2 tok/J per step).
	run := func(n, tokens int) {
		var seqs []*fakeSeq
		for i := 0; i < n; i++ {
			f := newSeq(context.Background(), tokens)
			seqs = append(seqs, f)
		}
		for _, f := range seqs {
			s.Submit(f)
		}
		for _, f := range seqs {
			wait(t, f)
		}
	}
	run(4, 10)
	run(2, 10)
	st := s.Stats()
	if st.EnergyTarget != 2 {
		t.Fatalf("energy target %d, want 2 (stats %+v)", st.EnergyTarget, st)
	}
	ex.mu.Lock()
	ex.batches = nil
	ex.mu.Unlock()
	run(4, 6)
	ex.mu.Lock()
	defer ex.mu.Unlock()
	for _, b := range ex.batches {
		if b > 2 {
			t.Fatalf("energy policy ran a batch of %d after measuring that 2 is best: %v", b, ex.batches)
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Mode: ModeSimple, Policy: PolicyLatency, MaxBatch: 2, MaxQueue: 1},
		{Mode: "x", Policy: PolicyLatency, MaxBatch: 1, MaxQueue: 1},
		{Mode: ModeBatching, Policy: "y", MaxBatch: 1, MaxQueue: 1},
		{Mode: ModeBatching, Policy: PolicyCost, MaxBatch: 1, MaxQueue: 0},
	} {
		if _, err := New(c, &fakeExec{}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
