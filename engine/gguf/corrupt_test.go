package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weos/llm-engine/kernels"
)

// wantFormatError checks that err is an *Error whose message names the
// problem (every substring of want) and carries a byte offset in [0, max].
func wantFormatError(t *testing.T, name string, err error, max int, want ...string) *Error {
	t.Helper()
	if err == nil {
		t.Errorf("%s: parsed without error, want %q", name, want)
		return nil
	}
	var fe *Error
	if !errors.As(err, &fe) {
		t.Errorf("%s: error %v (%T) is not a *gguf.Error", name, err, err)
		return nil
	}
	msg := err.Error()
	t.Logf("%s: %s", name, msg)
	for _, w := range append(want, "offset") {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: error %q does not contain %q", name, msg, w)
		}
	}
	if fe.Offset < 0 || fe.Offset > int64(max) {
		t.Errorf("%s: error offset %d outside the file (%d bytes)", name, fe.Offset, max)
	}
	return fe
}

// TestTruncatedStories cuts a real model at offsets inside every region of
// the file: each cut must fail with an error naming what was cut.
func TestTruncatedStories(t *testing.T) {
	path := filepath.Join(sharedDir(t), "models", "stories260K.gguf")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) int {
		i := bytes.Index(data, []byte(s))
		if i < 0 {
			t.Fatalf("%q not found in %s", s, path)
		}
		return i
	}
	tokens := at("tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4 + 12 // first string element
	scores := at("tokenizer.ggml.scores") + len("tokenizer.ggml.scores") + 4 + 12 // first float
	name := at("general.name") + len("general.name") + 4                          // the value's length field
	firstInfo := at("token_embd.weight") - 8
	qInfo := at("blk.0.attn_q.weight") + len("blk.0.attn_q.weight")
	for _, c := range []struct {
		what string
		cut  int
		want []string
	}{
		{"inside the magic", 3, []string{"too short"}},
		{"inside the header counts", 20, []string{"too short"}},
		{"right after the header", 24, []string{"metadata count 19 cannot fit", "truncated"}},
		{"inside the token strings", tokens + 4500, []string{`metadata "tokenizer.ggml.tokens": array element`, "truncated"}},
		{"inside the score array", scores + 100, []string{`metadata "tokenizer.ggml.scores"`, "array count 512 of float32", "truncated"}},
		{"inside a key", at("general.architecture") + 5, []string{"metadata entry", "key length 20 runs past the end"}},
		{"inside a string value", name + 10, []string{`metadata "general.name"`, "string length 5 runs past the end"}},
		{"inside a value type", name - 2, []string{`metadata "general.name"`, "truncated: value type"}},
		{"inside the first tensor name", firstInfo + 12, []string{"tensor info 0", "tensor name length 17 runs past the end"}},
		{"inside a dimension", qInfo + 4 + 3, []string{`tensor "blk.0.attn_q.weight"`, "truncated: dimension"}},
		{"inside a tensor type", qInfo + 4 + 16 + 1, []string{`tensor "blk.0.attn_q.weight"`, "truncated: tensor type"}},
		{"inside the first tensor's data", int(f.DataOffset) + 1000, []string{`tensor "token_embd.weight"`, "runs past the end of the file"}},
		{"one byte short", len(data) - 1, []string{`tensor "blk.4.ffn_norm.weight"`, "runs past the end of the file"}},
	} {
		cut := data[:c.cut]
		_, err := Parse(cut)
		wantFormatError(t, c.what, err, len(cut), c.want...)
	}
}

