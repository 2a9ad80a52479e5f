package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/weos/llm-engine/kernels"
)

// DefaultMaxBatch is the largest number of tokens one forward step
// processes; longer inputs are cut into steps of this size (with identical
// results, since the computation does not depend on batching).
const DefaultMaxBatch = 256

// State is one sequence: its KV cache, its position, and every scratch
// buffer of the forward pass, all allocated once by NewState. A State is
// used by one goroutine at a time.
type State struct {
	// Pos is the number of tokens in the cache (the position of the next).
	Pos int

	m        *Model
	ctx      int // capacity in tokens
	ctxPad   int // ctx rounded up to 32: row stride of the V cache
	maxBatch int

	// KV cache, F32. K: [layer][pos][kvDim]. V is stored transposed,
	// [layer][kvDim][ctxPad] (as llama.cpp's non-flash-attention V cache),
	// so that each attention output element is one F32 dot product over
	// positions.
	kc, vc []float32

	rope []float32 // [ctx][RopeDim] cos/sin pairs

	x, xb, xb2 []float32   // maxBatch × Dim
	q, att     []float32   // maxBatch × QDim
	k, v       []float32   // maxBatch × KVDim
	hb, hb2    []float32   // maxBatch × FFN
	scores     [][]float32 // per worker: group × ctxPad attention scores
	attScale   float32

	// arguments of the step being run (read by the pre-bound functions
	// below, so that a step allocates nothing)
	toks   []int32
	logits []float32
	all    bool
	layer  int
	err    error

	stepFn func(*kernels.Pool)
	attnFn func(worker, start, end int)
	gluFn  func(worker, start, end int)
}

// NewState allocates a sequence of up to ctxLen tokens (0 means the model's
// training context) with the default maximum batch.
func (m *Model) NewState(ctxLen int) *State { return m.NewStateBatch(ctxLen, DefaultMaxBatch) }

// NewStateBatch is NewState with an explicit maximum batch per step.
func (m *Model) NewStateBatch(ctxLen, maxBatch int) *State {
	c := &m.Config
	if ctxLen <= 0 {
		ctxLen = c.Ctx
	}
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	maxBatch = min(maxBatch, ctxLen)
	s := &State{m: m, ctx: ctxLen, ctxPad: (ctxLen + 31) &^ 31, maxBatch: maxBatch}
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	s.kc = make([]float32, c.Layers*ctxLen*KV)
	s.vc = make([]float32, c.Layers*KV*s.ctxPad)
	s.rope = make([]float32, ctxLen*c.RopeDim)
	m.ropeTable(s.rope, ctxLen)
	s.x = make([]float32, maxBatch*D)
	s.xb = make([]float32, maxBatch*max(D, Q))
	s.xb2 = make([]float32, maxBatch*D)
	s.q = make([]float32, maxBatch*Q)
	s.att = make([]float32, maxBatch*Q)
	s.k = make([]float32, maxBatch*KV)
	s.v = make([]float32, maxBatch*KV)
	s.hb = make([]float32, maxBatch*F)
	s.hb2 = make([]float32, maxBatch*F)
	s.scores = make([][]float32, m.pool.Threads())
	for i := range s.scores {
		s.scores[i] = make([]float32, (c.Heads/c.KVHeads)*s.ctxPad)
	}
	s.attScale = c.softmaxScale()
	s.stepFn = s.step
	s.attnFn = s.attention
	s.gluFn = s.glu
	return s
}

// Ctx returns the capacity of the state in tokens.
func (s *State) Ctx() int { return s.ctx }

// Reset empties the sequence.
func (s *State) Reset() { s.Pos = 0 }

// Truncate keeps the first n tokens of the sequence (n ≤ Pos), so that
// decoding can resume from there.
func (s *State) Truncate(n int) error {
	if n < 0 || n > s.Pos {
		return fmt.Errorf("model: cannot truncate a sequence of %d tokens to %d", s.Pos, n)
	}
	s.Pos = n
	return nil
}

// ErrContextFull is wrapped by Forward's error when the tokens do not fit.
var ErrContextFull = errors.New("context full")

