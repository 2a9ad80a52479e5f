package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/weos/llm-engine/kernels"
)

// This file follows llama.cpp's per-tensor type selection (src/llama-quant.cpp:
// tensor_allows_quantization, llama_tensor_get_type_impl and
// tensor_type_fallback) for the schemes a plan can name, so that a model
// quantized by the engine has the same tensor types as llama-quantize's
// output for the same source.

// category mirrors llama.cpp's tensor_category.
type category int

const (
	catOther category = iota
	catTokenEmbd
	catAttnQ
	catAttnV
	catAttnK
	catAttnQKV
	catAttnKVB
	catAttnOutput
	catFFNUp
	catFFNGate
	catFFNDown
	catOutput
)

func tensorCategory(name string) category {
	switch {
	case name == "output.weight":
		return catOutput
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
		return catTokenEmbd
	case strings.Contains(name, "attn_qkv.weight"):
		return catAttnQKV
	case strings.Contains(name, "attn_kv_b.weight"):
		return catAttnKVB
	case strings.Contains(name, "attn_v.weight"):
		return catAttnV
	case strings.Contains(name, "attn_k.weight"):
		return catAttnK
	case strings.Contains(name, "attn_q.weight"):
		return catAttnQ
	case strings.Contains(name, "attn_output.weight"):
		return catAttnOutput
	case strings.Contains(name, "ffn_up"):
		return catFFNUp
	case strings.Contains(name, "ffn_gate"):
		return catFFNGate
	case strings.Contains(name, "ffn_down"):
		return catFFNDown
	}
	return catOther
}

// attnVLike mirrors category_is_attn_v: tensors that get more bits.
func (c category) attnVLike() bool { return c == catAttnV || c == catAttnQKV || c == catAttnKVB }

// nDims is ggml_n_dims: trailing dimensions of 1 do not count.
func nDims(dims []int64) int {
	n := len(dims)
	for n > 1 && dims[n-1] == 1 {
		n--
	}
	return max(n, 1)
}

// notQuantized lists name fragments llama.cpp never quantizes
// (tensor_allows_quantization).
var notQuantized = []string{
	"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
	"per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
	"indexer.k_proj.weight", "indexer.q_proj.weight",
	"time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
	"time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
	"time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
	"time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
	"attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
	".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
}

// keepReason says why a tensor is never converted, or "" when it may be.
func keepReason(t TensorDesc) string {
	name := t.Name
	if nDims(t.Dims) < 2 {
		if strings.HasSuffix(name, "norm.weight") && t.Type == kernels.F32 {
			return "norm weights stay F32"
		}
		return fmt.Sprintf("1-D tensor: never quantized, kept as %s from the file", t.Type)
	}
	if !strings.HasSuffix(name, "weight") {
		return fmt.Sprintf("not a weight: kept as %s from the file", t.Type)
	}
	if name == "position_embd.weight" || name == "token_types.weight" {
		return fmt.Sprintf("positional/token-type embeddings are never quantized: kept as %s from the file", t.Type)
	}
	for _, frag := range notQuantized {
		if strings.Contains(name, frag) {
			return fmt.Sprintf("llama.cpp never quantizes %q tensors: kept as %s from the file", frag, t.Type)
		}
	}
	return ""
}

// blkLayer parses the layer of a "blk.N." name, as sscanf("blk.%d.") does.
func blkLayer(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return 0, false
	}
	n, i := 0, 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' && n < 1<<24 {
		n = n*10 + int(rest[i]-'0')
		i++
	}
	return n, i > 0
}

// llamaOrder returns tensor indices in llama.cpp's processing order
// (weight_name_comparer: by layer, tensors outside blocks first, then name).
func llamaOrder(ts []TensorDesc) []int {
	idx := make([]int, len(ts))
	layer := make([]int, len(ts))
	for i, t := range ts {
		idx[i] = i
		layer[i] = -1
		if l, ok := blkLayer(t.Name); ok {
			layer[i] = l
		}
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ia, ib := idx[a], idx[b]
		if layer[ia] != layer[ib] {
			return layer[ia] < layer[ib]
		}
		return ts[ia].Name < ts[ib].Name
	})
	return idx
}

func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// mix holds the model-wide state of llama.cpp's type selection.
type mix struct {
	scheme  string // Q8_0, Q6_K or Q4_K_M
	base    kernels.Type
	falcon  bool
	nExpert int
	tied    bool // no output.weight: token_embd is also the output matrix
	nAttnV  int
	nLayer  int
	rank    map[int]int // tensor index -> position among its category (attn_v-like, ffn_down)
}

func newMix(scheme string, m ModelDesc) *mix {
	x := &mix{scheme: scheme, base: schemeBase[scheme], falcon: m.Arch == "falcon", nExpert: m.NExpert, tied: true, rank: map[int]int{}}
	maxLayer := -1
	for _, t := range m.Tensors {
		if tensorCategory(t.Name) == catOutput {
			x.tied = false
		}
		if l, ok := blkLayer(t.Name); ok {
			maxLayer = max(maxLayer, l)
		}
	}
	x.nLayer = m.NLayers
	if x.nLayer <= 0 {
		x.nLayer = maxLayer + 1
	}
	// llama.cpp counts attn_v-like tensors by name and numbers them, and the
	// ffn_down tensors, in processing order. It skips tensors whose type the
	// user forced; we do not, so an override never shifts another tensor's
	// type (identical results when nothing of the category is overridden).
	nv, nd := 0, 0
	for _, i := range llamaOrder(m.Tensors) {
		t := m.Tensors[i]
		c := tensorCategory(t.Name)
		if c.attnVLike() {
			x.nAttnV++
		}
		if keepReason(t) != "" {
			continue
		}
		switch {
		case c.attnVLike():
			x.rank[i] = nv
			nv++
		case c == catFFNDown:
			x.rank[i] = nd
			nd++
		}
	}
	return x
}

