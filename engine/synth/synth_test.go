package synth

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

func generate(t *testing.T, spec Spec) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Llama(&buf, spec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// wantTensors lists name, dims and type of every tensor llama.cpp expects.
func wantTensors(s Spec, vocab int64) map[string]struct {
	dims []int64
	typ  kernels.Type
} {
	d, f, kv := int64(s.Dim), int64(s.FFN), int64(s.Dim/s.Heads*s.KVHeads)
	w := s.WeightType
	m := map[string]struct {
		dims []int64
		typ  kernels.Type
	}{}
	add := func(name string, typ kernels.Type, dims ...int64) {
		m[name] = struct {
			dims []int64
			typ  kernels.Type
		}{dims, typ}
	}
	add("token_embd.weight", w, d, vocab)
	add("output_norm.weight", kernels.F32, d)
	if !s.TiedOutput {
		add("output.weight", w, d, vocab)
	}
	for l := range s.Layers {
		p := "blk." + string(rune('0'+l)) + "."
		add(p+"attn_norm.weight", kernels.F32, d)
		add(p+"attn_q.weight", w, d, d)
		add(p+"attn_k.weight", w, d, kv)
		add(p+"attn_v.weight", w, d, kv)
		add(p+"attn_output.weight", w, d, d)
		add(p+"ffn_norm.weight", kernels.F32, d)
		add(p+"ffn_gate.weight", w, d, f)
		add(p+"ffn_up.weight", w, d, f)
		add(p+"ffn_down.weight", w, f, d)
	}
	return m
}

func checkModel(t *testing.T, spec Spec, data []byte) *gguf.File {
	t.Helper()
	f, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	vocab := int64(spec.Vocab)
	if spec.Tokenizer != nil {
		vocab = int64(len(spec.Tokenizer.Tokens))
	}
	want := wantTensors(spec, vocab)
	if len(f.Tensors) != len(want) {
		t.Errorf("%d tensors, want %d", len(f.Tensors), len(want))
	}
	for _, ti := range f.Tensors {
		w, ok := want[ti.Name]
		if !ok {
			t.Errorf("unexpected tensor %s", ti.Name)
			continue
		}
		if ti.Type != w.typ || len(ti.Dims) != len(w.dims) || ti.Dims[0] != w.dims[0] || (len(w.dims) > 1 && ti.Dims[1] != w.dims[1]) {
			t.Errorf("%s: %s %v, want %s %v", ti.Name, ti.Type, ti.Dims, w.typ, w.dims)
		}
		if strings.HasSuffix(ti.Name, "norm.weight") {
			for i, b := 0, f.TensorData(&ti); i < len(b); i += 4 {
				if v := math.Float32frombits(binary.LittleEndian.Uint32(b[i:])); v != 1 {
					t.Fatalf("%s[%d] = %v, want 1", ti.Name, i/4, v)
				}
			}
		}
	}
	for key, want := range map[string]uint64{
		"llama.context_length": uint64(spec.Ctx), "llama.embedding_length": uint64(spec.Dim),
		"llama.block_count": uint64(spec.Layers), "llama.feed_forward_length": uint64(spec.FFN),
		"llama.attention.head_count": uint64(spec.Heads), "llama.attention.head_count_kv": uint64(spec.KVHeads),
		"llama.rope.dimension_count": uint64(spec.Dim / spec.Heads), "llama.vocab_size": uint64(vocab),
		"general.alignment": 32,
	} {
		if got, ok := f.Uint(key); !ok || got != want {
			t.Errorf("%s = %d (%v), want %d", key, got, ok, want)
		}
	}
	if a, _ := f.String("general.architecture"); a != "llama" {
		t.Errorf("architecture %q", a)
	}
	wantBase, wantEps := cmp.Or(spec.RopeBase, 10000), cmp.Or(spec.Eps, 1e-5)
	if base, _ := f.Float("llama.rope.freq_base"); base != float64(wantBase) {
		t.Errorf("rope base %v", base)
	}
	if eps, _ := f.Float("llama.attention.layer_norm_rms_epsilon"); eps != float64(wantEps) {
		t.Errorf("eps %v", eps)
	}
	return f
}

func TestTiny(t *testing.T) {
	spec := Presets["tiny"]
	spec.Seed = 42
	var calls int
	var last, total int64
	spec.Progress = func(done, tot int64) {
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		calls++
		last, total = done, tot
	}
	a := generate(t, spec)
	f := checkModel(t, spec, a)

	var sum, params int64
	for _, ti := range f.Tensors {
		sum += ti.Size
		params += ti.NumElements()
	}
	if params != spec.Params() {
		t.Errorf("Params() = %d, the file holds %d", spec.Params(), params)
	}
	if calls < len(f.Tensors) || last != total || total != sum {
		t.Errorf("progress: %d calls, last %d of %d; tensor data is %d bytes", calls, last, total, sum)
	}

	// Tokenizer.
	if m, _ := f.String("tokenizer.ggml.model"); m != "llama" {
		t.Errorf("tokenizer model %q", m)
	}
	toks, _ := f.ArrayValue("tokenizer.ggml.tokens")
	tokens := toks.Values.([]string)
	if len(tokens) != 320 || tokens[0] != "<unk>" || tokens[1] != "<s>" || tokens[2] != "</s>" ||
		tokens[3] != "<0x00>" || tokens[258] != "<0xFF>" || tokens[259] != "▁" {
		t.Errorf("tokens %q … %q", tokens[:4], tokens[255:262])
	}
	for key, want := range map[string]uint64{"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0} {
		if got, ok := f.Uint(key); !ok || got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}

	// The weights look like N(0, 0.02²).
	emb, _ := f.Tensor("token_embd.weight")
	var s, s2 float64
	b := f.TensorData(emb)
	n := len(b) / 4
	for i := 0; i < len(b); i += 4 {
		v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
		s += v
		s2 += v * v
	}
	mean, std := s/float64(n), math.Sqrt(s2/float64(n)-(s/float64(n))*(s/float64(n)))
	if math.Abs(mean) > 0.001 || math.Abs(std-Std) > 0.001 {
		t.Errorf("token_embd: mean %v std %v over %d samples", mean, std, n)
	}

	// Same seed, same bytes; another seed, other bytes.
	spec.Progress = nil
	again := generate(t, spec)
	if sha256.Sum256(a) != sha256.Sum256(again) {
		t.Errorf("same seed gave different files")
	}
	spec.Seed = 43
	other := generate(t, spec)
	if len(other) != len(a) || sha256.Sum256(a) == sha256.Sum256(other) {
		t.Errorf("different seeds gave the same file")
	}
	// Only the data differs.
	if !bytes.Equal(a[:f.DataOffset], other[:f.DataOffset]) {
		t.Errorf("different seeds changed the header")
	}
}

// TestChunkedStreams checks the documented derivation of the weights: a
// tensor longer than one chunk continues with the next chunk's stream.
func TestChunkedStreams(t *testing.T) {
	spec := Spec{Dim: 256, Layers: 1, Heads: 4, KVHeads: 4, FFN: 512, Vocab: 300, Ctx: 16, WeightType: kernels.F16, Seed: 7}
	f := checkModel(t, spec, generate(t, spec))
	ti, _ := f.Tensor("blk.0.ffn_up.weight") // 131072 elements: two chunks
	b := f.TensorData(ti)
	want := make([]byte, 2*ChunkElems)
	fillChunk(want, kernels.F16, 7, ti.Name, 1)
	if !bytes.Equal(b[2*ChunkElems:], want) {
		t.Errorf("second chunk differs from its documented stream")
	}
}

func TestF16TiedOutput(t *testing.T) {
	spec := Presets["tiny"]
	spec.WeightType = kernels.F16
	spec.TiedOutput = true
	f := checkModel(t, spec, generate(t, spec))
	if _, ok := f.Tensor("output.weight"); ok {
		t.Errorf("tied model has output.weight")
	}
	if ft, _ := f.Uint("general.file_type"); ft != 1 {
		t.Errorf("file type %d, want 1 (mostly F16)", ft)
	}
}

func TestCopiedTokenizer(t *testing.T) {
	path := ""
	for _, d := range []string{os.Getenv("LLM_ENGINE_SHARED"), "../../../shared", "../../shared"} {
		if p := filepath.Join(d, "models", "stories260K.gguf"); d != "" {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		t.Skip("SKIPPING: shared reference data not found (set LLM_ENGINE_SHARED)")
	}
	src, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tok, err := TokenizerFrom(src)
	if err != nil {
		t.Fatal(err)
	}
	// synth-256's shape, with stories260K's tokenizer, as the reference
	// synth-256-F32.gguf was made.
	spec := Spec{Name: "synth-256", Dim: 256, Layers: 4, Heads: 4, KVHeads: 2, FFN: 768, Ctx: 256,
		RopeBase: 10000, Eps: 1e-5, WeightType: kernels.F32, Tokenizer: tok}
	f := checkModel(t, spec, generate(t, spec))
	srcTokens, _ := src.ArrayValue("tokenizer.ggml.tokens")
	gotTokens, _ := f.ArrayValue("tokenizer.ggml.tokens")
	srcScores, _ := src.ArrayValue("tokenizer.ggml.scores")
	gotScores, _ := f.ArrayValue("tokenizer.ggml.scores")
	if strings.Join(srcTokens.Values.([]string), "\x00") != strings.Join(gotTokens.Values.([]string), "\x00") ||
		len(srcScores.Values.([]float32)) != len(gotScores.Values.([]float32)) {
		t.Errorf("tokenizer not copied")
	}
	// The layout matches the reference file's tensor for tensor.
	ref, err := gguf.Open(filepath.Join(filepath.Dir(path), "synth-256-F32.gguf"))
	if err != nil {
		t.Skip(err)
	}
	defer ref.Close()
	for i, rt := range ref.Tensors {
		gt := f.Tensors[i]
		if gt.Name != rt.Name || gt.Type != rt.Type || gt.Offset != rt.Offset || gt.Size != rt.Size {
			t.Errorf("tensor %d: %s %s at %d, reference %s %s at %d", i, gt.Name, gt.Type, gt.Offset, rt.Name, rt.Type, rt.Offset)
		}
	}
}

func TestTinyLlamaPreset(t *testing.T) {
	spec := Presets["tinyllama-1.1b"]
	if p := spec.Params(); p != 1_100_048_384 {
		t.Errorf("TinyLlama preset has %d parameters, want 1100048384", p)
	}
	w, err := NewWriter(spec)
	if err != nil {
		t.Fatal(err)
	}
	// F16 matrices, F32 norms, plus the header.
	norms := int64(2048 * (2*22 + 1))
	data := 2*(spec.Params()-norms) + 4*norms
	if size := w.Size(); size < data || size > data+2<<20 {
		t.Errorf("file size %d, tensor data alone is %d", size, data)
	}
}

func TestSPMVocab(t *testing.T) {
	tok, err := SPMVocab(32000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, s := range tok.Tokens {
		if seen[s] {
			t.Fatalf("duplicate token %q at %d", s, i)
		}
		seen[s] = true
	}
	if len(tok.Tokens) != 32000 || len(tok.Scores) != 32000 || len(tok.Types) != 32000 {
		t.Fatalf("sizes %d %d %d", len(tok.Tokens), len(tok.Scores), len(tok.Types))
	}
	// Every normal piece longer than one character is reachable by merging
	// two shorter pieces, as SentencePiece's BPE-style merging needs.
	for i := NumSpecialTokens; i < len(tok.Tokens); i++ {
		s := []rune(tok.Tokens[i])
		if tok.Types[i] != TokenNormal || (i > NumSpecialTokens && tok.Scores[i] >= tok.Scores[i-1]) {
			t.Fatalf("token %d %q: type %d score %v", i, tok.Tokens[i], tok.Types[i], tok.Scores[i])
		}
		if len(s) > 1 && !seen[string(s[:len(s)-1])] {
			t.Errorf("piece %q: prefix %q is not a token", string(s), string(s[:len(s)-1]))
		}
	}
	if _, err := SPMVocab(100); err == nil {
		t.Errorf("SPMVocab(100) should fail")
	}
}

func TestSpecValidation(t *testing.T) {
	base := Presets["tiny"]
	for _, c := range []struct {
		mod  func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Dim = 0 }, "must be positive"},
		{func(s *Spec) { s.Heads = 3 }, "not a multiple of Heads"},
		{func(s *Spec) { s.KVHeads = 3 }, "not a multiple of KVHeads"},
		{func(s *Spec) { s.Dim, s.Heads, s.KVHeads = 60, 20, 20 }, "must be even"},
		{func(s *Spec) { s.WeightType = kernels.Q8_0 }, "F32 or F16"},
		{func(s *Spec) { s.Vocab = 10 }, "at least 259"},
		{func(s *Spec) {
			s.Tokenizer = &Tokenizer{Model: "llama", Tokens: []string{"a"}, BOS: 5, EOS: -1, UNK: -1}
		}, "out of range"},
	} {
		s := base
		c.mod(&s)
		if err := Llama(&bytes.Buffer{}, s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
}

// BenchmarkLlamaF16 measures generation throughput (bytes of file per
// second) on a 512-wide F16 model.
func BenchmarkLlamaF16(b *testing.B) {
	spec := Spec{Dim: 512, Layers: 2, Heads: 8, KVHeads: 4, FFN: 1408, Vocab: 4096, Ctx: 256, WeightType: kernels.F16}
	w, err := NewWriter(spec)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(w.Size())
	for b.Loop() {
		if _, err := w.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