// Forward runs tokens through the model at positions s.Pos, s.Pos+1, ...,
// appends them to the KV cache and advances s.Pos. With all=false it writes
// the logits of the last token to logits[:Vocab]; with all=true those of
// every token, row t at logits[t*Vocab:(t+1)*Vocab]. Tokens are processed in
// steps of at most the state's maximum batch; each matrix product of a step
// handles all its tokens at once.
func (m *Model) Forward(s *State, tokens []int32, logits []float32, all bool) error {
	return m.forward(m.pool, s, tokens, logits, all)
}

// forward is Forward on pool p (the model's or a smaller one, see ForwardOn).
func (m *Model) forward(p *kernels.Pool, s *State, tokens []int32, logits []float32, all bool) error {
	if s.m != m {
		return errors.New("model: state belongs to another model")
	}
	c := &m.Config
	n := len(tokens)
	if n == 0 {
		return errors.New("model: no tokens")
	}
	if s.Pos+n > s.ctx {
		return fmt.Errorf("model: %w: %d tokens at position %d exceed the state's context of %d", ErrContextFull, n, s.Pos, s.ctx)
	}
	need := c.Vocab
	if all {
		need = n * c.Vocab
	}
	if len(logits) < need {
		return fmt.Errorf("model: logits buffer holds %d floats, need %d", len(logits), need)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("model: token %d (at %d) is out of the vocabulary [0,%d)", t, i, c.Vocab)
		}
	}
	for start := 0; start < n; start += s.maxBatch {
		end := min(start+s.maxBatch, n)
		s.toks, s.all = tokens[start:end], all
		switch {
		case all:
			s.logits = logits[start*c.Vocab : end*c.Vocab]
		case end == n:
			s.logits = logits[:c.Vocab]
		default:
			s.logits = nil // an inner step of a last-token-only call
		}
		p.Exec(s.stepFn)
		s.toks, s.logits = nil, nil
		if s.err != nil {
			err := s.err
			s.err = nil
			return err
		}
		s.Pos += end - start
	}
	return nil
}

// step runs one batch on worker 0 of the pool (p is the pool's inner view).
func (s *State) step(p *kernels.Pool) {
	m, c, b := s.m, &s.m.Config, s.m.backend
	n := len(s.toks)
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	x, xb, xb2 := s.x[:n*D], s.xb[:n*D], s.xb2[:n*D]
	q, k, v := s.q[:n*Q], s.k[:n*KV], s.v[:n*KV]

	for t, tok := range s.toks {
		if err := m.embed(x[t*D:(t+1)*D], tok); err != nil {
			s.err = err
			return
		}
	}
	for l := range m.Layers {
		L := &m.Layers[l]
		// attention
		for t := 0; t < n; t++ {
			kernels.RMSNorm(xb[t*D:(t+1)*D], x[t*D:(t+1)*D], L.AttnNorm, c.Eps)
		}
		b.MatMulMany(p, xb, n,
			kernels.MatMulOp{Out: q, W: &L.Wq},
			kernels.MatMulOp{Out: k, W: &L.Wk},
			kernels.MatMulOp{Out: v, W: &L.Wv})
		kc := s.kc[l*s.ctx*KV : (l+1)*s.ctx*KV]
		vc := s.vc[l*KV*s.ctxPad : (l+1)*KV*s.ctxPad]
		for t := 0; t < n; t++ {
			pos := s.Pos + t
			kt := k[t*KV : (t+1)*KV]
			m.qkv(L, q[t*Q:(t+1)*Q], kt, v[t*KV:(t+1)*KV], s.rope[pos*c.RopeDim:(pos+1)*c.RopeDim])
			copy(kc[pos*KV:(pos+1)*KV], kt)
			for d, val := range v[t*KV : (t+1)*KV] {
				vc[d*s.ctxPad+pos] = val
			}
		}
		s.layer = l
		p.Run(n*c.KVHeads, s.attnFn)
		b.MatMul(p, xb2, &L.Wo, s.att[:n*Q], n)
		m.attnOut(L, xb2, n)
		kernels.Add(x, xb2, x)

		// feed-forward
		for t := 0; t < n; t++ {
			kernels.RMSNorm(xb[t*D:(t+1)*D], x[t*D:(t+1)*D], L.FFNNorm, c.Eps)
		}
		b.MatMulMany(p, xb, n,
			kernels.MatMulOp{Out: s.hb[:n*F], W: &L.Gate},
			kernels.MatMulOp{Out: s.hb2[:n*F], W: &L.Up})
		if n == 1 {
			m.glu(s.hb[:F], s.hb2[:F])
		} else {
			p.Run(n, s.gluFn)
		}
		b.MatMul(p, xb2, &L.Down, s.hb[:n*F], n)
		m.ffnOut(L, xb2, n)
		kernels.Add(x, xb2, x)
	}

	// output
	if s.logits == nil {
		return
	}
	if s.all {
		for t := 0; t < n; t++ {
			kernels.RMSNorm(xb[t*D:(t+1)*D], x[t*D:(t+1)*D], m.OutNorm, c.Eps)
		}
		b.MatMul(p, s.logits, &m.Output, xb, n)
		m.finishLogits(s.logits[:n*c.Vocab])
	} else {
		kernels.RMSNorm(xb[:D], x[(n-1)*D:n*D], m.OutNorm, c.Eps)
		b.MatMul(p, s.logits, &m.Output, xb[:D], 1)
		m.finishLogits(s.logits[:c.Vocab])
	}
}

