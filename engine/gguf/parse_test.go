package gguf

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weos/llm-engine/kernels"
)

type indexEntry struct {
	File     string         `json:"file"`
	Size     int64          `json:"size"`
	SHA256   string         `json:"sha256"`
	Metadata map[string]any `json:"metadata"`
	Tensors  []struct {
		Name       string  `json:"name"`
		Type       string  `json:"type"`
		NE         []int64 `json:"ne"`
		NBytes     int64   `json:"n_bytes"`
		DataOffset int64   `json:"data_offset"`
	} `json:"tensors"`
}

// loadIndex reads the models-index.json files of the shared data, keyed by
// the GGUF file's path.
func loadIndex(t *testing.T, dir string) map[string]indexEntry {
	idx := map[string]indexEntry{}
	for _, p := range []string{"models/models-index.json", "models/arch/models-index.json", "vocab/vocab-index.json"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Logf("no index %s: %v", p, err)
			continue
		}
		var entries []indexEntry
		if err := json.Unmarshal(b, &entries); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, e := range entries {
			idx[filepath.Join(dir, filepath.Dir(p), e.File)] = e
		}
	}
	return idx
}

// TestSharedModels opens every shared GGUF file and checks it against the
// index llama.cpp's tools produced: tensor names, types, shapes, sizes and
// absolute offsets, and the scalar metadata.
func TestSharedModels(t *testing.T) {
	dir := sharedDir(t)
	idx := loadIndex(t, dir)
	for _, path := range sharedModels(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Version != 3 || f.Alignment != 32 || f.DataOffset%int64(f.Alignment) != 0 {
				t.Errorf("version %d alignment %d data offset %d", f.Version, f.Alignment, f.DataOffset)
			}
			for i := range f.Tensors {
				ti := &f.Tensors[i]
				if got := int64(len(f.TensorData(ti))); got != ti.Size {
					t.Errorf("%s: %d data bytes, size %d", ti.Name, got, ti.Size)
				}
				if p, ok := f.Tensor(ti.Name); !ok || p != ti {
					t.Errorf("Tensor(%q) lookup failed", ti.Name)
				}
			}
			e, ok := idx[path]
			if !ok {
				t.Logf("%s not in an index: only parsed", path)
				return
			}
			if len(e.Tensors) != len(f.Tensors) {
				t.Fatalf("%d tensors, index says %d", len(f.Tensors), len(e.Tensors))
			}
			for _, want := range e.Tensors {
				ti, ok := f.Tensor(want.Name)
				if !ok {
					t.Errorf("tensor %s missing", want.Name)
					continue
				}
				if ti.Type.String() != want.Type || !equalDims(ti.Dims, want.NE) || ti.Size != want.NBytes || f.DataOffset+int64(ti.Offset) != want.DataOffset {
					t.Errorf("tensor %s: got %s %v %d bytes at %d, index says %s %v %d bytes at %d", want.Name,
						ti.Type, ti.Dims, ti.Size, f.DataOffset+int64(ti.Offset), want.Type, want.NE, want.NBytes, want.DataOffset)
				}
			}
			for key, want := range e.Metadata {
				checkIndexedKV(t, f, key, want)
			}
		})
	}
}

