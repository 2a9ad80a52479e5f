package synth

import (
	"fmt"

	"github.com/weos/llm-engine/engine/gguf"
)

// Token types, as llama.cpp numbers them (tokenizer.ggml.token_type).
const (
	TokenNormal      int32 = 1
	TokenUnknown     int32 = 2
	TokenControl     int32 = 3
	TokenUserDefined int32 = 4
	TokenUnused      int32 = 5
	TokenByte        int32 = 6
)

// NumSpecialTokens is the size of the fixed head of a synthetic vocabulary:
// <unk>, <s>, </s> and the 256 byte tokens.
const NumSpecialTokens = 3 + 256

// Tokenizer is the tokenizer metadata of a model (the tokenizer.ggml.*
// keys).
type Tokenizer struct {
	Model  string    // tokenizer.ggml.model: "llama" (SPM), "gpt2" (BPE), …
	Pre    string    // tokenizer.ggml.pre (BPE pre-tokenizer), written when set
	Tokens []string  // tokenizer.ggml.tokens
	Scores []float32 // tokenizer.ggml.scores, written when set
	Types  []int32   // tokenizer.ggml.token_type, written when set
	Merges []string  // tokenizer.ggml.merges (BPE), written when set
	// Special token ids; -1 leaves the key out.
	BOS, EOS, UNK int32
}

func (t *Tokenizer) validate() error {
	n := len(t.Tokens)
	switch {
	case t.Model == "":
		return fmt.Errorf("synth: tokenizer without a model name")
	case n == 0:
		return fmt.Errorf("synth: tokenizer without tokens")
	case t.Scores != nil && len(t.Scores) != n:
		return fmt.Errorf("synth: %d tokens but %d scores", n, len(t.Scores))
	case t.Types != nil && len(t.Types) != n:
		return fmt.Errorf("synth: %d tokens but %d token types", n, len(t.Types))
	}
	for _, id := range []int32{t.BOS, t.EOS, t.UNK} {
		if id < -1 || int(id) >= n {
			return fmt.Errorf("synth: special token id %d out of range for %d tokens", id, n)
		}
	}
	return nil
}

// SPMVocab returns a synthetic SentencePiece vocabulary of n tokens (n at
// least NumSpecialTokens): <unk> (0), <s> (1, BOS), </s> (2, EOS), the byte
// tokens <0x00>…<0xFF> (3…258), then normal pieces in this order: "▁", each
// lowercase letter in English frequency order with and without "▁", the
// prefixes of common English words, uppercase letters, digits and
// punctuation, then every string of 2, 3, … lowercase letters (plain, then
// with "▁"), until n tokens. Special and byte tokens score 0; the k-th
// normal piece scores -k, so earlier pieces are preferred.
func SPMVocab(n int) (*Tokenizer, error) {
	if n < NumSpecialTokens {
		return nil, fmt.Errorf("synth: a synthetic vocabulary needs at least %d tokens, not %d", NumSpecialTokens, n)
	}
	t := &Tokenizer{Model: "llama", BOS: 1, EOS: 2, UNK: 0,
		Tokens: make([]string, 0, n), Scores: make([]float32, 0, n), Types: make([]int32, 0, n)}
	seen := make(map[string]bool, n)
	add := func(s string, score float32, typ int32) bool {
		if len(t.Tokens) == n || seen[s] {
			return len(t.Tokens) < n
		}
		seen[s] = true
		t.Tokens = append(t.Tokens, s)
		t.Scores = append(t.Scores, score)
		t.Types = append(t.Types, typ)
		return len(t.Tokens) < n
	}
	add("<unk>", 0, TokenUnknown)
	add("<s>", 0, TokenControl)
	add("</s>", 0, TokenControl)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), 0, TokenByte)
	}
	k := 0
	piece := func(s string) bool {
		before := len(t.Tokens)
		more := add(s, -float32(k), TokenNormal)
		if len(t.Tokens) > before {
			k++
		}
		return more
	}
	const lower = "etaoinshrdlcumwfgypbvkjxqz"
	const other = "ETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'\"!?-:;()"
	if !piece("▁") {
		return t, nil
	}
	for _, c := range lower {
		if !piece("▁"+string(c)) || !piece(string(c)) {
			return t, nil
		}
	}
	for _, w := range commonWords {
		for i := 2; i <= len(w); i++ {
			if !piece("▁" + w[:i]) {
				return t, nil
			}
		}
	}
	for _, c := range other {
		if !piece("▁"+string(c)) || !piece(string(c)) {
			return t, nil
		}
	}
	// Every string of L lowercase letters, L = 2, 3, …, odometer order.
	for L := 2; ; L++ {
		idx := make([]int, L)
		buf := make([]byte, L)
		for {
			for i, x := range idx {
				buf[i] = lower[x]
			}
			s := string(buf)
			if !piece(s) || !piece("▁"+s) {
				return t, nil
			}
			i := L - 1
			for i >= 0 && idx[i] == len(lower)-1 {
				idx[i] = 0
				i--
			}
			if i < 0 {
				break
			}
			idx[i]++
		}
	}
}

