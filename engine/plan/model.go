package plan

import "github.com/weos/llm-engine/engine/gguf"

// ModelDescFromGGUF describes an open GGUF file for Resolve: its tensors in
// file order and the architecture's block count, context length and expert
// count. ID is left for the caller (e.g. the file's content hash).
func ModelDescFromGGUF(f *gguf.File) ModelDesc {
	arch, _ := f.String("general.architecture")
	m := ModelDesc{Arch: arch, Tensors: make([]TensorDesc, len(f.Tensors))}
	get := func(key string) int {
		if v, ok := f.Uint(arch + "." + key); ok && v < 1<<31 {
			return int(v)
		}
		return 0
	}
	m.NLayers = get("block_count")
	m.NCtx = get("context_length")
	m.NExpert = get("expert_count")
	for i, t := range f.Tensors {
		m.Tensors[i] = TensorDesc{Name: t.Name, Dims: append([]int64(nil), t.Dims...), Type: t.Type}
	}
	return m
}
