// Package gguf reads and writes GGUF files (versions 2 and 3), the container
// format of llama.cpp models.
//
// The reader memory-maps the file and validates every header field before it
// trusts it: counts and lengths are checked against the bytes that remain, so
// a corrupt or hostile file yields an error naming the problem and the byte
// offset, never a panic or an allocation sized by an unchecked field.
package gguf

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/weos/llm-engine/kernels"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment applies when general.alignment is absent.
const DefaultAlignment = 32

// Limits that no sane model exceeds; they bound work done on a hostile header.
const (
	maxDims       = 4
	maxStringLen  = 1 << 26 // 64 MiB for one string value
	maxArrayDepth = 8
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

// Error is a format error at a byte offset of the file.
type Error struct {
	Offset int64
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("gguf: %s (at byte offset %d)", e.Msg, e.Offset) }

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
	closer      func() error
}

// Parse parses a GGUF image held in memory. The File aliases buf.
func Parse(buf []byte) (*File, error) {
	r := &reader{buf: buf}
	f := &File{data: buf, kvIndex: map[string]int{}, tensorIndex: map[string]int{}}

	magic, err := r.u32()
	if err != nil {
		return nil, r.errf(0, "file too short for a GGUF header (%d bytes)", len(buf))
	}
	if magic != Magic {
		return nil, r.errf(0, "bad magic %#08x: not a GGUF file", magic)
	}
	if f.Version, err = r.u32(); err != nil {
		return nil, err
	}
	if f.Version != 2 && f.Version != 3 {
		return nil, r.errf(4, "unsupported GGUF version %d (supported: 2, 3)", f.Version)
	}
	nTensors, err := r.u64()
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64()
	if err != nil {
		return nil, err
	}
	// Every KV needs at least 12 bytes (key length + type) and every tensor
	// info at least 24: reject counts the file cannot possibly hold before
	// allocating anything for them.
	if nKV > uint64(r.remaining())/12 {
		return nil, r.errf(16, "metadata count %d cannot fit in the %d bytes that remain", nKV, r.remaining())
	}
	if nTensors > uint64(r.remaining())/24 {
		return nil, r.errf(8, "tensor count %d cannot fit in the %d bytes that remain", nTensors, r.remaining())
	}

	f.KV = make([]KV, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		at := r.off
		key, err := r.str()
		if err != nil {
			return nil, fmt.Errorf("metadata entry %d: %w", i, err)
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, r.errf(at, "duplicate metadata key %q", key)
		}
		vt, err := r.u32()
		if err != nil {
			return nil, err
		}
		val, err := r.value(ValueType(vt), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Type: ValueType(vt), Value: val})
	}

	f.Alignment = DefaultAlignment
	if i, ok := f.kvIndex["general.alignment"]; ok {
		a, ok := asUint(f.KV[i].Value)
		if !ok || a == 0 || a&(a-1) != 0 || a > 1<<20 {
			return nil, r.errf(0, "general.alignment must be a power of two up to 1 MiB, got %v", f.KV[i].Value)
		}
		f.Alignment = int(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		at := r.off
		name, err := r.str()
		if err != nil {
			return nil, fmt.Errorf("tensor info %d: %w", i, err)
		}
		if _, dup := f.tensorIndex[name]; dup {
			return nil, r.errf(at, "duplicate tensor name %q", name)
		}
		nd, err := r.u32()
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > maxDims {
			return nil, r.errf(r.off-4, "tensor %q has %d dimensions (1 to %d allowed)", name, nd, maxDims)
		}
		ti := TensorInfo{Name: name, Dims: make([]int64, nd)}
		n := uint64(1)
		for d := range ti.Dims {
			v, err := r.u64()
			if err != nil {
				return nil, err
			}
			if v == 0 || v > 1<<40 {
				return nil, r.errf(r.off-8, "tensor %q dimension %d is %d", name, d, v)
			}
			n *= v
			if n > 1<<42 {
				return nil, r.errf(r.off-8, "tensor %q has an absurd element count", name)
			}
			ti.Dims[d] = int64(v)
		}
		typ, err := r.u32()
		if err != nil {
			return nil, err
		}
		ti.Type = kernels.Type(typ)
		if !ti.Type.Known() {
			return nil, r.errf(r.off-4, "tensor %q has unknown type id %d", name, typ)
		}
		if !ti.Type.Supported() {
			return nil, &Error{Offset: int64(r.off - 4), Msg: fmt.Sprintf("tensor %q has type %s: %v (supported: F32, F16, BF16, Q8_0, Q5_0, Q4_K, Q6_K)", name, ti.Type, ErrUnsupportedType)}
		}
		rowSize, err := ti.Type.RowSize(int(ti.Dims[0]))
		if err != nil {
			return nil, r.errf(at, "tensor %q: %v", name, err)
		}
		ti.Size = int64(rowSize) * int64(n/uint64(ti.Dims[0]))
		if ti.Offset, err = r.u64(); err != nil {
			return nil, err
		}
		if ti.Offset%uint64(f.Alignment) != 0 {
			return nil, r.errf(r.off-8, "tensor %q offset %d is not aligned to %d", name, ti.Offset, f.Alignment)
		}
		f.tensorIndex[name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	f.DataOffset = int64(alignUp(uint64(r.off), uint64(f.Alignment)))
	if len(f.Tensors) > 0 && f.DataOffset > int64(len(buf)) {
		return nil, r.errf(r.off, "data section starts at %d, past the end of the file (%d bytes)", f.DataOffset, len(buf))
	}
	dataLen := uint64(len(buf)) - uint64(min(f.DataOffset, int64(len(buf))))
	// Bounds and overlap: sort by offset, then every tensor must end before
	// the next begins and before the end of the file.
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	var prevEnd uint64
	prevName := ""
	for _, i := range order {
		t := &f.Tensors[i]
		end := t.Offset + uint64(t.Size)
		if end < t.Offset || end > dataLen {
			return nil, r.errf(int(f.DataOffset)+int(t.Offset), "tensor %q (%d bytes at data offset %d) runs past the end of the file (data section holds %d bytes)", t.Name, t.Size, t.Offset, dataLen)
		}
		if prevName != "" && t.Offset < prevEnd {
			return nil, r.errf(int(f.DataOffset)+int(t.Offset), "tensor %q overlaps tensor %q", t.Name, prevName)
		}
		prevEnd, prevName = end, t.Name
	}
	return f, nil
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

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

// reader is a bounds-checked little-endian cursor.
type reader struct {
	buf []byte
	off int
}

func (r *reader) remaining() int { return len(r.buf) - r.off }

func (r *reader) errf(off int, format string, args ...any) error {
	return &Error{Offset: int64(off), Msg: fmt.Sprintf(format, args...)}
}

func (r *reader) need(n int, what string) error {
	if n < 0 || r.remaining() < n {
		return r.errf(r.off, "truncated: need %d bytes for %s, %d remain", n, what, r.remaining())
	}
	return nil
}

func (r *reader) u8() (uint8, error) {
	if err := r.need(1, "uint8"); err != nil {
		return 0, err
	}
	v := r.buf[r.off]
	r.off++
	return v, nil
}

func (r *reader) u16() (uint16, error) {
	if err := r.need(2, "uint16"); err != nil {
		return 0, err
	}
	v := uint16(r.buf[r.off]) | uint16(r.buf[r.off+1])<<8
	r.off += 2
	return v, nil
}

func (r *reader) u32() (uint32, error) {
	if err := r.need(4, "uint32"); err != nil {
		return 0, err
	}
	b := r.buf[r.off:]
	v := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	r.off += 4
	return v, nil
}

func (r *reader) u64() (uint64, error) {
	lo, err := r.u32()
	if err != nil {
		return 0, err
	}
	hi, err := r.u32()
	if err != nil {
		return 0, err
	}
	return uint64(lo) | uint64(hi)<<32, nil
}

func (r *reader) str() (string, error) {
	at := r.off
	n, err := r.u64()
	if err != nil {
		return "", err
	}
	if n > maxStringLen {
		return "", r.errf(at, "string length %d exceeds the limit of %d", n, maxStringLen)
	}
	if err := r.need(int(n), "string"); err != nil {
		return "", err
	}
	s := string(r.buf[r.off : r.off+int(n)])
	r.off += int(n)
	return s, nil
}

func (r *reader) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeUint8:
		return r.u8()
	case TypeInt8:
		v, err := r.u8()
		return int8(v), err
	case TypeUint16:
		return r.u16()
	case TypeInt16:
		v, err := r.u16()
		return int16(v), err
	case TypeUint32:
		return r.u32()
	case TypeInt32:
		v, err := r.u32()
		return int32(v), err
	case TypeFloat32:
		v, err := r.u32()
		return math.Float32frombits(v), err
	case TypeBool:
		v, err := r.u8()
		if err == nil && v > 1 {
			return nil, r.errf(r.off-1, "bool value %d is neither 0 nor 1", v)
		}
		return v == 1, err
	case TypeString:
		return r.str()
	case TypeUint64:
		return r.u64()
	case TypeInt64:
		v, err := r.u64()
		return int64(v), err
	case TypeFloat64:
		v, err := r.u64()
		return math.Float64frombits(v), err
	case TypeArray:
		return r.array(depth + 1)
	}
	return nil, r.errf(r.off-4, "unknown metadata value type %d", uint32(t))
}

func (r *reader) array(depth int) (Array, error) {
	at := r.off
	if depth > maxArrayDepth {
		return Array{}, r.errf(at, "arrays nested deeper than %d", maxArrayDepth)
	}
	et, err := r.u32()
	if err != nil {
		return Array{}, err
	}
	n, err := r.u64()
	if err != nil {
		return Array{}, err
	}
	t := ValueType(et)
	// Minimum bytes per element: scalars their size, strings 8 (length),
	// arrays 12 (type + count). Refuse counts the rest of the file cannot hold.
	minSize := t.fixedSize()
	switch t {
	case TypeString:
		minSize = 8
	case TypeArray:
		minSize = 12
	}
	if minSize == 0 {
		return Array{}, r.errf(at, "array of unknown element type %d", et)
	}
	if n > uint64(r.remaining()/minSize) {
		return Array{}, r.errf(at+4, "array of %d %s elements cannot fit in the %d bytes that remain", n, t, r.remaining())
	}
	cnt := int(n)
	a := Array{Type: t}
	switch t {
	case TypeUint8:
		v := make([]uint8, cnt)
		copy(v, r.buf[r.off:])
		r.off += cnt
		a.Values = v
	case TypeInt8:
		v := make([]int8, cnt)
		for i := range v {
			v[i] = int8(r.buf[r.off+i])
		}
		r.off += cnt
		a.Values = v
	case TypeBool:
		v := make([]bool, cnt)
		for i := range v {
			b := r.buf[r.off+i]
			if b > 1 {
				return Array{}, r.errf(r.off+i, "bool value %d is neither 0 nor 1", b)
			}
			v[i] = b == 1
		}
		r.off += cnt
		a.Values = v
	case TypeUint16, TypeInt16:
		u := make([]uint16, cnt)
		for i := range u {
			u[i], _ = r.u16()
		}
		if t == TypeInt16 {
			v := make([]int16, cnt)
			for i := range u {
				v[i] = int16(u[i])
			}
			a.Values = v
		} else {
			a.Values = u
		}
	case TypeUint32:
		v := make([]uint32, cnt)
		for i := range v {
			v[i], _ = r.u32()
		}
		a.Values = v
	case TypeInt32:
		v := make([]int32, cnt)
		for i := range v {
			x, _ := r.u32()
			v[i] = int32(x)
		}
		a.Values = v
	case TypeFloat32:
		v := make([]float32, cnt)
		for i := range v {
			x, _ := r.u32()
			v[i] = math.Float32frombits(x)
		}
		a.Values = v
	case TypeUint64:
		v := make([]uint64, cnt)
		for i := range v {
			v[i], _ = r.u64()
		}
		a.Values = v
	case TypeInt64:
		v := make([]int64, cnt)
		for i := range v {
			x, _ := r.u64()
			v[i] = int64(x)
		}
		a.Values = v
	case TypeFloat64:
		v := make([]float64, cnt)
		for i := range v {
			x, _ := r.u64()
			v[i] = math.Float64frombits(x)
		}
		a.Values = v
	case TypeString:
		v := make([]string, cnt)
		for i := range v {
			s, err := r.str()
			if err != nil {
				return Array{}, fmt.Errorf("array element %d: %w", i, err)
			}
			v[i] = s
		}
		a.Values = v
	case TypeArray:
		v := make([]Array, cnt)
		for i := range v {
			sub, err := r.array(depth + 1)
			if err != nil {
				return Array{}, fmt.Errorf("array element %d: %w", i, err)
			}
			v[i] = sub
		}
		a.Values = v
	}
	return a, nil
}
