package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weos/llm-engine/engine/model"
	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/engine/sample"
	"github.com/weos/llm-engine/engine/sched"
	"github.com/weos/llm-engine/engine/tokenizer"
	"github.com/weos/llm-engine/kernels"
)

// Execution. A lane is one scheduler (engine/sched) for one loaded model
// under one set of run-time decisions (threads and scheduler settings of
// the resolved plan): requests whose plans agree on those share a lane and
// can be batched together. The lane is the scheduler's Executor: it runs a
// joining sequence's prompt (Prefill), advances the running sequences by
// one token in one batched forward pass (Step) and ends sequences (Finish:
// the KV cache is dropped there). Forward passes of all lanes are
// serialised by Engine.compute: a plan's threads are the workers of its
// pass, never shared with another pass.

type laneKey struct {
	model                         *loaded
	threads                       int
	mode, policy                  string
	maxBatch, maxQueue, maxWaitMS int
}

type lane struct {
	e    *Engine
	key  laneKey
	m    *loaded
	pool *kernels.Pool
	s    *sched.Scheduler

	// step scratch, used by the scheduler's goroutine only
	batch   *model.Batch
	logits  []float32
	states  []*model.State
	toks    []int32
	joining []*seqRun
	spans   []model.Span
	owners  []*seqRun

	idle idleStates
}

// idleStates are the KV states of a lane's finished sequences, kept for its
// next ones. Allocating a state means zeroing its whole cache (23 MB for a
// TinyLlama-1.1B shape and 512 tokens; ~0.09 ms for synth-256's 1 MB in a
// warm loop, model.BenchmarkNewState, more with fresh pages) on
// the lane's thread while the batch's other sequences wait, and it left the
// garbage collector a cache per request to reclaim, its background marking
// competing with the compute threads. A reused state holds the previous
// sequence's keys and values past its new position; attention reads only
// positions before the current one (model.TestStateReuse poisons them with
// NaNs). At most max_batch states are kept, never more than the lane held
// in use at its peak, and none longer than idleStateTTL unused: a burst of
// long requests does not pin its caches' memory for the lane's lifetime.
type idleStates struct {
	mu    sync.Mutex
	s     []*model.State
	toks  [][]int32   // the tokens each of s caches (positions 0..Pos-1), nil if unknown
	since []time.Time // when each of s was put back
	max   int
	bytes int64
	ttl   time.Duration // 0: idleStateTTL
	sweep *time.Timer   // pending while states are idle
}

// idleStateTTL is how long an idle state is kept without being reused.
const idleStateTTL = 30 * time.Second

func (p *idleStates) drop(i int) {
	p.bytes -= p.s[i].KVBytes()
	p.s = slices.Delete(p.s, i, i+1)
	p.toks = slices.Delete(p.toks, i, i+1)
	p.since = slices.Delete(p.since, i, i+1)
}

func (p *idleStates) lifetime() time.Duration {
	if p.ttl > 0 {
		return p.ttl
	}
	return idleStateTTL
}

// expire drops the states idle for a lifetime and re-arms the sweep for
// the others (called by the sweep timer).
func (p *idleStates) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweep = nil
	now := time.Now()
	for i := len(p.s) - 1; i >= 0; i-- {
		if now.Sub(p.since[i]) >= p.lifetime() {
			p.drop(i)
		}
	}
	p.arm(now)
}

// arm schedules the next sweep for the oldest idle state (mu held).
func (p *idleStates) arm(now time.Time) {
	if p.sweep != nil || len(p.s) == 0 {
		return
	}
	oldest := slices.MinFunc(p.since, func(a, b time.Time) int { return a.Compare(b) })
	p.sweep = time.AfterFunc(max(oldest.Add(p.lifetime()).Sub(now), time.Millisecond), p.expire)
}

// close drops every idle state (the lane is gone).
func (p *idleStates) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	for len(p.s) > 0 {
		p.drop(len(p.s) - 1)
	}
}

