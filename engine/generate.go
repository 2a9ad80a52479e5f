package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/weos/llm-engine/engine/plan"
	"github.com/weos/llm-engine/engine/sample"
	"github.com/weos/llm-engine/engine/sched"
)

// runOpts are what bench.run adds to a generate request.
type runOpts struct {
	benchID string
	choice  *planChoice   // the plan, already chosen (bench resolves names once)
	collect func(*seqRun) // called once the run is over, before the reply
	// prompt, if set, replaces the encoding of req.Prompt (chat renders its
	// template for the instance's tokenizer): the prompt's text and tokens
	// and extra stop tokens.
	prompt func(m *loaded) (text string, prompt []int32, stop map[int32]bool, err error)
}

// Generate runs one request to completion (or cancellation) under its plan:
// req.Plan (a name, "name@version" or an inline object; absent: the active
// "default" plan), resolved for the model. onToken, if not nil and
// req.Stream is set, is called for each token in order. The request waits
// in its lane's bounded queue (full: -32013 with a retry hint, nothing
// done) and runs as the plan's scheduler decides. Cancelling ctx (client
// gone) or run.cancel stops it at the next step; the result then says
// "cancelled". Every accepted run leaves a run record.
func (e *Engine) Generate(ctx context.Context, req GenerateRequest, onToken func(TokenEvent)) (*GenerateResult, error) {
	if !req.Stream {
		onToken = nil
	}
	return e.generate(ctx, req, onToken, runOpts{})
}

func (e *Engine) generate(ctx context.Context, req GenerateRequest, onToken func(TokenEvent), o runOpts) (*GenerateResult, error) {
	if req.MaxTokens < 0 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"max_tokens\" must be ≥ 0, got %d", req.MaxTokens)
	}
	if req.Logprobs < 0 || req.Logprobs > 20 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"logprobs\" must be between 0 and 20, got %d", req.Logprobs)
	}
	if req.Sampling != nil {
		if err := validateSampling(*req.Sampling); err != nil {
			return nil, err
		}
	}
	if e.closing.Load() {
		return nil, errorf(CodeInternal, "engine shutting down")
	}
	ch := o.choice
	if ch == nil {
		var err error
		if ch, err = e.choosePlan(req.Plan); err != nil {
			return nil, err
		}
	}
	m, r, err := e.instanceFor(ctx, req.Model, ch, "generate")
	if err != nil {
		return nil, err
	}
	use := ch.use
	use.Hash = r.Hash
	lim := r.Plan.Limits

	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = min(DefaultMaxTokens, *lim.MaxTokens)
	} else if maxTokens > *lim.MaxTokens {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"max_tokens\": %d exceeds the plan's limits.max_tokens %d (plan %s)", maxTokens, *lim.MaxTokens, use)
	}
	var prompt []int32
	var stop map[int32]bool
	if o.prompt != nil {
		var text string
		if text, prompt, stop, err = o.prompt(m); err != nil {
			return nil, err
		}
		req.Prompt = text // the run record holds the rendered prompt
	} else if prompt, err = m.tok.Encode(req.Prompt, true, false); err != nil {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"prompt\": %v", err)
	}
	if len(prompt) == 0 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"prompt\" encodes to no tokens and the model adds no BOS")
	}
	if nCtx := *lim.MaxContext; len(prompt)+maxTokens > nCtx {
		return nil, errorf(CodeContextFull, "prompt (%d tokens) + max_tokens (%d) exceed the context of %d (the plan's limits.max_context; the model's is %d)", len(prompt), maxTokens, nCtx, m.model.Config.Ctx)
	}
	ctxLen := len(prompt) + maxTokens
	if mem := *lim.MaxMemoryBytes; mem > 0 {
		need := m.weightBytes + m.model.StateBytesKV(m.model.Capacity(ctxLen, StateQuantum), 1, kvType(r))
		if need > mem {
			return nil, planInvalid("plan limit", []plan.FieldError{{Pointer: "/limits/max_memory_bytes",
				Message: fmt.Sprintf("this run needs %d bytes (weights %d + KV cache and buffers %d), over max_memory_bytes %d", need, m.weightBytes, need-m.weightBytes, mem)}})
		}
	}
	sp := planSampling(r)
	if req.Sampling != nil {
		sp = *req.Sampling
	}
	smp := sample.New(sample.Params{Temperature: sp.Temperature, TopK: sp.TopK, TopP: sp.TopP, Seed: sp.Seed})
	sp.Seed = smp.Seed()

	l, err := e.laneFor(m, r)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if m.unloaded {
		e.mu.Unlock()
		return nil, errorf(CodeModelNotFound, "model %s was unloaded", m.info.ModelID)
	}
	m.runs.Add(1)
	e.mu.Unlock()
	defer m.runs.Done()

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	now := time.Now()
	sr := &seqRun{e: e, id: newRunID(now), ctx: rctx, cancel: cancel, actor: actorOf(ctx), lane: l, m: m, res: r, use: use,
		req: req, benchID: o.benchID, prompt: prompt, stop: stop, maxTokens: maxTokens, ctxLen: ctxLen, sampling: sp, smp: smp,
		onToken: onToken, queuedAt: now, status: RunQueued, tokens: []int32{}, done: make(chan struct{})}
	sr.req.Stream = req.Stream
	e.inflight.Add(1)
	defer e.inflight.Done()
	e.runs.register(sr)
	if err := l.s.Submit(sr); err != nil {
		e.runs.unregister(sr.id)
		var qf *sched.QueueFullError
		switch {
		case errors.As(err, &qf):
			return nil, fmtQueueFull(qf, m.info.ModelID)
		case errors.Is(err, sched.ErrClosed):
			return nil, errorf(CodeModelNotFound, "model %s was unloaded", m.info.ModelID)
		}
		return nil, errorf(CodeInternal, "%v", err)
	}
	<-sr.done
	if o.collect != nil {
		o.collect(sr)
	}

	rec := sr.snapshot()
	rec.Text = sr.result.Text
	rec.Metrics = sr.result.Metrics
	rec.FinishedAt = sr.ended.UTC()
	rec.QueuedAt = rec.QueuedAt.UTC()
	if !rec.StartedAt.IsZero() {
		rec.StartedAt = rec.StartedAt.UTC()
	}
	werr := e.runs.save(&rec)
	ev := RunEvent{RunID: sr.id, ModelID: m.info.ModelID, Plan: use, Actor: sr.actor, BenchID: o.benchID,
		FinishReason: rec.FinishReason, Error: rec.Error, Metrics: &rec.Metrics, Time: rec.FinishedAt}
	e.publish(TopicRun, EventRunFinished, ev)
	if sr.err != nil {
		return nil, asEngineError(sr.err)
	}
	if werr != nil {
		// The run is done and its record is kept in memory (retried at the
		// next write and at shutdown): report the result.
		e.recordErr.Store(werr.Error())
	}
	return sr.result, nil
}

func asEngineError(err error) error {
	var ee *Error
	if errors.As(err, &ee) {
		return ee
	}
	return errorf(CodeInternal, "%v", err)
}

// planSampling is the resolved plan's default sampling.
func planSampling(r *plan.Resolved) Sampling {
	s := r.Plan.Sampling
	return Sampling{Temperature: float32(*s.Temperature), TopK: *s.TopK, TopP: float32(*s.TopP), Seed: *s.Seed}
}
