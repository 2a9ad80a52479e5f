package gguf

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/weos/llm-engine/kernels"
)

// Smallest encodings, used to refuse counts the remaining bytes cannot hold
// before anything is allocated for them.
const (
	minKVSize         = 8 + 4 + 1             // key length, value type, 1-byte value
	minTensorInfoSize = 8 + 1 + 4 + 8 + 4 + 8 // name length, 1-byte name, n_dims, one dim, type, offset
	headerSize        = 4 + 4 + 8 + 8         // magic, version, tensor count, metadata count
)

// Parse parses a GGUF image held in memory. The File aliases buf.
//
// Every error is an *Error naming the problem and the byte offset of the
// offending field; Parse never panics and never allocates more than a small
// multiple of len(buf), whatever buf holds.
func Parse(buf []byte) (*File, error) {
	r := &reader{buf: buf}
	f := &File{data: buf, kvIndex: map[string]int{}, tensorIndex: map[string]int{}}

	if len(buf) < headerSize {
		if len(buf) >= 4 && binary.LittleEndian.Uint32(buf) != Magic {
			return nil, badMagic(buf)
		}
		return nil, r.errf(0, "file too short for a GGUF header: %d bytes, need at least %d", len(buf), headerSize)
	}
	if binary.LittleEndian.Uint32(buf) != Magic {
		return nil, badMagic(buf)
	}
	r.off = 4
	f.Version, _ = r.u32("version")
	if f.Version != 2 && f.Version != 3 {
		msg := fmt.Sprintf("unsupported GGUF version %d (supported: 2, 3)", f.Version)
		if v := bits.ReverseBytes32(f.Version); v == 2 || v == 3 {
			msg += "; this looks like a big-endian GGUF file, which is not supported"
		}
		return nil, r.errf(4, "%s", msg)
	}
	nTensors, _ := r.u64("tensor count")
	nKV, _ := r.u64("metadata count")
	rem := uint64(r.remaining())
	if nKV > rem/minKVSize {
		return nil, r.errf(16, "metadata count %d cannot fit in the %d bytes that remain (each entry takes at least %d): truncated or corrupt", nKV, rem, minKVSize)
	}
	if nTensors > rem/minTensorInfoSize {
		return nil, r.errf(8, "tensor count %d cannot fit in the %d bytes that remain (each tensor info takes at least %d): truncated or corrupt", nTensors, rem, minTensorInfoSize)
	}

	// Metadata.
	f.KV = make([]KV, 0, nKV)
	kvOff := make([]int, 0, nKV) // offset of each value, for later errors
	for i := uint64(0); i < nKV; i++ {
		at := r.off
		key, err := r.str("metadata key", MaxKeyLen)
		if err != nil {
			return nil, prefix(err, "metadata entry %d", i)
		}
		if key == "" {
			return nil, r.errf(at, "metadata entry %d has an empty key", i)
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, r.errf(at, "duplicate metadata key %q", key)
		}
		vt, err := r.u32("value type")
		if err != nil {
			return nil, prefix(err, "metadata %q", key)
		}
		valAt := r.off
		val, err := r.value(ValueType(vt), 0)
		if err != nil {
			return nil, prefix(err, "metadata %q", key)
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Type: ValueType(vt), Value: val})
		kvOff = append(kvOff, valAt)
	}

	f.Alignment = DefaultAlignment
	if i, ok := f.kvIndex["general.alignment"]; ok {
		a, err := alignmentOf(f.KV[i])
		if err != nil {
			return nil, r.errf(kvOff[i], "%v", err)
		}
		f.Alignment = a
	}

	// Tensor infos.
	f.Tensors = make([]TensorInfo, 0, nTensors)
	offAt := make([]int, 0, nTensors) // offset of each info's data offset field
	for i := uint64(0); i < nTensors; i++ {
		ti, at, err := r.tensorInfo(f.Alignment)
		if err != nil {
			return nil, prefix(err, "tensor info %d", i)
		}
		if _, dup := f.tensorIndex[ti.Name]; dup {
			return nil, r.errf(at, "duplicate tensor name %q", ti.Name)
		}
		f.tensorIndex[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
		offAt = append(offAt, r.off-8)
	}

	// Data section: starts at the next multiple of the alignment; every
	// tensor must lie inside it and no two may share a byte.
	f.DataOffset = int64(alignUp(uint64(r.off), uint64(f.Alignment)))
	if len(f.Tensors) > 0 && f.DataOffset > int64(len(buf)) {
		return nil, r.errf(r.off, "tensor data section would start at byte %d, past the end of the file (%d bytes)", f.DataOffset, len(buf))
	}
	dataLen := uint64(len(buf)) - uint64(min(f.DataOffset, int64(len(buf))))
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(f.Tensors[a].Offset, f.Tensors[b].Offset), cmp.Compare(a, b))
	})
	var prevEnd uint64
	prev := -1
	for _, i := range order {
		t := &f.Tensors[i]
		if t.Offset >= dataLen {
			return nil, r.errf(offAt[i], "tensor %q data offset %d points past the end of the file (the data section holds %d bytes)", t.Name, t.Offset, dataLen)
		}
		if uint64(t.Size) > dataLen-t.Offset {
			return nil, r.errf(offAt[i], "tensor %q (%d bytes at data offset %d) runs past the end of the file (the data section holds %d bytes)", t.Name, t.Size, t.Offset, dataLen)
		}
		if prev >= 0 && t.Offset < prevEnd {
			p := &f.Tensors[prev]
			return nil, r.errf(offAt[i], "tensor %q (data offset %d) overlaps tensor %q (data offset %d, %d bytes)", t.Name, t.Offset, p.Name, p.Offset, p.Size)
		}
		prevEnd, prev = t.Offset+uint64(t.Size), i
	}
	return f, nil
}

