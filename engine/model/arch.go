package model

// Architectures. One forward pass (forward.go) serves every supported
// `general.architecture`; what differs between them is data: the options of
// Config (read here from the GGUF `<arch>.*` keys with llama.cpp's
// defaults), the optional tensors of Layer and Model (nil when absent), and
// the per-token steps below, which State.step and Batch.step share. The
// conventions are llama.cpp's (src/llama-model.cpp and src/models/*.cpp):
//
//	llama   RoPE NORM; optional q/k/v/o biases, fused attn_qkv, tied output
//	        and Llama 3.1 rope_freqs factors (RoPE angle of pair i ÷ f[i]).
//	qwen2   RoPE NEOX; q/k/v biases.
//	qwen3   RoPE NEOX; per-head RMSNorm of Q and K (attn_q_norm/attn_k_norm)
//	        before RoPE; head_dim (key_length) × heads may differ from n_embd.
//	gemma   RoPE NEOX; embeddings × √n_embd; GeGLU (ggml's fp16 GELU table);
//	        Q × 1/√head_dim after RoPE; output = token_embd always. Norm
//	        weights are used as stored (the converter folds in HF's 1+w).
//	gemma2  gemma plus post-attention and post-FFN RMSNorms, attention logit
//	        soft-cap c·tanh(s/c) on the scaled scores before the mask, final
//	        logit soft-cap, sliding-window attention on layers l%2 == 0
//	        (window sliding_window, default 4096), Q × 1/√head_dim (the 27B,
//	        46 layers, uses 1/√(n_embd/n_head): llama.cpp's reading of
//	        query_pre_attn_scalar).
//	phi3    RoPE NEOX; fused attn_qkv (rows Q|K|V) and ffn_up (rows gate|up);
//	        Q × 1/√head_dim after RoPE; LongRoPE: rope_factors_short/long
//	        (long when the state's context exceeds
//	        rope.scaling.original_context_length) and rope.scaling.attn_factor
//	        on cos/sin. A sliding_window > 0 is ignored, as llama.cpp does.
//
// Unsupported architectures, mixtures of experts, YaRN RoPE scaling and any
// tensor the architecture does not use are load errors naming them.

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// archSpec is what distinguishes an architecture beyond its hyperparameters.
type archSpec struct {
	neox       bool // RoPE NEOX (pairs i, i+n_rot/2) instead of NORM (2i, 2i+1)
	embedScale bool // token embeddings × √n_embd
	gelu       bool // GeGLU feed-forward instead of SwiGLU
	scaleQ     bool // Q × attention scale after RoPE, softmax unscaled
	tiedOnly   bool // the output head is always token_embd
	biases     need // attn_{q,k,v}.bias (and attn_output.bias where optional)
	qkNorm     bool // attn_q_norm / attn_k_norm (required)
	gemma2     bool // post norms, soft-caps, alternating sliding window
	fusedUp    bool // ffn_up holds gate|up; there is no ffn_gate
	ropeFreqs  bool // rope_freqs.weight (Llama 3.1 factors) allowed
	longRope   bool // rope_factors_short/long allowed
}

type need uint8

const (
	absent need = iota
	optional
	required
)

var archSpecs = map[string]archSpec{
	"llama":  {biases: optional, ropeFreqs: true},
	"qwen2":  {neox: true, biases: required},
	"qwen3":  {neox: true, qkNorm: true},
	"gemma":  {neox: true, embedScale: true, gelu: true, scaleQ: true, tiedOnly: true},
	"gemma2": {neox: true, embedScale: true, gelu: true, scaleQ: true, tiedOnly: true, gemma2: true},
	"phi3":   {neox: true, scaleQ: true, fusedUp: true, longRope: true},
}

// SupportedArchitectures lists the general.architecture values Load accepts.
func SupportedArchitectures() []string {
	names := make([]string, 0, len(archSpecs))
	for a := range archSpecs {
		names = append(names, a)
	}
	slices.Sort(names)
	return names
}

