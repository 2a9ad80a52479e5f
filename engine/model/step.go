package model

// One forward step over n tokens: the layer sequence shared by prompt
// processing (State: n consecutive positions of one sequence) and batched
// decoding (Batch: one token of each of n sequences).
//
// Between the matrix products, the per-token work (norms, biases, RoPE,
// writing the KV cache, attention, residual adds, the gated activation)
// runs in parallel over tokens on the pool, in as few parallel steps as the
// data dependencies allow: a layer is
//
//	QKV product → [qkv + KV write + attention] → Wo product →
//	[attention output + residual + FFN norm] → gate/up product →
//	[gated activation] → down product → [FFN output + residual + next norm]
//
// Every token's arithmetic is the same whatever the step it is in, the
// worker that computes it or the number of workers, so logits are
// bit-identical for any thread count and any batching.

import (
	"github.com/weos/llm-engine/kernels"
)

// stepBufs are the activations of a step of up to max tokens, a row per
// token in each.
type stepBufs struct {
	x, xb, xb2 []float32 // Dim (xb: max(Dim, QDim))
	q, att     []float32 // QDim
	k, v       []float32 // KVDim
	hb, hb2    []float32 // FFN
}

func newStepBufs(c *Config, n int) stepBufs {
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	return stepBufs{
		x: make([]float32, n*D), xb: make([]float32, n*max(D, Q)), xb2: make([]float32, n*D),
		q: make([]float32, n*Q), att: make([]float32, n*Q),
		k: make([]float32, n*KV), v: make([]float32, n*KV),
		hb: make([]float32, n*max(F, D)), hb2: make([]float32, n*F), // hb: also output rows
	}
}

// actConv converts the rows feeding one group of matrix products into the
// activation type of their weights, as the rows are produced (in the
// parallel phases), so that the products start from converted activations
// (kernels.MatMulActs) instead of converting them first on one thread.
type actConv struct {
	ok   bool                 // the products agree on one activation type
	conv kernels.QuantizeFunc // nil: float32 rows used in place
	rb   int                  // bytes per converted row
}

func (m *Model) actConv(cols int, ws ...*kernels.Matrix) actConv {
	var ac actConv
	for i, w := range ws {
		t, conv, err := m.backend.Activation(w.Type)
		if err != nil {
			return actConv{}
		}
		if i == 0 {
			ac.conv = conv
			ac.rb = 4 * cols
			if conv != nil {
				if ac.rb, err = t.RowSize(cols); err != nil {
					return actConv{}
				}
			}
			continue
		}
		if t0, _, _ := m.backend.Activation(ws[0].Type); t != t0 {
			return actConv{}
		}
	}
	ac.ok = true
	return ac
}

// layerConvs are the conversions of one layer's products.
type layerConvs struct{ qkv, wo, up, down actConv }

// stepper runs steps: its phase functions are bound once, so a step
// allocates nothing.
type stepper struct {
	m    *Model
	bufs stepBufs

	// converted activations (rows of at most 4 bytes per element), and
	// the conversions of each layer's products and of the output head
	actD, actQ, actF []byte
	convs            []layerConvs
	convOut          actConv

	// the step being run: token t is toks[t] at position pos[t] of
	// sequence seqs[t] (seqs and pos are the stepper's, toks the caller's)
	toks     []int32
	seqs     []*State
	pos      []int
	distinct bool // no two tokens of one sequence (decode)
	layer    int
	// logits: a row for every token (allOut), or for the tokens listed in
	// out (ascending), or none (nil)
	logits []float32
	allOut bool
	out    []int
	err    error

	stepFn                            func(*kernels.Pool)
	embedFn, qkvFn, attnFn, qkvAttnFn func(worker, start, end int)
	midFn, gluFn, postFn              func(worker, start, end int)
	attnUnits                         int // attention work units per token: KV heads
	group                             int // query heads per KV head
}

