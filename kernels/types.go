// Package kernels holds the numeric core of llm-engine: tensor block formats,
// quantizers and dequantizers, dot products, matrix-vector and matrix-matrix
// products, the element-wise operations of a transformer layer, and the pool of
// OS-locked worker threads that runs them.
//
// It imports nothing else from this module, so it can be tested and
// benchmarked on its own.
package kernels

import "fmt"

// Type is a tensor element type. The numeric values are ggml's (enum
// ggml_type), because GGUF files store them verbatim.
type Type uint32

const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q8_1 Type = 9
	Q2_K Type = 10
	Q3_K Type = 11
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	Q8_K Type = 15
	BF16 Type = 30
)

// QK_K is the super-block size of the K-quants.
const QK_K = 256

type typeInfo struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
	supported bool
}

// typeTable lists every ggml type id we can name. Only the supported ones can
// be loaded; the others are known so that errors can name them.
var typeTable = map[Type]typeInfo{
	F32:  {"F32", 1, 4, true},
	F16:  {"F16", 1, 2, true},
	Q4_0: {"Q4_0", 32, 18, false},
	Q4_1: {"Q4_1", 32, 20, false},
	Q5_0: {"Q5_0", 32, 22, true},
	Q5_1: {"Q5_1", 32, 24, false},
	Q8_0: {"Q8_0", 32, 34, true},
	Q8_1: {"Q8_1", 32, 36, false},
	Q2_K: {"Q2_K", 256, 84, false},
	Q3_K: {"Q3_K", 256, 110, false},
	Q4_K: {"Q4_K", 256, 144, true},
	Q5_K: {"Q5_K", 256, 176, false},
	Q6_K: {"Q6_K", 256, 210, true},
	Q8_K: {"Q8_K", 256, 292, true},
	16:   {"IQ2_XXS", 256, 66, false},
	17:   {"IQ2_XS", 256, 74, false},
	18:   {"IQ3_XXS", 256, 98, false},
	19:   {"IQ1_S", 256, 50, false},
	20:   {"IQ4_NL", 32, 18, false},
	21:   {"IQ3_S", 256, 110, false},
	22:   {"IQ2_S", 256, 82, false},
	23:   {"IQ4_XS", 256, 136, false},
	24:   {"I8", 1, 1, false},
	25:   {"I16", 1, 2, false},
	26:   {"I32", 1, 4, false},
	27:   {"I64", 1, 8, false},
	28:   {"F64", 1, 8, false},
	29:   {"IQ1_M", 256, 56, false},
	BF16: {"BF16", 1, 2, true},
	34:   {"TQ1_0", 256, 54, false},
	35:   {"TQ2_0", 256, 66, false},
	39:   {"MXFP4", 32, 17, false},
}

// String returns ggml's name of the type, or "type(N)" for an unknown id.
func (t Type) String() string {
	if ti, ok := typeTable[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Known reports whether t is a ggml type id we can name and size.
func (t Type) Known() bool { _, ok := typeTable[t]; return ok }

// Supported reports whether this engine can compute with tensors of type t.
func (t Type) Supported() bool { return typeTable[t].supported }

// BlockSize is the number of elements in one block of t (1 for plain floats).
func (t Type) BlockSize() int { return typeTable[t].blockSize }

// TypeSize is the number of bytes in one block of t.
func (t Type) TypeSize() int { return typeTable[t].typeSize }

// RowSize returns the bytes taken by n elements of type t, or an error when n
// is not a whole number of blocks.
func (t Type) RowSize(n int) (int, error) {
	ti, ok := typeTable[t]
	if !ok {
		return 0, fmt.Errorf("unknown tensor type %d", uint32(t))
	}
	if n < 0 || n%ti.blockSize != 0 {
		return 0, fmt.Errorf("%s: row of %d elements is not a multiple of the block size %d", ti.name, n, ti.blockSize)
	}
	return n / ti.blockSize * ti.typeSize, nil
}

// ParseType maps ggml's type name (case-insensitive) to a Type.
func ParseType(name string) (Type, bool) {
	for t, ti := range typeTable {
		if equalFold(ti.name, name) {
			return t, true
		}
	}
	return 0, false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'a' <= ca && ca <= 'z' {
			ca -= 32
		}
		if 'a' <= cb && cb <= 'z' {
			cb -= 32
		}
		if ca != cb {
			return false
		}
	}
	return true
}