func readConfig(f *gguf.File) (Config, error) {
	var c Config
	arch, ok := f.String("general.architecture")
	if !ok {
		return c, errors.New("model: general.architecture is missing")
	}
	spec, ok := archSpecs[arch]
	if !ok {
		return c, fmt.Errorf("model: architecture %q is not supported (supported: %s)", arch, strings.Join(SupportedArchitectures(), ", "))
	}
	c.Arch = arch
	var err error
	req := func(key string) int {
		v, ok := f.Uint(arch + "." + key)
		if !ok {
			if _, present := f.Lookup(arch + "." + key); present {
				err = errors.Join(err, fmt.Errorf("model: %s.%s is not a non-negative integer", arch, key))
			} else {
				err = errors.Join(err, fmt.Errorf("model: %s.%s is missing", arch, key))
			}
			return 0
		}
		if v == 0 || v > 1<<24 {
			err = errors.Join(err, fmt.Errorf("model: %s.%s = %d is out of range", arch, key, v))
			return 0
		}
		return int(v)
	}
	opt := func(key string, def int) int {
		if _, present := f.Lookup(arch + "." + key); !present {
			return def
		}
		return req(key)
	}
	optF := func(key string, def float32) float32 {
		kv, present := f.Lookup(arch + "." + key)
		if !present {
			return def
		}
		v, ok := f.Float(arch + "." + key)
		if !ok || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			err = errors.Join(err, fmt.Errorf("model: %s.%s = %v is not a positive number", arch, key, kv.Value))
			return def
		}
		return float32(v)
	}
	c.Dim = req("embedding_length")
	c.Layers = req("block_count")
	c.Heads = req("attention.head_count")
	c.FFN = req("feed_forward_length")
	c.Ctx = req("context_length")
	if err != nil {
		return c, err
	}
	if v, ok := f.Uint(arch + ".expert_count"); ok && v > 0 {
		return c, fmt.Errorf("model: %s.expert_count = %d: mixture-of-experts models are not supported", arch, v)
	}
	c.KVHeads = opt("attention.head_count_kv", c.Heads)
	headDim := 0
	if c.Dim%c.Heads == 0 {
		headDim = c.Dim / c.Heads
	}
	c.HeadDim = opt("attention.key_length", headDim)
	if vl := opt("attention.value_length", c.HeadDim); vl != c.HeadDim {
		err = errors.Join(err, fmt.Errorf("model: attention.key_length %d != value_length %d is not supported", c.HeadDim, vl))
	}
	c.RopeDim = opt("rope.dimension_count", c.HeadDim)
	c.RopeBase = optF("rope.freq_base", 10000)
	c.Eps = optF("attention.layer_norm_rms_epsilon", 1e-5)
	c.RopeOrigCtx = opt("rope.scaling.original_context_length", c.Ctx)
	c.RopeAttnFactor = optF("rope.scaling.attn_factor", 1)
	if err != nil {
		return c, err
	}
	switch {
	case c.HeadDim == 0:
		return c, fmt.Errorf("model: embedding_length %d is not a multiple of head_count %d", c.Dim, c.Heads)
	case c.KVHeads > c.Heads || c.Heads%c.KVHeads != 0:
		return c, fmt.Errorf("model: head_count %d is not a multiple of head_count_kv %d", c.Heads, c.KVHeads)
	case c.RopeDim > c.HeadDim || c.RopeDim%2 != 0:
		return c, fmt.Errorf("model: rope.dimension_count %d must be even and at most the head size %d", c.RopeDim, c.HeadDim)
	}

	// RoPE scaling (llama.cpp: type "linear" unless given; the factor, or
	// the older scale_linear, gives freq_scale = 1/factor; "none" forces 1;
	// only YaRN changes more than the angle scale).
	scaling := "linear"
	if kv, ok := f.Lookup(arch + ".rope.scaling.type"); ok {
		if scaling, ok = kv.Value.(string); !ok {
			return c, fmt.Errorf("model: %s.rope.scaling.type = %v is not a string", arch, kv.Value)
		}
	}
	factor := float32(0)
	if _, ok := f.Lookup(arch + ".rope.scaling.factor"); ok {
		factor = optF("rope.scaling.factor", 1)
	} else if _, ok := f.Lookup(arch + ".rope.scale_linear"); ok {
		factor = optF("rope.scale_linear", 1)
	}
	if err != nil {
		return c, err
	}
	c.RopeFreqScale = 1
	switch scaling {
	case "none":
	case "linear", "longrope":
		if factor != 0 {
			c.RopeFreqScale = 1 / factor
		}
	case "yarn":
		return c, fmt.Errorf("model: rope scaling %q is not supported", scaling)
	default:
		return c, fmt.Errorf("model: unknown rope scaling type %q", scaling)
	}

	c.RopeNeox = spec.neox
	c.GELU = spec.gelu
	c.ScaleQ = spec.scaleQ
	if spec.embedScale {
		c.EmbedScale = float32(math.Sqrt(float64(c.Dim)))
	}
	c.AttnScale = 1 / float32(math.Sqrt(float64(c.HeadDim)))
	if spec.gemma2 {
		if c.Layers == 46 { // Gemma-2 27B: query_pre_attn_scalar = n_embd/n_head
			c.AttnScale = 1 / float32(math.Sqrt(float64(c.Dim/c.Heads)))
		}
		c.AttnSoftcap = optF("attn_logit_softcapping", 50)
		c.FinalSoftcap = optF("final_logit_softcapping", 30)
		c.SlidingWindow = opt("attention.sliding_window", 4096)
		if err != nil {
			return c, err
		}
	}

	emb, ok := f.Tensor("token_embd.weight")
	if !ok {
		return c, errors.New("model: tensor token_embd.weight is missing")
	}
	if len(emb.Dims) != 2 {
		return c, fmt.Errorf("model: tensor token_embd.weight has shape %v, want [%d n_vocab]", emb.Dims, c.Dim)
	}
	c.Vocab = int(emb.Dims[1])
	if toks, ok := f.ArrayValue("tokenizer.ggml.tokens"); ok && toks.Len() != c.Vocab {
		return c, fmt.Errorf("model: tokenizer has %d tokens but token_embd.weight has %d rows", toks.Len(), c.Vocab)
	}
	if v, ok := f.Uint(arch + ".vocab_size"); ok && int(v) != c.Vocab {
		return c, fmt.Errorf("model: %s.vocab_size = %d but token_embd.weight has %d rows", arch, v, c.Vocab)
	}
	return c, nil
}