// smallModel writes a valid file with one F32 tensor [8] and returns it.
func smallModel(t *testing.T) []byte {
	var buf bytes.Buffer
	err := Write(&buf, []KV{{"general.architecture", TypeString, "llama"}},
		[]TensorSpec{{Name: "w", Dims: []int64{8}, Type: kernels.F32, Data: make([]byte, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCorruptFiles(t *testing.T) {
	f32 := uint32(kernels.F32)
	data := func(n int) []byte { return make([]byte, n) }
	// withData pads a header to 32 bytes and appends the data section.
	withData := func(header []byte, n int) []byte { return append(padTo(header, 32), data(n)...) }
	nested := func(depth int) []byte {
		var b []byte
		for range depth - 1 {
			b = append(b, rawArrayHeader(TypeArray, 1)...)
		}
		return append(b, rawArrayHeader(TypeUint8, 0)...)
	}
	good := smallModel(t)
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
	patch := func(off int, b []byte) []byte {
		c := bytes.Clone(good)
		copy(c[off:], b)
		return c
	}

	cases := []struct {
		name   string
		file   []byte
		offset int64 // -1: do not check
		want   []string
	}{
		{"wrong magic", patch(0, []byte("GGML")), 0, []string{"bad magic", "not a GGUF file"}},
		{"short wrong magic", []byte("PK\x03\x04zip"), 0, []string{"bad magic"}},
		{"version 1", patch(4, u32le(1)), 4, []string{"unsupported GGUF version 1"}},
		{"version 4", patch(4, u32le(4)), 4, []string{"unsupported GGUF version 4"}},
		{"big-endian", patch(4, []byte{0, 0, 0, 3}), 4, []string{"big-endian"}},
		{"huge tensor count", patch(8, u64le(1<<60)), 8, []string{"tensor count", "cannot fit"}},
		{"huge metadata count", patch(16, u64le(1<<60)), 16, []string{"metadata count", "cannot fit"}},

		{"huge string length", rawFile(3, 0, 1, rawKV("k", TypeString, u64le(1<<40))), 24 + 8 + 1 + 4,
			[]string{`metadata "k"`, "string length 1099511627776 exceeds the limit"}},
		{"string past the end", rawFile(3, 0, 1, rawKV("k", TypeString, append(u64le(100), "abc"...))), 37,
			[]string{"string length 100 runs past the end"}},
		{"huge key length", rawFile(3, 0, 1, u64le(1<<20), []byte("k"), data(16)), 24, []string{"metadata key length 1048576 exceeds the limit"}},
		{"empty key", rawFile(3, 0, 1, rawKV("", TypeUint8, []byte{1})), 24, []string{"empty key"}},
		{"duplicate key", rawFile(3, 0, 2, rawKV("k", TypeUint8, []byte{1}), rawKV("k", TypeUint8, []byte{2})), 38, []string{`duplicate metadata key "k"`}},
		{"huge array count", rawFile(3, 0, 1, rawKV("a", TypeArray, append(rawArrayHeader(TypeUint32, 1<<62), data(64)...))), 41,
			[]string{`metadata "a"`, "array count 4611686018427387904 of uint32 elements cannot fit"}},
		{"huge string array", rawFile(3, 0, 1, rawKV("a", TypeArray, append(rawArrayHeader(TypeString, 1<<40), data(64)...))), 41,
			[]string{"array count 1099511627776 of string elements cannot fit"}},
		{"nested arrays too deep", rawFile(3, 0, 1, rawKV("n", TypeArray, nested(MaxArrayDepth+1))), -1,
			[]string{`metadata "n"`, "arrays nested too deep: depth 9 exceeds the limit of 8"}},
		{"bool value", rawFile(3, 0, 1, rawKV("b", TypeBool, []byte{2})), 37, []string{`metadata "b"`, "bool value 2 is neither 0 nor 1"}},
		{"bool array value", rawFile(3, 0, 1, rawKV("b", TypeArray, append(rawArrayHeader(TypeBool, 3), 0, 1, 7))), 51,
			[]string{"array element 2: bool value 7"}},
		{"unknown value type", rawFile(3, 0, 1, rawKV("u", TypeValueForTest(13), []byte{0})), 33, []string{`metadata "u"`, "unknown metadata value type 13"}},
		{"unknown array element type", rawFile(3, 0, 1, rawKV("u", TypeArray, rawArrayHeader(TypeValueForTest(99), 0))), 37,
			[]string{"array of unknown metadata value type 99"}},
		{"alignment not a power of two", rawFile(3, 0, 1, rawKV("general.alignment", TypeUint32, u32le(48))), -1,
			[]string{"general.alignment must be a power of two", "48"}},
		{"alignment of the wrong type", rawFile(3, 0, 1, rawKV("general.alignment", TypeString, append(u64le(2), "32"...))), -1,
			[]string{"general.alignment must be a power of two"}},

		{"tensor offset past the end", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{8}, f32, 64)), 32), 24 + 8 + 1 + 4 + 8 + 4,
			[]string{`tensor "w"`, "data offset 64 points past the end of the file"}},
		{"tensor runs past the end", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{8}, f32, 0)), 16), -1,
			[]string{`tensor "w"`, "(32 bytes at data offset 0) runs past the end"}},
		{"data section past the end", rawFile(3, 1, 0, rawTensor("w", []uint64{8}, f32, 0)), -1,
			[]string{"data section would start at byte 64, past the end"}},
		{"huge tensor offset", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{8}, f32, 1<<63)), 32), -1,
			[]string{"data offset 9223372036854775808 points past the end"}},
		{"overlapping tensors", withData(rawFile(3, 2, 0, rawTensor("a", []uint64{16}, f32, 0), rawTensor("b", []uint64{16}, f32, 32)), 128), 24 + 2*33 - 8,
			[]string{`tensor "b" (data offset 32) overlaps tensor "a" (data offset 0, 64 bytes)`}},
		{"identical offsets", withData(rawFile(3, 2, 0, rawTensor("a", []uint64{8}, f32, 0), rawTensor("b", []uint64{8}, f32, 0)), 64), -1,
			[]string{`tensor "b" (data offset 0) overlaps tensor "a"`}},
		{"misaligned offset", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{8}, f32, 4)), 64), 24 + 8 + 1 + 4 + 8 + 4,
			[]string{`tensor "w" data offset 4 is not a multiple of the alignment 32`}},
		{"unknown tensor type", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{8}, 99, 0)), 64), 24 + 8 + 1 + 4 + 8,
			[]string{`tensor "w" has unknown tensor type id 99`}},
		{"no dimensions", withData(rawFile(3, 1, 0, rawTensor("w", nil, f32, 0)), 64), 24 + 9,
			[]string{`tensor "w" has 0 dimensions`}},
		{"five dimensions", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{1, 1, 1, 1, 1}, f32, 0)), 64), 24 + 9,
			[]string{`tensor "w" has 5 dimensions (1 to 4 allowed)`}},
		{"zero dimension", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{8, 0}, f32, 0)), 64), 24 + 9 + 4 + 8,
			[]string{`tensor "w" dimension 1 is 0`}},
		{"huge dimension", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{1 << 63}, f32, 0)), 64), 24 + 9 + 4,
			[]string{`tensor "w" dimension 0 is 9223372036854775808`}},
		{"dimension product overflow", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{1 << 40, 1 << 40}, f32, 0)), 64), 24 + 9 + 4 + 8,
			[]string{`tensor "w" dimensions [1099511627776 1099511627776]: element count overflows`}},
		{"wrapping dimension product", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{1 << 32, 1 << 32, 1 << 32, 1 << 32}, f32, 0)), 64), -1,
			[]string{"element count overflows"}},
		{"row not a whole number of blocks", withData(rawFile(3, 1, 0, rawTensor("w", []uint64{16, 2}, uint32(kernels.Q8_0), 0)), 64), 24 + 9,
			[]string{`tensor "w" of type Q8_0: row length 16 is not a multiple of the block size 32`}},
		{"empty tensor name", withData(rawFile(3, 1, 0, rawTensor("", []uint64{8}, f32, 0)), 64), 24, []string{"tensor has an empty name"}},
		{"long tensor name", withData(rawFile(3, 1, 0, rawTensor(strings.Repeat("x", 65), []uint64{8}, f32, 0)), 64), 24,
			[]string{"tensor name length 65 exceeds the limit of 64"}},
		{"duplicate tensor name", withData(rawFile(3, 2, 0, rawTensor("w", []uint64{8}, f32, 0), rawTensor("w", []uint64{8}, f32, 32)), 64), 24 + 33,
			[]string{`duplicate tensor name "w"`}},
	}
	for _, c := range cases {
		_, err := Parse(c.file)
		fe := wantFormatError(t, c.name, err, len(c.file), c.want...)
		if fe != nil && c.offset >= 0 && fe.Offset != c.offset {
			t.Errorf("%s: error at offset %d, want %d (%v)", c.name, fe.Offset, c.offset, err)
		}
	}
}

