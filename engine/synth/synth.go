// Package synth writes synthetic Llama-architecture GGUF models: the shape
// of a real model (tensor names, shapes and metadata as llama.cpp writes
// them) with seeded random weights, for tests, demos and benchmarks of
// models nobody has to download.
//
// # Weights
//
// Every matrix holds independent samples of N(0, 0.02²); norm weights are 1.
// Matrices are F32 or F16 (Spec.WeightType); norms are always F32, as
// llama.cpp stores them. The samples are fully determined by Spec.Seed:
// the elements of a tensor are generated in chunks of 65536 (the last may be
// shorter), and chunk c of the tensor named N draws from
//
//	rand.New(rand.NewPCG(Seed, fnv1a64(N) + c·0x9E3779B97F4A7C15)).NormFloat64()
//
// (math/rand/v2: PCG-DXSM seeded with two words, FNV-1a 64 of the name),
// scaled by 0.02 and rounded to float32 (then to F16, round to nearest
// even, for F16). The same Spec and seed therefore give the same bytes, in
// any order and on any number of threads; chunks are generated in parallel.
//
// # Tokenizer
//
// Unless Spec.Tokenizer supplies one (see TokenizerFrom), the model gets a
// synthetic SentencePiece ("llama") vocabulary from SPMVocab: <unk>, <s>,
// </s>, the 256 byte tokens <0x00>…<0xFF>, then "▁"-prefixed and plain
// pieces of growing length.
//
// # Streaming
//
// Llama streams: only the metadata and one chunk of random numbers per
// thread are ever in memory, so a 2 GB TinyLlama-shaped file costs a few
// megabytes. Spec.Progress reports the tensor bytes written.
package synth

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

// Spec is the shape of a synthetic Llama model.
type Spec struct {
	Name       string  // general.name; "synth" when empty
	Dim        int     // embedding length
	Layers     int     // block count
	Heads      int     // attention heads
	KVHeads    int     // key/value heads (GQA); must divide Heads
	FFN        int     // feed-forward length
	Vocab      int     // vocabulary size; 0 with a Tokenizer means its size
	Ctx        int     // context length
	RopeBase   float32 // rope.freq_base; 10000 when 0
	Eps        float32 // RMS norm epsilon; 1e-5 when 0
	WeightType kernels.Type
	TiedOutput bool   // no output.weight: the output reuses token_embd
	Seed       uint64 // PRNG seed of the weights

	// Tokenizer is copied into the file when set; otherwise SPMVocab(Vocab).
	Tokenizer *Tokenizer
	// Progress, when set, is called as tensor data is written with the
	// bytes done so far and the total (both only count tensor data).
	Progress func(done, total int64)
}

// Presets are ready-made shapes. Copy one, then set Seed or Progress.
var Presets = map[string]Spec{
	// TinyLlama-1.1B's shape: 1,100,048,384 parameters, a 2.2 GB F16 file.
	"tinyllama-1.1b": {Name: "tinyllama-1.1b-synth", Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFN: 5632,
		Vocab: 32000, Ctx: 2048, RopeBase: 10000, Eps: 1e-5, WeightType: kernels.F16},
	// A 460 KB model for tests and demos.
	"tiny": {Name: "tiny-synth", Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128,
		Vocab: 320, Ctx: 128, RopeBase: 10000, Eps: 1e-5, WeightType: kernels.F32},
}

// Std is the standard deviation of the random weights.
const Std = 0.02

// ChunkElems is the number of elements drawn from one PRNG stream.
const ChunkElems = 1 << 16

// Llama writes a Llama GGUF file of the given shape to w.
func Llama(w io.Writer, spec Spec) error {
	gw, err := NewWriter(spec)
	if err != nil {
		return err
	}
	_, err = gw.WriteTo(w)
	return err
}

// Params returns the number of weights of the model.
func (s Spec) Params() int64 {
	d, l, f, v := int64(s.Dim), int64(s.Layers), int64(s.FFN), int64(s.vocabSize())
	kv := s.kvDim()
	p := d*v + d + l*(d+d*d+2*d*kv+d*d+d+3*d*f)
	if !s.TiedOutput {
		p += d * v
	}
	return p
}

func (s Spec) kvDim() int64 {
	if s.Heads == 0 {
		return 0
	}
	return int64(s.Dim / s.Heads * s.KVHeads)
}

func (s Spec) vocabSize() int {
	if s.Tokenizer != nil && s.Vocab == 0 {
		return len(s.Tokenizer.Tokens)
	}
	return s.Vocab
}

