package tokenizer

import "unicode/utf8"

// StreamDecoder turns generated tokens into text incrementally without ever
// releasing half a UTF-8 character: bytes are held until they complete a
// character. A byte sequence that can no longer become valid is released
// as U+FFFD (one per maximal ill-formed subpart), so nothing is held
// longer than needed. Control tokens contribute nothing.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
	out     []byte
}

// NewStreamDecoder returns a decoder for this vocabulary.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Push adds a token and returns the complete text it releases (maybe "").
func (d *StreamDecoder) Push(id int32) string {
	return d.PushBytes(d.t.Piece(id))
}

// PushBytes adds raw bytes (e.g. a piece rendered elsewhere).
func (d *StreamDecoder) PushBytes(b []byte) string {
	d.pending = append(d.pending, b...)
	return d.drain(false)
}

// Flush returns whatever remains; an incomplete character becomes U+FFFD.
func (d *StreamDecoder) Flush() string { return d.drain(true) }

// Reset discards held bytes.
func (d *StreamDecoder) Reset() { d.pending = d.pending[:0] }

// Pending reports how many bytes are held back.
func (d *StreamDecoder) Pending() int { return len(d.pending) }

func (d *StreamDecoder) drain(final bool) string {
	p := d.pending
	d.out = d.out[:0]
	i := 0
	for i < len(p) {
		c := p[i]
		if c < utf8.RuneSelf {
			d.out = append(d.out, c)
			i++
			continue
		}
		n, complete := validPrefix(p[i:])
		switch {
		case complete:
			d.out = append(d.out, p[i:i+n]...)
			i += n
		case n == len(p)-i && !final:
			// a valid but unfinished character at the end: hold it
			goto done
		default:
			// ill-formed (or unfinished at flush): one U+FFFD for the
			// maximal subpart
			d.out = append(d.out, "\uFFFD"...)
			i += max(n, 1)
		}
	}
done:
	d.pending = append(d.pending[:0], p[i:]...)
	return string(d.out)
}

// validPrefix examines a sequence starting with a non-ASCII byte. It
// returns the length of the longest prefix that is a valid start of a UTF-8
// character (the "maximal subpart", 0 if the first byte cannot start one)
// and whether that prefix is a whole character.
func validPrefix(b []byte) (int, bool) {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF) // range allowed for the second byte
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 2
	case c == 0xE0:
		need, lo = 3, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 3
	case c == 0xED:
		need, hi = 3, 0x9F
	case c == 0xF0:
		need, lo = 4, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 4
	case c == 0xF4:
		need, hi = 4, 0x8F
	default:
		return 0, false
	}
	n := 1
	for n < need && n < len(b) {
		x := b[n]
		if n == 1 {
			if x < lo || x > hi {
				return n, false
			}
		} else if x < 0x80 || x > 0xBF {
			return n, false
		}
		n++
	}
	return n, n == need
}