// get returns an idle state with a cache of type kv that holds ctxLen
// tokens and rotates as a state made for ctxLen would (model.RopeSame), or
// nil: the one caching the longest prefix of prompt (then the
// smallest), truncated to that prefix, and how many of prompt's tokens it
// holds (at most len(prompt)-1: the last prompt token must run for its
// logits). A sequence that continues from cached positions computes
// exactly what it would from scratch, as a prompt cut across forward
// passes does (model.TestStepMixedSpans): prefix reuse changes no logit,
// only the prompt's time (TestPrefixReuse).
func (p *idleStates) get(m *model.Model, ctxLen int, kv kernels.Type, prompt []int32) (*model.State, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	best, bestN := -1, 0
	for i, s := range p.s {
		if s.KVType() != kv || s.Ctx() < ctxLen || !m.RopeSame(s.Ctx(), ctxLen) {
			continue
		}
		n := max(0, min(commonPrefix(p.toks[i], prompt), len(prompt)-1))
		if best < 0 || n > bestN || n == bestN && s.Ctx() < p.s[best].Ctx() {
			best, bestN = i, n
		}
	}
	if best < 0 {
		return nil, 0
	}
	s := p.s[best]
	p.drop(best)
	if err := s.Truncate(bestN); err != nil {
		s.Reset()
		bestN = 0
	}
	return s, bestN
}

func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// put keeps s, which caches the tokens toks (nil: unknown, the cache is
// not reused), for a later sequence; over the limit, the smallest idle
// state (the least likely to fit a request) is dropped.
func (p *idleStates) put(s *model.State, toks []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.s = append(p.s, s)
	p.toks = append(p.toks, toks)
	p.since = append(p.since, now)
	p.bytes += s.KVBytes()
	if len(p.s) > p.max {
		small := 0
		for i, t := range p.s {
			if t.Ctx() < p.s[small].Ctx() {
				small = i
			}
		}
		p.drop(small)
	}
	p.arm(now)
}

func (p *idleStates) stats() (int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.s), p.bytes
}

// workerTIDs are the OS thread ids of every worker pool: the engine's (model
// loading) and each lane's (the power cap and energy attribution cover them
// all).
func (e *Engine) workerTIDs() []int {
	tids := e.pool.TIDs()
	e.poolsMu.Lock()
	defer e.poolsMu.Unlock()
	for _, p := range e.lanePools {
		tids = append(tids, p.TIDs()...)
	}
	return tids
}

// laneThread runs a lane's scheduler loop (sched.Config.Thread) on an OS
// thread that is worker 0 of the lane's compute pool (kernels.NewPoolHere):
// the scheduler's decisions and the forward passes run on the same thread,
// with no hand-off per step, and a plan's threads are exactly the threads
// that compute. The thread is never unlocked: it exits with the goroutine
// (it may have been in a power-capping cgroup).
func (e *Engine) laneThread(l *lane, ready chan<- error) func(loop func()) {
	return func(loop func()) {
		runtime.LockOSThread()
		p, err := kernels.NewPoolHere(l.key.threads, kernels.PoolOptions{})
		if err == nil {
			l.pool = p
			e.poolsMu.Lock()
			e.lanePools[l] = p
			e.poolsMu.Unlock()
		}
		ready <- err
		loop()
		if p == nil {
			return
		}
		e.poolsMu.Lock()
		delete(e.lanePools, l)
		e.poolsMu.Unlock()
		e.energy.resyncThreads() // out of the capped group while they live
		p.Close()
	}
}

