package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

type spmSymbol struct {
	prev, next int32
	start, n   int32 // text = s.text[start:start+n]
}

type spmBigram struct {
	left, right int32
	score       float32
	size        int32
}

// spmLess orders the queue: highest score first, then leftmost.
func spmBefore(a, b *spmBigram) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

type spmSession struct {
	t       *Tokenizer
	text    string
	symbols []spmSymbol
	heap    []spmBigram
	sb      strings.Builder
}

func (t *Tokenizer) newSPMSession() *spmSession { return &spmSession{t: t} }

func (s *spmSession) push(b spmBigram) {
	h := append(s.heap, b)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !spmBefore(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	s.heap = h
}

func (s *spmSession) pop() spmBigram {
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
		if r := l + 1; r < len(h) && spmBefore(&h[r], &h[l]) {
			m = r
		}
		if !spmBefore(&h[m], &h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	s.heap = h
	return top
}

func (s *spmSession) tryAddBigram(left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	l := &s.symbols[left]
	r := &s.symbols[right]
	size := l.n + r.n
	id, ok := s.t.tokenToID[s.text[l.start:l.start+size]]
	if !ok {
		return
	}
	s.push(spmBigram{left: left, right: right, score: s.t.scores[id], size: size})
}

// tokenize is llm_tokenizer_spm_session::tokenize on one text fragment:
// escape spaces as U+2581 (with an optional leading one), split into UTF-8
// characters, merge the best-scoring adjacent pair that forms a token until
// none does, then emit each symbol as its token or as byte tokens.
func (s *spmSession) tokenize(raw string, spacePrefix bool, out []int32) ([]int32, error) {
	s.sb.Reset()
	if spacePrefix {
		s.sb.WriteString("\u2581")
	}
	for i := 0; i < len(raw); {
		j := strings.IndexByte(raw[i:], ' ')
		if j < 0 {
			s.sb.WriteString(raw[i:])
			break
		}
		s.sb.WriteString(raw[i : i+j])
		s.sb.WriteString("\u2581")
		i += j + 1
	}
	text := s.sb.String()
	if !s.t.spmSegmentable || !utf8.ValidString(text) {
		return s.merge(text, out)
	}
	// No token has "▁" after another character, so no merge can cross the
	// start of a run of "▁": tokenize each such segment on its own (the
	// merge order within a segment is unchanged) and memoize it.
	var err error
	seg := 0
	for i := 0; i <= len(text); {
		if i < len(text) && (i == seg || !strings.HasPrefix(text[i:], "\u2581") || strings.HasSuffix(text[:i], "\u2581")) {
			i++
			continue
		}
		word := text[seg:i]
		if ids, ok := s.t.cache.getString(word); ok {
			out = append(out, ids...)
		} else {
			n0 := len(out)
			if out, err = s.merge(word, out); err != nil {
				return nil, err
			}
			s.t.cache.put(word, out[n0:])
		}
		seg = i
		if i == len(text) {
			break
		}
	}
	return out, nil
}

// merge runs the SPM merge loop over text and appends the tokens.
func (s *spmSession) merge(text string, out []int32) ([]int32, error) {
	s.text = text
	s.symbols = s.symbols[:0]
	s.heap = s.heap[:0]
	for offs := 0; offs < len(text); {
		n := min(utf8Len(text[offs]), len(text)-offs)
		idx := int32(len(s.symbols))
		next := idx + 1
		if offs+n == len(text) {
			next = -1
		}
		s.symbols = append(s.symbols, spmSymbol{prev: idx - 1, next: next, start: int32(offs), n: int32(n)})
		offs += n
	}
	for i := 1; i < len(s.symbols); i++ {
		s.tryAddBigram(int32(i-1), int32(i))
	}
	for len(s.heap) > 0 {
		b := s.pop()
		l := &s.symbols[b.left]
		r := &s.symbols[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			s.symbols[r.next].prev = b.left
		}
		s.tryAddBigram(l.prev, b.left)
		s.tryAddBigram(b.left, l.next)
	}
	if len(s.symbols) == 0 {
		return out, nil
	}
	for i := int32(0); i != -1; i = s.symbols[i].next {
		sym := s.symbols[i]
		piece := text[sym.start : sym.start+sym.n]
		if id, ok := s.t.tokenToID[piece]; ok {
			out = append(out, id)
			continue
		}
		// not a token: byte fallback (llama.cpp's rev_merge lookup never
		// matches here, since merged symbols are always tokens)
		for k := 0; k < len(piece); k++ {
			id := s.t.byteTokens[piece[k]]
			if id == Null {
				return nil, fmt.Errorf("tokenizer: no byte token for 0x%02X", piece[k])
			}
			out = append(out, id)
		}
	}
	return out, nil
}