// TypeValueForTest makes an arbitrary (possibly invalid) value type.
func TypeValueForTest(n uint32) ValueType { return ValueType(n) }

// TestUnsupportedType checks that a known but unsupported tensor type is
// refused with an error naming the type and the tensor.
func TestUnsupportedType(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, nil, []TensorSpec{
		{Name: "ok", Dims: []int64{32}, Type: kernels.Q8_0, Data: make([]byte, 34)},
		{Name: "blk.0.attn_q.weight", Dims: []int64{32, 2}, Type: kernels.Q4_0, Data: make([]byte, 36)},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(buf.Bytes())
	fe := wantFormatError(t, "Q4_0", err, buf.Len(), "Q4_0", `"blk.0.attn_q.weight"`, "unsupported tensor type", "Q8_0")
	if !errors.Is(err, ErrUnsupportedType) {
		t.Errorf("%v does not wrap ErrUnsupportedType", err)
	}
	// The offset is that of the type field: right before the 8-byte offset
	// of the last tensor info.
	if fe != nil && int(fe.Offset) != bytes.Index(buf.Bytes(), []byte("blk.0.attn_q.weight"))+19+4+16 {
		t.Errorf("offset %d", fe.Offset)
	}
}

// TestNestedArraysAtTheLimit parses arrays nested exactly MaxArrayDepth deep.
func TestNestedArraysAtTheLimit(t *testing.T) {
	var b []byte
	for range MaxArrayDepth - 1 {
		b = append(b, rawArrayHeader(TypeArray, 1)...)
	}
	b = append(b, rawArrayHeader(TypeUint8, 2)...)
	b = append(b, 7, 9)
	f, err := Parse(rawFile(3, 0, 1, rawKV("n", TypeArray, b)))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.ArrayValue("n")
	for range MaxArrayDepth - 1 {
		a = a.Values.([]Array)[0]
	}
	if v := a.Values.([]uint8); len(v) != 2 || v[0] != 7 || v[1] != 9 {
		t.Fatalf("innermost array %v", a)
	}
}