func (e *Engine) laneFor(m *loaded, r *plan.Resolved) (*lane, error) {
	s := r.Plan.Scheduler
	key := laneKey{model: m, threads: *r.Plan.Threads, mode: *s.Mode, policy: *s.Policy,
		maxBatch: *s.MaxBatch, maxQueue: *s.MaxQueue, maxWaitMS: *s.MaxWaitMS}
	e.lanesMu.Lock()
	defer e.lanesMu.Unlock()
	if l, ok := e.lanes[key]; ok {
		return l, nil
	}
	if e.closing.Load() {
		return nil, errorf(CodeInternal, "engine shutting down")
	}
	e.mu.Lock()
	unloaded := m.unloaded
	e.mu.Unlock()
	if unloaded { // UnloadModel removes the lanes after marking the model
		return nil, errorf(CodeModelNotFound, "model %s was unloaded", m.info.ModelID)
	}
	V := m.model.Config.Vocab
	l := &lane{e: e, key: key, m: m, batch: m.model.NewBatch(max(key.maxBatch, PrefillStep)), logits: make([]float32, key.maxBatch*V)}
	l.idle.max = key.maxBatch
	ready := make(chan error, 1)
	cfg := sched.Config{Mode: key.mode, Policy: key.policy, MaxBatch: key.maxBatch, MaxQueue: key.maxQueue,
		MaxWait: time.Duration(key.maxWaitMS) * time.Millisecond, Thread: e.laneThread(l, ready)}
	if key.policy == sched.PolicyEnergy {
		cfg.Energy = e.readJoules
	}
	var err error
	if l.s, err = sched.New(cfg, l); err != nil {
		return nil, errorf(CodePlanInvalid, "scheduler: %v", err)
	}
	if err := <-ready; err != nil {
		l.s.Close()
		return nil, errorf(CodeInternal, "worker pool of %d threads: %v", key.threads, err)
	}
	e.lanes[key] = l
	return l, nil
}

// seqRun is one run: a request, its resolved plan, and its sequence.
type seqRun struct {
	e       *Engine
	id      string
	ctx     context.Context
	cancel  context.CancelCauseFunc
	actor   Actor
	lane    *lane
	m       *loaded
	res     *plan.Resolved
	use     PlanUse
	req     GenerateRequest
	benchID string

	prompt    []int32
	stop      map[int32]bool // stop tokens beyond the vocabulary's EOG set (chat: end-of-turn)
	maxTokens int
	ctxLen    int
	sampling  Sampling
	smp       *sample.Sampler
	onToken   func(TokenEvent)
	queuedAt  time.Time

	// used by the lane's goroutine only
	state  *model.State
	fed    int // prompt tokens run (prefill)
	cached int // prompt tokens taken from a reused cache
	// leader: a sequence joining at the same boundary whose prompt shares
	// this one's first share tokens; this one waits for it to pass them,
	// then copies them (prefill).
	leader     *seqRun
	share      int
	slot       int // index in the Prefill call
	kvBytes    int64
	logits     []float32
	dec        *tokenizer.StreamDecoder
	text       strings.Builder
	stepTimes  []float64
	er         *runEnergy
	startedAt  time.Time
	promptDone time.Time
	firstTok   time.Time
	last       time.Time

	mu       sync.Mutex // what run.get may read while the run goes on
	status   string
	tokens   []int32
	digests  []string
	logprobs [][]TokenLogprob
	finish   string
	err      error
	result   *GenerateResult
	ended    time.Time

	done chan struct{}
}

// Context implements sched.Seq.
func (sr *seqRun) Context() context.Context { return sr.ctx }

// snapshot is the run's record as it stands.
func (sr *seqRun) snapshot() RunRecord {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	rec := RunRecord{
		RunID: sr.id, Status: sr.status, Actor: sr.actor, BenchID: sr.benchID, Request: sr.req,
		ModelID: sr.m.info.ModelID, ModelPath: sr.m.key.path, Plan: sr.use, PlanHash: sr.use.Hash, Resolved: sr.res,
		PromptTokens: sr.prompt, Tokens: append([]int32{}, sr.tokens...), FinishReason: sr.finish,
		Sampling: sr.sampling, MaxTokens: sr.maxTokens, QueuedAt: sr.queuedAt, EngineVersion: Version,
		LogitsDigests: append([]string(nil), sr.digests...),
	}
	if sr.status != RunQueued {
		rec.StartedAt = sr.startedAt
	}
	if sr.err != nil {
		rec.Error = sr.err.Error()
	}
	if r := sr.result; r != nil {
		rec.Text, rec.Metrics, rec.FinishedAt = r.Text, r.Metrics, sr.ended
	}
	return rec
}