func equalDims(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func checkIndexedKV(t *testing.T, f *File, key string, want any) {
	t.Helper()
	if base, ok := strings.CutSuffix(key, ".length"); ok {
		if a, ok := f.ArrayValue(base); ok {
			if float64(a.Len()) != want.(float64) {
				t.Errorf("%s: %d elements, index says %v", base, a.Len(), want)
			}
			return
		}
		if _, ok := f.String(base); ok {
			return // the index summarises some long strings (chat templates) this way; nothing to compare
		}
	}
	kv, ok := f.Lookup(key)
	if !ok {
		t.Errorf("metadata %s missing", key)
		return
	}
	switch w := want.(type) {
	case string:
		if s, _ := f.String(key); s != w {
			t.Errorf("%s = %q, index says %q", key, s, w)
		}
	case bool:
		if b, _ := f.Bool(key); b != w {
			t.Errorf("%s = %v, index says %v", key, b, w)
		}
	case float64:
		got, ok := f.Float(key)
		if v, isInt := kv.Value.(int32); isInt {
			got, ok = float64(v), true
		}
		if !ok || got != w {
			t.Errorf("%s = %v (%s), index says %v", key, kv.Value, kv.Type, w)
		}
	}
}

// TestRewriteSharedModelsIdentical re-writes every shared model with the
// Writer, from the parsed metadata and the mapped tensor data, and checks
// the result is byte-for-byte the file llama.cpp wrote.
func TestRewriteSharedModelsIdentical(t *testing.T) {
	for _, path := range sharedModels(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			w := NewWriter()
			for _, kv := range f.KV {
				if err := w.AddKV(kv); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range specsOf(f) {
				if err := w.AddTensor(s); err != nil {
					t.Fatal(err)
				}
			}
			h := sha256.New()
			n, err := w.WriteTo(h)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(f.data)) || n != w.Size() {
				t.Errorf("wrote %d bytes, Size() %d, file has %d", n, w.Size(), len(f.data))
			}
			want := sha256.Sum256(f.data)
			if got := h.Sum(nil); hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
				t.Errorf("rewrite differs from the original file")
			}
		})
	}
}

// TestOpenNonRegular checks that paths that are not regular files fail
// fast with a clear error, and that a FIFO does not block Open.
func TestOpenNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	short := filepath.Join(dir, "short")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(short, []byte("GGUF\x03\x00\x00\x00"), 0o600)
	for _, c := range []struct{ path, want string }{
		{dir, "is a directory"},
		{fifo, "is a FIFO"},
		{"/dev/zero", "is a character device"},
		{loop, "too many levels of symbolic links"},
		{filepath.Join(dir, "missing"), "no such file"},
		{empty, "too short"},
		{short, "too short"},
	} {
		done := make(chan error, 1)
		go func() {
			f, err := Open(c.path)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open(%s) = %v, want an error containing %q", c.path, err, c.want)
			}
			if strings.Contains(c.want, " is a ") && !errors.Is(err, ErrNotRegular) {
				t.Errorf("Open(%s): %v does not wrap ErrNotRegular", c.path, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%s) blocked", c.path)
		}
	}
}

func TestOpenErrorIsFormatError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.gguf")
	b := rawFile(4, 0, 0)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	var fe *Error
	if !errors.As(err, &fe) || fe.Offset != 4 || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open: %v, want a *Error at offset 4 naming the path", err)
	}
}

func TestTensorSize(t *testing.T) {
	for _, c := range []struct {
		typ  kernels.Type
		dims []int64
		want int64
	}{
		{kernels.F32, []int64{64, 3}, 768},
		{kernels.F16, []int64{8, 32000}, 512000},
		{kernels.Q8_0, []int64{64, 512}, 34816},
		{kernels.Q4_K, []int64{256, 2, 2}, 576},
	} {
		got, err := TensorSize(c.typ, c.dims)
		if err != nil || got != c.want {
			t.Errorf("TensorSize(%s, %v) = %d, %v; want %d", c.typ, c.dims, got, err, c.want)
		}
	}
	for _, c := range []struct {
		typ  kernels.Type
		dims []int64
		want string
	}{
		{kernels.Q4_K, []int64{64}, "not a multiple of the block size"},
		{kernels.F32, nil, "0 dimensions"},
		{kernels.F32, []int64{1, 2, 3, 4, 5}, "5 dimensions"},
		{kernels.F32, []int64{0}, "must be at least 1"},
		{kernels.F32, []int64{1 << 40, 1 << 40}, "overflows"},
		{kernels.Type(99), []int64{1}, "unknown tensor type id 99"},
	} {
		if _, err := TensorSize(c.typ, c.dims); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("TensorSize(%s, %v) = %v, want error containing %q", c.typ, c.dims, err, c.want)
		}
	}
}
