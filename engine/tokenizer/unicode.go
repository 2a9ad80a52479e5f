package tokenizer

import (
	"sync"
	"unicode"
)

// Code point flags, bit-compatible with llama.cpp's unicode_cpt_flags. The
// category bits come from the Unicode general category as Python's `regex`
// module classifies it (\p{C} includes unassigned code points, so every code
// point below 0x110000 has exactly one category bit); whitespace is the
// Unicode White_Space property, as `regex`'s \s.
type cptFlags uint16

const (
	flagUndefined   cptFlags = 0x0001
	flagNumber      cptFlags = 0x0002 // \p{N}
	flagLetter      cptFlags = 0x0004 // \p{L}
	flagSeparator   cptFlags = 0x0008 // \p{Z}
	flagAccentMark  cptFlags = 0x0010 // \p{M}
	flagPunctuation cptFlags = 0x0020 // \p{P}
	flagSymbol      cptFlags = 0x0040 // \p{S}
	flagControl     cptFlags = 0x0080 // \p{C}
	flagCategories  cptFlags = 0x00FF
	flagWhitespace  cptFlags = 0x0100
)

const maxCodepoint = 0x110000

func (f cptFlags) isNumber() bool     { return f&flagNumber != 0 }
func (f cptFlags) isLetter() bool     { return f&flagLetter != 0 }
func (f cptFlags) isWhitespace() bool { return f&flagWhitespace != 0 }

// The flag table: a category code per code point (bits 0-2) plus the
// whitespace bit (0x80), stored as 256-entry blocks with identical blocks
// shared. Built once from Go's Unicode tables (Unicode 15.0).
var (
	flagTableOnce sync.Once
	flagBlocks    []*[256]uint8 // indexed by r>>8
)

var codeFlags = [8]cptFlags{flagControl, flagLetter, flagNumber, flagAccentMark, flagPunctuation, flagSymbol, flagSeparator, flagControl}

func buildFlagTable() {
	full := make([]uint8, maxCodepoint) // 0: control (Cc, Cf, Cs, Co, Cn)
	for _, c := range []struct {
		t    *unicode.RangeTable
		code uint8
	}{{unicode.L, 1}, {unicode.N, 2}, {unicode.M, 3}, {unicode.P, 4}, {unicode.S, 5}, {unicode.Z, 6}, {unicode.White_Space, 0x80}} {
		set := func(lo, hi, stride int) {
			for r := lo; r <= hi; r += stride {
				full[r] |= c.code
			}
		}
		for _, rg := range c.t.R16 {
			set(int(rg.Lo), int(rg.Hi), int(rg.Stride))
		}
		for _, rg := range c.t.R32 {
			set(int(rg.Lo), int(rg.Hi), int(rg.Stride))
		}
	}
	uniq := map[[256]uint8]*[256]uint8{}
	flagBlocks = make([]*[256]uint8, maxCodepoint>>8)
	for i := range flagBlocks {
		var blk [256]uint8
		copy(blk[:], full[i<<8:])
		p, ok := uniq[blk]
		if !ok {
			p = &blk
			uniq[blk] = p
		}
		flagBlocks[i] = p
	}
}

// computeFlags classifies r from the Unicode tables directly (the
// reference for the table, used by tests).
func computeFlags(r rune) cptFlags {
	if r < 0 || r >= maxCodepoint {
		return flagUndefined
	}
	var f cptFlags
	switch {
	case unicode.IsLetter(r):
		f = flagLetter
	case unicode.IsNumber(r):
		f = flagNumber
	case unicode.IsMark(r):
		f = flagAccentMark
	case unicode.IsPunct(r):
		f = flagPunctuation
	case unicode.IsSymbol(r):
		f = flagSymbol
	case unicode.Is(unicode.Z, r):
		f = flagSeparator
	default: // Cc, Cf, Cs, Co, Cn
		f = flagControl
	}
	if unicode.Is(unicode.White_Space, r) {
		f |= flagWhitespace
	}
	return f
}