// PrefillStep is the most prompt tokens one prefill forward pass of a lane
// runs (at least max_batch): the prompts of sequences joining together
// share passes of up to this many tokens, a longer prompt continues in the
// next pass. It bounds the lane's step buffers (about 127 KB per token for
// a TinyLlama-1.1B shape).
const PrefillStep = 128

// Prefill implements sched.Executor: the joining sequences' prompts side by
// side in forward passes of at most the lane's step size (model.Batch.Step,
// on the plan's threads), each sequence's first token sampled as soon as
// the pass holding the end of its prompt is done.
func (l *lane) Prefill(seqs []sched.Seq, done []bool, errs []error) {
	e := l.e
	runs := l.joining[:0]
	for i, s := range seqs {
		sr := s.(*seqRun)
		lim := sr.res.Plan.Limits
		if err := e.applyPowerLimit(*lim.MaxWatts, *lim.Enforcement); err != nil {
			errs[i] = err
			continue
		}
		// The state's own step buffers hold one token: prompts run in
		// the lane's batch.
		kv := kvType(sr.res)
		cached := 0
		var prefix []int32 // nil: no prefix reuse (the plan's kv_cache.reuse_prefix)
		if *sr.res.Plan.KVCache.ReusePrefix {
			prefix = sr.prompt
		}
		if sr.state, cached = l.idle.get(l.m.model, sr.ctxLen, kv, prefix); sr.state == nil {
			sr.state = l.m.model.NewStateKV(l.m.model.Capacity(sr.ctxLen, StateQuantum), 1, kv)
		}
		sr.kvBytes = sr.state.KVBytes()
		e.kvBytes.Add(sr.kvBytes)
		e.activeSeqs.Add(1)
		sr.logits = make([]float32, l.m.model.Config.Vocab)
		sr.dec = l.m.tok.NewStreamDecoder()
		sr.fed, sr.cached, sr.slot = cached, cached, i
		sr.mu.Lock()
		sr.status = RunRunning
		sr.startedAt = time.Now()
		sr.mu.Unlock()
		e.publish(TopicRun, EventRunStarted, RunEvent{RunID: sr.id, ModelID: l.m.info.ModelID, Plan: sr.use, Actor: sr.actor, BenchID: sr.benchID, Time: sr.startedAt.UTC()})
		runs = append(runs, sr)
	}
	if len(runs) == 0 {
		return
	}
	e.compute.Lock()
	for _, sr := range runs {
		sr.er = e.energy.startRun()
	}
	e.compute.Unlock()
	l.shareJoining(runs)
	V := l.m.model.Config.Vocab
	for pending := runs; len(pending) > 0; {
		// A run cancelled between passes of its prompt stops here.
		keep := pending[:0]
		for _, sr := range pending {
			if sr.ctx.Err() != nil {
				errs[sr.slot] = context.Cause(sr.ctx)
			} else {
				keep = append(keep, sr)
			}
		}
		if pending = keep; len(pending) == 0 {
			break
		}
		l.takeShares(pending)
		// The next pass: the pending prompts in order, each as much as
		// the pass has room for.
		l.spans, l.owners = l.spans[:0], l.owners[:0]
		left := l.batch.Max()
		for _, sr := range pending {
			if left == 0 {
				break
			}
			if sr.leader != nil {
				continue // waits for its leader's pass over their shared prefix
			}
			k := min(left, len(sr.prompt)-sr.fed)
			l.spans = append(l.spans, model.Span{State: sr.state, Tokens: sr.prompt[sr.fed : sr.fed+k], Logits: sr.fed+k == len(sr.prompt)})
			l.owners = append(l.owners, sr)
			left -= k
		}
		e.compute.Lock()
		err := l.batch.Step(l.pool, l.spans, l.logits)
		e.compute.Unlock()
		if err != nil {
			for _, sr := range pending {
				errs[sr.slot] = errorf(CodeInternal, "forward pass: %v", err)
			}
			break
		}
		now := time.Now()
		r := 0
		for i, sr := range l.owners {
			sr.fed += len(l.spans[i].Tokens)
			l.spans[i] = model.Span{}
			if sr.fed < len(sr.prompt) {
				continue
			}
			copy(sr.logits, l.logits[r*V:(r+1)*V])
			r++
			sr.promptDone, sr.last = now, now
			done[sr.slot] = sr.emit(sr.logits)
		}
		keep = pending[:0]
		for _, sr := range pending {
			if sr.fed < len(sr.prompt) {
				keep = append(keep, sr)
			}
		}
		pending = keep
	}
	clear(l.spans)
	clear(l.owners)
	clear(runs)
}

