package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/weos/llm-engine/engine/gguf"
)

// Token types as stored in tokenizer.ggml.token_type.
const (
	TypeUndefined   = 0
	TypeNormal      = 1
	TypeUnknown     = 2
	TypeControl     = 3
	TypeUserDefined = 4
	TypeUnused      = 5
	TypeByte        = 6
)

// Attr is a token attribute bit set, bit-compatible with llama.cpp's
// llama_token_attr.
type Attr uint32

const (
	AttrUndefined   Attr = 0
	AttrUnknown     Attr = 1 << 0
	AttrUnused      Attr = 1 << 1
	AttrNormal      Attr = 1 << 2
	AttrControl     Attr = 1 << 3
	AttrUserDefined Attr = 1 << 4
	AttrByte        Attr = 1 << 5
	AttrNormalized  Attr = 1 << 6
	AttrLStrip      Attr = 1 << 7
	AttrRStrip      Attr = 1 << 8
	AttrSingleWord  Attr = 1 << 9
)

// Null is the "no token" id (LLAMA_TOKEN_NULL).
const Null int32 = -1

// Kind is the tokenizer algorithm.
type Kind int

const (
	KindSPM Kind = iota // SentencePiece-style score merges ("llama")
	KindBPE             // byte-level BPE ("gpt2")
)

func (k Kind) String() string {
	switch k {
	case KindSPM:
		return "SPM"
	case KindBPE:
		return "BPE"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Tokenizer converts between text and token ids for one vocabulary. It is
// immutable after FromGGUF and safe for concurrent use.
type Tokenizer struct {
	kind  Kind
	model string // tokenizer.ggml.model
	pre   string // tokenizer.ggml.pre

	tokens    []string
	scores    []float32
	attrs     []Attr
	tokenToID map[string]int32
	pieces    []string // token_to_piece(special=true), llama.cpp's cache

	bos, eos, eot, eom, unk, sep, pad, mask int32 // Null when absent
	fimPre, fimSuf, fimMid, fimPad, fimRep  int32
	fimSep, linefeed                        int32

	addBOS, addEOS, addSep bool
	addSpacePrefix         bool
	cleanSpaces            bool
	escapeWhitespace       bool
	ignoreMerges           bool

	eog map[int32]bool

	// special tokens (control, user-defined, unknown), longest text first
	specials    []int32
	specialTrie *trie

	byteTokens [256]int32 // SPM byte fallback, -1 if absent

	// spmSegmentable: no token has "▁" right after another character, so
	// SPM merges never cross the start of a "▁" run.
	spmSegmentable bool

	bpe *bpeModel

	cache   wordCache
	spmPool sync.Pool // *spmSession
	bpePool sync.Pool // *bpeSession
}

func (t *Tokenizer) getSPM() *spmSession {
	if s, ok := t.spmPool.Get().(*spmSession); ok {
		return s
	}
	return t.newSPMSession()
}

func (t *Tokenizer) getBPE() *bpeSession {
	if s, ok := t.bpePool.Get().(*bpeSession); ok {
		return s
	}
	return t.newBPESession()
}

// metadata is the part of *gguf.File the tokenizer reads.
type metadata interface {
	String(key string) (string, bool)
	Uint(key string) (uint64, bool)
	Bool(key string) (bool, bool)
	ArrayValue(key string) (gguf.Array, bool)
}

// FromGGUF builds the tokenizer described by a model's metadata. The file
// may be closed afterwards.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	if f == nil {
		return nil, errors.New("tokenizer: nil gguf file")
	}
	return fromMetadata(f)
}