// archLoader records which tensors were used, so that a tensor the
// architecture does not know (a feature this engine would silently drop) is
// a load error.
type archLoader struct {
	*loader
	used map[string]bool
}

func (a *archLoader) has(name string) bool {
	_, ok := a.f.Tensor(name)
	return ok
}

func (a *archLoader) matrix(dst *kernels.Matrix, name string, cols, rows int, matmul bool) {
	a.used[name] = true
	a.loader.matrix(dst, name, cols, rows, matmul)
}

func (a *archLoader) vector(name string, n int) []float32 {
	a.used[name] = true
	return a.loader.vector(name, n)
}

// optVector loads a 1-D tensor when the file has it (nil otherwise).
func (a *archLoader) optVector(name string, n int) []float32 {
	if !a.has(name) {
		return nil
	}
	return a.vector(name, n)
}

// splitRows cuts a matrix into consecutive row blocks of the given sizes
// (views of its data): a fused projection becomes separate ones whose
// products are, element for element, those of the fused matrix.
func splitRows(m *kernels.Matrix, dst []*kernels.Matrix, rows ...int) {
	rb := m.RowBytes()
	off := 0
	for i, r := range rows {
		*dst[i] = kernels.Matrix{Type: m.Type, Rows: r, Cols: m.Cols, Data: m.Data[off*rb : (off+r)*rb : (off+r)*rb]}
		off += r
	}
}