// Step implements sched.Executor: one token for every sequence, one
// batched forward pass.
func (l *lane) Step(seqs []sched.Seq, done []bool) error {
	n := len(seqs)
	V := l.m.model.Config.Vocab
	l.states, l.toks = l.states[:0], l.toks[:0]
	for _, s := range seqs {
		sr := s.(*seqRun)
		l.states = append(l.states, sr.state)
		l.toks = append(l.toks, sr.tokens[len(sr.tokens)-1]) // the lane goroutine is the only writer
	}
	e := l.e
	e.compute.Lock()
	err := l.batch.Forward(l.pool, l.states, l.toks, l.logits[:n*V])
	e.compute.Unlock()
	clear(l.states)
	if err != nil {
		return errorf(CodeInternal, "forward pass: %v", err)
	}
	now := time.Now()
	for i, s := range seqs {
		sr := s.(*seqRun)
		sr.stepTimes = append(sr.stepTimes, ms(now.Sub(sr.last)))
		sr.last = now
		done[i] = sr.emit(l.logits[i*V : (i+1)*V])
	}
	return nil
}

// emit samples the next token from logits, streams it and reports whether
// the run is over.
func (sr *seqRun) emit(logits []float32) bool {
	var digest string
	if sr.req.LogitsDigest {
		digest = logitsDigest(logits)
	}
	var lp []TokenLogprob
	if sr.req.Logprobs > 0 {
		top := sample.TopLogprobs(logits, sr.req.Logprobs)
		lp = make([]TokenLogprob, len(top))
		for j, c := range top {
			lp[j] = TokenLogprob{Token: c.Token, Logprob: c.Logprob}
		}
	}
	tok := sr.smp.Sample(logits)
	sr.mu.Lock()
	i := len(sr.tokens)
	sr.tokens = append(sr.tokens, tok)
	if digest != "" {
		sr.digests = append(sr.digests, digest)
	}
	if lp != nil {
		sr.logprobs = append(sr.logprobs, lp)
	}
	sr.mu.Unlock()
	if i == 0 {
		sr.firstTok = time.Now()
	}
	piece := sr.dec.Push(tok)
	sr.text.WriteString(piece)
	if sr.onToken != nil {
		sr.onToken(TokenEvent{RunID: sr.id, Index: i, Token: tok, Text: piece})
	}
	switch {
	case sr.m.tok.IsEOG(tok) || sr.stop[tok]:
		sr.finish = "eos"
		return true
	case i+1 >= sr.maxTokens:
		sr.finish = "length"
		return true
	}
	return false
}

