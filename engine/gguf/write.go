package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/weos/llm-engine/kernels"
)

// WriteVersion is the GGUF version the Writer produces.
const WriteVersion = 3

// TensorSpec describes one tensor to write. Its bytes come from exactly one
// of Data, Reader and WriteData, and must number exactly the tensor's size
// (TensorSize of Type and Dims). Reader and WriteData are only used while
// the file is written, so tensor data never has to be held in memory.
type TensorSpec struct {
	Name string
	Dims []int64 // GGUF order: Dims[0] is the row length
	Type kernels.Type

	// Data holds the bytes in memory.
	Data []byte
	// Reader supplies the bytes: exactly the tensor's size is read from it
	// (it may hold more). A Reader can be consumed only once.
	Reader io.Reader
	// WriteData is called once per write of the file and must write
	// exactly the tensor's size to w. Writing more is an error.
	WriteData func(w io.Writer) error
}

type tensorEntry struct {
	spec TensorSpec
	size int64
}

// Writer assembles a GGUF file (version 3): metadata in the order added,
// then tensor infos and data in the order added. Everything is validated
// when added, with the same limits the reader enforces, so a file the Writer
// produces always parses, unless it holds tensors of a known ggml type the
// engine does not support (the Writer accepts every known type, the reader
// only supported ones). Tensor offsets and padding are computed by the
// Writer; the alignment is general.alignment when set, else 32.
//
// The layout is llama.cpp's: header, metadata, tensor infos, zero padding
// to the alignment, then each tensor's data followed by zero padding to the
// alignment (the last one included). A file without tensors ends right
// after the metadata. Re-writing any of the shared reference models from
// their parsed contents reproduces them byte for byte.
type Writer struct {
	kvs         []KV
	kvIndex     map[string]int
	tensors     []tensorEntry
	tensorIndex map[string]int
	alignment   int
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer {
	return &Writer{kvIndex: map[string]int{}, tensorIndex: map[string]int{}, alignment: DefaultAlignment}
}

// Write writes a GGUF file with the given metadata and tensors.
func Write(out io.Writer, kvs []KV, tensors []TensorSpec) error {
	w := NewWriter()
	for _, kv := range kvs {
		if err := w.AddKV(kv); err != nil {
			return err
		}
	}
	for _, t := range tensors {
		if err := w.AddTensor(t); err != nil {
			return err
		}
	}
	_, err := w.WriteTo(out)
	return err
}

// AddKV appends a metadata entry with an explicit type. Value must hold the
// Go type that matches kv.Type (see KV); for TypeArray an Array whose Values
// match its element type. Adding a key twice is an error.
func (w *Writer) AddKV(kv KV) error {
	if _, dup := w.kvIndex[kv.Key]; dup {
		return fmt.Errorf("gguf: duplicate metadata key %q", kv.Key)
	}
	if err := w.checkKV(kv); err != nil {
		return err
	}
	w.kvIndex[kv.Key] = len(w.kvs)
	w.kvs = append(w.kvs, kv)
	return nil
}

// Set adds a metadata entry whose type follows from value's Go type (see
// NewKV), or replaces the value of an existing key in place.
func (w *Writer) Set(key string, value any) error {
	kv, err := NewKV(key, value)
	if err != nil {
		return err
	}
	i, ok := w.kvIndex[key]
	if !ok {
		return w.AddKV(kv)
	}
	if err := w.checkKV(kv); err != nil {
		return err
	}
	w.kvs[i] = kv
	return nil
}

func (w *Writer) checkKV(kv KV) error {
	if kv.Key == "" {
		return errors.New("gguf: empty metadata key")
	}
	if len(kv.Key) > MaxKeyLen {
		return fmt.Errorf("gguf: metadata key of %d bytes exceeds the limit of %d", len(kv.Key), MaxKeyLen)
	}
	if err := checkValue(kv.Type, kv.Value, 0); err != nil {
		return fmt.Errorf("gguf: metadata %q: %w", kv.Key, err)
	}
	if kv.Key == "general.alignment" {
		a, err := alignmentOf(kv)
		if err != nil {
			return fmt.Errorf("gguf: %w", err)
		}
		w.alignment = a
	}
	return nil
}

// AddTensor appends a tensor. Its name must be unique and at most 64
// bytes, it must have 1 to 4 dimensions, a known type, a row length that is
// a whole number of blocks, and exactly one data source (a Data slice of the
// exact size, a Reader or a WriteData callback).
func (w *Writer) AddTensor(t TensorSpec) error {
	size, _, err := tensorSize(t.Name, t.Dims, t.Type)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if _, dup := w.tensorIndex[t.Name]; dup {
		return fmt.Errorf("gguf: duplicate tensor name %q", t.Name)
	}
	sources := 0
	if t.Data != nil {
		sources++
		if int64(len(t.Data)) != size {
			return fmt.Errorf("gguf: tensor %q: %d data bytes, its type %s and dims %v need %d", t.Name, len(t.Data), t.Type, t.Dims, size)
		}
	}
	if t.Reader != nil {
		sources++
	}
	if t.WriteData != nil {
		sources++
	}
	if sources != 1 {
		return fmt.Errorf("gguf: tensor %q needs exactly one of Data, Reader and WriteData (has %d)", t.Name, sources)
	}
	t.Dims = append([]int64(nil), t.Dims...)
	w.tensorIndex[t.Name] = len(w.tensors)
	w.tensors = append(w.tensors, tensorEntry{spec: t, size: size})
	return nil
}

// Alignment returns the data alignment the file will use.
func (w *Writer) Alignment() int { return w.alignment }

// Size returns the number of bytes WriteTo will write.
func (w *Writer) Size() int64 {
	n := int64(len(w.header()))
	for _, t := range w.tensors {
		n += int64(alignUp(uint64(t.size), uint64(w.alignment)))
	}
	return n
}

// WriteTo writes the file to out, streaming tensor data from the sources.
// It returns the number of bytes written.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	cw := &countWriter{w: out}
	bw := bufio.NewWriterSize(cw, 1<<20)
	if _, err := bw.Write(w.header()); err != nil {
		return cw.n, fmt.Errorf("gguf: write header: %w", err)
	}
	zeros := make([]byte, w.alignment)
	for _, e := range w.tensors {
		t := &e.spec
		switch {
		case t.Data != nil:
			if _, err := bw.Write(t.Data); err != nil {
				return cw.n, fmt.Errorf("gguf: write tensor %q: %w", t.Name, err)
			}
		case t.Reader != nil:
			n, err := io.CopyN(bw, t.Reader, e.size)
			if err == io.EOF {
				return cw.n, fmt.Errorf("gguf: tensor %q: its reader ended after %d of %d bytes", t.Name, n, e.size)
			}
			if err != nil {
				return cw.n, fmt.Errorf("gguf: write tensor %q: %w", t.Name, err)
			}
		default:
			lw := &limitWriter{w: bw, left: e.size}
			if err := t.WriteData(lw); err != nil {
				if lw.over {
					return cw.n, fmt.Errorf("gguf: tensor %q: WriteData wrote more than the tensor's %d bytes", t.Name, e.size)
				}
				return cw.n, fmt.Errorf("gguf: write tensor %q: %w", t.Name, err)
			}
			if lw.left != 0 {
				return cw.n, fmt.Errorf("gguf: tensor %q: WriteData wrote %d of the tensor's %d bytes", t.Name, e.size-lw.left, e.size)
			}
		}
		pad := alignUp(uint64(e.size), uint64(w.alignment)) - uint64(e.size)
		if _, err := bw.Write(zeros[:pad]); err != nil {
			return cw.n, fmt.Errorf("gguf: write tensor %q: %w", t.Name, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("gguf: write: %w", err)
	}
	return cw.n, nil
}

// header encodes everything before the data section, padding included.
func (w *Writer) header() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, 4096)
	b = le.AppendUint32(b, Magic)
	b = le.AppendUint32(b, WriteVersion)
	b = le.AppendUint64(b, uint64(len(w.tensors)))
	b = le.AppendUint64(b, uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		b = appendString(b, kv.Key)
		b = le.AppendUint32(b, uint32(kv.Type))
		b = appendValue(b, kv.Type, kv.Value)
	}
	var off uint64
	for _, e := range w.tensors {
		b = appendString(b, e.spec.Name)
		b = le.AppendUint32(b, uint32(len(e.spec.Dims)))
		for _, d := range e.spec.Dims {
			b = le.AppendUint64(b, uint64(d))
		}
		b = le.AppendUint32(b, uint32(e.spec.Type))
		b = le.AppendUint64(b, off)
		off += alignUp(uint64(e.size), uint64(w.alignment))
	}
	// Like gguf-py (vocab-only files), a file without tensors has no data
	// section and so no padding.
	for len(w.tensors) > 0 && len(b)%w.alignment != 0 {
		b = append(b, 0)
	}
	return b
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

var errTooMuch = errors.New("more bytes than the tensor's size")

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		n, err := l.w.Write(p[:l.left])
		l.left -= int64(n)
		if err == nil {
			err = errTooMuch
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// NewKV makes a metadata entry, its type following from value's Go type:
// uint8, int8, uint16, int16, uint32, int32, float32, bool, string, uint64,
// int64, float64, an Array, or a slice of one of these scalar types or of
// Array (which becomes an array). Plain int is refused: say which width.
func NewKV(key string, value any) (KV, error) {
	switch v := value.(type) {
	case uint8:
		return KV{key, TypeUint8, v}, nil
	case int8:
		return KV{key, TypeInt8, v}, nil
	case uint16:
		return KV{key, TypeUint16, v}, nil
	case int16:
		return KV{key, TypeInt16, v}, nil
	case uint32:
		return KV{key, TypeUint32, v}, nil
	case int32:
		return KV{key, TypeInt32, v}, nil
	case float32:
		return KV{key, TypeFloat32, v}, nil
	case bool:
		return KV{key, TypeBool, v}, nil
	case string:
		return KV{key, TypeString, v}, nil
	case uint64:
		return KV{key, TypeUint64, v}, nil
	case int64:
		return KV{key, TypeInt64, v}, nil
	case float64:
		return KV{key, TypeFloat64, v}, nil
	case Array:
		return KV{key, TypeArray, v}, nil
	}
	a, err := NewArray(value)
	if err != nil {
		return KV{}, fmt.Errorf("gguf: metadata %q: %w", key, err)
	}
	return KV{key, TypeArray, a}, nil
}

// NewArray wraps a typed slice ([]uint8 … []float64, []bool, []string or
// []Array) as an Array of the matching element type.
func NewArray(values any) (Array, error) {
	var t ValueType
	switch values.(type) {
	case []uint8:
		t = TypeUint8
	case []int8:
		t = TypeInt8
	case []uint16:
		t = TypeUint16
	case []int16:
		t = TypeInt16
	case []uint32:
		t = TypeUint32
	case []int32:
		t = TypeInt32
	case []float32:
		t = TypeFloat32
	case []bool:
		t = TypeBool
	case []string:
		t = TypeString
	case []uint64:
		t = TypeUint64
	case []int64:
		t = TypeInt64
	case []float64:
		t = TypeFloat64
	case []Array:
		t = TypeArray
	default:
		return Array{}, fmt.Errorf("no GGUF type for Go type %T", values)
	}
	return Array{Type: t, Values: values}, nil
}

// checkValue verifies that v holds the Go type of t; depth is the array
// nesting of v's container.
func checkValue(t ValueType, v any, depth int) error {
	ok := false
	switch t {
	case TypeUint8:
		_, ok = v.(uint8)
	case TypeInt8:
		_, ok = v.(int8)
	case TypeUint16:
		_, ok = v.(uint16)
	case TypeInt16:
		_, ok = v.(int16)
	case TypeUint32:
		_, ok = v.(uint32)
	case TypeInt32:
		_, ok = v.(int32)
	case TypeFloat32:
		_, ok = v.(float32)
	case TypeBool:
		_, ok = v.(bool)
	case TypeUint64:
		_, ok = v.(uint64)
	case TypeInt64:
		_, ok = v.(int64)
	case TypeFloat64:
		_, ok = v.(float64)
	case TypeString:
		var s string
		if s, ok = v.(string); ok && len(s) > MaxStringLen {
			return fmt.Errorf("string of %d bytes exceeds the limit of %d", len(s), MaxStringLen)
		}
	case TypeArray:
		a, isArray := v.(Array)
		if !isArray {
			break
		}
		return checkArray(a, depth+1)
	default:
		return fmt.Errorf("unknown metadata value type %d", uint32(t))
	}
	if !ok {
		return fmt.Errorf("value of Go type %T does not match GGUF type %s", v, t)
	}
	return nil
}

func checkArray(a Array, depth int) error {
	if depth > MaxArrayDepth {
		return fmt.Errorf("arrays nested too deep: depth %d exceeds the limit of %d", depth, MaxArrayDepth)
	}
	if minEncodedSize(a.Type) == 0 {
		return fmt.Errorf("array of unknown metadata value type %d", uint32(a.Type))
	}
	if a.Values == nil {
		return nil // an empty array
	}
	na, err := NewArray(a.Values)
	if err != nil || na.Type != a.Type {
		return fmt.Errorf("array of %s holds Go type %T", a.Type, a.Values)
	}
	switch v := a.Values.(type) {
	case []string:
		for i, s := range v {
			if len(s) > MaxStringLen {
				return fmt.Errorf("array element %d: string of %d bytes exceeds the limit of %d", i, len(s), MaxStringLen)
			}
		}
	case []Array:
		for i, sub := range v {
			if err := checkArray(sub, depth+1); err != nil {
				return fmt.Errorf("array element %d: %w", i, err)
			}
		}
	}
	return nil
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue encodes a value already checked by checkValue.
func appendValue(b []byte, t ValueType, v any) []byte {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return append(b, v.(uint8))
	case TypeInt8:
		return append(b, uint8(v.(int8)))
	case TypeUint16:
		return le.AppendUint16(b, v.(uint16))
	case TypeInt16:
		return le.AppendUint16(b, uint16(v.(int16)))
	case TypeUint32:
		return le.AppendUint32(b, v.(uint32))
	case TypeInt32:
		return le.AppendUint32(b, uint32(v.(int32)))
	case TypeFloat32:
		return le.AppendUint32(b, math.Float32bits(v.(float32)))
	case TypeBool:
		if v.(bool) {
			return append(b, 1)
		}
		return append(b, 0)
	case TypeString:
		return appendString(b, v.(string))
	case TypeUint64:
		return le.AppendUint64(b, v.(uint64))
	case TypeInt64:
		return le.AppendUint64(b, uint64(v.(int64)))
	case TypeFloat64:
		return le.AppendUint64(b, math.Float64bits(v.(float64)))
	case TypeArray:
		return appendArray(b, v.(Array))
	}
	panic("gguf: appendValue of unchecked type " + t.String())
}

func appendArray(b []byte, a Array) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, uint32(a.Type))
	b = le.AppendUint64(b, uint64(a.Len()))
	switch v := a.Values.(type) {
	case []uint8:
		return append(b, v...)
	case []int8:
		for _, x := range v {
			b = append(b, uint8(x))
		}
	case []bool:
		for _, x := range v {
			if x {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	case []uint16:
		for _, x := range v {
			b = le.AppendUint16(b, x)
		}
	case []int16:
		for _, x := range v {
			b = le.AppendUint16(b, uint16(x))
		}
	case []uint32:
		for _, x := range v {
			b = le.AppendUint32(b, x)
		}
	case []int32:
		for _, x := range v {
			b = le.AppendUint32(b, uint32(x))
		}
	case []float32:
		for _, x := range v {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
	case []uint64:
		for _, x := range v {
			b = le.AppendUint64(b, x)
		}
	case []int64:
		for _, x := range v {
			b = le.AppendUint64(b, uint64(x))
		}
	case []float64:
		for _, x := range v {
			b = le.AppendUint64(b, math.Float64bits(x))
		}
	case []string:
		for _, s := range v {
			b = appendString(b, s)
		}
	case []Array:
		for _, sub := range v {
			b = appendArray(b, sub)
		}
	}
	return b
}
