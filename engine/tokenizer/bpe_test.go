package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var bpeVocabs = []string{"ggml-vocab-gpt-2.gguf", "ggml-vocab-deepseek-coder.gguf", "ggml-vocab-falcon.gguf", "ggml-vocab-starcoder.gguf"}

// TestVocabBPE runs llama.cpp's test-tokenizer-0 vectors for the BPE
// vocabularies (add_special=false, parse_special=false).
func TestVocabBPE(t *testing.T) {
	for _, name := range bpeVocabs {
		t.Run(name, func(t *testing.T) {
			tk := loadTok(t, filepath.Join("vocab", name))
			if tk.Kind() != KindBPE {
				t.Fatalf("kind %v", tk.Kind())
			}
			cases := readVocabTests(t, name)
			pass := 0
			for i, c := range cases {
				got, err := tk.Encode(c.text, false, false)
				if err != nil {
					t.Errorf("case %d %q: %v", i, c.text, err)
					continue
				}
				if !eqIDs(got, c.ids) {
					t.Errorf("case %d %q: %s", i, c.text, firstDiff(tk, got, c.ids))
					continue
				}
				pass++
			}
			t.Logf("%s: %d/%d vectors match llama.cpp", name, pass, len(cases))
		})
	}
}

// TestRefTokenizerBPE checks reference/tokenizer/*.refgen.json for every
// vocabulary whose GGUF is present.
func TestRefTokenizerBPE(t *testing.T) {
	dir := sharedDir(t)
	refs, _ := filepath.Glob(filepath.Join(dir, "reference", "tokenizer", "ggml-vocab-*.gguf.refgen.json"))
	if len(refs) == 0 {
		t.Fatal("no refgen files")
	}
	for _, ref := range refs {
		name := filepath.Base(ref)
		vocab := strings.TrimSuffix(name, ".refgen.json")
		if _, err := os.Stat(filepath.Join(dir, "vocab", vocab)); err != nil {
			t.Logf("%s: no vocab/%s, not checked", name, vocab)
			continue
		}
		t.Run(name, func(t *testing.T) {
			tk, err := tryLoad(dir, filepath.Join("vocab", vocab))
			if err != nil {
				if strings.Contains(err.Error(), "unsupported tokenizer.ggml.model") {
					t.Skipf("%v", err)
				}
				t.Fatal(err)
			}
			checkRefCases(t, tk, readRefTests(t, name), name)
		})
	}
}

func tryLoad(dir, rel string) (*Tokenizer, error) {
	return loadTokErr(filepath.Join(dir, rel))
}

// TestRoundTrip: for every test string of every vocabulary, the pieces of
// the encoding concatenate back to the text, and Decode gives the text
// (after llama.cpp's space clean-up where the vocabulary applies it).
func TestRoundTrip(t *testing.T) {
	for _, name := range append([]string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"}, bpeVocabs...) {
		t.Run(name, func(t *testing.T) {
			tk := loadTok(t, filepath.Join("vocab", name))
			cases := readVocabTests(t, name)
			n := 0
			for i, c := range cases {
				for _, parse := range []bool{false, true} {
					ids, err := tk.Encode(c.text, true, parse)
					if err != nil {
						t.Fatal(err)
					}
					var sb strings.Builder
					for _, id := range ids {
						sb.Write(tk.Piece(id))
					}
					want := c.text
					if tk.Kind() == KindSPM && c.text != "" {
						want = " " + want
					}
					if sb.String() != want {
						t.Errorf("case %d (parse_special=%v): pieces give %q, want %q", i, parse, sb.String(), want)
					}
					// llama.cpp strips the SPM prefix space only when the
					// first token is not BOS (a leading BOS consumes the
					// strip, or with remove_special disables it)
					want = c.text
					if tk.Kind() == KindSPM && c.text != "" {
						want = " " + want
					}
					if tk.cleanSpaces {
						want = string(cleanSpaces([]byte(want)))
					}
					if dec := tk.Detokenize(ids, true, false); dec != want {
						t.Errorf("case %d (parse_special=%v): detokenize %q, want %q", i, parse, dec, want)
					}
					if dec := tk.Decode(ids); dec != want {
						t.Errorf("case %d (parse_special=%v): decode %q, want %q", i, parse, dec, want)
					}
					noBOS, _ := tk.Encode(c.text, false, parse)
					want = c.text
					if tk.cleanSpaces {
						want = string(cleanSpaces([]byte(want)))
					}
					if dec := tk.Decode(noBOS); dec != want {
						t.Errorf("case %d (parse_special=%v): decode without BOS %q, want %q", i, parse, dec, want)
					}
					d := tk.NewStreamDecoder()
					var st strings.Builder
					for _, id := range ids {
						st.WriteString(d.Push(id))
					}
					st.WriteString(d.Flush())
					if st.String() != sb.String() {
						t.Errorf("case %d: stream %q, pieces %q", i, st.String(), sb.String())
					}
				}
				n++
			}
			t.Logf("%s: %d strings round-trip", name, n)
		})
	}
}

func TestBPEMetadata(t *testing.T) {
	dc := loadTok(t, "vocab/ggml-vocab-deepseek-coder.gguf")
	if !dc.AddBOS() || dc.BOS() != 32013 || dc.EOS() != 32014 {
		t.Errorf("deepseek-coder: add_bos %v bos %d eos %d", dc.AddBOS(), dc.BOS(), dc.EOS())
	}
	ids, err := dc.Encode("hi", true, false)
	if err != nil || ids[0] != 32013 {
		t.Errorf("deepseek-coder add_special: %v %v", ids, err)
	}
	g := loadTok(t, "vocab/ggml-vocab-gpt-2.gguf")
	if g.AddBOS() || g.BOS() != 50256 || !g.IsEOG(50256) {
		t.Errorf("gpt-2: add_bos %v bos %d", g.AddBOS(), g.BOS())
	}
	// control tokens are text unless parse_special
	a, _ := g.Encode("<|endoftext|>", false, false)
	b, _ := g.Encode("<|endoftext|>", false, true)
	if len(a) < 2 || len(b) != 1 || b[0] != 50256 {
		t.Errorf("parse_special: %v / %v", a, b)
	}
	if got := g.Decode(b); got != "" {
		t.Errorf("control token decoded as %q", got)
	}
	if got := g.Detokenize(b, false, true); got != "<|endoftext|>" {
		t.Errorf("unparse_special: %q", got)
	}
}
