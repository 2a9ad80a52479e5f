package engine

import (
	"context"
	"os"
	"testing"
)

// TestQuantCacheBound: with CacheMaxBytes set, a load that writes a new
// entry deletes the least recently used ones beyond the bound, but never
// the entry of a model still loaded; the load reports what it deleted.
func TestQuantCacheBound(t *testing.T) {
	path := sharedModel(t, "stories260K.gguf")
	e, err := New(Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: 1, CacheMaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx := context.Background()
	load := func(q string) *ModelInfo {
		t.Helper()
		info, err := e.LoadModel(ctx, LoadRequest{Path: path, Plan: map[string]any{"quantization": map[string]any{"default": q}}})
		if err != nil {
			t.Fatal(err)
		}
		if info.QuantCachePath == "" {
			t.Fatalf("%s: no cache entry", q)
		}
		return info
	}
	a := load("Q6_K")
	b := load("Q4_K_M") // a is loaded: kept although over the bound
	if len(b.QuantCachePruned) != 0 {
		t.Fatalf("pruned %v while its model is loaded", b.QuantCachePruned)
	}
	if err := e.UnloadModel(a.ModelID); err != nil {
		t.Fatal(err)
	}
	c := load("Q6_K") // a's entry again: hit; b's is loaded
	if !c.QuantCacheHit || len(c.QuantCachePruned) != 0 {
		t.Fatalf("reload: hit %v, pruned %v", c.QuantCacheHit, c.QuantCachePruned)
	}
	if err := e.UnloadModel(b.ModelID); err != nil {
		t.Fatal(err)
	}
	if err := e.UnloadModel(c.ModelID); err != nil {
		t.Fatal(err)
	}
	d := load("Q4_K_M") // b's entry (hit); a's is no longer used: deleted
	if !d.QuantCacheHit || len(d.QuantCachePruned) != 1 || d.QuantCachePruned[0] != a.QuantCachePath {
		t.Fatalf("hit %v, pruned %v; want a's entry %s", d.QuantCacheHit, d.QuantCachePruned, a.QuantCachePath)
	}
	if _, err := os.Stat(a.QuantCachePath); !os.IsNotExist(err) {
		t.Errorf("pruned entry still there: %v", err)
	}
	if _, err := os.Stat(d.QuantCachePath); err != nil {
		t.Errorf("the loaded entry: %v", err)
	}
}
