package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/weos/llm-engine/kernels"
)

// fuzzSeeds are small, complete files made with the Writer.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	add := func(kvs []KV, specs []TensorSpec) {
		var buf bytes.Buffer
		if err := Write(&buf, kvs, specs); err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	add(nil, nil)
	add(allTypesKVs(), nil)
	add(allTypesKVs(), []TensorSpec{
		{Name: "a", Dims: []int64{3}, Type: kernels.F32, Data: f32bytes(1, 2, 3)},
		{Name: "q", Dims: []int64{32, 2}, Type: kernels.Q8_0, Data: make([]byte, 68)},
	})
	add([]KV{
		{"general.architecture", TypeString, "llama"},
		{"tokenizer.ggml.tokens", TypeArray, Array{TypeString, []string{"<unk>", "<s>", "</s>", "▁a"}}},
		{"tokenizer.ggml.scores", TypeArray, Array{TypeFloat32, []float32{0, 0, 0, -1}}},
		{"llama.block_count", TypeUint32, uint32(1)},
	}, []TensorSpec{
		{Name: "token_embd.weight", Dims: []int64{2, 4}, Type: kernels.F16, Data: make([]byte, 16)},
		{Name: "output_norm.weight", Dims: []int64{2}, Type: kernels.F32, Data: f32bytes(1, 1)},
		{Name: "k", Dims: []int64{256}, Type: kernels.Q4_K, Data: make([]byte, 144)},
	})
	return seeds
}

// FuzzParse feeds Parse arbitrary bytes. Parse must never panic, must
// report every failure as an *Error with an offset inside the input, and
// whatever it accepts must survive a Writer round trip: the canonical
// re-encoding parses and re-encodes to itself.
//
// Seeds: the first 64 KiB of every shared model (when the shared data is
// present) and small files made with the Writer. Run with
//
//	go test -fuzz=FuzzParse -fuzztime=3m ./engine/gguf/
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	if dir := findShared(); dir != "" {
		for _, pat := range []string{"models/*.gguf", "models/arch/*.gguf", "vocab/*.gguf"} {
			files, _ := filepath.Glob(filepath.Join(dir, pat))
			for _, p := range files {
				b, err := os.ReadFile(p)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(b[:min(len(b), 64<<10)])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *gguf.Error", err, err)
			}
			if fe.Offset < 0 || fe.Offset > int64(len(data)) {
				t.Fatalf("error offset %d outside the %d-byte input: %v", fe.Offset, len(data), err)
			}
			return
		}
		for i := range file.Tensors {
			ti := &file.Tensors[i]
			if int64(len(file.TensorData(ti))) != ti.Size || ti.Size <= 0 {
				t.Fatalf("tensor %q: %d bytes of data, size %d", ti.Name, len(file.TensorData(ti)), ti.Size)
			}
		}
		var b1 bytes.Buffer
		if err := Write(&b1, file.KV, specsOf(file)); err != nil {
			t.Fatalf("the Writer refuses what Parse accepted: %v", err)
		}
		f2, err := Parse(b1.Bytes())
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		if len(f2.KV) != len(file.KV) || len(f2.Tensors) != len(file.Tensors) {
			t.Fatalf("re-encoded file has %d KVs and %d tensors, want %d and %d", len(f2.KV), len(f2.Tensors), len(file.KV), len(file.Tensors))
		}
		var b2 bytes.Buffer
		if err := Write(&b2, f2.KV, specsOf(f2)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
			t.Fatalf("re-encoding is not a fixed point")
		}
	})
}

// findShared is sharedDir without a testing.TB: "" when absent.
func findShared() string {
	for _, d := range []string{os.Getenv("LLM_ENGINE_SHARED"), "../../../shared", "../../shared"} {
		if d == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(d, "models")); err == nil && st.IsDir() {
			return d
		}
	}
	return ""
}
