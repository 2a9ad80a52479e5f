// Package model is the Llama forward pass: token embedding, a stack of
// pre-norm attention + SwiGLU blocks with rotary position embeddings and
// grouped-query attention, output norm and head. It is deliberately as plain
// as llama2.c: the arithmetic lives in package kernels (matrix products,
// RMSNorm, RoPE, softmax, SwiGLU); this package wires it together and owns
// the KV cache.
//
// Determinism: every output element of every step is computed by one thread
// in a fixed order (kernels.MatMul splits rows, attention splits heads), and
// the same computation is done for a token whether it arrives in a batch or
// alone, so logits are bit-identical for any thread count and any chunking
// of the prompt.
package model

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// Config holds the hyperparameters of a Llama model.
type Config struct {
	Arch     string
	Dim      int     // embedding length
	Layers   int     // block count
	Heads    int     // attention heads (queries)
	KVHeads  int     // key/value heads (GQA groups)
	HeadDim  int     // per-head dimension
	FFN      int     // feed-forward hidden size
	Vocab    int     // tokens
	Ctx      int     // training context length
	RopeDim  int     // rotated dimensions per head (≤ HeadDim)
	RopeBase float32 // rope frequency base
	Eps      float32 // RMSNorm epsilon
	// TiedOutput is true when the model has no output.weight and the token
	// embedding doubles as the output head.
	TiedOutput bool
}

// QDim is Heads*HeadDim, KVDim KVHeads*HeadDim.
func (c *Config) QDim() int  { return c.Heads * c.HeadDim }
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Options select how the model computes.
type Options struct {
	Backend *kernels.Backend // nil: the pure-Go kernels
	Pool    *kernels.Pool    // required: the worker threads
}

// Layer holds one transformer block's weights.
type Layer struct {
	AttnNorm       []float32
	Wq, Wk, Wv, Wo kernels.Matrix
	FFNNorm        []float32
	Gate, Up, Down kernels.Matrix
}

// Model is a loaded Llama model. Its matrices alias the GGUF file's memory
// map: keep the file open while the model is in use. A Model is read-only
// and may be shared by many States (one forward pass at a time per pool).
type Model struct {
	Config  Config
	TokEmb  kernels.Matrix
	Layers  []Layer
	OutNorm []float32
	Output  kernels.Matrix

	backend *kernels.Backend
	pool    *kernels.Pool
	dotF32  kernels.DotFunc     // the backend's F32 dot product
	tileF32 kernels.DotTileFunc // and its tile form (same results)
}

// Backend returns the kernel set the model computes with.
func (m *Model) Backend() *kernels.Backend { return m.backend }

// Pool returns the worker pool the model computes on.
func (m *Model) Pool() *kernels.Pool { return m.pool }

// Load builds a model from a GGUF file of architecture "llama". Every tensor
// is checked for presence, type and shape before anything is used.
func Load(f *gguf.File, opts Options) (*Model, error) {
	if opts.Pool == nil {
		return nil, errors.New("model: Options.Pool is required")
	}
	b := opts.Backend
	if b == nil {
		b = kernels.GenericBackend()
	}
	cfg, err := readConfig(f)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, backend: b, pool: opts.Pool}
	if m.tileF32, err = b.Tile(kernels.F32); err != nil {
		return nil, fmt.Errorf("model: backend %s: %w", b.Name(), err)
	}
	if m.dotF32, _, err = b.Dot(kernels.F32); err != nil {
		return nil, fmt.Errorf("model: backend %s: %w", b.Name(), err)
	}
	l := loader{f: f, b: b}
	D, Q, KV, F, V := cfg.Dim, cfg.QDim(), cfg.KVDim(), cfg.FFN, cfg.Vocab
	l.matrix(&m.TokEmb, "token_embd.weight", D, V, false)
	m.OutNorm = l.vector("output_norm.weight", D)
	if _, ok := f.Tensor("output.weight"); ok {
		l.matrix(&m.Output, "output.weight", D, V, true)
	} else {
		m.Config.TiedOutput = true
		m.Output = m.TokEmb
		if l.err == nil {
			if err := b.Supports(m.Output.Type); err != nil {
				l.err = fmt.Errorf("model: tensor token_embd.weight (tied output): %w", err)
			}
		}
	}
	m.Layers = make([]Layer, cfg.Layers)
	for i := range m.Layers {
		L := &m.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		L.AttnNorm = l.vector(p+"attn_norm.weight", D)
		l.matrix(&L.Wq, p+"attn_q.weight", D, Q, true)
		l.matrix(&L.Wk, p+"attn_k.weight", D, KV, true)
		l.matrix(&L.Wv, p+"attn_v.weight", D, KV, true)
		l.matrix(&L.Wo, p+"attn_output.weight", Q, D, true)
		L.FFNNorm = l.vector(p+"ffn_norm.weight", D)
		l.matrix(&L.Gate, p+"ffn_gate.weight", D, F, true)
		l.matrix(&L.Up, p+"ffn_up.weight", D, F, true)
		l.matrix(&L.Down, p+"ffn_down.weight", F, D, true)
	}
	if l.err != nil {
		return nil, l.err
	}
	return m, nil
}

