package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// sharedDir locates the shared reference data: $LLM_ENGINE_SHARED, else a
// "shared" folder next to the repository (../shared from the repo root).
// Tests that need it skip loudly when it is missing.
func sharedDir(t testing.TB) string {
	t.Helper()
	if d := findShared(); d != "" {
		return d
	}
	msg := fmt.Sprintf("SKIPPING %s: shared reference data not found (set LLM_ENGINE_SHARED, or put it at ../shared from the repository root)", t.Name())
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

// sharedModels lists every GGUF file of the shared data: models/,
// models/arch/ and the vocab-only files of vocab/.
func sharedModels(t testing.TB) []string {
	t.Helper()
	dir := sharedDir(t)
	var files []string
	for _, pat := range []string{"models/*.gguf", "models/arch/*.gguf", "vocab/*.gguf"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatalf("no GGUF files under %s", dir)
	}
	return files
}

// Raw encoders, for files the Writer refuses to produce.

func rawFile(version uint32, nTensors, nKV uint64, parts ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, Magic)
	b = binary.LittleEndian.AppendUint32(b, version)
	b = binary.LittleEndian.AppendUint64(b, nTensors)
	b = binary.LittleEndian.AppendUint64(b, nKV)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func rawKV(key string, t ValueType, payload []byte) []byte {
	b := appendString(nil, key)
	b = binary.LittleEndian.AppendUint32(b, uint32(t))
	return append(b, payload...)
}

func rawArrayHeader(elem ValueType, n uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(elem))
	return binary.LittleEndian.AppendUint64(b, n)
}

func rawTensor(name string, dims []uint64, typ uint32, off uint64) []byte {
	b := appendString(nil, name)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(dims)))
	for _, d := range dims {
		b = binary.LittleEndian.AppendUint64(b, d)
	}
	b = binary.LittleEndian.AppendUint32(b, typ)
	return binary.LittleEndian.AppendUint64(b, off)
}

func u32le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64le(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// padTo pads b with zeros to a multiple of a.
func padTo(b []byte, a int) []byte {
	for len(b)%a != 0 {
		b = append(b, 0)
	}
	return b
}

// specsOf returns tensor specs that copy f's tensors.
func specsOf(f *File) []TensorSpec {
	specs := make([]TensorSpec, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		specs[i] = TensorSpec{Name: t.Name, Dims: t.Dims, Type: t.Type, Data: f.TensorData(t)}
	}
	return specs
}

// rewrite writes f's metadata and tensors with the Writer.
func rewrite(t testing.TB, f *File) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, f.KV, specsOf(f)); err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	return buf.Bytes()
}
