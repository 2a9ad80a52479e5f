package tokenizer

import (
	"fmt"
	"strings"
)

type mergeKey struct{ left, right int32 }

type mergeVal struct {
	rank   int32
	result int32 // interned id of left+right
}

// bpeModel holds the merge table. Strings are interned to ids: vocabulary
// tokens keep their token ids, other strings met in merges get ids past
// the vocabulary, so a merge lookup is a map access on two int32s.
type bpeModel struct {
	pre     *preConfig
	intern  map[string]int32 // strings that are not tokens
	merges  map[mergeKey]mergeVal
	byteSym [256]int32 // interned id of each byte's GPT-2 character
}

func loadMerges(f metadata, t *Tokenizer) (*bpeModel, error) {
	ma, ok := f.ArrayValue("tokenizer.ggml.merges")
	if !ok {
		return nil, fmt.Errorf("tokenizer: cannot find tokenizer.ggml.merges in a %q vocabulary", t.model)
	}
	merges, ok := ma.Values.([]string)
	if !ok {
		return nil, fmt.Errorf("tokenizer: tokenizer.ggml.merges is an array of %s, want string", ma.Type)
	}
	m := &bpeModel{intern: map[string]int32{}, merges: make(map[mergeKey]mergeVal, len(merges))}
	for i, w := range merges {
		var first, second string
		if len(w) > 1 {
			if p := strings.IndexByte(w[1:], ' '); p >= 0 {
				first, second = w[:p+1], w[p+2:]
			}
		}
		k := mergeKey{m.id(t, first), m.id(t, second)}
		if _, dup := m.merges[k]; dup {
			continue // llama.cpp's emplace keeps the first rank
		}
		m.merges[k] = mergeVal{rank: int32(i), result: m.id(t, first+second)}
	}
	for b := range m.byteSym {
		m.byteSym[b] = m.lookup(t, byteToUnicode[b])
	}
	return m, nil
}

func (m *bpeModel) id(t *Tokenizer, s string) int32 {
	if id, ok := t.tokenToID[s]; ok {
		return id
	}
	if id, ok := m.intern[s]; ok {
		return id
	}
	id := int32(len(t.tokens) + len(m.intern))
	m.intern[s] = id
	return id
}

// lookup returns the interned id of s, or Null if s occurs in no merge and
// no token.
func (m *bpeModel) lookup(t *Tokenizer, s string) int32 {
	if id, ok := t.tokenToID[s]; ok {
		return id
	}
	if id, ok := m.intern[s]; ok {
		return id
	}
	return Null
}

type bpeSymbol struct {
	prev, next int32
	start, n   int32
	id         int32 // interned id of the symbol's text, Null if none
}

type bpeBigram struct {
	left, right int32
	rank        int32
	size        int32
	result      int32
}

func bpeBefore(a, b *bpeBigram) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.left < b.left
}

type bpeSession struct {
	t       *Tokenizer
	m       *bpeModel
	sp      *splitter
	symbols []bpeSymbol
	heap    []bpeBigram
	enc     []byte
	ids     []int32
}

func (t *Tokenizer) newBPESession() *bpeSession {
	return &bpeSession{t: t, m: t.bpe, sp: newSplitter(t.bpe.pre)}
}

func (s *bpeSession) push(b bpeBigram) {
	h := append(s.heap, b)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !bpeBefore(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	s.heap = h
}

func (s *bpeSession) pop() bpeBigram {
	h := s.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && bpeBefore(&h[r], &h[l]) {
			m = r
		}
		if !bpeBefore(&h[m], &h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	s.heap = h
	return top
}

func (s *bpeSession) addBigram(left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	l := &s.symbols[left]
	r := &s.symbols[right]
	if l.id == Null || r.id == Null {
		return
	}
	v, ok := s.m.merges[mergeKey{l.id, r.id}]
	if !ok {
		return
	}
	s.push(bpeBigram{left: left, right: right, rank: v.rank, size: l.n + r.n, result: v.result})
}

// tokenize is llm_tokenizer_bpe_session::tokenize on one text fragment:
// pre-tokenize into words, then within each word repeatedly apply the
// lowest-ranked merge among adjacent symbols.
func (s *bpeSession) tokenize(text string, out []int32) []int32 {
	t := s.t
	if t.escapeWhitespace {
		text = strings.ReplaceAll(text, " ", "\u2581")
	}
	buf, ends := s.sp.split(text)
	start := 0
	for _, end := range ends {
		word := buf[start:end]
		start = end
		if ids, ok := t.cache.get(word); ok {
			out = append(out, ids...)
			continue
		}
		n0 := len(out)
		out = s.word(word, out)
		t.cache.putBytes(word, out[n0:])
	}
	return out
}

// encoded returns the byte-level encoding of raw (GPT-2 mapping), or raw
// itself when the pre-tokenizer does not byte-encode.
func (s *bpeSession) encoded(raw []byte) []byte {
	if !s.m.pre.byteEncode {
		return raw
	}
	s.enc = s.enc[:0]
	for _, b := range raw {
		s.enc = append(s.enc, byteToUnicode[b]...)
	}
	return s.enc
}

// word tokenizes one pre-tokenized word given as raw (not yet byte-level
// encoded) bytes. With byte-level encoding every byte is one initial
// symbol, so symbols are seeded from a per-byte table and merged by id.
func (s *bpeSession) word(raw []byte, out []int32) []int32 {
	t, m := s.t, s.m
	if t.ignoreMerges {
		if id, ok := t.tokenToID[string(s.encoded(raw))]; ok {
			return append(out, id)
		}
	}
	s.symbols = s.symbols[:0]
	s.heap = s.heap[:0]
	if m.pre.byteEncode {
		for i, b := range raw {
			s.symbols = append(s.symbols, bpeSymbol{prev: int32(i) - 1, next: int32(i) + 1, start: int32(i), n: 1, id: m.byteSym[b]})
		}
	} else {
		for offs := 0; offs < len(raw); {
			n := min(utf8Len(raw[offs]), len(raw)-offs)
			idx := int32(len(s.symbols))
			s.symbols = append(s.symbols, bpeSymbol{prev: idx - 1, next: idx + 1, start: int32(offs), n: int32(n),
				id: m.lookup(t, string(raw[offs:offs+n]))})
			offs += n
		}
	}
	if len(s.symbols) == 0 {
		return out
	}
	s.symbols[len(s.symbols)-1].next = -1
	for i := 1; i < len(s.symbols); i++ {
		s.addBigram(int32(i-1), int32(i))
	}
	for len(s.heap) > 0 {
		b := s.pop()
		l := &s.symbols[b.left]
		r := &s.symbols[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // outdated
		}
		l.n += r.n
		l.id = b.result
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			s.symbols[r.next].prev = b.left
		}
		s.addBigram(l.prev, b.left)
		s.addBigram(b.left, l.next)
	}
	for i := range s.symbols {
		sym := &s.symbols[i]
		if sym.n == 0 {
			continue
		}
		if sym.id != Null && int(sym.id) < len(t.tokens) {
			out = append(out, sym.id)
			continue
		}
		// not a token: llama.cpp looks up each byte of the (encoded)
		// text as a one-byte token and drops those that are not
		str := s.encoded(raw[sym.start : sym.start+sym.n])
		for k := 0; k < len(str); k++ {
			if m.pre.byteEncode {
				if id, ok := t.tokenToID[string(str[k:k+1])]; ok {
					out = append(out, id)
				}
			} else if id, ok := t.tokenToID[fmt.Sprintf("<0x%02X>", str[k])]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}
