// Package model is the Llama forward pass: token embedding, a stack of
// pre-norm attention + SwiGLU blocks with rotary position embeddings and
// grouped-query attention, output norm and head. It is deliberately as plain
// as llama2.c: the arithmetic lives in package kernels (matrix products,
// RMSNorm, RoPE, softmax, SwiGLU); this package wires it together and owns
// the KV cache. The same pass runs Qwen 2/3, Gemma 1/2, Phi-3 and Llama 3,
// their differences being options and optional tensors (arch.go).
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
	"io"
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

	// Per-architecture options (arch.go), from the GGUF metadata with
	// llama.cpp's defaults.
	RopeNeox       bool    // NEOX RoPE: pairs (i, i+RopeDim/2), else (2i, 2i+1)
	RopeFreqScale  float32 // RoPE angles × this (1/rope.scaling.factor)
	RopeAttnFactor float32 // RoPE cos and sin × this (rope.scaling.attn_factor)
	RopeOrigCtx    int     // rope.scaling.original_context_length (LongRoPE)
	EmbedScale     float32 // token embeddings × this (gemma: √Dim); 0: none
	AttnScale      float32 // scale of q·k
	ScaleQ         bool    // AttnScale multiplies Q after RoPE, not the scores
	AttnSoftcap    float32 // scores → c·tanh(scores/c) before the mask; 0: none
	FinalSoftcap   float32 // logits → c·tanh(logits/c); 0: none
	SlidingWindow  int     // window of the layers with Layer.SWA; 0: none
	GELU           bool    // GeGLU feed-forward instead of SwiGLU
}

// QDim is Heads*HeadDim, KVDim KVHeads*HeadDim.
func (c *Config) QDim() int  { return c.Heads * c.HeadDim }
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Options select how the model computes.
type Options struct {
	Backend *kernels.Backend // nil: the pure-Go kernels
	Pool    *kernels.Pool    // required: the worker threads

	// Types gives the type each tensor is computed in, by tensor name (an
	// execution plan's resolved per-tensor targets). Tensors it does not
	// name, or names with their type in the file, are used straight from
	// the file's memory map; the others are converted at load time on the
	// pool's threads (see quantize.go; LoadCached also caches the result).
	Types map[string]kernels.Type
	// AllowRequantize permits converting a tensor that is quantized in the
	// file into another quantized type. Without it Load refuses.
	AllowRequantize bool
	// Progress, when set, is called from the loading goroutine as tensors
	// are converted, with the source bytes converted so far and the total.
	Progress func(done, total int64)
	// Layout is the layout of the matrix weights: kernels.LayoutX8
	// repacks every matrix product weight of a type that has one
	// (layout.go); kernels.LayoutRows (the zero value) computes from the
	// file's layout.
	Layout kernels.Layout
	// RepackProgress, when set, is called as matrices are repacked, with
	// the bytes repacked so far and the total.
	RepackProgress func(done, total int64)

	conv *converted // set by LoadCached: conversions already done
}

// Layer holds one transformer block's weights.
type Layer struct {
	AttnNorm       []float32
	Wq, Wk, Wv, Wo kernels.Matrix
	FFNNorm        []float32
	Gate, Up, Down kernels.Matrix

	// Optional, by architecture (nil when absent; arch.go).
	Bq, Bk, Bv, Bo            []float32 // attention biases
	QNorm, KNorm              []float32 // per-head RMSNorm of Q and K (HeadDim)
	PostAttnNorm, PostFFNNorm []float32 // sublayer output norms (gemma2)
	SWA                       bool      // sliding-window attention layer
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

	// RoPE frequency factors (nil when absent): Llama 3.1's rope_freqs, or
	// LongRoPE's short and long factors (RopeDim/2 each).
	RopeFreqs, RopeShort, RopeLong []float32

	backend *kernels.Backend
	pool    *kernels.Pool
	dotF32  kernels.DotFunc     // the backend's F32 dot product
	tileF32 kernels.DotTileFunc // and its tile form (same results)

	quant  QuantInfo  // what load-time conversion did (quantize.go)
	cache  io.Closer  // the mapped cache entry holding converted tensors, if any
	layout LayoutInfo // what repacking did (layout.go)
	arena  []byte     // anonymous map holding the repacked matrices
	rope   ropeShared // RoPE tables of the states (arch.go)
}

// Backend returns the kernel set the model computes with.
func (m *Model) Backend() *kernels.Backend { return m.backend }

// Pool returns the worker pool the model computes on.
func (m *Model) Pool() *kernels.Pool { return m.pool }

// Load builds a model from a GGUF file of a supported architecture (arch.go:
// llama, qwen2, qwen3, gemma, gemma2, phi3). Every tensor is checked for
// presence, type and shape before anything is used, and a tensor the
// architecture does not use is an error.
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
	conv, err := convertTensors(f, &opts)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, backend: b, pool: opts.Pool, quant: conv.info}
	if m.tileF32, err = b.Tile(kernels.F32); err != nil {
		return nil, fmt.Errorf("model: backend %s: %w", b.Name(), err)
	}
	if m.dotF32, _, err = b.Dot(kernels.F32); err != nil {
		return nil, fmt.Errorf("model: backend %s: %w", b.Name(), err)
	}
	l := loader{f: f, b: b, conv: conv.tensors}
	if err := loadTensors(m, &l); err != nil {
		return nil, err
	}
	switch opts.Layout {
	case kernels.LayoutRows:
	case kernels.LayoutX8:
		files := []*gguf.File{f}
		if conv.file != nil {
			files = append(files, conv.file)
		}
		if err := m.repack(opts.RepackProgress, files); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("model: unknown weight layout %s", opts.Layout)
	}
	return m, nil
}

type loader struct {
	f    *gguf.File
	b    *kernels.Backend
	conv map[string]convTensor // tensors converted at load time, by name
	err  error
}

// data returns a tensor's type and bytes: converted at load time, or as in
// the file.
func (l *loader) data(ti *gguf.TensorInfo) (kernels.Type, []byte) {
	if c, ok := l.conv[ti.Name]; ok {
		return c.typ, c.data
	}
	return ti.Type, l.f.TensorData(ti)
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
	typ, data := l.data(ti)
	if matmul {
		if err := l.b.Supports(typ); err != nil {
			l.err = fmt.Errorf("model: tensor %s: %w", name, err)
			return
		}
	} else if _, err := kernels.FormatOf(typ); err != nil {
		l.err = fmt.Errorf("model: tensor %s: %w", name, err)
		return
	}
	m, err := kernels.NewMatrix(typ, rows, cols, data)
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
	typ, data := l.data(ti)
	if typ == kernels.F32 && uintptr(unsafe.Pointer(unsafe.SliceData(data)))%4 == 0 && littleEndian {
		return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(data))), n)
	}
	out := make([]float32, n)
	if err := kernels.DequantizeRow(typ, out, data); err != nil {
		l.err = fmt.Errorf("model: tensor %s: %w", name, err)
		return nil
	}
	return out
}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()
