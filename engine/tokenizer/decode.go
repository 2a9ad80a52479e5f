package tokenizer

import (
	"fmt"
	"strings"
)

// tokenPiece is llama.cpp's token_to_piece without the cache: the bytes a
// token contributes to text. Unknown and control tokens are empty unless
// special is set.
func (t *Tokenizer) tokenPiece(id int32, special bool) []byte {
	if !t.valid(id) {
		return nil
	}
	attr := t.attrs[id]
	const attrSpecial = AttrUnknown | AttrControl
	if !special && attr&attrSpecial != 0 {
		return nil
	}
	text := t.tokens[id]
	switch {
	case attr&(attrSpecial|AttrUserDefined) != 0:
		return []byte(text)
	case attr&AttrNormal != 0:
		if t.kind == KindSPM || t.escapeWhitespace {
			return []byte(strings.ReplaceAll(text, "\u2581", " "))
		}
		return decodeByteLevel(text)
	case attr&AttrByte != 0:
		return []byte{tokenToByte(text)}
	}
	return nil
}

// tokenToByte parses "<0xXX>".
func tokenToByte(text string) byte {
	var v byte
	if len(text) >= 5 {
		for _, c := range []byte(text[3:5]) {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= c - '0'
			case c >= 'a' && c <= 'f':
				v |= c - 'a' + 10
			case c >= 'A' && c <= 'F':
				v |= c - 'A' + 10
			}
		}
	}
	return v
}

// decodeByteLevel maps GPT-2 byte-level text back to bytes (llama.cpp's
// llama_decode_text, including its odd marker for unmapped characters).
func decodeByteLevel(text string) []byte {
	out := make([]byte, 0, len(text))
	var cpts [64]rune
	for _, r := range decodeCpts(text, cpts[:0]) {
		if b, ok := unicodeToByte[r]; ok {
			out = append(out, b)
			continue
		}
		out = append(out, "[UNK_BYTE_0x"...)
		for _, c := range appendCpt(nil, r) {
			out = fmt.Appendf(out, "%02x", c)
		}
		out = append(out, text...)
		out = append(out, ']')
	}
	return out
}

// Piece returns the bytes a token contributes to text: "▁" becomes a space,
// byte tokens their byte, BPE tokens their decoded bytes; control and
// unknown tokens contribute nothing. No leading space is stripped.
func (t *Tokenizer) Piece(id int32) []byte {
	if !t.valid(id) {
		return nil
	}
	if t.attrs[id]&(AttrUnknown|AttrControl) != 0 {
		return nil
	}
	return []byte(t.pieces[id])
}

// PieceSpecial is Piece, but control and unknown tokens render as their
// text (e.g. "<s>"), as llama.cpp's token_to_piece with special=true.
func (t *Tokenizer) PieceSpecial(id int32) []byte {
	if !t.valid(id) {
		return nil
	}
	return []byte(t.pieces[id])
}

func (t *Tokenizer) cachedPiece(id int32, special bool) string {
	if !t.valid(id) {
		return ""
	}
	if !special && t.attrs[id]&(AttrUnknown|AttrControl) != 0 {
		return ""
	}
	return t.pieces[id]
}

// Decode is llama.cpp's detokenize with remove_special=false and
// unparse_special=false: control tokens vanish, the first token loses one
// leading space when the vocabulary adds a space prefix (SPM), and BPE
// vocabularies apply llama.cpp's clean-up of spaces before punctuation
// where the pre-tokenizer asks for it. The result may contain invalid UTF-8
// if the ids split a character.
func (t *Tokenizer) Decode(ids []int32) string {
	return t.Detokenize(ids, false, false)
}

// Detokenize is llama.cpp's llama_detokenize. removeSpecial drops a leading
// BOS (and keeps the following space) and a trailing EOS when the
// vocabulary adds them; unparseSpecial renders control tokens as text.
func (t *Tokenizer) Detokenize(ids []int32, removeSpecial, unparseSpecial bool) string {
	removeSpace := t.addSpacePrefix
	if removeSpecial && t.addBOS && len(ids) > 0 && ids[0] == t.bos {
		removeSpace = false
		ids = ids[1:]
	}
	if removeSpecial && t.addEOS && len(ids) > 0 && ids[len(ids)-1] == t.eos {
		ids = ids[:len(ids)-1]
	}
	var buf []byte
	for _, id := range ids {
		p := t.cachedPiece(id, unparseSpecial)
		if removeSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		removeSpace = false
		buf = append(buf, p...)
	}
	if t.cleanSpaces {
		buf = cleanSpaces(buf)
	}
	return string(buf)
}

// cleanSpaces ports llama.cpp's three in-place clean-up passes literally
// (their in-place quirks included).
func cleanSpaces(text []byte) []byte {
	// first pass: " ?", " !", " .", " ,"
	total1 := len(text)
	total := 0
	if total1 > 0 {
		total = 1
	}
	for i := 1; i < total1; i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			total--
		}
		text[total] = x
		total++
	}
	// second pass: strip a single apostrophe between spaces
	total2 := total
	if total2 > 0 {
		total = 1
	} else {
		total = 0
	}
	for i := 1; i < total2; i++ {
		x := text[i]
		if x == '\'' && i+1 < total2 && text[i-1] == ' ' && text[i+1] == ' ' {
			total--
			i++
			text[i] = 0
		}
		text[total] = x
		total++
	}
	// third pass: apostrophe contractions
	total3 := total
	if total3 > 0 {
		total = 1
	} else {
		total = 0
	}
	for i := 1; i < total3; i++ {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < total3 {
			x1 := text[i+1]
			if x1 == 't' || x1 == 'd' {
				// " 't", " 'd": keep
			} else if x1 == 's' || x1 == 'm' {
				total--
			} else if i+2 < total3 {
				x2 := text[i+2]
				if x1 == 'l' && x2 == 'l' {
					// keep
				} else if (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e') {
					total--
				}
			}
		}
		text[total] = x
		total++
	}
	return text[:total]
}