func fromMetadata(f metadata) (*Tokenizer, error) {
	model, ok := f.String("tokenizer.ggml.model")
	if !ok {
		return nil, errors.New("tokenizer: tokenizer.ggml.model missing")
	}
	pre, _ := f.String("tokenizer.ggml.pre")
	t := &Tokenizer{model: model, pre: pre}
	t.eot, t.eom, t.sep, t.pad, t.mask = Null, Null, Null, Null, Null
	t.fimPre, t.fimSuf, t.fimMid, t.fimPad, t.fimRep, t.fimSep = Null, Null, Null, Null, Null, Null
	t.linefeed = 13

	var pc *preConfig
	switch model {
	case "llama":
		t.kind = KindSPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addSpacePrefix = true
		t.cleanSpaces = false
		t.addBOS, t.addEOS = true, false
		t.escapeWhitespace = true
	case "gpt2":
		t.kind = KindBPE
		t.bos, t.eos, t.unk = 11, 11, Null
		t.addSpacePrefix = false
		t.escapeWhitespace = false
		t.cleanSpaces = true
		var err error
		pc, err = lookupPre(pre)
		if err != nil {
			return nil, err
		}
		if pc.cleanSpacesOff {
			t.cleanSpaces = false
		}
		t.ignoreMerges = pc.ignoreMerges
		t.addBOS = pc.addBOS
		t.escapeWhitespace = pc.escapeWhitespace
		if pc.noBOS {
			t.bos = Null
		}
	default:
		return nil, fmt.Errorf("tokenizer: unsupported tokenizer.ggml.model %q (supported: \"llama\" (SentencePiece), \"gpt2\" (byte-level BPE))", model)
	}
	if v, ok := f.Bool("tokenizer.ggml.add_space_prefix"); ok {
		t.addSpacePrefix = v
	}

	// vocabulary
	ta, ok := f.ArrayValue("tokenizer.ggml.tokens")
	if !ok {
		return nil, errors.New("tokenizer: tokenizer.ggml.tokens missing")
	}
	toks, ok := ta.Values.([]string)
	if !ok {
		return nil, fmt.Errorf("tokenizer: tokenizer.ggml.tokens is an array of %s, want string", ta.Type)
	}
	n := len(toks)
	if n == 0 {
		return nil, errors.New("tokenizer: empty vocabulary")
	}
	var fscores []float32
	var iscores []int32
	if sa, ok := f.ArrayValue("tokenizer.ggml.scores"); ok {
		switch v := sa.Values.(type) {
		case []float32:
			fscores = v
		case []int32:
			iscores = v
		default:
			return nil, fmt.Errorf("tokenizer: tokenizer.ggml.scores is an array of %s", sa.Type)
		}
		if sa.Len() < n {
			return nil, fmt.Errorf("tokenizer: %d scores for %d tokens", sa.Len(), n)
		}
	}
	var types []int32
	if tt, ok := f.ArrayValue("tokenizer.ggml.token_type"); ok {
		v, ok := tt.Values.([]int32)
		if !ok {
			return nil, fmt.Errorf("tokenizer: tokenizer.ggml.token_type is an array of %s, want int32", tt.Type)
		}
		if len(v) < n {
			return nil, fmt.Errorf("tokenizer: %d token types for %d tokens", len(v), n)
		}
		types = v
	}
	t.tokens = make([]string, n)
	t.scores = make([]float32, n)
	t.attrs = make([]Attr, n)
	t.tokenToID = make(map[string]int32, n)
	for i, w := range toks {
		if w == "" {
			w = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if j, dup := t.tokenToID[w]; dup {
			return nil, fmt.Errorf("tokenizer: duplicate token in vocabulary: %q has ids %d and %d", w, j, i)
		}
		t.tokenToID[w] = int32(i)
		t.tokens[i] = w
		switch {
		case fscores != nil:
			t.scores[i] = fscores[i]
		case iscores != nil:
			t.scores[i] = float32(iscores[i])
		}
		a := AttrNormal
		if types != nil {
			switch types[i] {
			case TypeUnknown:
				a = AttrUnknown
			case TypeUnused:
				a = AttrUnused
			case TypeNormal:
				a = AttrNormal
			case TypeControl:
				a = AttrControl
			case TypeUserDefined:
				a = AttrUserDefined
			case TypeByte:
				a = AttrByte
			default:
				a = AttrUndefined
			}
		}
		t.attrs[i] = a
	}

	if t.kind == KindBPE {
		bm, err := loadMerges(f, t)
		if err != nil {
			return nil, err
		}
		bm.pre = pc
		t.bpe = bm
	}

	// byte fallback table (SPM: <0xXX>, else the single-byte token)
	for b := 0; b < 256; b++ {
		t.byteTokens[b] = Null
		if id, ok := t.tokenToID[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteTokens[b] = id
		} else if id, ok := t.tokenToID[string([]byte{byte(b)})]; ok {
			t.byteTokens[b] = id
		}
	}
	if t.kind == KindSPM {
		t.spmSegmentable = true
		for _, w := range t.tokens {
			for k := 1; k < len(w); k++ {
				if strings.HasPrefix(w[k:], "\u2581") && !strings.HasSuffix(w[:k], "\u2581") {
					t.spmSegmentable = false
					break
				}
			}
		}
		if id := t.byteTokens['\n']; id != Null {
			t.linefeed = id
		} else {
			t.linefeed = t.pad
		}
	}

	// special token ids from metadata
	specialKeys := []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &t.bos},
		{"tokenizer.ggml.eos_token_id", &t.eos},
		{"tokenizer.ggml.eot_token_id", &t.eot},
		{"tokenizer.ggml.eom_token_id", &t.eom},
		{"tokenizer.ggml.unknown_token_id", &t.unk},
		{"tokenizer.ggml.seperator_token_id", &t.sep},
		{"tokenizer.ggml.padding_token_id", &t.pad},
		{"tokenizer.ggml.mask_token_id", &t.mask},
		{"tokenizer.ggml.fim_pre_token_id", &t.fimPre},
		{"tokenizer.ggml.fim_suf_token_id", &t.fimSuf},
		{"tokenizer.ggml.fim_mid_token_id", &t.fimMid},
		{"tokenizer.ggml.fim_pad_token_id", &t.fimPad},
		{"tokenizer.ggml.fim_rep_token_id", &t.fimRep},
		{"tokenizer.ggml.fim_sep_token_id", &t.fimSep},
		// deprecated
		{"tokenizer.ggml.prefix_token_id", &t.fimPre},
		{"tokenizer.ggml.suffix_token_id", &t.fimSuf},
		{"tokenizer.ggml.middle_token_id", &t.fimMid},
	}
	for _, sk := range specialKeys {
		if *sk.id >= 0 && int(*sk.id) >= n {
			*sk.id = Null
		}
		v, ok := f.Uint(sk.key)
		if !ok {
			continue
		}
		if v < uint64(n) { // out-of-range ids keep the default, as llama.cpp
			*sk.id = int32(v)
		}
	}
	if v, ok := f.Bool("tokenizer.ggml.add_bos_token"); ok {
		t.addBOS = v
	}
	if v, ok := f.Bool("tokenizer.ggml.add_eos_token"); ok {
		t.addEOS = v
	}
	if v, ok := f.Bool("tokenizer.ggml.add_sep_token"); ok {
		t.addSep = v
	}
	if t.addBOS && t.bos == Null {
		return nil, errors.New("tokenizer: tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set")
	}
	if t.addEOS && t.eos == Null {
		return nil, errors.New("tokenizer: tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set")
	}

	t.detectSpecials()

	// llama.cpp's token-to-piece cache is built before the per-model
	// attribute tweaks below.
	t.pieces = make([]string, n)
	for i := range t.pieces {
		t.pieces[i] = string(t.tokenPiece(int32(i), true))
	}

	name, _ := f.String("general.name")
	name = strings.ToLower(name)
	arch, _ := f.String("general.architecture")
	t.modelAttrTweaks(name, arch)

	if t.kind == KindBPE {
		// llama.cpp: the newline token is the first token of "\n"
		t.linefeed = t.pad
		if ids, err := t.Encode("\n", false, false); err == nil && len(ids) > 0 {
			t.linefeed = ids[0]
		}
	}
	return t, nil
}