func (s Spec) validate() error {
	switch {
	case s.Dim <= 0 || s.Layers <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.FFN <= 0 || s.Ctx <= 0:
		return fmt.Errorf("synth: Dim, Layers, Heads, KVHeads, FFN and Ctx must be positive: %+v", s)
	case s.Dim%s.Heads != 0:
		return fmt.Errorf("synth: Dim %d is not a multiple of Heads %d", s.Dim, s.Heads)
	case (s.Dim/s.Heads)%2 != 0:
		return fmt.Errorf("synth: head dimension %d must be even for rope", s.Dim/s.Heads)
	case s.Heads%s.KVHeads != 0:
		return fmt.Errorf("synth: Heads %d is not a multiple of KVHeads %d", s.Heads, s.KVHeads)
	case s.WeightType != kernels.F32 && s.WeightType != kernels.F16:
		return fmt.Errorf("synth: WeightType must be F32 or F16, not %s", s.WeightType)
	}
	if s.Tokenizer != nil {
		if err := s.Tokenizer.validate(); err != nil {
			return err
		}
		if s.Vocab != 0 && s.Vocab != len(s.Tokenizer.Tokens) {
			return fmt.Errorf("synth: Vocab %d but the tokenizer has %d tokens", s.Vocab, len(s.Tokenizer.Tokens))
		}
	} else if s.Vocab < NumSpecialTokens {
		return fmt.Errorf("synth: Vocab %d is too small for the synthetic vocabulary (at least %d)", s.Vocab, NumSpecialTokens)
	}
	return nil
}

// NewWriter prepares the file for spec without generating anything: the
// returned Writer generates the weights as it writes them (WriteTo), and
// reports the file's size beforehand (Size).
func NewWriter(spec Spec) (*gguf.Writer, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	s := spec
	if s.Name == "" {
		s.Name = "synth"
	}
	if s.RopeBase == 0 {
		s.RopeBase = 10000
	}
	if s.Eps == 0 {
		s.Eps = 1e-5
	}
	tok := s.Tokenizer
	if tok == nil {
		var err error
		if tok, err = SPMVocab(s.Vocab); err != nil {
			return nil, err
		}
	}
	vocab := len(tok.Tokens)
	fileType := uint32(0) // LLAMA_FTYPE_ALL_F32
	if s.WeightType == kernels.F16 {
		fileType = 1 // LLAMA_FTYPE_MOSTLY_F16
	}

	w := gguf.NewWriter()
	var err error
	set := func(key string, v any) {
		if err == nil {
			err = w.Set(key, v)
		}
	}
	set("general.architecture", "llama")
	set("general.name", s.Name)
	set("general.alignment", uint32(gguf.DefaultAlignment))
	set("general.file_type", fileType)
	set("llama.context_length", uint32(s.Ctx))
	set("llama.embedding_length", uint32(s.Dim))
	set("llama.block_count", uint32(s.Layers))
	set("llama.feed_forward_length", uint32(s.FFN))
	set("llama.attention.head_count", uint32(s.Heads))
	set("llama.attention.head_count_kv", uint32(s.KVHeads))
	set("llama.rope.dimension_count", uint32(s.Dim/s.Heads))
	set("llama.rope.freq_base", s.RopeBase)
	set("llama.attention.layer_norm_rms_epsilon", s.Eps)
	set("tokenizer.ggml.model", tok.Model)
	if tok.Pre != "" {
		set("tokenizer.ggml.pre", tok.Pre)
	}
	set("tokenizer.ggml.tokens", tok.Tokens)
	if tok.Scores != nil {
		set("tokenizer.ggml.scores", tok.Scores)
	}
	if tok.Types != nil {
		set("tokenizer.ggml.token_type", tok.Types)
	}
	if tok.Merges != nil {
		set("tokenizer.ggml.merges", tok.Merges)
	}
	if tok.UNK >= 0 {
		set("tokenizer.ggml.unknown_token_id", uint32(tok.UNK))
	}
	if tok.BOS >= 0 {
		set("tokenizer.ggml.bos_token_id", uint32(tok.BOS))
	}
	if tok.EOS >= 0 {
		set("tokenizer.ggml.eos_token_id", uint32(tok.EOS))
	}
	set("llama.vocab_size", uint32(vocab))
	if err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}

	d, f, kv, v := int64(s.Dim), int64(s.FFN), s.kvDim(), int64(vocab)
	type tensor struct {
		name string
		dims []int64
		norm bool
	}
	ts := []tensor{{"token_embd.weight", []int64{d, v}, false}}
	for l := range s.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			tensor{p + "attn_norm.weight", []int64{d}, true},
			tensor{p + "attn_q.weight", []int64{d, d}, false},
			tensor{p + "attn_k.weight", []int64{d, kv}, false},
			tensor{p + "attn_v.weight", []int64{d, kv}, false},
			tensor{p + "attn_output.weight", []int64{d, d}, false},
			tensor{p + "ffn_norm.weight", []int64{d}, true},
			tensor{p + "ffn_gate.weight", []int64{d, f}, false},
			tensor{p + "ffn_up.weight", []int64{d, f}, false},
			tensor{p + "ffn_down.weight", []int64{f, d}, false},
		)
	}
	ts = append(ts, tensor{"output_norm.weight", []int64{d}, true})
	if !s.TiedOutput {
		ts = append(ts, tensor{"output.weight", []int64{d, v}, false})
	}

	g := &generator{seed: s.Seed, progress: s.Progress}
	for i, t := range ts {
		typ := s.WeightType
		if t.norm {
			typ = kernels.F32
		}
		size, err := gguf.TensorSize(typ, t.dims)
		if err != nil {
			return nil, fmt.Errorf("synth: %s: %w", t.name, err)
		}
		g.total += size
		spec := gguf.TensorSpec{Name: t.name, Dims: t.dims, Type: typ}
		n := size / int64(elemSize(typ))
		gen := g.random(t.name, typ, n)
		if t.norm {
			gen = g.ones(n)
		}
		spec.WriteData = gen
		if i == 0 {
			// The first tensor (re)starts the progress count, so a Writer
			// can be written more than once.
			spec.WriteData = func(w io.Writer) error {
				g.done = 0
				if g.progress != nil {
					g.progress(0, g.total)
				}
				return gen(w)
			}
		}
		if err := w.AddTensor(spec); err != nil {
			return nil, fmt.Errorf("synth: %w", err)
		}
	}
	return w, nil
}