// attention computes units [start,end) of the current batch; unit i is
// token i/KVHeads and the query heads of KV head i%KVHeads (GQA group). Each
// unit is computed entirely by one worker: scores q·k over the visible
// positions (F32 dot products), the soft-cap if any, softmax of
// scores*scale per head, then each output element as the F32 dot product of
// a head's probabilities with a row of the transposed V cache. Both steps go
// through the backend's F32 tile kernel: one call covers all positions (or
// output dims) and all heads of the group, each element bit-identical to one
// F32 dot. The V products run over a multiple of 32 positions, the padding
// carrying probability 0, as llama.cpp's padded KV view does.
//
// In a sliding-window layer query position p sees keys k with p-k < window
// (llama.cpp's LLAMA_SWA_TYPE_STANDARD). Scores are then computed from the
// window's start rounded down to a multiple of 32, the positions before the
// window masked with -Inf after the soft-cap (as ggml adds the mask after
// it): the softmax groups and the V products keep their alignment, and the
// skipped positions would only have contributed exact zeros.
func (s *State) attention(worker, start, end int) {
	c := &s.m.Config
	tile := s.m.tileF32
	hd, Q, KV, kvh := c.HeadDim, c.QDim(), c.KVDim(), c.KVHeads
	group := c.Heads / c.KVHeads
	swa := s.m.Layers[s.layer].SWA
	kb := kernels.F32Bytes(s.kc[s.layer*s.ctx*KV : (s.layer+1)*s.ctx*KV])
	vb := kernels.F32Bytes(s.vc[s.layer*KV*s.ctxPad : (s.layer+1)*KV*s.ctxPad])
	sc := s.scores[worker]
	scb := kernels.F32Bytes(sc)
	cp := s.ctxPad
	for i := start; i < end; i++ {
		t, h := i/kvh, i%kvh
		pos := s.Pos + t
		nPos := pos + 1
		nPad := (nPos + 31) &^ 31
		lo := 0 // first visible position
		if swa && pos >= c.SlidingWindow {
			lo = pos - c.SlidingWindow + 1
		}
		a := lo &^ 31 // first computed position
		q := s.q[t*Q+h*group*hd : t*Q+(h+1)*group*hd]
		// sc[g*cp + p] = k_p · q_g
		tile(hd, kb[4*(a*KV+h*hd):], 4*KV, nPos-a, kernels.F32Bytes(q), 4*hd, group, sc[a:], cp)
		for g := 0; g < group; g++ {
			row := sc[g*cp : g*cp+nPad]
			if c.AttnSoftcap != 0 {
				kernels.Softcap(row[lo:nPos], c.AttnSoftcap)
			}
			for j := a; j < lo; j++ {
				row[j] = float32(math.Inf(-1))
			}
			s.m.backend.Softmax(row[a:nPos], s.attScale)
			clear(row[nPos:])
		}
		// out[g*hd + d] = vᵀ_d · p_g
		out := s.att[t*Q+h*group*hd : t*Q+(h+1)*group*hd]
		tile(nPad-a, vb[4*(h*hd*cp+a):], 4*cp, hd, scb[4*a:], 4*cp, group, out, hd)
	}
}

func (s *State) glu(_, start, end int) {
	F := s.m.Config.FFN
	for t := start; t < end; t++ {
		s.m.glu(s.hb[t*F:(t+1)*F], s.hb2[t*F:(t+1)*F])
	}
}