// byText returns the id of the token with exactly this text.
func (t *Tokenizer) byText(s string) (int32, bool) {
	id, ok := t.tokenToID[s]
	return id, ok
}

// detectSpecials follows llama.cpp's text-based detection of EOT/EOM/FIM
// and end-of-generation tokens, including the attribute overrides it
// applies, then builds the sorted special-token cache.
func (t *Tokenizer) detectSpecials() {
	forceControl := func(id int32) { t.attrs[id] |= AttrControl }
	// llama.cpp walks an unordered map; when several candidate texts exist
	// its choice is unspecified. We take the lowest id.
	detect := func(target *int32, texts ...string) {
		if *target != Null {
			return
		}
		best := Null
		for _, s := range texts {
			if id, ok := t.tokenToID[s]; ok && (best == Null || id < best) {
				best = id
			}
		}
		if best != Null {
			*target = best
			forceControl(best)
		}
	}
	detect(&t.eot, "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
		"<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
	detect(&t.eom, "<|eom_id|>")
	detect(&t.fimPre, "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>")
	detect(&t.fimSuf, "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>")
	detect(&t.fimMid, "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>")
	detect(&t.fimPad, "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
	detect(&t.fimRep, "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
	detect(&t.fimSep, "<|file_sep|>")

	// unused: control tokens whose text says so
	for i, a := range t.attrs {
		if a&AttrControl != 0 && a&AttrUnused == 0 && strings.Contains(t.tokens[i], "unused") {
			t.attrs[i] |= AttrUnused
		}
	}

	t.eog = map[int32]bool{}
	for _, id := range []int32{t.fimPad, t.fimRep, t.fimSep} {
		if id != Null {
			t.eog[id] = true
		}
	}
	for _, s := range []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
		"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
		"<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["} {
		if id, ok := t.tokenToID[s]; ok {
			t.eog[id] = true
			forceControl(id)
		}
	}
	// gpt-oss: always render these
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.tokenToID[s]; ok {
			t.attrs[id] = AttrUserDefined
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id != Null {
			t.eog[id] = true
		}
	}
	// o200k_harmony / solar-open: <|end|> is not EOG when <|return|>+<|call|>
	// or <|calls|>+<|flush|> exist.
	{
		var hasReturn, hasCall, hasEnd, hasFlush bool
		endID := Null
		for id := range t.eog {
			switch t.tokens[id] {
			case "<|return|>":
				hasReturn = true
			case "<|call|>", "<|calls|>":
				hasCall = true
			case "<|flush|>":
				hasFlush = true
			case "<|end|>":
				hasEnd, endID = true, id
			}
		}
		if (hasReturn && hasCall && hasEnd) || (hasCall && hasFlush && hasEnd) {
			delete(t.eog, endID)
			t.attrs[endID] = AttrUserDefined
		}
	}
	// gemma4 / paddleocr: </s> is not EOG when <|tool_response> is.
	{
		var hasTool, hasS bool
		sID := Null
		for id := range t.eog {
			switch t.tokens[id] {
			case "<|tool_response>":
				hasTool = true
			case "</s>":
				hasS, sID = true, id
			}
		}
		if hasTool && hasS {
			delete(t.eog, sID)
			t.attrs[sID] = AttrNormal
		}
	}

	// special tokens cache: control, user-defined, unknown; longest first
	// (llama.cpp's sort is unstable; we break ties by id).
	t.specials = t.specials[:0]
	for i, a := range t.attrs {
		if a&(AttrControl|AttrUserDefined|AttrUnknown) != 0 {
			t.specials = append(t.specials, int32(i))
		}
	}
	sort.SliceStable(t.specials, func(a, b int) bool {
		return len(t.tokens[t.specials[a]]) > len(t.tokens[t.specials[b]])
	})
	t.specialTrie = newTrie()
	for _, id := range t.specials {
		t.specialTrie.insert(t.tokens[id], id)
	}
}

// modelAttrTweaks applies llama.cpp's per-model lstrip/rstrip attributes.
func (t *Tokenizer) modelAttrTweaks(name, arch string) {
	set := func(s string, a Attr, on bool) {
		id, ok := t.tokenToID[s]
		if !ok {
			return
		}
		if on {
			t.attrs[id] |= a
		} else {
			t.attrs[id] &^= a
		}
	}
	containsAny := func(s string, subs ...string) bool {
		for _, x := range subs {
			if strings.Contains(s, x) {
				return true
			}
		}
		return false
	}
	switch {
	case containsAny(t.pre, "jina-v2-de", "jina-v2-es", "jina-v2-code") || containsAny(arch, "nomic-bert-moe", "jina-bert-v3"):
		set("<mask>", AttrLStrip, true)
	case containsAny(name, "phi-3", "phi3"):
		for _, id := range t.specials {
			t.attrs[id] |= AttrRStrip
		}
		set("</s>", AttrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			set(s, AttrRStrip, false)
		}
	case containsAny(name, "modern-bert"):
		set("[MASK]", AttrLStrip, true)
	}
}

// Kind reports the tokenizer algorithm.
func (t *Tokenizer) Kind() Kind { return t.kind }

// Model is the tokenizer.ggml.model value; Pre the tokenizer.ggml.pre value.
func (t *Tokenizer) Model() string { return t.model }
func (t *Tokenizer) Pre() string   { return t.pre }

// NVocab is the number of tokens.
func (t *Tokenizer) NVocab() int { return len(t.tokens) }

// BOS, EOS, EOT, UNK, PAD return special ids (Null when absent).
func (t *Tokenizer) BOS() int32 { return t.bos }
func (t *Tokenizer) EOS() int32 { return t.eos }
func (t *Tokenizer) EOT() int32 { return t.eot }
func (t *Tokenizer) UNK() int32 { return t.unk }
func (t *Tokenizer) PAD() int32 { return t.pad }

// Linefeed is the newline token id.
func (t *Tokenizer) Linefeed() int32 { return t.linefeed }

// AddBOS / AddEOS report whether Encode with addSpecial adds them.
func (t *Tokenizer) AddBOS() bool { return t.addBOS }
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// IsEOG reports whether id ends generation (EOS, EOT, EOM and the tokens
// llama.cpp recognises by text, such as <|im_end|>).
func (t *Tokenizer) IsEOG(id int32) bool { return id != Null && t.eog[id] }

// EOGs lists the end-of-generation ids in ascending order.
func (t *Tokenizer) EOGs() []int32 {
	out := make([]int32, 0, len(t.eog))
	for id := range t.eog {
		out = append(out, id)
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

func (t *Tokenizer) valid(id int32) bool { return id >= 0 && int(id) < len(t.tokens) }

// Text is the raw vocabulary string of a token ("" if out of range).
func (t *Tokenizer) Text(id int32) string {
	if !t.valid(id) {
		return ""
	}
	return t.tokens[id]
}

// Score is the token's score (SPM log-probability).
func (t *Tokenizer) Score(id int32) float32 {
	if !t.valid(id) {
		return 0
	}
	return t.scores[id]
}

// Attr returns the token's attributes after llama.cpp's overrides.
func (t *Tokenizer) Attr(id int32) Attr {
	if !t.valid(id) {
		return AttrUndefined
	}
	return t.attrs[id]
}

// IsControl reports a control token.
func (t *Tokenizer) IsControl(id int32) bool { return t.Attr(id)&AttrControl != 0 }

// TokenID returns the id of the token whose vocabulary text is s.
func (t *Tokenizer) TokenID(s string) (int32, bool) { return t.byText(s) }
