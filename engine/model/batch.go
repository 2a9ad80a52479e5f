package model

// Multi-sequence batched decode, for the scheduler's continuous batching
// (engine/sched): one step advances several independent sequences by one
// token each. Every weight matrix is applied ONCE to the current tokens of
// all the sequences (nTok = number of sequences); attention is computed per
// sequence over its own KV cache. Because kernels.MatMul computes every
// output element with the same dot product on the same bytes whatever nTok
// is, and attention, RMSNorm, RoPE and SwiGLU are per-token computations
// identical to those of Forward, each sequence's logits are bit-identical to
// decoding it alone with Forward.
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
// nothing once the per-worker attention buffers have grown to the longest
// context seen) and used by one goroutine at a time.
type Batch struct {
	m   *Model
	max int

	x, xb, xb2 []float32 // max × Dim (xb: max × max(Dim, QDim))
	q, att     []float32 // max × QDim
	k, v       []float32 // max × KVDim
	hb, hb2    []float32 // max × FFN

	// arguments of the step being run
	states []*State
	toks   []int32
	logits []float32
	err    error

	stepFn   func(*kernels.Pool)
	attnFn   func(worker, start, end int)
	swigluFn func(worker, start, end int)
}

// NewBatch allocates the scratch space for steps of up to maxSeqs sequences.
func (m *Model) NewBatch(maxSeqs int) *Batch {
	if maxSeqs < 1 {
		maxSeqs = 1
	}
	c := &m.Config
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	b := &Batch{m: m, max: maxSeqs}
	b.x = make([]float32, maxSeqs*D)
	b.xb = make([]float32, maxSeqs*max(D, Q))
	b.xb2 = make([]float32, maxSeqs*D)
	b.q = make([]float32, maxSeqs*Q)
	b.att = make([]float32, maxSeqs*Q)
	b.k = make([]float32, maxSeqs*KV)
	b.v = make([]float32, maxSeqs*KV)
	b.hb = make([]float32, maxSeqs*F)
	b.hb2 = make([]float32, maxSeqs*F)
	b.stepFn = b.step
	b.attnFn = b.attention
	b.swigluFn = b.swiglu
	return b
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
	b.states, b.toks, b.logits = states, tokens, logits[:n*c.Vocab]
	p.Exec(b.stepFn)
	b.states, b.toks, b.logits = nil, nil, nil
	if b.err != nil {
		err := b.err
		b.err = nil
		return err
	}
	for _, s := range states {
		s.Pos++
	}
	return nil
}

// step runs one batched decode step on worker 0 of the pool. The sequence of
// operations per token is exactly State.step's for a single token.
func (b *Batch) step(p *kernels.Pool) {
	m, c, be := b.m, &b.m.Config, b.m.backend
	n := len(b.toks)
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	x, xb, xb2 := b.x[:n*D], b.xb[:n*D], b.xb2[:n*D]
	q, k, v := b.q[:n*Q], b.k[:n*KV], b.v[:n*KV]

	for t, tok := range b.toks {
		if err := m.embed(x[t*D:(t+1)*D], tok); err != nil {
			b.err = err
			return
		}
	}
	for l := range m.Layers {
		L := &m.Layers[l]
		for t := 0; t < n; t++ {
			kernels.RMSNorm(xb[t*D:(t+1)*D], x[t*D:(t+1)*D], L.AttnNorm, c.Eps)
		}
		be.MatMulMany(p, xb, n,
			kernels.MatMulOp{Out: q, W: &L.Wq},
			kernels.MatMulOp{Out: k, W: &L.Wk},
			kernels.MatMulOp{Out: v, W: &L.Wv})
		for t, s := range b.states {
			pos := s.Pos
			kc := s.kc[l*s.ctx*KV : (l+1)*s.ctx*KV]
			vc := s.vc[l*KV*s.ctxPad : (l+1)*KV*s.ctxPad]
			kt := k[t*KV : (t+1)*KV]
			m.qkv(L, q[t*Q:(t+1)*Q], kt, v[t*KV:(t+1)*KV], s.rope[pos*c.RopeDim:(pos+1)*c.RopeDim])
			copy(kc[pos*KV:(pos+1)*KV], kt)
			for d, val := range v[t*KV : (t+1)*KV] {
				vc[d*s.ctxPad+pos] = val
			}
		}
		for t, s := range b.states { // each sequence attends with its own buffers
			copy(s.q[:Q], q[t*Q:(t+1)*Q])
			s.layer = l
		}
		p.Run(n*c.attnUnitsPerToken(), b.attnFn)
		for t, s := range b.states {
			copy(b.att[t*Q:(t+1)*Q], s.att[:Q])
		}
		be.MatMul(p, xb2, &L.Wo, b.att[:n*Q], n)
		m.attnOut(L, xb2, n)
		kernels.Add(x, xb2, x)

		for t := 0; t < n; t++ {
			kernels.RMSNorm(xb[t*D:(t+1)*D], x[t*D:(t+1)*D], L.FFNNorm, c.Eps)
		}
		be.MatMulMany(p, xb, n,
			kernels.MatMulOp{Out: b.hb[:n*F], W: &L.Gate},
			kernels.MatMulOp{Out: b.hb2[:n*F], W: &L.Up})
		if n == 1 {
			m.glu(b.hb[:F], b.hb2[:F])
		} else {
			p.Run(n, b.swigluFn)
		}
		be.MatMul(p, xb2, &L.Down, b.hb[:n*F], n)
		m.ffnOut(L, xb2, n)
		kernels.Add(x, xb2, x)
	}
	for t := 0; t < n; t++ {
		kernels.RMSNorm(xb[t*D:(t+1)*D], x[t*D:(t+1)*D], m.OutNorm, c.Eps)
	}
	be.MatMul(p, b.logits, &m.Output, xb, n)
	m.finishLogits(b.logits)
}

// attnUnitsPerToken is the number of work units State.attention splits one
// token's attention into (unit i is token i/units): State.step runs
// p.Run(n*KVHeads, attention). Keep in sync with forward.go; the
// bit-identity tests of batch_test.go fail if they drift apart.
func (c *Config) attnUnitsPerToken() int { return c.KVHeads }

// attention computes units [start,end) of the step; unit i is sequence
// i/units, unit i%units of its attention, computed by that sequence's own
// State.attention (as token 0 of a one-token step at the state's position),
// over its own cache: the arithmetic is exactly Forward's.
func (b *Batch) attention(worker, start, end int) {
	u := b.m.Config.attnUnitsPerToken()
	for i := start; i < end; i++ {
		s := b.states[i/u]
		s.attention(worker, i%u, i%u+1)
	}
}

func (b *Batch) swiglu(_, start, end int) {
	F := b.m.Config.FFN
	for t := start; t < end; t++ {
		b.m.glu(b.hb[t*F:(t+1)*F], b.hb2[t*F:(t+1)*F])
	}
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
	n := len(s.kc) + len(s.vc) + len(s.rope) + len(s.x) + len(s.xb) + len(s.xb2) +
		len(s.q) + len(s.att) + len(s.k) + len(s.v) + len(s.hb) + len(s.hb2)
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
	n := c.Layers*ctxLen*KV + c.Layers*KV*ctxPad + ctxLen*c.RopeDim +
		maxBatch*(D+max(D, Q)+D+2*Q+2*KV+2*F) + m.pool.Threads()*(c.Heads/c.KVHeads)*ctxPad
	return 4 * int64(n)
}
