package gguf

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/weos/llm-engine/kernels"
)

// allTypesKVs holds one entry of every value type, arrays of every element
// type, an empty array and nested arrays.
func allTypesKVs() []KV {
	return []KV{
		{"general.architecture", TypeString, "llama"},
		{"general.alignment", TypeUint32, uint32(64)},
		{"t.u8", TypeUint8, uint8(200)},
		{"t.i8", TypeInt8, int8(-100)},
		{"t.u16", TypeUint16, uint16(60000)},
		{"t.i16", TypeInt16, int16(-30000)},
		{"t.u32", TypeUint32, uint32(4000000000)},
		{"t.i32", TypeInt32, int32(-2000000000)},
		{"t.f32", TypeFloat32, float32(1e-5)},
		{"t.bool", TypeBool, true},
		{"t.bool0", TypeBool, false},
		{"t.str", TypeString, "héllo ▁wörld"},
		{"t.empty", TypeString, ""},
		{"t.u64", TypeUint64, uint64(1) << 63},
		{"t.i64", TypeInt64, int64(-1) << 62},
		{"t.f64", TypeFloat64, math.Pi},
		{"a.u8", TypeArray, Array{TypeUint8, []uint8{1, 2, 255}}},
		{"a.i8", TypeArray, Array{TypeInt8, []int8{-1, 0, 1}}},
		{"a.u16", TypeArray, Array{TypeUint16, []uint16{1, 65535}}},
		{"a.i16", TypeArray, Array{TypeInt16, []int16{-2, 2}}},
		{"a.u32", TypeArray, Array{TypeUint32, []uint32{7}}},
		{"a.i32", TypeArray, Array{TypeInt32, []int32{-7, 1, 2, 3}}},
		{"a.f32", TypeArray, Array{TypeFloat32, []float32{0.5, -1e30, float32(math.Inf(1))}}},
		{"a.bool", TypeArray, Array{TypeBool, []bool{true, false, true}}},
		{"a.str", TypeArray, Array{TypeString, []string{"<unk>", "", "▁the"}}},
		{"a.u64", TypeArray, Array{TypeUint64, []uint64{math.MaxUint64}}},
		{"a.i64", TypeArray, Array{TypeInt64, []int64{math.MinInt64}}},
		{"a.f64", TypeArray, Array{TypeFloat64, []float64{1.5, -0.25}}},
		{"a.empty", TypeArray, Array{TypeFloat32, []float32{}}},
		{"a.nested", TypeArray, Array{TypeArray, []Array{
			{TypeString, []string{"a b", "c"}},
			{TypeArray, []Array{{TypeInt32, []int32{1, 2}}, {TypeUint8, []uint8{}}}},
			{TypeBool, []bool{}},
		}}},
	}
}

func f32bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, u32le(math.Float32bits(x))...)
	}
	return b
}