func elemSize(t kernels.Type) int {
	if t == kernels.F16 {
		return 2
	}
	return 4
}

// generator produces tensor data and tracks progress.
type generator struct {
	seed     uint64
	total    int64
	done     int64
	progress func(done, total int64)
	bufs     [][]byte
}

func (g *generator) advance(n int) {
	g.done += int64(n)
	if g.progress != nil {
		g.progress(g.done, g.total)
	}
}

func (g *generator) ones(n int64) func(io.Writer) error {
	return func(w io.Writer) error {
		b := make([]byte, 4*n)
		for i := range n {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(1))
		}
		_, err := w.Write(b)
		g.advance(len(b))
		return err
	}
}

// streamKey is the second PCG seed word of chunk c of the named tensor.
func streamKey(name string, c int64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() + uint64(c)*0x9E3779B97F4A7C15
}

// fillChunk writes len(dst)/elemSize samples of chunk c of a tensor.
func fillChunk(dst []byte, typ kernels.Type, seed uint64, name string, c int64) {
	r := rand.New(rand.NewPCG(seed, streamKey(name, c)))
	if typ == kernels.F16 {
		for i := 0; i < len(dst); i += 2 {
			binary.LittleEndian.PutUint16(dst[i:], kernels.FP32ToFP16(float32(r.NormFloat64()*Std)))
		}
		return
	}
	for i := 0; i < len(dst); i += 4 {
		binary.LittleEndian.PutUint32(dst[i:], math.Float32bits(float32(r.NormFloat64()*Std)))
	}
}

func (g *generator) random(name string, typ kernels.Type, n int64) func(io.Writer) error {
	return func(w io.Writer) error {
		es := int64(elemSize(typ))
		workers := max(1, min(runtime.GOMAXPROCS(0), 16))
		if len(g.bufs) < workers {
			g.bufs = make([][]byte, workers)
			for i := range g.bufs {
				g.bufs[i] = make([]byte, ChunkElems*4)
			}
		}
		chunks := (n + ChunkElems - 1) / ChunkElems
		for base := int64(0); base < chunks; base += int64(workers) {
			k := min(int64(workers), chunks-base)
			var wg sync.WaitGroup
			for j := range k {
				c := base + j
				cnt := min(ChunkElems, n-c*ChunkElems)
				buf := g.bufs[j][:cnt*es]
				wg.Go(func() { fillChunk(buf, typ, g.seed, name, c) })
			}
			wg.Wait()
			for j := range k {
				cnt := min(ChunkElems, n-(base+j)*ChunkElems)
				if _, err := w.Write(g.bufs[j][:cnt*es]); err != nil {
					return err
				}
				g.advance(int(cnt * es))
			}
		}
		return nil
	}
}