func newStepper(m *Model, n int) *stepper {
	c := &m.Config
	sp := &stepper{m: m, bufs: newStepBufs(c, n), attnUnits: c.KVHeads, group: c.Heads / c.KVHeads,
		seqs: make([]*State, n), pos: make([]int, n), out: make([]int, 0, n)}
	D, Q, F := c.Dim, c.QDim(), c.FFN
	sp.actD, sp.actQ, sp.actF = make([]byte, n*4*D), make([]byte, n*4*Q), make([]byte, n*4*max(F, D))
	sp.convs = make([]layerConvs, len(m.Layers))
	for l := range m.Layers {
		L := &m.Layers[l]
		sp.convs[l] = layerConvs{
			qkv:  m.actConv(D, &L.Wq, &L.Wk, &L.Wv),
			wo:   m.actConv(Q, &L.Wo),
			up:   m.actConv(D, &L.Gate, &L.Up),
			down: m.actConv(F, &L.Down),
		}
	}
	sp.convOut = m.actConv(D, &m.Output)
	sp.stepFn = sp.run
	sp.embedFn = sp.embedPhase
	sp.qkvFn = sp.qkvPhase
	sp.attnFn = sp.attnPhase
	sp.qkvAttnFn = sp.qkvAttnPhase
	sp.midFn = sp.midPhase
	sp.gluFn = sp.gluPhase
	sp.postFn = sp.postPhase
	return sp
}

// seq returns token t's sequence and position.
func (sp *stepper) seq(t int) (*State, int) { return sp.seqs[t], sp.pos[t] }

// exec runs the step set up in sp on worker 0 of p, then clears the
// step's references to its caller's data.
func (sp *stepper) exec(p *kernels.Pool) error {
	p.Exec(sp.stepFn)
	clear(sp.seqs)
	sp.toks, sp.logits, sp.out = nil, nil, sp.out[:0]
	err := sp.err
	sp.err = nil
	return err
}

// run is one step, on worker 0 of the pool.
func (sp *stepper) run(p *kernels.Pool) {
	m, c, be := sp.m, &sp.m.Config, sp.m.backend
	n := len(sp.toks)
	b := &sp.bufs
	D, Q, KV, F := c.Dim, c.QDim(), c.KVDim(), c.FFN
	xb, xb2 := b.xb[:n*D], b.xb2[:n*D]
	q, k, v := b.q[:n*Q], b.k[:n*KV], b.v[:n*KV]

	p.Run(n, sp.embedFn) // embedding + layer 0's attention norm
	if sp.err != nil {
		return
	}
	// mm runs a group of products from the rows x, converted by the
	// phase that produced them when cv.ok (act), else here.
	mm := func(cv actConv, act []byte, x []float32, n int, ops ...kernels.MatMulOp) {
		if cv.ok {
			be.MatMulActs(p, act[:n*cv.rb], cv.rb, n, ops...)
			return
		}
		be.MatMulMany(p, x, n, ops...)
	}
	for l := range m.Layers {
		L := &m.Layers[l]
		cv := &sp.convs[l]
		sp.layer = l
		mm(cv.qkv, sp.actD, xb, n,
			kernels.MatMulOp{Out: q, W: &L.Wq},
			kernels.MatMulOp{Out: k, W: &L.Wk},
			kernels.MatMulOp{Out: v, W: &L.Wv})
		if sp.distinct && n >= p.Threads() {
			// Distinct sequences, enough of them: each token's
			// projections, KV write and attention in one unit.
			p.Run(n, sp.qkvAttnFn)
			mm(cv.wo, sp.actQ, b.att[:n*Q], n, kernels.MatMulOp{Out: xb2, W: &L.Wo})
		} else {
			// Tokens of one sequence attend to each other's keys (all
			// are written first), or too few tokens to keep the workers
			// busy: attention split by KV head.
			p.Run(n, sp.qkvFn)
			p.Run(n*sp.attnUnits, sp.attnFn)
			be.MatMul(p, xb2, &L.Wo, b.att[:n*Q], n)
		}
		p.Run(n, sp.midFn) // attention output, residual, FFN norm
		mm(cv.up, sp.actD, xb, n,
			kernels.MatMulOp{Out: b.hb[:n*F], W: &L.Gate},
			kernels.MatMulOp{Out: b.hb2[:n*F], W: &L.Up})
		p.Run(n, sp.gluFn)
		mm(cv.down, sp.actF, b.hb[:n*F], n, kernels.MatMulOp{Out: xb2, W: &L.Down})
		p.Run(n, sp.postFn) // FFN output, residual, next norm
	}
	switch {
	case sp.logits == nil:
	case sp.allOut:
		mm(sp.convOut, sp.actD, xb, n, kernels.MatMulOp{Out: sp.logits, W: &m.Output})
		m.finishLogits(sp.logits[:n*c.Vocab])
	default:
		// The listed tokens' rows, gathered (into buffers the layers are
		// done with: F ≥ D) unless there is one.
		k, cv := len(sp.out), sp.convOut
		op := kernels.MatMulOp{Out: sp.logits[:k*c.Vocab], W: &m.Output}
		if cv.ok {
			act := sp.actD[sp.out[0]*cv.rb : (sp.out[0]+1)*cv.rb]
			if k > 1 {
				act = sp.actF[:k*cv.rb]
				for i, t := range sp.out {
					copy(act[i*cv.rb:(i+1)*cv.rb], sp.actD[t*cv.rb:(t+1)*cv.rb])
				}
			}
			be.MatMulActs(p, act, cv.rb, k, op)
		} else {
			x := xb[sp.out[0]*D : (sp.out[0]+1)*D]
			if k > 1 {
				x = b.hb[:k*D]
				for i, t := range sp.out {
					copy(x[i*D:(i+1)*D], xb[t*D:(t+1)*D])
				}
			}
			be.MatMulMany(p, x, k, op)
		}
		m.finishLogits(op.Out)
	}
}

