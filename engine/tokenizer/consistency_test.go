package tokenizer

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"
)

// TestCacheAndSegmentationInvariance: the word cache and SPM segmentation
// are optimizations only. Random text (invalid UTF-8 included) must encode
// identically with them and without (a fresh tokenizer with the cache off
// and segmentation disabled runs llama.cpp's algorithm verbatim).
func TestCacheAndSegmentationInvariance(t *testing.T) {
	dir := sharedDir(t)
	r := rand.New(rand.NewSource(3))
	var texts []string
	for i := 0; i < 300; i++ {
		s := randomText(r, 1+r.Intn(60))
		if i%5 == 0 {
			b := []byte(s)
			b[r.Intn(len(b))] = byte(0x80 + r.Intn(0x80)) // break UTF-8
			s = string(b)
		}
		texts = append(texts, s)
	}
	// special-token texts spliced into random text
	specials := []string{"<s>", "</s>", "<|endoftext|>", "<|end|>", "<｜fim▁hole｜>", "<｜begin▁of▁sentence｜>", ">>INTRODUCTION<<", "<fim_prefix>", "\n\n\n"}
	for i := 0; i < 100; i++ {
		s := randomText(r, r.Intn(10)) + specials[r.Intn(len(specials))] + randomText(r, r.Intn(10)) + specials[r.Intn(len(specials))]
		texts = append(texts, s)
	}
	for _, name := range append([]string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"}, bpeVocabs...) {
		t.Run(name, func(t *testing.T) {
			fast := loadTok(t, filepath.Join("vocab", name))
			plain, err := openTok(filepath.Join(dir, "vocab", name))
			if err != nil {
				t.Fatal(err)
			}
			plain.cache.disabled = true
			plain.spmSegmentable = false
			plain.specialTrie = nil
			if fast.kind == KindSPM && !fast.spmSegmentable {
				t.Errorf("%s: expected a segmentable SPM vocabulary", name)
			}
			for _, s := range texts {
				for _, parse := range []bool{false, true} {
					a, err1 := fast.Encode(s, true, parse)
					b, err2 := plain.Encode(s, true, parse)
					if (err1 == nil) != (err2 == nil) || !eqIDs(a, b) {
						t.Fatalf("%q: fast %v (%v), plain %v (%v)", s, a, err1, b, err2)
					}
				}
			}
		})
	}
}

// TestConcurrentEncode shares one tokenizer (word cache, session pools)
// between goroutines; run with -race.
func TestConcurrentEncode(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		tk := loadTok(t, filepath.Join("vocab", name))
		cases := readVocabTests(t, name)
		done := make(chan error, 4)
		for g := 0; g < 4; g++ {
			go func(g int) {
				for k := 0; k < 3; k++ {
					for i := range cases {
						c := cases[(i+g*7)%len(cases)]
						ids, err := tk.Encode(c.text, false, false)
						if err == nil && !eqIDs(ids, c.ids) {
							err = errorf("%s: %q mismatch under concurrency", name, c.text)
						}
						if err != nil {
							done <- err
							return
						}
					}
				}
				done <- nil
			}(g)
		}
		for g := 0; g < 4; g++ {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
