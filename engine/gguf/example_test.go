package gguf_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"math"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/kernels"
)

func ExampleWriter() {
	w := gguf.NewWriter()
	for _, kv := range []struct {
		key string
		v   any
	}{
		{"general.architecture", "llama"},
		{"llama.block_count", uint32(1)},
		{"tokenizer.ggml.tokens", []string{"<unk>", "<s>", "</s>"}},
		{"custom.nested", []gguf.Array{{Type: gguf.TypeInt32, Values: []int32{1, 2}}}},
	} {
		if err := w.Set(kv.key, kv.v); err != nil {
			log.Fatal(err)
		}
	}
	// A tensor held in memory, and one generated while the file is written.
	w.AddTensor(gguf.TensorSpec{Name: "norm", Dims: []int64{4}, Type: kernels.F32, Data: make([]byte, 16)})
	w.AddTensor(gguf.TensorSpec{Name: "ramp", Dims: []int64{4, 2}, Type: kernels.F32,
		WriteData: func(out io.Writer) error {
			for i := range 8 {
				if err := binary.Write(out, binary.LittleEndian, float32(i)); err != nil {
					return err
				}
			}
			return nil
		}})

	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		log.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	toks, _ := f.ArrayValue("tokenizer.ggml.tokens")
	ramp, _ := f.Tensor("ramp")
	last := math.Float32frombits(binary.LittleEndian.Uint32(f.TensorData(ramp)[28:]))
	fmt.Println(len(f.KV), toks.Len(), ramp.Dims, ramp.Offset, last, buf.Len() == int(w.Size()))
	// Output: 4 3 [4 2] 32 7 true
}