// convert writes row t of x (cols floats) converted by cv into act.
func convert(cv actConv, act []byte, x []float32, t, cols int) {
	if !cv.ok {
		return
	}
	row := x[t*cols : (t+1)*cols]
	dst := act[t*cv.rb : (t+1)*cv.rb]
	if cv.conv == nil {
		copy(dst, kernels.F32Bytes(row))
		return
	}
	cv.conv(dst, row)
}

func (sp *stepper) embedPhase(_, start, end int) {
	m, c := sp.m, &sp.m.Config
	D := c.Dim
	b := &sp.bufs
	for t := start; t < end; t++ {
		if err := m.embed(b.x[t*D:(t+1)*D], sp.toks[t]); err != nil {
			sp.err = err
			return
		}
		kernels.RMSNorm(b.xb[t*D:(t+1)*D], b.x[t*D:(t+1)*D], m.Layers[0].AttnNorm, c.Eps)
		convert(sp.convs[0].qkv, sp.actD, b.xb, t, D)
	}
}

// qkvOne finishes token t's projections and writes its key and value into
// its sequence's cache.
func (sp *stepper) qkvOne(t int) {
	m, c := sp.m, &sp.m.Config
	Q, KV := c.QDim(), c.KVDim()
	b := &sp.bufs
	s, pos := sp.seq(t)
	q, k, v := b.q[t*Q:(t+1)*Q], b.k[t*KV:(t+1)*KV], b.v[t*KV:(t+1)*KV]
	m.qkv(&m.Layers[sp.layer], q, k, v, s.rope[pos*c.RopeDim:(pos+1)*c.RopeDim])
	s.storeKV(sp.layer, pos, k, v)
}

func (sp *stepper) qkvPhase(_, start, end int) {
	for t := start; t < end; t++ {
		sp.qkvOne(t)
	}
}

// attnPhase: unit i is token i/units, KV head i%units.
func (sp *stepper) attnPhase(worker, start, end int) {
	u := sp.attnUnits
	for i := start; i < end; i++ {
		sp.attend(worker, i/u, i%u)
	}
}

func (sp *stepper) qkvAttnPhase(worker, start, end int) {
	Q := sp.m.Config.QDim()
	for t := start; t < end; t++ {
		sp.qkvOne(t)
		for h := 0; h < sp.attnUnits; h++ {
			sp.attend(worker, t, h)
		}
		convert(sp.convs[sp.layer].wo, sp.actQ, sp.bufs.att, t, Q)
	}
}