// Finish implements sched.Executor: the run is over (completed, cancelled
// or failed); its KV cache is released here.
func (l *lane) Finish(s sched.Seq, err error) {
	sr := s.(*seqRun)
	e := l.e
	now := time.Now()
	if sr.state != nil {
		// The cache holds the prompt and the decoded tokens fed back, at
		// step boundaries; after a failed pass it is not trusted.
		// A run whose plan opts out of prefix reuse leaves none either.
		var toks []int32
		if hist := len(sr.prompt) + len(sr.tokens); *sr.res.Plan.KVCache.ReusePrefix && (err == nil || sr.ctx.Err() != nil || errors.Is(err, sched.ErrClosed)) {
			if pos := sr.state.Pos; pos <= hist {
				toks = make([]int32, 0, pos)
				toks = append(toks, sr.prompt[:min(pos, len(sr.prompt))]...)
				toks = append(toks, sr.tokens[:pos-len(toks)]...)
			}
		}
		l.idle.put(sr.state, toks)
		sr.state = nil
		e.kvBytes.Add(-sr.kvBytes)
		e.activeSeqs.Add(-1)
	}
	finish := sr.finish
	switch {
	case err == nil:
	case sr.ctx.Err() != nil || errors.Is(err, sched.ErrClosed):
		finish, err = "cancelled", nil
	default:
		finish = "error"
	}
	if sr.dec != nil {
		if rest := sr.dec.Flush(); rest != "" {
			sr.text.WriteString(rest)
			if sr.onToken != nil && finish != "error" {
				sr.onToken(TokenEvent{RunID: sr.id, Index: len(sr.tokens), Token: -1, Text: rest})
			}
		}
	}
	sr.mu.Lock()
	res := &GenerateResult{
		RunID: sr.id, ModelID: l.m.info.ModelID, PromptTokens: sr.prompt, Tokens: append([]int32{}, sr.tokens...),
		Text: sr.text.String(), FinishReason: finish, Sampling: sr.sampling, Logprobs: sr.logprobs,
		LogitsDigests: append([]string(nil), sr.digests...), Plan: sr.use, PlanHash: sr.use.Hash,
	}
	sr.mu.Unlock()
	m := &res.Metrics
	m.PromptTokens = len(sr.prompt)
	m.PromptCachedTokens = sr.cached
	m.GeneratedTokens = len(res.Tokens)
	if !sr.startedAt.IsZero() {
		m.QueueMS = ms(sr.startedAt.Sub(sr.queuedAt))
		if !sr.promptDone.IsZero() {
			m.PromptMS = ms(sr.promptDone.Sub(sr.startedAt))
			if m.PromptMS > 0 {
				m.PromptTokensPerSecond = float64(m.PromptTokens-m.PromptCachedTokens) / (m.PromptMS / 1000)
			}
			m.DecodeMS = ms(now.Sub(sr.promptDone))
		}
		if !sr.firstTok.IsZero() {
			// TTFT: from the request's arrival (queue wait included) to
			// its first token.
			m.TTFTMS = ms(sr.firstTok.Sub(sr.queuedAt))
		}
	} else {
		m.QueueMS = ms(now.Sub(sr.queuedAt))
	}
	if m.DecodeMS > 0 {
		m.TokensPerSecond = float64(m.GeneratedTokens) / (m.DecodeMS / 1000)
	}
	m.LatencyP50MS = percentile(sr.stepTimes, 0.50)
	m.LatencyP95MS = percentile(sr.stepTimes, 0.95)
	m.TotalMS = ms(now.Sub(sr.queuedAt))
	if sr.er != nil {
		if finish == "error" {
			sr.er.abort()
		} else {
			e.energy.finishRun(sr.er, res)
		}
	} else {
		e.energy.recordUnstarted(res)
	}
	sr.mu.Lock()
	sr.finish, sr.err, sr.result, sr.ended = finish, err, res, now
	sr.status = RunFinished
	sr.mu.Unlock()
	close(sr.done)
}

