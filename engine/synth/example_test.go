package synth_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/synth"
)

func ExampleLlama() {
	spec := synth.Presets["tiny"]
	spec.Seed = 1
	var reported int64
	spec.Progress = func(done, total int64) { reported = done }
	var buf bytes.Buffer // a big model would go to a file through a bufio.Writer
	if err := synth.Llama(&buf, spec); err != nil {
		log.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	emb, _ := f.Tensor("token_embd.weight")
	fmt.Println(len(f.Tensors), emb.Dims, emb.Type, spec.Params(), reported == int64(buf.Len())-f.DataOffset)
	// Output: 21 [64 320] F32 115008 true
}