// loadTensors binds every tensor of the model's architecture (m.Config is
// filled in) through l, checking presence, type and shape, then refuses
// tensors it did not use.
func loadTensors(m *Model, l *loader) error {
	cfg := &m.Config
	spec := archSpecs[cfg.Arch]
	a := &archLoader{loader: l, used: map[string]bool{}}
	D, Q, KV, F, V, H := cfg.Dim, cfg.QDim(), cfg.KVDim(), cfg.FFN, cfg.Vocab, cfg.HeadDim
	a.matrix(&m.TokEmb, "token_embd.weight", D, V, false)
	m.OutNorm = a.vector("output_norm.weight", D)
	if !spec.tiedOnly && a.has("output.weight") {
		a.matrix(&m.Output, "output.weight", D, V, true)
	} else {
		cfg.TiedOutput = true
		m.Output = m.TokEmb
		if l.err == nil {
			if err := l.b.Supports(m.Output.Type); err != nil {
				l.err = fmt.Errorf("model: tensor token_embd.weight (tied output): %w", err)
			}
		}
	}
	if spec.ropeFreqs {
		m.RopeFreqs = a.optVector("rope_freqs.weight", cfg.RopeDim/2)
	}
	if spec.longRope {
		m.RopeLong = a.optVector("rope_factors_long.weight", cfg.RopeDim/2)
		m.RopeShort = a.optVector("rope_factors_short.weight", cfg.RopeDim/2)
		if (m.RopeLong == nil) != (m.RopeShort == nil) && l.err == nil {
			l.err = errors.New("model: LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight")
		}
	}
	m.Layers = make([]Layer, cfg.Layers)
	for i := range m.Layers {
		L := &m.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		L.AttnNorm = a.vector(p+"attn_norm.weight", D)
		if a.has(p + "attn_qkv.weight") {
			var qkv kernels.Matrix
			a.matrix(&qkv, p+"attn_qkv.weight", D, Q+2*KV, true)
			if l.err == nil {
				splitRows(&qkv, []*kernels.Matrix{&L.Wq, &L.Wk, &L.Wv}, Q, KV, KV)
			}
			if spec.biases != absent && a.has(p+"attn_qkv.bias") {
				if b := a.vector(p+"attn_qkv.bias", Q+2*KV); b != nil {
					L.Bq, L.Bk, L.Bv = b[:Q], b[Q:Q+KV], b[Q+KV:]
				}
			}
		} else {
			a.matrix(&L.Wq, p+"attn_q.weight", D, Q, true)
			a.matrix(&L.Wk, p+"attn_k.weight", D, KV, true)
			a.matrix(&L.Wv, p+"attn_v.weight", D, KV, true)
			switch spec.biases {
			case required:
				L.Bq = a.vector(p+"attn_q.bias", Q)
				L.Bk = a.vector(p+"attn_k.bias", KV)
				L.Bv = a.vector(p+"attn_v.bias", KV)
			case optional:
				L.Bq = a.optVector(p+"attn_q.bias", Q)
				L.Bk = a.optVector(p+"attn_k.bias", KV)
				L.Bv = a.optVector(p+"attn_v.bias", KV)
			}
		}
		a.matrix(&L.Wo, p+"attn_output.weight", Q, D, true)
		if spec.biases == optional {
			L.Bo = a.optVector(p+"attn_output.bias", D)
		}
		if spec.qkNorm {
			L.QNorm = a.vector(p+"attn_q_norm.weight", H)
			L.KNorm = a.vector(p+"attn_k_norm.weight", H)
		}
		if spec.gemma2 {
			L.PostAttnNorm = a.vector(p+"post_attention_norm.weight", D)
			L.PostFFNNorm = a.vector(p+"post_ffw_norm.weight", D)
			L.SWA = i%2 < 1 // llama.cpp's swa pattern 2: layers 0, 2, ...
		}
		L.FFNNorm = a.vector(p+"ffn_norm.weight", D)
		if spec.fusedUp {
			var up kernels.Matrix
			a.matrix(&up, p+"ffn_up.weight", D, 2*F, true)
			if l.err == nil {
				splitRows(&up, []*kernels.Matrix{&L.Gate, &L.Up}, F, F)
			}
		} else {
			a.matrix(&L.Gate, p+"ffn_gate.weight", D, F, true)
			a.matrix(&L.Up, p+"ffn_up.weight", D, F, true)
		}
		a.matrix(&L.Down, p+"ffn_down.weight", F, D, true)
	}
	if l.err != nil {
		return l.err
	}
	if cfg.SlidingWindow == 0 {
		for i := range m.Layers {
			m.Layers[i].SWA = false
		}
	}
	for i := range l.f.Tensors {
		if name := l.f.Tensors[i].Name; !a.used[name] {
			return fmt.Errorf("model: tensor %s is not used by architecture %s (unsupported feature)", name, cfg.Arch)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Per-token steps shared by State.step and Batch.step.

// ropeTable fills rope with the (cos, sin) pairs of positions 0..ctx-1 for a
// sequence of capacity ctx: Llama 3.1 rope_freqs, else LongRoPE's long
// factors when ctx exceeds the original context (llama.cpp decides by the
// context size, n_ctx_seq > n_ctx_orig_yarn) and its short factors
// otherwise.
func (m *Model) ropeTable(rope []float32, ctx int) { m.ropeRows(rope, 0, ctx, m.ropeFactors(ctx)) }

// ropeFactors returns the frequency factors for a sequence of ctx tokens:
// LongRoPE models use their long factors beyond the original context.
func (m *Model) ropeFactors(ctx int) []float32 {
	factors := m.RopeFreqs
	if factors == nil && m.RopeShort != nil {
		factors = m.RopeShort
		if ctx > m.Config.RopeOrigCtx {
			factors = m.RopeLong
		}
	}
	return factors
}

// RopeSame reports whether sequences of capacities a and b rotate with the
// same RoPE factors: always, but for LongRoPE, whose short or long factors
// depend on the capacity (as llama.cpp's on its context size). A state can
// serve, or continue from its cache, only requests of its factor set.
func (m *Model) RopeSame(a, b int) bool {
	fa, fb := m.ropeFactors(a), m.ropeFactors(b)
	if len(fa) == 0 || len(fb) == 0 {
		return len(fa) == len(fb)
	}
	return &fa[0] == &fb[0]
}

// Capacity is the state capacity for a request of ctxLen tokens rounded up
// to a multiple of quantum (so that the state can serve later requests of
// about its size), within the model's context, and never across LongRoPE's
// original context (which would change the request's RoPE factors).
func (m *Model) Capacity(ctxLen, quantum int) int {
	c := &m.Config
	n := ctxLen
	if quantum > 1 {
		n = (ctxLen + quantum - 1) / quantum * quantum
	}
	if c.Ctx > 0 && n > c.Ctx {
		n = max(c.Ctx, ctxLen)
	}
	if !m.RopeSame(n, ctxLen) {
		n = ctxLen
	}
	return n
}

// ropeRows fills rows [from, to) of a RoPE table.
func (m *Model) ropeRows(rope []float32, from, to int, factors []float32) {
	c := &m.Config
	ts := kernels.RopeThetaScale(c.RopeBase, c.RopeDim)
	for p := from; p < to; p++ {
		kernels.RopeCacheExt(rope[p*c.RopeDim:(p+1)*c.RopeDim], p, ts, c.RopeFreqScale, c.RopeAttnFactor, factors)
	}
}

// ropeShared are a model's RoPE tables, shared by its states: row p depends
// only on p and the factor set, so one table serves every sequence of up
// to its length. A new sequence then costs no sines and cosines (0.05 ms
// for 142 positions of synth-256, about 1 ms for 2048 of a 1.1B model's
// head dim) unless it is longer than any before. Tables are never
// written once published: a longer one is a new copy.
type ropeShared struct {
	mu     sync.Mutex
	tables map[*float32][]float32 // by factor set (its first element; nil: none)
}

// ropeFor returns a read-only table of at least ctx rows for a sequence of
// ctx tokens.
func (m *Model) ropeFor(ctx int) []float32 {
	c := &m.Config
	factors := m.ropeFactors(ctx)
	var key *float32
	if len(factors) > 0 {
		key = &factors[0]
	}
	m.rope.mu.Lock()
	defer m.rope.mu.Unlock()
	if m.rope.tables == nil {
		m.rope.tables = map[*float32][]float32{}
	}
	t := m.rope.tables[key]
	if have := len(t) / max(c.RopeDim, 1); have < ctx {
		rows := (ctx + 255) &^ 255
		nt := make([]float32, rows*c.RopeDim)
		copy(nt, t)
		m.ropeRows(nt, have, rows, factors)
		m.rope.tables[key], t = nt, nt
	}
	return t[: ctx*c.RopeDim : ctx*c.RopeDim]
}

// embed writes token tok's input vector into x[:Dim].
func (m *Model) embed(x []float32, tok int32) error {
	if err := kernels.GetRow(x, &m.TokEmb, int(tok)); err != nil {
		return err
	}
	if s := m.Config.EmbedScale; s != 0 {
		kernels.Scale(x[:m.Config.Dim], s)
	}
	return nil
}

// qkv finishes one token's projections q (QDim), k and v (KVDim) for layer
// L at the position whose RoPE pairs are cs: biases, per-head Q/K norms,
// RoPE, then Q's pre-scaling.
func (m *Model) qkv(L *Layer, q, k, v, cs []float32) {
	c := &m.Config
	if L.Bq != nil {
		kernels.Add(q, q, L.Bq)
		kernels.Add(k, k, L.Bk)
		kernels.Add(v, v, L.Bv)
	}
	if L.QNorm != nil {
		hd := c.HeadDim
		for h := 0; h < c.Heads; h++ {
			kernels.RMSNorm(q[h*hd:(h+1)*hd], q[h*hd:(h+1)*hd], L.QNorm, c.Eps)
		}
		for h := 0; h < c.KVHeads; h++ {
			kernels.RMSNorm(k[h*hd:(h+1)*hd], k[h*hd:(h+1)*hd], L.KNorm, c.Eps)
		}
	}
	if c.RopeNeox {
		kernels.RopeNeox(q, c.Heads, c.HeadDim, cs)
		kernels.RopeNeox(k, c.KVHeads, c.HeadDim, cs)
	} else {
		kernels.Rope(q, c.Heads, c.HeadDim, cs)
		kernels.Rope(k, c.KVHeads, c.HeadDim, cs)
	}
	if c.ScaleQ {
		kernels.Scale(q, c.AttnScale)
	}
}

// softmaxScale is the scale the attention softmax applies to q·k.
func (c *Config) softmaxScale() float32 {
	if c.ScaleQ {
		return 1
	}
	return c.AttnScale
}

// attnOut finishes one token's attention output: the output bias and the
// post-attention norm.
func (m *Model) attnOut(L *Layer, row []float32) {
	if L.Bo != nil {
		kernels.Add(row, row, L.Bo)
	}
	if L.PostAttnNorm != nil {
		kernels.RMSNorm(row, row, L.PostAttnNorm, m.Config.Eps)
	}
}

// ffnOut finishes one token's feed-forward output: the post-FFN norm.
func (m *Model) ffnOut(L *Layer, row []float32) {
	if L.PostFFNNorm != nil {
		kernels.RMSNorm(row, row, L.PostFFNNorm, m.Config.Eps)
	}
}

// glu sets gate = act(gate) * up for one token (SwiGLU, or GeGLU).
func (m *Model) glu(gate, up []float32) {
	if m.Config.GELU {
		kernels.GeGLU(gate, gate, up)
	} else {
		m.backend.SwiGLU(gate, gate, up)
	}
}

// finishLogits applies the final logit soft-cap to rows of logits.
func (m *Model) finishLogits(logits []float32) {
	if c := m.Config.FinalSoftcap; c != 0 {
		kernels.Softcap(logits, c)
	}
}
