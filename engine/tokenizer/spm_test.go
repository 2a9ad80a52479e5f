package tokenizer

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVocabSPM runs llama.cpp's test-tokenizer-0 vectors for the SPM
// vocabularies (add_special=false, parse_special=false).
func TestVocabSPM(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"} {
		t.Run(name, func(t *testing.T) {
			tk := loadTok(t, filepath.Join("vocab", name))
			if tk.Kind() != KindSPM {
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
				// SPM detokenize strips the prefix space again: exact round trip
				if dec := tk.Decode(got); dec != c.text {
					t.Errorf("case %d: decode %q, want %q", i, dec, c.text)
				}
			}
			t.Logf("%s: %d/%d vectors match llama.cpp", name, pass, len(cases))
		})
	}
}

// TestRefTokenizerSPM checks reference/tokenizer/*.llama-spm-inp.json: the
// llama-spm strings tokenized by llama.cpp with the stories260K and
// llama-2-tiny-random vocabularies (heavy byte fallback), with and without
// add_special, and the per-token pieces.
func TestRefTokenizerSPM(t *testing.T) {
	for _, c := range []struct{ ref, model string }{
		{"stories260K.llama-spm-inp.json", "models/stories260K.gguf"},
		{"llama-2-tiny-random.llama-spm-inp.json", "models/llama-2-tiny-random.gguf"},
		{"ggml-vocab-llama-spm.gguf.refgen.json", "vocab/ggml-vocab-llama-spm.gguf"},
		{"ggml-vocab-phi-3.gguf.refgen.json", "vocab/ggml-vocab-phi-3.gguf"},
	} {
		t.Run(c.ref, func(t *testing.T) {
			tk := loadTok(t, c.model)
			checkRefCases(t, tk, readRefTests(t, c.ref), c.ref)
		})
	}
}

func checkRefCases(t *testing.T, tk *Tokenizer, cases []refCase, name string) {
	t.Helper()
	pass := 0
	for i, rc := range cases {
		text := unhex(t, rc.TextHex)
		ok := true
		got, err := tk.Encode(text, false, false)
		if err != nil {
			t.Errorf("case %d: %v", i, err)
			continue
		}
		if !eqIDs(got, rc.IDs) {
			t.Errorf("case %d %q: %s", i, text, firstDiff(tk, got, rc.IDs))
			ok = false
		}
		gotS, err := tk.Encode(text, true, false)
		if err != nil {
			t.Errorf("case %d: %v", i, err)
			continue
		}
		if !eqIDs(gotS, rc.IDsAddSpecial) {
			t.Errorf("case %d %q add_special: %s", i, text, firstDiff(tk, gotS, rc.IDsAddSpecial))
			ok = false
		}
		if len(rc.PiecesHex) != len(rc.IDs) {
			t.Fatalf("case %d: %d pieces for %d ids", i, len(rc.PiecesHex), len(rc.IDs))
		}
		for j, id := range rc.IDs {
			if p := hex.EncodeToString(tk.PieceSpecial(id)); p != rc.PiecesHex[j] {
				t.Errorf("case %d: piece of %d = %s, want %s", i, id, p, rc.PiecesHex[j])
				ok = false
			}
		}
		if ok {
			pass++
		}
	}
	t.Logf("%s: %d/%d vectors match llama.cpp", name, pass, len(cases))
}

type genRef struct {
	PromptHex     string   `json:"prompt_hex"`
	PromptTokens  []int32  `json:"prompt_tokens"`
	PromptPieces  []string `json:"prompt_pieces_hex"`
	GenTokens     []int32  `json:"gen_tokens"`
	GenPiecesHex  []string `json:"gen_pieces_hex"`
	GenTextHex    string   `json:"gen_text_hex"`
	FirstEOGIndex int      `json:"first_eog_index"`
}

