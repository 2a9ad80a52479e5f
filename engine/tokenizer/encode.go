package tokenizer

import (
	"fmt"
	"strings"
)

// fragment is a piece of the input: raw text to tokenize, or a special
// token already recognised.
type fragment struct {
	token int32 // Null for text
	text  string
}

func isSpaceC(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

// partition splits text around special tokens as llama.cpp's
// tokenizer_st_partition: for each special token (longest first), every
// occurrence inside a remaining text fragment is cut out. Control and
// unknown tokens take part only when parseSpecial; user-defined tokens
// always do. lstrip/rstrip attributes eat whitespace beside the token.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{token: Null, text: text}}
	var next []fragment
	var present map[int32]bool
	if len(t.specials) > 32 && t.specialTrie != nil {
		present = t.specialTrie.occurring(text)
		if len(present) == 0 {
			return frags
		}
	}
	for _, id := range t.specials {
		attr := t.attrs[id]
		if !parseSpecial && attr&(AttrControl|AttrUnknown) != 0 {
			continue
		}
		if present != nil && !present[id] {
			continue
		}
		tok := t.tokens[id]
		changed := false
		next = next[:0]
		for _, fr := range frags {
			if fr.token != Null || !strings.Contains(fr.text, tok) {
				next = append(next, fr)
				continue
			}
			changed = true
			s := fr.text
			for {
				m := strings.Index(s, tok)
				if m < 0 {
					if s != "" {
						next = append(next, fragment{token: Null, text: s})
					}
					break
				}
				left := s[:m]
				if attr&AttrLStrip != 0 {
					for len(left) > 0 && isSpaceC(left[len(left)-1]) {
						left = left[:len(left)-1]
					}
				}
				if left != "" {
					next = append(next, fragment{token: Null, text: left})
				}
				next = append(next, fragment{token: id})
				s = s[m+len(tok):]
				if attr&AttrRStrip != 0 {
					for len(s) > 0 && isSpaceC(s[0]) {
						s = s[1:]
					}
				}
			}
		}
		if changed {
			frags, next = append(frags[:0:0], next...), frags
		}
	}
	return frags
}

// Encode tokenizes text as llama.cpp's llama_tokenize. addSpecial adds BOS
// and/or EOS as the vocabulary asks (tokenizer.ggml.add_bos_token /
// add_eos_token); parseSpecial lets control tokens written in the text
// (e.g. "<s>") become those tokens. User-defined tokens are always matched.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	frags := t.partition(text, parseSpecial)
	out := make([]int32, 0, len(text)/3+2)
	var err error
	switch t.kind {
	case KindSPM:
		s := t.getSPM()
		defer t.spmPool.Put(s)
		isPrevSpecial := true // prefix with a space if first
		if addSpecial && t.addBOS {
			out = append(out, t.bos)
		}
		for _, fr := range frags {
			if fr.token != Null {
				out = append(out, fr.token)
				isPrevSpecial = true
				continue
			}
			if out, err = s.tokenize(fr.text, t.addSpacePrefix && isPrevSpecial, out); err != nil {
				return nil, err
			}
			isPrevSpecial = false
		}
		if addSpecial && t.addEOS {
			out = append(out, t.eos)
		}
	case KindBPE:
		s := t.getBPE()
		defer t.bpePool.Put(s)
		if addSpecial && t.addBOS {
			out = append(out, t.bos)
		}
		for _, fr := range frags {
			if fr.token != Null {
				out = append(out, fr.token)
				continue
			}
			out = s.tokenize(fr.text, out)
		}
		if addSpecial && t.addEOS {
			out = append(out, t.eos)
		}
	default:
		return nil, fmt.Errorf("tokenizer: cannot encode with %v", t.kind)
	}
	return out, nil
}

// trie finds which special tokens occur in a text in one pass, so that
// partition (which must treat them one at a time, longest first, to match
// llama.cpp) only searches for those.
type trie struct {
	edges map[uint64]int32 // node<<8 | byte -> child
	term  []int32          // node -> token id or Null
	first [256]bool        // bytes that start some key
}

func newTrie() *trie { return &trie{edges: map[uint64]int32{}, term: []int32{Null}} }

func (tr *trie) insert(s string, id int32) {
	if s == "" {
		return
	}
	tr.first[s[0]] = true
	n := int32(0)
	for i := 0; i < len(s); i++ {
		k := uint64(n)<<8 | uint64(s[i])
		c, ok := tr.edges[k]
		if !ok {
			c = int32(len(tr.term))
			tr.term = append(tr.term, Null)
			tr.edges[k] = c
		}
		n = c
	}
	tr.term[n] = id
}

func (tr *trie) occurring(text string) map[int32]bool {
	var found map[int32]bool
	for i := 0; i < len(text); i++ {
		if !tr.first[text[i]] {
			continue
		}
		n := int32(0)
		for j := i; j < len(text); j++ {
			c, ok := tr.edges[uint64(n)<<8|uint64(text[j])]
			if !ok {
				break
			}
			n = c
			if id := tr.term[n]; id != Null {
				if found == nil {
					found = map[int32]bool{}
				}
				found[id] = true
			}
		}
	}
	return found
}