// recordUnstarted counts a run that ended before its compute started
// (cancelled while queued) in the engine's metrics.
func (en *energy) recordUnstarted(res *GenerateResult) { en.m.record(res, false) }

// readJoules is the energy policy's meter (cumulative joules).
func (e *Engine) readJoules() (float64, bool) {
	m := e.energyMeter()
	if m == nil {
		return 0, false
	}
	r, err := m.Read()
	if err != nil {
		return 0, false
	}
	return r.Joules, true
}

func fmtQueueFull(qf *sched.QueueFullError, model string) *Error {
	ms := qf.RetryAfter.Milliseconds()
	return &Error{Code: CodeBusy,
		Msg:  fmt.Sprintf("busy: the queue of model %s is full (%d requests waiting, max_queue %d); retry in %d ms", model, qf.Queued, qf.MaxQueue, ms),
		Data: BusyData{RetryAfterMS: ms, Queued: qf.Queued, MaxQueue: qf.MaxQueue}}
}

// BusyData is the data member of a -32013 "busy" error.
type BusyData struct {
	RetryAfterMS int64 `json:"retry_after_ms"`
	Queued       int   `json:"queued"`
	MaxQueue     int   `json:"max_queue"`
}

// kvType is the element type of a run's KV cache: the resolved plan's
// kv_cache.type (validated by the schema: F32 or F16).
func kvType(r *plan.Resolved) kernels.Type {
	if *r.Plan.KVCache.Type == plan.KVF16 {
		return kernels.F16
	}
	return kernels.F32
}

// StateQuantum is the granularity of KV cache capacities: a sequence's
// cache holds its prompt + max_tokens rounded up to a multiple of it
// (model.Capacity: within the model's context, never across LongRoPE's
// switch of factors), so that a finished sequence's cache fits the next
// requests of about its size, a continuation of its conversation included,
// at a cost of at most StateQuantum-1 positions.
const StateQuantum = 256

// MinSharedPrefix is the shortest prompt prefix that sequences joining at
// one step boundary compute once: a follower waits a pass for its leader,
// which pays only when the prefix saves more compute than that.
const MinSharedPrefix = 32

// shareJoining finds, for each joining sequence, an earlier one of the same
// batch (a leader, itself not following) whose prompt shares at least
// MinSharedPrefix more tokens with it than its own cache already holds,
// with a cache it can copy (KV type, RoPE factors, capacity); the longest
// such share wins. Sequences whose plan has kv_cache.reuse_prefix false
// compute their whole prompt and lead none.
func (l *lane) shareJoining(runs []*seqRun) {
	m := l.m.model
	for i, b := range runs {
		b.leader, b.share = nil, 0
		if !*b.res.Plan.KVCache.ReusePrefix {
			continue
		}
		for _, a := range runs[:i] {
			if a.leader != nil || !*a.res.Plan.KVCache.ReusePrefix || a.state.KVType() != b.state.KVType() || !m.RopeSame(a.state.Ctx(), b.state.Ctx()) {
				continue
			}
			c := min(commonPrefix(a.prompt, b.prompt), len(b.prompt)-1, b.state.Ctx())
			if c >= b.fed+MinSharedPrefix && c > b.share {
				b.leader, b.share = a, c
			}
		}
	}
}

// takeShares lets each follower whose leader has computed their shared
// prefix copy it (counted as cached prompt tokens); a follower whose leader
// stopped before (cancelled, failed) computes its prompt itself.
func (l *lane) takeShares(pending []*seqRun) {
	for _, b := range pending {
		a := b.leader
		if a == nil {
			continue
		}
		switch {
		case a.fed >= b.share:
			if err := b.state.CopyPrefix(a.state, b.share); err == nil {
				b.fed, b.cached = b.share, b.share
			}
			b.leader = nil
		case !slices.Contains(pending, a):
			b.leader = nil
		}
	}
}