// TestGenReference checks the prompts and generated text of
// reference/gen/<model>/p1|p2|p5/f32kv_nofa-t1.json: prompt tokens (BOS
// added, special not parsed), each generated piece, the streamed text and
// the full detokenization.
func TestGenReference(t *testing.T) {
	for _, c := range []struct{ dir, model string }{
		{"stories260K-F32", "models/stories260K.gguf"},
		{"llama-2-tiny-random-F16", "models/llama-2-tiny-random.gguf"},
	} {
		for _, p := range []string{"p1", "p2", "p5"} {
			t.Run(c.dir+"/"+p, func(t *testing.T) {
				tk := loadTok(t, c.model)
				b, err := os.ReadFile(filepath.Join(sharedDir(t), "reference", "gen", c.dir, p, "f32kv_nofa-t1.json"))
				if err != nil {
					t.Fatal(err)
				}
				var g genRef
				if err := json.Unmarshal(b, &g); err != nil {
					t.Fatal(err)
				}
				prompt := unhex(t, g.PromptHex)
				got, err := tk.Encode(prompt, true, false)
				if err != nil {
					t.Fatal(err)
				}
				if !eqIDs(got, g.PromptTokens) {
					t.Errorf("prompt %q: %s", prompt, firstDiff(tk, got, g.PromptTokens))
				}
				for j, id := range g.PromptTokens {
					if ph := hex.EncodeToString(tk.PieceSpecial(id)); ph != g.PromptPieces[j] {
						t.Errorf("prompt piece %d: %s want %s", j, ph, g.PromptPieces[j])
					}
				}
				var cat strings.Builder
				for j, id := range g.GenTokens {
					ph := hex.EncodeToString(tk.Piece(id))
					if ph != g.GenPiecesHex[j] {
						t.Errorf("gen piece %d (id %d): %s want %s", j, id, ph, g.GenPiecesHex[j])
					}
					cat.WriteString(unhex(t, g.GenPiecesHex[j]))
				}
				want := cat.String()
				if want != unhex(t, g.GenTextHex) {
					t.Fatalf("reference inconsistent: pieces do not concatenate to gen_text")
				}
				d := tk.NewStreamDecoder()
				var sb strings.Builder
				for _, id := range g.GenTokens {
					sb.WriteString(d.Push(id))
				}
				sb.WriteString(d.Flush())
				if sb.String() != want {
					t.Errorf("stream decode %q, want %q", sb.String(), want)
				}
				// full detokenize of prompt+generation: BOS renders empty
				// and, being first, keeps the next token's space
				all := append(append([]int32{}, g.PromptTokens...), g.GenTokens...)
				wantAll := want
				if prompt != "" {
					wantAll = " " + prompt + want
				}
				if dec := tk.Decode(all); dec != wantAll {
					t.Errorf("decode(prompt+gen) = %q, want %q", dec, wantAll)
				}
				if dec := tk.Detokenize(all, true, false); dec != wantAll {
					t.Errorf("detokenize(remove_special) = %q, want %q", dec, wantAll)
				}
			})
		}
	}
}

func TestSPMMetadata(t *testing.T) {
	tk := loadTok(t, "models/stories260K.gguf")
	if tk.NVocab() != 512 || tk.BOS() != 1 || tk.EOS() != 2 || !tk.IsEOG(2) || tk.IsEOG(1) {
		t.Errorf("nvocab %d bos %d eos %d", tk.NVocab(), tk.BOS(), tk.EOS())
	}
	if !tk.AddBOS() || tk.AddEOS() {
		t.Errorf("add_bos %v add_eos %v", tk.AddBOS(), tk.AddEOS())
	}
	if tk.Linefeed() != 13 {
		t.Errorf("linefeed %d", tk.Linefeed())
	}
	if string(tk.Piece(1)) != "" || string(tk.PieceSpecial(1)) != "<s>" {
		t.Errorf("control piece %q / %q", tk.Piece(1), tk.PieceSpecial(1))
	}
	// parse_special: "<s>" in text becomes BOS, and the text after a special
	// token gets a space prefix again
	ids, err := tk.Encode("<s>Hi</s>", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] != 1 || ids[len(ids)-1] != 2 {
		t.Errorf("parse_special: %v", ids)
	}
	noSp, _ := tk.Encode("<s>Hi</s>", false, false)
	if eqIDs(ids, noSp) {
		t.Errorf("parse_special made no difference: %v", ids)
	}
	hi, _ := tk.Encode("Hi", false, false)
	if !eqIDs(ids[1:len(ids)-1], hi) {
		t.Errorf("text after special: %v, want %v", ids[1:len(ids)-1], hi)
	}
	phi := loadTok(t, "vocab/ggml-vocab-phi-3.gguf")
	if id, _ := phi.TokenID("<|end|>"); !phi.IsEOG(id) {
		t.Errorf("phi-3 <|end|> not EOG")
	}
	if phi.IsEOG(1) || !phi.IsEOG(32000) {
		t.Errorf("phi-3 EOGs %v", phi.EOGs())
	}
}
