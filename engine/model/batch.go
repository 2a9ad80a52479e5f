package model

// Multi-sequence steps, for the scheduler's continuous batching
// (engine/sched): one step advances several independent sequences, by one
// token each (decode) or by a piece of their prompt (Step). Every weight matrix is applied ONCE to the current tokens of
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

// Batch is the scratch space of a step of up to Max tokens over several
// sequences of one model: a decode step (one token of each of n sequences)
// or a mixed one (Step: the prompts of joining sequences, whole or in
// pieces, next to other sequences' next tokens). It is reused across steps
// (a step allocates nothing) and used by one goroutine at a time.
type Batch struct {
	m    *Model
	max  int
	sp   *stepper
	toks []int32
}

// NewBatch allocates the scratch space for steps of up to maxTokens tokens
// (a decode step of n sequences has n).
func (m *Model) NewBatch(maxTokens int) *Batch {
	if maxTokens < 1 {
		maxTokens = 1
	}
	return &Batch{m: m, max: maxTokens, sp: newStepper(m, maxTokens), toks: make([]int32, 0, maxTokens)}
}

// Max returns the most tokens one step of b can run.
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
		return fmt.Errorf("model: ForwardBatch: %d sequences exceed the batch's %d tokens", n, b.max)
	case len(tokens) != n:
		return fmt.Errorf("model: ForwardBatch: %d tokens for %d sequences", len(tokens), n)
	case len(logits) < n*c.Vocab:
		return fmt.Errorf("model: logits buffer holds %d floats, need %d", len(logits), n*c.Vocab)
	case p.Inner():
		return errors.New("model: ForwardBatch needs an outer pool")
	}
	for i, s := range states {
		if err := b.check(p, i, s, tokens[i:i+1]); err != nil {
			return err
		}
		for j := 0; j < i; j++ {
			if states[j] == s {
				return fmt.Errorf("model: ForwardBatch: sequences %d and %d are the same state", j, i)
			}
		}
	}
	sp := b.sp
	sp.toks, sp.logits, sp.allOut, sp.distinct = tokens, logits[:n*c.Vocab], true, true
	for i, s := range states {
		sp.seqs[i], sp.pos[i] = s, s.Pos
	}
	if err := sp.exec(p); err != nil {
		return err
	}
	for _, s := range states {
		s.Pos++
	}
	return nil
}

// check validates sequence i of a step: its state and the tokens it runs.
func (b *Batch) check(p *kernels.Pool, i int, s *State, tokens []int32) error {
	c := &b.m.Config
	if s == nil || s.m != b.m {
		return fmt.Errorf("model: sequence %d belongs to another model", i)
	}
	if s.Pos+len(tokens) > s.ctx {
		return fmt.Errorf("model: %w: sequence %d: %d tokens at position %d exceed the state's context of %d", ErrContextFull, i, len(tokens), s.Pos, s.ctx)
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("model: token %d (sequence %d) is out of the vocabulary [0,%d)", t, i, c.Vocab)
		}
	}
	if p.Threads() > len(s.scores) {
		return fmt.Errorf("model: pool of %d threads exceeds the %d sequence %d was made for", p.Threads(), len(s.scores), i)
	}
	return nil
}

// Span is a run of consecutive tokens of one sequence in a Step: a whole
// prompt, a piece of one, or a single next token.
type Span struct {
	State  *State
	Tokens []int32
	// Logits asks for the logits of the span's last token (the end of a
	// prompt, a decoded token); a piece of a longer prompt needs none.
	Logits bool
}

// Step runs the spans in one forward pass on pool p (nil: the model's):
// span i's tokens at positions State.Pos, State.Pos+1, … of its sequence,
// appended to its KV cache; each State.Pos advances by its span's length.
// Logits rows are written for the spans that ask for them, in span order,
// at logits[r*Vocab:(r+1)*Vocab] for the r-th. Each token's arithmetic is
// that of Forward and ForwardBatch (step.go): logits are bit-identical to
// running each sequence alone. At most Max tokens in all, one span per
// sequence.
func (b *Batch) Step(p *kernels.Pool, spans []Span, logits []float32) error {
	m := b.m
	c := &m.Config
	if p == nil {
		p = m.pool
	}
	n, rows := 0, 0
	for i, sp := range spans {
		if len(sp.Tokens) == 0 {
			return fmt.Errorf("model: Step: span %d has no tokens", i)
		}
		n += len(sp.Tokens)
		if sp.Logits {
			rows++
		}
	}
	switch {
	case n == 0:
		return errors.New("model: Step: no tokens")
	case n > b.max:
		return fmt.Errorf("model: Step: %d tokens exceed the batch's %d", n, b.max)
	case len(logits) < rows*c.Vocab:
		return fmt.Errorf("model: logits buffer holds %d floats, need %d", len(logits), rows*c.Vocab)
	case p.Inner():
		return errors.New("model: Step needs an outer pool")
	}
	for i, sp := range spans {
		if err := b.check(p, i, sp.State, sp.Tokens); err != nil {
			return err
		}
		for j := 0; j < i; j++ {
			if spans[j].State == sp.State {
				return fmt.Errorf("model: Step: spans %d and %d are of the same sequence", j, i)
			}
		}
	}
	st := b.sp
	b.toks = b.toks[:0]
	for _, sp := range spans {
		for j, tok := range sp.Tokens {
			st.seqs[len(b.toks)], st.pos[len(b.toks)] = sp.State, sp.State.Pos+j
			b.toks = append(b.toks, tok)
		}
		if sp.Logits {
			st.out = append(st.out, len(b.toks)-1)
		}
	}
	st.toks, st.allOut, st.distinct = b.toks, rows == n, n == len(spans)
	if rows > 0 {
		st.logits = logits[:rows*c.Vocab]
	}
	if err := st.exec(p); err != nil {
		return err
	}
	for _, sp := range spans {
		sp.State.Pos += len(sp.Tokens)
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
	n := len(s.kc) + len(s.vc) + (len(s.kc16)+len(s.vc16))/2 + len(b.x) + len(b.xb) + len(b.xb2) +
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
	return m.StateBytesKV(ctxLen, maxBatch, kernels.F32)
}

// StateBytesKV is StateBytes for a KV cache of element type kv.
func (m *Model) StateBytesKV(ctxLen, maxBatch int, kv kernels.Type) int64 {
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
	cache := int64(c.Layers*KV*ctxPad+c.Layers*ctxLen*KV) * 4
	if kv == kernels.F16 {
		cache /= 2
	}
	n := maxBatch*(D+max(D, Q)+D+2*Q+2*KV+2*F) + maxBatch*(D+Q+F) + m.pool.Threads()*(c.Heads/c.KVHeads)*ctxPad
	return cache + 4*int64(n)
}