func TestWriterRoundTrip(t *testing.T) {
	kvs := allTypesKVs()
	q8 := make([]byte, 34*2)
	for i := range q8 {
		q8[i] = byte(i * 7)
	}
	streamed := bytes.Repeat([]byte{0xAB, 0xCD}, 48) // F16 [16, 3]
	specs := []TensorSpec{
		{Name: "a", Dims: []int64{3}, Type: kernels.F32, Data: f32bytes(1, 2, 3)},
		{Name: "b.q8", Dims: []int64{32, 2}, Type: kernels.Q8_0, Reader: bytes.NewReader(q8)},
		{Name: "c.f16", Dims: []int64{16, 3}, Type: kernels.F16, WriteData: func(w io.Writer) error {
			// In small pieces, as a generator would.
			for i := 0; i < len(streamed); i += 5 {
				if _, err := w.Write(streamed[i:min(i+5, len(streamed))]); err != nil {
					return err
				}
			}
			return nil
		}},
		{Name: "d.4d", Dims: []int64{2, 1, 2, 2}, Type: kernels.F32, Data: f32bytes(1, 2, 3, 4, 5, 6, 7, 8)},
	}
	var buf bytes.Buffer
	w := NewWriter()
	for _, kv := range kvs {
		if err := w.AddKV(kv); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range specs {
		if err := w.AddTensor(s); err != nil {
			t.Fatal(err)
		}
	}
	if w.Alignment() != 64 {
		t.Fatalf("alignment %d", w.Alignment())
	}
	size := w.Size()
	n, err := w.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n != size || n%64 != 0 {
		t.Fatalf("WriteTo returned %d, wrote %d, Size said %d", n, buf.Len(), size)
	}
	f, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.KV, kvs) {
		for i := range kvs {
			if i < len(f.KV) && !reflect.DeepEqual(f.KV[i], kvs[i]) {
				t.Errorf("kv %d: got %#v, want %#v", i, f.KV[i], kvs[i])
			}
		}
		t.Fatalf("metadata differs")
	}
	if f.Alignment != 64 || f.DataOffset%64 != 0 {
		t.Errorf("alignment %d, data offset %d", f.Alignment, f.DataOffset)
	}
	wantData := [][]byte{specs[0].Data, q8, streamed, specs[3].Data}
	for i, s := range specs {
		ti, ok := f.Tensor(s.Name)
		if !ok {
			t.Fatalf("tensor %s missing", s.Name)
		}
		if ti.Type != s.Type || !equalDims(ti.Dims, s.Dims) || ti.Offset%64 != 0 {
			t.Errorf("tensor %s: %s %v at %d", s.Name, ti.Type, ti.Dims, ti.Offset)
		}
		if !bytes.Equal(f.TensorData(ti), wantData[i]) {
			t.Errorf("tensor %s: data differs", s.Name)
		}
	}
	// Re-writing the parsed file reproduces it exactly.
	if again := rewrite(t, f); !bytes.Equal(again, buf.Bytes()) {
		t.Errorf("re-written file differs")
	}
}

func TestSetInfersTypes(t *testing.T) {
	w := NewWriter()
	for _, c := range []struct {
		key  string
		v    any
		want ValueType
	}{
		{"u8", uint8(1), TypeUint8}, {"i8", int8(1), TypeInt8}, {"u16", uint16(1), TypeUint16},
		{"i16", int16(1), TypeInt16}, {"u32", uint32(1), TypeUint32}, {"i32", int32(1), TypeInt32},
		{"f32", float32(1), TypeFloat32}, {"b", true, TypeBool}, {"s", "x", TypeString},
		{"u64", uint64(1), TypeUint64}, {"i64", int64(1), TypeInt64}, {"f64", 1.0, TypeFloat64},
		{"as", []string{"a"}, TypeArray}, {"af", []float32{1}, TypeArray},
		{"aa", []Array{{TypeInt32, []int32{1}}}, TypeArray},
	} {
		if err := w.Set(c.key, c.v); err != nil {
			t.Fatalf("Set(%s): %v", c.key, err)
		}
		if kv := w.kvs[w.kvIndex[c.key]]; kv.Type != c.want {
			t.Errorf("Set(%s, %T) made a %s", c.key, c.v, kv.Type)
		}
	}
	// Set replaces in place.
	if err := w.Set("u8", uint8(9)); err != nil || w.kvs[0].Value != uint8(9) || len(w.kvs) != 15 {
		t.Errorf("replace: %v %v", err, w.kvs[0])
	}
	if err := w.Set("int", 3); err == nil || !strings.Contains(err.Error(), "no GGUF type for Go type int") {
		t.Errorf("Set of an int: %v", err)
	}
}