func badMagic(buf []byte) error {
	m := buf[:min(len(buf), 4)]
	return &Error{Offset: 0, Msg: fmt.Sprintf("bad magic %q (% x): not a GGUF file", m, m)}
}

// alignmentOf validates a general.alignment entry.
func alignmentOf(kv KV) (int, error) {
	a, ok := asUint(kv.Value)
	if !ok || a == 0 || a&(a-1) != 0 || a > MaxAlignment {
		return 0, fmt.Errorf("general.alignment must be a power of two up to %d, got %v (%s)", MaxAlignment, kv.Value, kv.Type)
	}
	return int(a), nil
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

// tensorSize validates a tensor's name, dimensions and type and returns its
// byte size. It backs both the reader and the Writer. The returned field
// index says which field is wrong: 0 name, 1 dims, 2 type.
func tensorSize(name string, dims []int64, typ kernels.Type) (int64, int, error) {
	if name == "" {
		return 0, 0, fmt.Errorf("tensor has an empty name")
	}
	if len(name) > MaxTensorNameLen {
		return 0, 0, fmt.Errorf("tensor name %q is %d bytes long (at most %d allowed)", name, len(name), MaxTensorNameLen)
	}
	if len(dims) == 0 || len(dims) > MaxDims {
		return 0, 1, fmt.Errorf("tensor %q has %d dimensions (1 to %d allowed)", name, len(dims), MaxDims)
	}
	n := uint64(1)
	for d, v := range dims {
		if v <= 0 {
			return 0, 1, fmt.Errorf("tensor %q dimension %d is %d (must be at least 1)", name, d, v)
		}
		hi, lo := bits.Mul64(n, uint64(v))
		if hi != 0 || lo > MaxElements {
			return 0, 1, fmt.Errorf("tensor %q dimensions %v: element count overflows the limit of %d", name, dims, uint64(MaxElements))
		}
		n = lo
	}
	if !typ.Known() {
		return 0, 2, fmt.Errorf("tensor %q has unknown tensor type id %d", name, uint32(typ))
	}
	rowSize, err := typ.RowSize(int(dims[0]))
	if err != nil {
		return 0, 1, fmt.Errorf("tensor %q of type %s: row length %d is not a multiple of the block size %d", name, typ, dims[0], typ.BlockSize())
	}
	return int64(rowSize) * int64(n/uint64(dims[0])), 0, nil
}

// TensorSize returns the byte size of a tensor of type typ with the given
// GGUF dimensions, or an error when the shape is invalid for the type.
func TensorSize(typ kernels.Type, dims []int64) (int64, error) {
	s, _, err := tensorSize("tensor", dims, typ)
	return s, err
}

// supportedTypes lists the types the engine computes with, for messages.
var supportedTypes = func() string {
	var names []string
	for id := range 256 {
		if t := kernels.Type(id); t.Known() && t.Supported() {
			names = append(names, t.String())
		}
	}
	return strings.Join(names, ", ")
}()

// tensorInfo reads one tensor info; at is where it starts.
func (r *reader) tensorInfo(alignment int) (ti TensorInfo, at int, err error) {
	at = r.off
	name, err := r.str("tensor name", MaxTensorNameLen)
	if err != nil {
		return ti, at, err
	}
	ti.Name = name
	if name == "" {
		return ti, at, r.errf(at, "tensor has an empty name")
	}
	ndAt := r.off
	nd, err := r.u32("dimension count")
	if err != nil {
		return ti, at, prefix(err, "tensor %q", name)
	}
	if nd == 0 || nd > MaxDims {
		return ti, at, r.errf(ndAt, "tensor %q has %d dimensions (1 to %d allowed)", name, nd, MaxDims)
	}
	ti.Dims = make([]int64, nd)
	for d := range ti.Dims {
		dimAt := r.off
		v, err := r.u64("dimension")
		if err != nil {
			return ti, at, prefix(err, "tensor %q", name)
		}
		if v == 0 || v > MaxElements {
			return ti, at, r.errf(dimAt, "tensor %q dimension %d is %d (1 to %d allowed)", name, d, v, uint64(MaxElements))
		}
		ti.Dims[d] = int64(v)
		if _, _, err := tensorSize(name, ti.Dims[:d+1], kernels.F32); err != nil {
			return ti, at, r.errf(dimAt, "%v", err)
		}
	}
	typAt := r.off
	typ, err := r.u32("tensor type")
	if err != nil {
		return ti, at, prefix(err, "tensor %q", name)
	}
	ti.Type = kernels.Type(typ)
	if !ti.Type.Known() {
		return ti, at, r.errf(typAt, "tensor %q has unknown tensor type id %d", name, typ)
	}
	if !ti.Type.Supported() {
		return ti, at, &Error{Offset: int64(typAt), err: ErrUnsupportedType,
			Msg: fmt.Sprintf("tensor %q has type %s: %v (supported: %s)", name, ti.Type, ErrUnsupportedType, supportedTypes)}
	}
	size, field, err := tensorSize(name, ti.Dims, ti.Type)
	if err != nil {
		off := ndAt
		if field == 2 {
			off = typAt
		}
		return ti, at, r.errf(off, "%v", err)
	}
	ti.Size = size
	offAt := r.off
	if ti.Offset, err = r.u64("data offset"); err != nil {
		return ti, at, prefix(err, "tensor %q", name)
	}
	if ti.Offset%uint64(alignment) != 0 {
		return ti, at, r.errf(offAt, "tensor %q data offset %d is not a multiple of the alignment %d", name, ti.Offset, alignment)
	}
	return ti, at, nil
}

// prefix adds context to a format error's message.
func prefix(err error, format string, args ...any) error {
	if e, ok := err.(*Error); ok {
		e.Msg = fmt.Sprintf(format, args...) + ": " + e.Msg
		return e
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
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
	if r.remaining() < n {
		return r.errf(r.off, "truncated: %s needs %d bytes, %d remain", what, n, r.remaining())
	}
	return nil
}

func (r *reader) u8(what string) (uint8, error) {
	if err := r.need(1, what); err != nil {
		return 0, err
	}
	v := r.buf[r.off]
	r.off++
	return v, nil
}

func (r *reader) u16(what string) (uint16, error) {
	if err := r.need(2, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint16(r.buf[r.off:])
	r.off += 2
	return v, nil
}

func (r *reader) u32(what string) (uint32, error) {
	if err := r.need(4, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) u64(what string) (uint64, error) {
	if err := r.need(8, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint64(r.buf[r.off:])
	r.off += 8
	return v, nil
}

// str reads a length-prefixed string of at most limit bytes.
func (r *reader) str(what string, limit int) (string, error) {
	at := r.off
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(limit) {
		return "", r.errf(at, "%s length %d exceeds the limit of %d bytes", what, n, limit)
	}
	if n > uint64(r.remaining()) {
		return "", r.errf(at, "truncated: %s length %d runs past the end of the file (%d bytes remain)", what, n, r.remaining())
	}
	s := string(r.buf[r.off : r.off+int(n)])
	r.off += int(n)
	return s, nil
}

// value reads a value of type t; depth is the array nesting of its container.
func (r *reader) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeUint8:
		return r.u8("uint8 value")
	case TypeInt8:
		v, err := r.u8("int8 value")
		return int8(v), err
	case TypeUint16:
		return r.u16("uint16 value")
	case TypeInt16:
		v, err := r.u16("int16 value")
		return int16(v), err
	case TypeUint32:
		return r.u32("uint32 value")
	case TypeInt32:
		v, err := r.u32("int32 value")
		return int32(v), err
	case TypeFloat32:
		v, err := r.u32("float32 value")
		return math.Float32frombits(v), err
	case TypeBool:
		v, err := r.u8("bool value")
		if err != nil {
			return nil, err
		}
		if v > 1 {
			return nil, r.errf(r.off-1, "bool value %d is neither 0 nor 1", v)
		}
		return v == 1, nil
	case TypeString:
		return r.str("string", MaxStringLen)
	case TypeUint64:
		return r.u64("uint64 value")
	case TypeInt64:
		v, err := r.u64("int64 value")
		return int64(v), err
	case TypeFloat64:
		v, err := r.u64("float64 value")
		return math.Float64frombits(v), err
	case TypeArray:
		return r.array(depth + 1)
	}
	return nil, r.errf(r.off-4, "unknown metadata value type %d", uint32(t))
}

// minEncodedSize is the fewest bytes one element of type t takes.
func minEncodedSize(t ValueType) int {
	switch t {
	case TypeString:
		return 8 // length
	case TypeArray:
		return 12 // element type and count
	}
	return t.fixedSize()
}

func (r *reader) array(depth int) (Array, error) {
	at := r.off
	if depth > MaxArrayDepth {
		return Array{}, r.errf(at, "arrays nested too deep: depth %d exceeds the limit of %d", depth, MaxArrayDepth)
	}
	et, err := r.u32("array element type")
	if err != nil {
		return Array{}, err
	}
	t := ValueType(et)
	minSize := minEncodedSize(t)
	if minSize == 0 {
		return Array{}, r.errf(at, "array of unknown metadata value type %d", et)
	}
	n, err := r.u64("array count")
	if err != nil {
		return Array{}, err
	}
	if n > uint64(r.remaining()/minSize) {
		return Array{}, r.errf(at+4, "array count %d of %s elements cannot fit in the %d bytes that remain: truncated or corrupt", n, t, r.remaining())
	}
	cnt := int(n)
	a := Array{Type: t}
	b := r.buf[r.off:]
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		a.Values = slices.Clone(b[:cnt:cnt])
		r.off += cnt
	case TypeInt8:
		v := make([]int8, cnt)
		for i := range v {
			v[i] = int8(b[i])
		}
		a.Values = v
		r.off += cnt
	case TypeBool:
		v := make([]bool, cnt)
		for i := range v {
			if b[i] > 1 {
				return Array{}, r.errf(r.off+i, "array element %d: bool value %d is neither 0 nor 1", i, b[i])
			}
			v[i] = b[i] == 1
		}
		a.Values = v
		r.off += cnt
	case TypeUint16:
		v := make([]uint16, cnt)
		for i := range v {
			v[i] = le.Uint16(b[2*i:])
		}
		a.Values = v
		r.off += 2 * cnt
	case TypeInt16:
		v := make([]int16, cnt)
		for i := range v {
			v[i] = int16(le.Uint16(b[2*i:]))
		}
		a.Values = v
		r.off += 2 * cnt
	case TypeUint32:
		v := make([]uint32, cnt)
		for i := range v {
			v[i] = le.Uint32(b[4*i:])
		}
		a.Values = v
		r.off += 4 * cnt
	case TypeInt32:
		v := make([]int32, cnt)
		for i := range v {
			v[i] = int32(le.Uint32(b[4*i:]))
		}
		a.Values = v
		r.off += 4 * cnt
	case TypeFloat32:
		v := make([]float32, cnt)
		for i := range v {
			v[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		a.Values = v
		r.off += 4 * cnt
	case TypeUint64:
		v := make([]uint64, cnt)
		for i := range v {
			v[i] = le.Uint64(b[8*i:])
		}
		a.Values = v
		r.off += 8 * cnt
	case TypeInt64:
		v := make([]int64, cnt)
		for i := range v {
			v[i] = int64(le.Uint64(b[8*i:]))
		}
		a.Values = v
		r.off += 8 * cnt
	case TypeFloat64:
		v := make([]float64, cnt)
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		a.Values = v
		r.off += 8 * cnt
	case TypeString:
		v := make([]string, cnt)
		for i := range v {
			s, err := r.str("string", MaxStringLen)
			if err != nil {
				return Array{}, prefix(err, "array element %d", i)
			}
			v[i] = s
		}
		a.Values = v
	case TypeArray:
		v := make([]Array, cnt)
		for i := range v {
			sub, err := r.array(depth + 1)
			if err != nil {
				return Array{}, prefix(err, "array element %d", i)
			}
			v[i] = sub
		}
		a.Values = v
	}
	return a, nil
}