var schemeBase = map[string]kernels.Type{
	QuantF32: kernels.F32, QuantF16: kernels.F16,
	QuantQ8_0: kernels.Q8_0, QuantQ6_K: kernels.Q6_K, QuantQ4_K_M: kernels.Q4_K,
}

// choose is llama_tensor_get_type_impl for the plan's schemes: the type of
// tensor i before the row-length fallback, and why.
func (x *mix) choose(i int, t TensorDesc) (kernels.Type, string, bool) {
	c := tensorCategory(t.Name)
	typ := x.base
	def := "default " + x.scheme
	if x.scheme == QuantQ4_K_M {
		def = "default Q4_K_M: Q4_K"
	}
	pre := x.scheme + " mix: "
	switch {
	case c == catOutput || (x.tied && c == catTokenEmbd):
		who := "output.weight"
		if c == catTokenEmbd {
			who = t.Name + " (also the output matrix: no output.weight)"
		}
		nx, qk := t.Dims[0], int64(typ.BlockSize())
		switch {
		case x.falcon:
			return kernels.Q8_0, pre + who + " of falcon → Q8_0", true
		case nx%qk != 0:
			return kernels.Q8_0, fmt.Sprintf("%s%s with row length %d (not a multiple of %d) → Q8_0", pre, who, nx, qk), true
		case typ != kernels.Q8_0:
			return kernels.Q6_K, pre + who + " → Q6_K", true
		}
	case c == catTokenEmbd:
		// token_embd keeps the scheme's type for Q8_0, Q6_K and Q4_K_M.
	case c.attnVLike():
		r := x.rank[i]
		if x.scheme == QuantQ4_K_M && useMoreBits(r, x.nAttnV) {
			typ = kernels.Q6_K
			def = fmt.Sprintf("%sattn_v #%d of %d gets more bits (use_more_bits) → Q6_K", pre, r, x.nAttnV)
		}
		if x.nExpert == 8 {
			return kernels.Q8_0, pre + "attn_v of an 8-expert model → Q8_0", true
		}
		return typ, def, typ != x.base
	case c == catAttnK:
		if x.nExpert == 8 {
			return kernels.Q8_0, pre + "attn_k of an 8-expert model → Q8_0", true
		}
	case c == catFFNDown:
		if x.scheme != QuantQ4_K_M {
			break
		}
		r, n := x.rank[i], x.nLayer
		if x.nExpert > 1 {
			r, _ = blkLayer(t.Name)
		}
		if x.falcon {
			switch {
			case r < n/16:
				return kernels.Q6_K, fmt.Sprintf("%sfalcon ffn_down #%d of %d (first sixteenth) → Q6_K", pre, r, n), true
			case useMoreBits(r, n):
				return kernels.Q5_K, fmt.Sprintf("%sfalcon ffn_down #%d of %d gets more bits (use_more_bits) → Q5_K", pre, r, n), true
			}
		} else if useMoreBits(r, n) {
			return kernels.Q6_K, fmt.Sprintf("%sffn_down #%d of %d gets more bits (use_more_bits) → Q6_K", pre, r, n), true
		}
	case c == catAttnOutput:
		if !x.falcon && x.nExpert == 8 && x.scheme == QuantQ4_K_M {
			return kernels.Q5_K, pre + "attn_output of an 8-expert model → Q5_K", true
		}
	}
	return typ, def, false
}

// fallback is tensor_type_fallback: a type whose block does not divide the
// row length is replaced (Q4_K→Q5_0, Q6_K→Q8_0, then F16). Where llama.cpp
// has no fallback (it refuses, e.g. Q8_0 on a row of 172) the engine uses F16
// and says so.
func fallback(typ kernels.Type, row int64) (kernels.Type, string) {
	bs := int64(typ.BlockSize())
	if bs <= 1 || row%bs == 0 {
		return typ, ""
	}
	var fb kernels.Type
	switch typ {
	case kernels.Q4_K:
		fb = kernels.Q5_0
	case kernels.Q5_K:
		fb = kernels.Q5_1
	case kernels.Q6_K:
		fb = kernels.Q8_0
	case kernels.Q2_K, kernels.Q3_K:
		fb = kernels.Q4_0
	default:
		return kernels.F16, fmt.Sprintf("fallback: row length %d not a multiple of %d (%s→F16; llama.cpp has no fallback for %s and refuses the tensor)", row, bs, typ, typ)
	}
	if fbs := int64(fb.BlockSize()); row%fbs != 0 {
		return kernels.F16, fmt.Sprintf("fallback: row length %d not a multiple of %d (%s→%s) nor of %d (→F16)", row, bs, typ, fb, fbs)
	}
	return fb, fmt.Sprintf("fallback: row length %d not a multiple of %d (%s→%s)", row, bs, typ, fb)
}

// quantized reports whether t is a block-quantized type (not F32/F16/BF16).
func quantized(t kernels.Type) bool { return t.BlockSize() > 1 }