// flagsOf returns the flags of a code point (flagUndefined past U+10FFFF).
func flagsOf(r rune) cptFlags {
	if r < 0 || r >= maxCodepoint {
		return flagUndefined
	}
	flagTableOnce.Do(buildFlagTable)
	c := flagBlocks[r>>8][r&0xFF]
	f := codeFlags[c&7]
	if c&0x80 != 0 {
		f |= flagWhitespace
	}
	return f
}

// utf8Len is llama.cpp's unicode_len_utf8: the length a lead byte announces,
// 1 for continuation and ASCII bytes. It does not validate.
func utf8Len(b byte) int {
	return int(utf8LenTable[b>>4])
}

var utf8LenTable = [16]uint8{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}

// decodeCpts converts text to code points exactly as llama.cpp's
// unicode_cpts_from_utf8: lead/continuation bits are checked but overlong
// forms and surrogates are accepted; each byte that does not start a
// well-formed sequence becomes U+FFFD.
func decodeCpts(s string, dst []rune) []rune {
	dst = dst[:0]
	n := len(s)
	for i := 0; i < n; {
		c := s[i]
		switch {
		case c < 0x80:
			dst = append(dst, rune(c))
			i++
			continue
		case c&0x40 == 0:
			// stray continuation byte
		case c&0x20 == 0:
			if i+1 < n && s[i+1]&0xC0 == 0x80 {
				dst = append(dst, rune(c&0x1F)<<6|rune(s[i+1]&0x3F))
				i += 2
				continue
			}
		case c&0x10 == 0:
			if i+2 < n && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 {
				dst = append(dst, rune(c&0x0F)<<12|rune(s[i+1]&0x3F)<<6|rune(s[i+2]&0x3F))
				i += 3
				continue
			}
		case c&0x08 == 0:
			if i+3 < n && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 && s[i+3]&0xC0 == 0x80 {
				r := rune(c&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F)
				if r >= maxCodepoint {
					// llama.cpp would throw when re-encoding this; we
					// treat the sequence as invalid instead.
					r = 0xFFFD
				}
				dst = append(dst, r)
				i += 4
				continue
			}
		}
		dst = append(dst, 0xFFFD)
		i++
	}
	return dst
}

// appendCpt encodes a code point as llama.cpp's unicode_cpt_to_utf8 does
// (surrogates are encoded like any other code point, unlike utf8.AppendRune).
func appendCpt(dst []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(dst, byte(r))
	case r < 0x800:
		return append(dst, 0xC0|byte(r>>6&0x1F), 0x80|byte(r&0x3F))
	case r < 0x10000:
		return append(dst, 0xE0|byte(r>>12&0x0F), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	default:
		return append(dst, 0xF0|byte(r>>18&0x07), 0x80|byte(r>>12&0x3F), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	}
}

// GPT-2 byte-level mapping: every byte maps to a printable code point.
var (
	byteToUnicode [256]string // byte -> UTF-8 of its code point
	unicodeToByte map[rune]byte
)

func init() {
	var cp [256]rune
	used := [256]bool{}
	for c := 0x21; c <= 0x7E; c++ {
		cp[c], used[c] = rune(c), true
	}
	for c := 0xA1; c <= 0xAC; c++ {
		cp[c], used[c] = rune(c), true
	}
	for c := 0xAE; c <= 0xFF; c++ {
		cp[c], used[c] = rune(c), true
	}
	n := 0
	for c := 0; c < 256; c++ {
		if !used[c] {
			cp[c] = rune(256 + n)
			n++
		}
	}
	unicodeToByte = make(map[rune]byte, 256)
	for c := 0; c < 256; c++ {
		byteToUnicode[c] = string(appendCpt(nil, cp[c]))
		unicodeToByte[cp[c]] = byte(c)
	}
}