func readConfig(f *gguf.File) (Config, error) {
	var c Config
	arch, ok := f.String("general.architecture")
	if !ok {
		return c, errors.New("model: general.architecture is missing")
	}
	if arch != "llama" {
		return c, fmt.Errorf("model: architecture %q is not supported (only llama)", arch)
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
	if s, ok := f.String(arch + ".rope.scaling.type"); ok && s != "none" {
		return c, fmt.Errorf("model: rope scaling %q is not supported", s)
	}
	if v, ok := f.Float(arch + ".rope.scale_linear"); ok && v != 1 {
		return c, fmt.Errorf("model: rope.scale_linear %v is not supported", v)
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

type loader struct {
	f   *gguf.File
	b   *kernels.Backend
	err error
}

func (l *loader) tensor(name string, dims ...int) (*gguf.TensorInfo, bool) {
	if l.err != nil {
		return nil, false
	}
	ti, ok := l.f.Tensor(name)
	if !ok {
		l.err = fmt.Errorf("model: tensor %s is missing", name)
		return nil, false
	}
	match := len(ti.Dims) == len(dims)
	for i := 0; match && i < len(dims); i++ {
		match = ti.Dims[i] == int64(dims[i])
	}
	if !match {
		l.err = fmt.Errorf("model: tensor %s has shape %v, want %v", name, ti.Dims, dims)
		return nil, false
	}
	return ti, true
}

// matrix binds a 2-D tensor [cols rows] (GGUF order) straight from the map.
func (l *loader) matrix(dst *kernels.Matrix, name string, cols, rows int, matmul bool) {
	ti, ok := l.tensor(name, cols, rows)
	if !ok {
		return
	}
	if matmul {
		if err := l.b.Supports(ti.Type); err != nil {
			l.err = fmt.Errorf("model: tensor %s: %w", name, err)
			return
		}
	} else if _, err := kernels.FormatOf(ti.Type); err != nil {
		l.err = fmt.Errorf("model: tensor %s: %w", name, err)
		return
	}
	m, err := kernels.NewMatrix(ti.Type, rows, cols, l.f.TensorData(ti))
	if err != nil {
		l.err = fmt.Errorf("model: tensor %s: %w", name, err)
		return
	}
	*dst = *m
}

// vector returns a 1-D tensor as floats: aliasing the map when it is F32 and
// suitably aligned, dequantized into a new slice otherwise.
func (l *loader) vector(name string, n int) []float32 {
	ti, ok := l.tensor(name, n)
	if !ok {
		return nil
	}
	data := l.f.TensorData(ti)
	if ti.Type == kernels.F32 && uintptr(unsafe.Pointer(unsafe.SliceData(data)))%4 == 0 && littleEndian {
		return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(data))), n)
	}
	out := make([]float32, n)
	if err := kernels.DequantizeRow(ti.Type, out, data); err != nil {
		l.err = fmt.Errorf("model: tensor %s: %w", name, err)
		return nil
	}
	return out
}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()