var commonWords = []string{
	"the", "and", "was", "to", "he", "she", "it", "they", "said", "of", "in", "you",
	"his", "her", "with", "on", "for", "day", "big", "little", "one", "time", "upon",
	"once", "there", "happy", "play", "friend", "mom", "dog", "cat", "tree", "sun",
	"ball", "went", "saw", "had", "not", "very", "so", "but", "wanted", "is", "we",
	"be", "at", "all", "what", "were", "are", "like", "can", "go", "see", "fun",
	"look", "toy", "girl", "boy", "named", "lily", "tom", "ben", "park", "home",
}

// TokenizerFrom copies the tokenizer of a parsed GGUF file: model, pre,
// tokens, scores, token types, merges and the BOS, EOS and UNK ids.
func TokenizerFrom(f *gguf.File) (*Tokenizer, error) {
	t := &Tokenizer{BOS: -1, EOS: -1, UNK: -1}
	var ok bool
	if t.Model, ok = f.String("tokenizer.ggml.model"); !ok {
		return nil, fmt.Errorf("synth: no tokenizer.ggml.model string")
	}
	t.Pre, _ = f.String("tokenizer.ggml.pre")
	a, _ := f.ArrayValue("tokenizer.ggml.tokens")
	if t.Tokens, ok = a.Values.([]string); !ok {
		return nil, fmt.Errorf("synth: no tokenizer.ggml.tokens array of strings")
	}
	if a, ok := f.ArrayValue("tokenizer.ggml.scores"); ok {
		if t.Scores, ok = a.Values.([]float32); !ok {
			return nil, fmt.Errorf("synth: tokenizer.ggml.scores is not an array of float32")
		}
	}
	if a, ok := f.ArrayValue("tokenizer.ggml.token_type"); ok {
		if t.Types, ok = a.Values.([]int32); !ok {
			return nil, fmt.Errorf("synth: tokenizer.ggml.token_type is not an array of int32")
		}
	}
	if a, ok := f.ArrayValue("tokenizer.ggml.merges"); ok {
		if t.Merges, ok = a.Values.([]string); !ok {
			return nil, fmt.Errorf("synth: tokenizer.ggml.merges is not an array of strings")
		}
	}
	for _, id := range []struct {
		key string
		dst *int32
	}{{"tokenizer.ggml.bos_token_id", &t.BOS}, {"tokenizer.ggml.eos_token_id", &t.EOS}, {"tokenizer.ggml.unknown_token_id", &t.UNK}} {
		if v, ok := f.Uint(id.key); ok && v < uint64(len(t.Tokens)) {
			*id.dst = int32(v)
		}
	}
	return t, t.validate()
}