func TestWriterRefuses(t *testing.T) {
	deep := Array{TypeUint8, []uint8{}}
	for range MaxArrayDepth {
		deep = Array{TypeArray, []Array{deep}}
	}
	for _, c := range []struct {
		kv   KV
		want string
	}{
		{KV{"", TypeUint8, uint8(1)}, "empty metadata key"},
		{KV{strings.Repeat("k", MaxKeyLen+1), TypeUint8, uint8(1)}, "exceeds the limit"},
		{KV{"k", TypeUint32, int32(1)}, "Go type int32 does not match GGUF type uint32"},
		{KV{"k", TypeArray, []string{"a"}}, "does not match GGUF type array"},
		{KV{"k", TypeArray, Array{TypeString, []int32{1}}}, "array of string holds Go type []int32"},
		{KV{"k", TypeArray, Array{ValueType(42), nil}}, "unknown metadata value type 42"},
		{KV{"k", ValueType(13), uint8(1)}, "unknown metadata value type 13"},
		{KV{"k", TypeArray, deep}, "nested too deep"},
		{KV{"general.alignment", TypeUint32, uint32(3)}, "power of two"},
	} {
		err := NewWriter().AddKV(c.kv)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AddKV(%.40v) = %v, want %q", c.kv, err, c.want)
		}
	}
	w := NewWriter()
	w.Set("k", uint8(1))
	if err := w.AddKV(KV{"k", TypeUint8, uint8(2)}); err == nil || !strings.Contains(err.Error(), "duplicate metadata key") {
		t.Errorf("duplicate key: %v", err)
	}

	data := make([]byte, 32)
	for _, c := range []struct {
		spec TensorSpec
		want string
	}{
		{TensorSpec{Name: "", Dims: []int64{8}, Type: kernels.F32, Data: data}, "empty name"},
		{TensorSpec{Name: strings.Repeat("n", 65), Dims: []int64{8}, Type: kernels.F32, Data: data}, "at most 64"},
		{TensorSpec{Name: "t", Dims: nil, Type: kernels.F32, Data: data}, "0 dimensions"},
		{TensorSpec{Name: "t", Dims: []int64{8, -1}, Type: kernels.F32, Data: data}, "dimension 1 is -1"},
		{TensorSpec{Name: "t", Dims: []int64{8}, Type: kernels.Type(77), Data: data}, "unknown tensor type id 77"},
		{TensorSpec{Name: "t", Dims: []int64{8}, Type: kernels.Q8_0, Data: data}, "not a multiple of the block size 32"},
		{TensorSpec{Name: "t", Dims: []int64{4}, Type: kernels.F32, Data: data}, "32 data bytes, its type F32 and dims [4] need 16"},
		{TensorSpec{Name: "t", Dims: []int64{8}, Type: kernels.F32}, "exactly one of Data, Reader and WriteData (has 0)"},
		{TensorSpec{Name: "t", Dims: []int64{8}, Type: kernels.F32, Data: data, Reader: bytes.NewReader(data)}, "(has 2)"},
	} {
		err := NewWriter().AddTensor(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AddTensor(%s %v %s) = %v, want %q", c.spec.Name, c.spec.Dims, c.spec.Type, err, c.want)
		}
	}
	w = NewWriter()
	w.AddTensor(TensorSpec{Name: "t", Dims: []int64{8}, Type: kernels.F32, Data: data})
	if err := w.AddTensor(TensorSpec{Name: "t", Dims: []int64{8}, Type: kernels.F32, Data: data}); err == nil || !strings.Contains(err.Error(), `duplicate tensor name "t"`) {
		t.Errorf("duplicate tensor: %v", err)
	}
}

func TestWriterSourceErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		spec TensorSpec
		want string
	}{
		{TensorSpec{Reader: bytes.NewReader(make([]byte, 10))}, `tensor "t": its reader ended after 10 of 32 bytes`},
		{TensorSpec{Reader: io.MultiReader(bytes.NewReader(make([]byte, 4)), iotestErrReader{boom})}, "boom"},
		{TensorSpec{WriteData: func(w io.Writer) error { _, err := w.Write(make([]byte, 31)); return err }}, "WriteData wrote 31 of the tensor's 32 bytes"},
		{TensorSpec{WriteData: func(w io.Writer) error { _, err := w.Write(make([]byte, 33)); return err }}, "WriteData wrote more than the tensor's 32 bytes"},
		{TensorSpec{WriteData: func(w io.Writer) error { return boom }}, `write tensor "t": boom`},
	} {
		s := c.spec
		s.Name, s.Dims, s.Type = "t", []int64{8}, kernels.F32
		err := Write(io.Discard, nil, []TensorSpec{s})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
	// A failing destination is reported.
	err := Write(failWriter{}, []KV{{"k", TypeString, "v"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("failing writer: %v", err)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestWriterStreams writes a 64 MiB tensor from a Reader and checks that
// the Writer did not buffer it: the heap grows by a small constant only.
func TestWriterStreams(t *testing.T) {
	const size = 64 << 20
	spec := TensorSpec{Name: "big", Dims: []int64{size / 4}, Type: kernels.F32, Reader: io.LimitReader(zeroReader{}, size)}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cw := &countWriter{w: io.Discard}
	if err := Write(cw, nil, []TensorSpec{spec}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if cw.n < size {
		t.Fatalf("wrote %d bytes", cw.n)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("writing a %d-byte tensor allocated %d bytes", size, alloc)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
