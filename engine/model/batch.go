package model

// Multi-sequence batched decode, for the scheduler's continuous batching
// (engine/sched): one step advances several independent sequences by one
// token each. Every weight matrix is applied ONCE to the current tokens of
// all the sequences (nTok = number of sequences); attention is computed per
// sequence over its own KV cache. The step is Forward's (step.go); because
// kernels.MatMul computes every output element with the same dot product on
// the same bytes whatever nTok is, and the rest is per-token computation,
// each sequence's logits are bit-identical to decoding it alone.
//
// This file also has ForwardOn: Forward on a caller-chosen pool, so that an
// execution plan asking for fewer threads than the model's pool runs on
// fewer (results do not depend on the thread count).

import (
	"errors"
	"fmt"

	"github.com/weos/llm-engine/kernels"
)

// Batch is the scratch space of a batched decode step for up to Max
// sequences of one model. It is reused across steps (a step allocates
// nothing) and used by one goroutine at a time.
type Batch struct {
	m   *Model
	max int
	sp  *stepper
}

// NewBatch allocates the scratch space for steps of up to maxSeqs sequences.
func (m *Model) NewBatch(maxSeqs int) *Batch {
	if maxSeqs < 1 {
		maxSeqs = 1
	}
	return &Batch{m: m, max: maxSeqs, sp: newStepper(m, maxSeqs)}
}

// Max returns the most sequences one step of b can advance.
func (b *Batch) Max() int { return b.max }

// ForwardBatch advances each sequence by one token on the model's pool:
// tokens[i] is run at position states[i].Pos of states[i], appended to its KV
// cache, and states[i].Pos advances by one. The logits of sequence i are
// written to logits[i*Vocab:(i+1)*Vocab]. It allocates its scratch space;
// steps in a loop should use NewBatch and Batch.Forward.
func (m *Model) ForwardBatch(states []*State, tokens []int32, logits []float32) error {
	return m.NewBatch(len(states)).Forward(m.pool, states, tokens, logits)
}

// Forward is ForwardBatch with b's scratch space, on pool p (nil: the
// model's pool). p may have fewer threads than the model's pool, not more.
func (b *Batch) Forward(p *kernels.Pool, states []*State, tokens []int32, logits []float32) error {
	m := b.m
	c := &m.Config
	if p == nil {
		p = m.pool
	}
	n := len(states)
	switch {
	case n == 0:
		return errors.New("model: ForwardBatch: no sequences")
	case n > b.max:
		return fmt.Errorf("model: ForwardBatch: %d sequences exceed the batch's %d", n, b.max)
	case len(tokens) != n:
		return fmt.Errorf("model: ForwardBatch: %d tokens for %d sequences", len(tokens), n)
	case len(logits) < n*c.Vocab:
		return fmt.Errorf("model: logits buffer holds %d floats, need %d", len(logits), n*c.Vocab)
	case p.Inner():
		return errors.New("model: ForwardBatch needs an outer pool")
	}
	for i, s := range states {
		if s == nil || s.m != m {
			return fmt.Errorf("model: ForwardBatch: sequence %d belongs to another model", i)
		}
		if s.Pos+1 > s.ctx {
			return fmt.Errorf("model: %w: sequence %d: 1 token at position %d exceeds the state's context of %d", ErrContextFull, i, s.Pos, s.ctx)
		}
		if t := tokens[i]; t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("model: token %d (sequence %d) is out of the vocabulary [0,%d)", t, i, c.Vocab)
		}
		if p.Threads() > len(s.scores) {
			return fmt.Errorf("model: pool of %d threads exceeds the %d sequence %d was made for", p.Threads(), len(s.scores), i)
		}
		for j := 0; j < i; j++ {
			if states[j] == s {
				return fmt.Errorf("model: ForwardBatch: sequences %d and %d are the same state", j, i)
			}
		}
	}
	sp := b.sp
	sp.toks, sp.seqs, sp.logits, sp.last = tokens, states, logits[:n*c.Vocab], false
	p.Exec(sp.stepFn)
	sp.toks, sp.seqs, sp.logits = nil, nil, nil
	if sp.err != nil {
		err := sp.err
		sp.err = nil
		return err
	}
	for _, s := range states {
		s.Pos++
	}
	return nil
}

// ForwardOn is Forward run on pool p instead of the model's pool (nil: the
// model's). p may have fewer threads than the pool the state was made for,
// not more; the results are the same for any thread count.
func (m *Model) ForwardOn(p *kernels.Pool, s *State, tokens []int32, logits []float32, all bool) error {
	if p == nil {
		p = m.pool
	}
	if p != m.pool {
		if p.Inner() {
			return errors.New("model: ForwardOn needs an outer pool")
		}
		if p.Threads() > len(s.scores) {
			return fmt.Errorf("model: pool of %d threads exceeds the %d the state was made for", p.Threads(), len(s.scores))
		}
	}
	return m.forward(p, s, tokens, logits, all)
}

// KVBytes is the memory held by the state's KV cache and scratch buffers.
func (s *State) KVBytes() int64 {
	b := &s.sp.bufs
	n := len(s.kc) + len(s.vc) + len(s.rope) + len(b.x) + len(b.xb) + len(b.xb2) +
		len(b.q) + len(b.att) + len(b.k) + len(b.v) + len(b.hb) + len(b.hb2) +
		(len(s.sp.actD)+len(s.sp.actQ)+len(s.sp.actF))/4
	for _, sc := range s.scores {
		n += len(sc)
	}
	return 4 * int64(n)
}

// StateBytes estimates KVBytes of NewStateBatch(ctxLen, maxBatch) without
// allocating, for admission control (memory limits). It mirrors
// NewStateBatch's allocations (batch_test.go checks it within 10%).
func (m *Model) StateBytes(ctxLen, maxBatch int) int64 {
	c := &m.Config
	if ctxLen <= 0 {
		ctxLen = c.Ctx
	}
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	maxBatch = min(maxBatch, ctxLen)
	ctxPad := (ctxLen + 31) &^ 31
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	n := c.Layers*KV*ctxPad + c.Layers*ctxLen*KV + ctxLen*c.RopeDim +
		maxBatch*(D+max(D, Q)+D+2*Q+2*KV+2*F) + maxBatch*(D+Q+F) + m.pool.Threads()*(c.Heads/c.KVHeads)*ctxPad
	return 4 * int64(n)
}
