package model

import (
	"errors"
	"fmt"
	"unsafe"

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
	ctxPad   int // ctx rounded up to 32: row stride of the K cache
	maxBatch int

	// KV cache, F32 (kc, vc) or F16 (kc16, vc16, the plan's kv_cache type
	// F16: half the memory and the attention's cache reads; keys and
	// values rounded to binary16 as they are stored). K is stored
	// transposed, [layer][kvDim][ctxPad], and V by position,
	// [layer][pos][kvDim]: the attention kernels then keep eight positions
	// (scores) or eight dimensions (outputs) in the lanes of a register
	// (kernels.AttnScores, AttnValues and their F16 twins).
	kvType     kernels.Type
	kc, vc     []float32
	kc16, vc16 []uint16
	toF16      kernels.QuantizeFunc // the backend's float32 → binary16 row conversion

	rope []float32 // [ctx][RopeDim] cos/sin pairs, the model's (read-only)

	sp       *stepper    // the step's activations (maxBatch tokens) and phases
	scores   [][]float32 // per worker: group × ctxPad attention scores
	attScale float32
}

// NewState allocates a sequence of up to ctxLen tokens (0 means the model's
// training context) with the default maximum batch.
func (m *Model) NewState(ctxLen int) *State { return m.NewStateBatch(ctxLen, DefaultMaxBatch) }

// NewStateBatch is NewState with an explicit maximum batch per step.
func (m *Model) NewStateBatch(ctxLen, maxBatch int) *State {
	return m.NewStateKV(ctxLen, maxBatch, kernels.F32)
}

// KVTypes are the element types a KV cache can have.
var KVTypes = []kernels.Type{kernels.F32, kernels.F16}

// NewStateKV is NewStateBatch with a KV cache of element type kv (one of
// KVTypes; it panics on another: plans are validated before).
func (m *Model) NewStateKV(ctxLen, maxBatch int, kv kernels.Type) *State {
	c := &m.Config
	if ctxLen <= 0 {
		ctxLen = c.Ctx
	}
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	maxBatch = min(maxBatch, ctxLen)
	s := &State{m: m, ctx: ctxLen, ctxPad: (ctxLen + 31) &^ 31, maxBatch: maxBatch, kvType: kv}
	KV := c.KVDim()
	switch kv {
	case kernels.F32:
		s.kc = make([]float32, c.Layers*KV*s.ctxPad)
		s.vc = make([]float32, c.Layers*ctxLen*KV)
	case kernels.F16:
		s.kc16 = make([]uint16, c.Layers*KV*s.ctxPad)
		s.vc16 = make([]uint16, c.Layers*ctxLen*KV)
		if t, conv, err := m.backend.Activation(kernels.F16); err == nil && t == kernels.F16 && conv != nil {
			s.toF16 = conv // AVX2's VCVTPS2PH where the backend has it
		} else {
			s.toF16 = func(dst []byte, src []float32) { _ = kernels.QuantizeRow(kernels.F16, dst, src) }
		}
	default:
		panic(fmt.Sprintf("model: KV cache of type %s", kv))
	}
	s.rope = m.ropeFor(ctxLen)
	s.sp = newStepper(m, maxBatch)
	s.scores = make([][]float32, m.pool.Threads())
	for i := range s.scores {
		s.scores[i] = make([]float32, (c.Heads/c.KVHeads)*s.ctxPad)
	}
	s.attScale = c.softmaxScale()
	return s
}

// Ctx returns the capacity of the state in tokens.
func (s *State) Ctx() int { return s.ctx }

// KVType returns the element type of the state's KV cache.
func (s *State) KVType() kernels.Type { return s.kvType }

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

// CopyPrefix makes s hold the first n positions of src (n ≤ src.Pos): their
// keys and values are copied, and s continues from position n exactly as
// src would (a position's keys and values depend only on the tokens up to
// it). Both states must be of one model, one KV type and one RoPE factor
// set (Model.RopeSame), and s must hold n positions.
func (s *State) CopyPrefix(src *State, n int) error {
	switch {
	case s.m != src.m:
		return errors.New("model: CopyPrefix between states of different models")
	case s.kvType != src.kvType:
		return fmt.Errorf("model: CopyPrefix from a %s cache into a %s one", src.kvType, s.kvType)
	case !s.m.RopeSame(s.ctx, src.ctx):
		return errors.New("model: CopyPrefix between states of different RoPE factors")
	case n < 0 || n > src.Pos || n > s.ctx:
		return fmt.Errorf("model: CopyPrefix of %d positions (source holds %d, destination %d)", n, src.Pos, s.ctx)
	}
	c := &s.m.Config
	KV := c.KVDim()
	for l := 0; l < c.Layers; l++ {
		for d := 0; d < KV; d++ {
			so, do := (l*KV+d)*src.ctxPad, (l*KV+d)*s.ctxPad
			if s.kvType == kernels.F16 {
				copy(s.kc16[do:do+n], src.kc16[so:so+n])
			} else {
				copy(s.kc[do:do+n], src.kc[so:so+n])
			}
		}
		so, do := l*src.ctx*KV, l*s.ctx*KV
		if s.kvType == kernels.F16 {
			copy(s.vc16[do:do+n*KV], src.vc16[so:so+n*KV])
		} else {
			copy(s.vc[do:do+n*KV], src.vc[so:so+n*KV])
		}
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
	sp := s.sp
	for start := 0; start < n; start += s.maxBatch {
		end := min(start+s.maxBatch, n)
		sp.toks, sp.distinct, sp.allOut = tokens[start:end], end-start == 1, all
		for t := range end - start {
			sp.seqs[t], sp.pos[t] = s, s.Pos+t
		}
		switch {
		case all:
			sp.logits = logits[start*c.Vocab : end*c.Vocab]
		case end == n:
			sp.logits, sp.out = logits[:c.Vocab], append(sp.out, end-start-1)
		default:
			sp.logits = nil // an inner step of a last-token-only call
		}
		if err := sp.exec(p); err != nil {
			return err
		}
		s.Pos += end - start
	}
	return nil
}

// storeKV writes the key and value of position pos of layer l into the
// cache.
func (s *State) storeKV(l, pos int, k, v []float32) {
	KV := len(k)
	if s.kvType == kernels.F16 {
		// Each element is kernels.FP32ToFP16 of its float (round to
		// nearest even), through the backend's row conversion; keys via
		// a buffer on the stack (tokens of one sequence store in
		// parallel), then scattered into the transposed cache.
		s.toF16(u16Bytes(s.vc16[(l*s.ctx+pos)*KV:(l*s.ctx+pos+1)*KV]), v)
		kc := s.kc16[l*KV*s.ctxPad : (l+1)*KV*s.ctxPad]
		var buf [256]uint16
		for d0 := 0; d0 < KV; d0 += len(buf) {
			part := buf[:min(len(buf), KV-d0)]
			s.toF16(u16Bytes(part), k[d0:d0+len(part)])
			for i, h := range part {
				kc[(d0+i)*s.ctxPad+pos] = h
			}
		}
		return
	}
	kc := s.kc[l*KV*s.ctxPad : (l+1)*KV*s.ctxPad]
	for d, val := range k {
		kc[d*s.ctxPad+pos] = val
	}
	copy(s.vc[(l*s.ctx+pos)*KV:(l*s.ctx+pos+1)*KV], v)
}

// u16Bytes views binary16 elements as their little-endian bytes (the
// kernels' F16 row layout; amd64 and the other little-endian targets).
func u16Bytes(x []uint16) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 2*len(x))
}
