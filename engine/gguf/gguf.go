package gguf

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/weos/llm-engine/kernels"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment applies when general.alignment is absent.
const DefaultAlignment = 32

// Limits that no sane model exceeds; they bound the work done on a hostile
// header and are enforced by both the reader and the Writer.
const (
	// MaxDims is the most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
	MaxDims = 4
	// MaxStringLen bounds one string value (64 MiB).
	MaxStringLen = 1 << 26
	// MaxKeyLen bounds a metadata key (the GGUF specification's 65535).
	MaxKeyLen = 1<<16 - 1
	// MaxTensorNameLen bounds a tensor name (the GGUF specification's 64).
	MaxTensorNameLen = 64
	// MaxArrayDepth bounds the nesting of arrays: a metadata value that is
	// an array has depth 1, an array inside it depth 2, and so on.
	MaxArrayDepth = 8
	// MaxAlignment bounds general.alignment (1 MiB).
	MaxAlignment = 1 << 20
	// MaxElements bounds the element count of one tensor (2^56), so that
	// neither the count nor the byte size can overflow an int64.
	MaxElements = 1 << 56
)

// ValueType is a GGUF metadata value type.
type ValueType uint32

const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// fixedSize is the encoded size of a scalar type, 0 for string/array.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Array is a metadata array. Values holds a typed Go slice: []uint8, []int8,
// []uint16, []int16, []uint32, []int32, []float32, []bool, []string,
// []uint64, []int64, []float64, or []Array for nested arrays.
type Array struct {
	Type   ValueType
	Values any
}

// Len returns the number of elements.
func (a Array) Len() int {
	switch v := a.Values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []Array:
		return len(v)
	}
	return 0
}

// KV is one metadata entry. Value holds uint8, int8, uint16, int16, uint32,
// int32, float32, bool, string, uint64, int64, float64 or Array.
type KV struct {
	Key   string
	Type  ValueType
	Value any
}

// TensorInfo describes one tensor. Dims are in GGUF order: Dims[0] is the
// contiguous (row) dimension.
type TensorInfo struct {
	Name   string
	Dims   []int64
	Type   kernels.Type
	Offset uint64 // relative to the start of the data section
	Size   int64  // bytes
}

// NumElements is the product of the dimensions.
func (t *TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Error is a format error at a byte offset of the file. Msg names the
// problem (and the metadata key or tensor concerned); Offset is the byte
// offset of the field found wrong.
type Error struct {
	Offset int64
	Msg    string

	err error // wrapped sentinel, e.g. ErrUnsupportedType
}

func (e *Error) Error() string { return fmt.Sprintf("gguf: %s (at byte offset %d)", e.Msg, e.Offset) }

// Unwrap returns the sentinel error the format error stands for, if any:
// errors.Is(err, ErrUnsupportedType) works on errors from Parse and Open.
func (e *Error) Unwrap() error { return e.err }

// ErrUnsupportedType is wrapped by errors for tensors of a type the engine
// cannot compute with.
var ErrUnsupportedType = errors.New("unsupported tensor type")

// File is a parsed GGUF file. Its tensor data aliases the memory map (or the
// buffer given to Parse) and stays valid until Close.
type File struct {
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	Alignment  int
	DataOffset int64 // absolute offset of the data section

	kvIndex     map[string]int
	tensorIndex map[string]int
	data        []byte // whole file
	mapped      bool   // data is a memory map of the file (Open)
	closer      func() error
}

// MapHolds reports whether b lies within the memory map of the file (Open
// maps it; Parse works on the caller's buffer, which is no map). A caller
// may then release the pages of b with madvise(MADV_DONTNEED): they are
// read back from the file if touched again.
func (f *File) MapHolds(b []byte) bool {
	if !f.mapped || len(b) == 0 || len(f.data) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(f.data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p+uintptr(len(b)) <= lo+uintptr(len(f.data))
}

// Close releases the memory map. Tensor data must not be used afterwards.
func (f *File) Close() error {
	if f.closer != nil {
		c := f.closer
		f.closer = nil
		return c()
	}
	return nil
}

// Lookup returns the metadata entry for key.
func (f *File) Lookup(key string) (KV, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return KV{}, false
	}
	return f.KV[i], true
}

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of a tensor, aliasing the mapped file.
func (f *File) TensorData(t *TensorInfo) []byte {
	start := f.DataOffset + int64(t.Offset)
	return f.data[start : start+t.Size : start+t.Size]
}

// String returns a string value.
func (f *File) String(key string) (string, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return "", false
	}
	s, ok := kv.Value.(string)
	return s, ok
}

// Uint returns an unsigned or non-negative signed integer value.
func (f *File) Uint(key string) (uint64, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return 0, false
	}
	return asUint(kv.Value)
}

// Float returns a numeric value as float64.
func (f *File) Float(key string) (float64, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	if u, ok := asUint(kv.Value); ok {
		return float64(u), true
	}
	return 0, false
}

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return false, false
	}
	b, ok := kv.Value.(bool)
	return b, ok
}

// ArrayValue returns an array value.
func (f *File) ArrayValue(key string) (Array, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return Array{}, false
	}
	a, ok := kv.Value.(Array)
	return a, ok
}

func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}