// attend computes the attention of token t's query heads of KV head h
// (its GQA group) over its sequence's cache: scores q·k over the visible
// positions (kernels.AttnScores), the soft-cap if any, softmax of
// scores*scale per head, then each output element as the probabilities'
// weighted sum of a V column (kernels.AttnValues). Both kernels reduce
// each element in a fixed order.
//
// In a sliding-window layer query position p sees keys k with p-k < window
// (llama.cpp's LLAMA_SWA_TYPE_STANDARD): softmax and outputs run over the
// window only.
func (sp *stepper) attend(worker, t, h int) {
	m, c := sp.m, &sp.m.Config
	be := m.backend
	s, pos := sp.seq(t)
	hd, Q, KV := c.HeadDim, c.QDim(), c.KVDim()
	group := sp.group
	l := sp.layer
	sc := s.scores[worker]
	cp := s.ctxPad
	nPos := pos + 1
	lo := 0 // first visible position
	if m.Layers[l].SWA && pos >= c.SlidingWindow {
		lo = pos - c.SlidingWindow + 1
	}
	q := sp.bufs.q[t*Q+h*group*hd : t*Q+(h+1)*group*hd]
	// sc[g*cp + p] = q_g · k_p, from position a = lo rounded down to a
	// multiple of 8, so that the kernel's blocks of eight positions end
	// within the row (positions a..lo-1 are not used).
	a := lo &^ 7
	f16 := s.kvType == kernels.F16
	kOff, vOff := l*KV*cp+h*hd*cp+a, l*s.ctx*KV+lo*KV+h*hd
	if f16 {
		be.AttnScoresF16(sc[a:], cp, q, group, hd, s.kc16[kOff:(l+1)*KV*cp], cp, nPos-a)
	} else {
		be.AttnScores(sc[a:], cp, q, group, hd, s.kc[kOff:(l+1)*KV*cp], cp, nPos-a)
	}
	for g := 0; g < group; g++ {
		row := sc[g*cp+lo : g*cp+nPos]
		if c.AttnSoftcap != 0 {
			kernels.Softcap(row, c.AttnSoftcap)
		}
		be.Softmax(row, s.attScale)
	}
	// out[g*hd + d] = Σ_p prob_g[p] v_p[d]
	out := sp.bufs.att[t*Q+h*group*hd : t*Q+(h+1)*group*hd]
	if f16 {
		be.AttnValuesF16(out, sc[lo:], cp, group, s.vc16[vOff:(l+1)*s.ctx*KV], KV, hd, nPos-lo)
	} else {
		be.AttnValues(out, sc[lo:], cp, group, s.vc[vOff:(l+1)*s.ctx*KV], KV, hd, nPos-lo)
	}
}

func (sp *stepper) midPhase(_, start, end int) {
	m, c := sp.m, &sp.m.Config
	D := c.Dim
	L := &m.Layers[sp.layer]
	b := &sp.bufs
	for t := start; t < end; t++ {
		x, o := b.x[t*D:(t+1)*D], b.xb2[t*D:(t+1)*D]
		m.attnOut(L, o)
		kernels.Add(x, o, x)
		kernels.RMSNorm(b.xb[t*D:(t+1)*D], x, L.FFNNorm, c.Eps)
		convert(sp.convs[sp.layer].up, sp.actD, b.xb, t, D)
	}
}

func (sp *stepper) gluPhase(_, start, end int) {
	F := sp.m.Config.FFN
	b := &sp.bufs
	for t := start; t < end; t++ {
		sp.m.glu(b.hb[t*F:(t+1)*F], b.hb2[t*F:(t+1)*F])
		convert(sp.convs[sp.layer].down, sp.actF, b.hb, t, F)
	}
}

func (sp *stepper) postPhase(_, start, end int) {
	m, c := sp.m, &sp.m.Config
	D := c.Dim
	L := &m.Layers[sp.layer]
	norm, next := m.OutNorm, sp.convOut
	if sp.layer+1 < len(m.Layers) {
		norm, next = m.Layers[sp.layer+1].AttnNorm, sp.convs[sp.layer+1].qkv
	}
	b := &sp.bufs
	for t := start; t < end; t++ {
		x, o := b.x[t*D:(t+1)*D], b.xb2[t*D:(t+1)*D]
		m.ffnOut(L, o)
		kernels.Add(x, o, x)
		kernels.RMSNorm(b.xb[t*D:(t+1)*D], x, norm, c.Eps)
		convert(next, sp.actD, b.xb, t, D)
	}
}
