package tokenizer

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStreamDecoderBytes(t *testing.T) {
	d := &StreamDecoder{}
	type step struct {
		in, out string
	}
	cases := []struct {
		name  string
		steps []step
		flush string
	}{
		{"ascii", []step{{"ab", "ab"}, {"c", "c"}}, ""},
		{"euro split", []step{{"x\xe2", "x"}, {"\x82", ""}, {"\xac y", "€ y"}}, ""},
		{"4-byte split", []step{{"\xf0", ""}, {"\x9f", ""}, {"\x98", ""}, {"\x81", "😁"}}, ""},
		{"stray continuation", []step{{"a\x80b", "a\uFFFDb"}}, ""},
		{"bad lead", []step{{"\xff\xfe", "\uFFFD\uFFFD"}}, ""},
		{"truncated then ascii", []step{{"\xe2\x82", ""}, {"A", "\uFFFDA"}}, ""},
		{"overlong", []step{{"\xc0\xaf", "\uFFFD\uFFFD"}}, ""},
		{"surrogate", []step{{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}}, ""},
		{"held at flush", []step{{"ok\xe2\x82", "ok"}}, "\uFFFD"},
		{"held 4 at flush", []step{{"\xf0\x9f\x98", ""}}, "\uFFFD"},
		{"empty", []step{{"", ""}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d.Reset()
			for i, s := range c.steps {
				if got := d.PushBytes([]byte(s.in)); got != s.out {
					t.Errorf("step %d: push %q -> %q, want %q", i, s.in, got, s.out)
				}
			}
			if got := d.Flush(); got != c.flush {
				t.Errorf("flush %q, want %q", got, c.flush)
			}
			if d.Pending() != 0 {
				t.Errorf("%d bytes still pending", d.Pending())
			}
		})
	}
}

// TestStreamDecoderTokens feeds byte-fallback tokens one at a time: a
// character split over several tokens appears once complete, output is
// always valid UTF-8 and never more than 3 bytes are held.
func TestStreamDecoderTokens(t *testing.T) {
	tk := loadTok(t, "models/stories260K.gguf")
	for _, text := range []string{"€ and 😁 ok", "Äpfel ½ 我想在apple工作", "plain"} {
		ids, err := tk.Encode(text, true, false)
		if err != nil {
			t.Fatal(err)
		}
		d := tk.NewStreamDecoder()
		var sb strings.Builder
		for _, id := range ids {
			out := d.Push(id)
			if !utf8.ValidString(out) {
				t.Fatalf("%q: invalid UTF-8 released: %q", text, out)
			}
			if d.Pending() > 3 {
				t.Fatalf("%q: %d bytes held", text, d.Pending())
			}
			sb.WriteString(out)
		}
		sb.WriteString(d.Flush())
		// stream pieces keep the SPM prefix space (no strip)
		if got, want := sb.String(), " "+text; got != want {
			t.Errorf("stream %q, want %q", got, want)
		}
	}
	// a lone lead byte then a normal token: replacement, then the text
	lead, _ := tk.TokenID("<0xE2>")
	hi, _ := tk.Encode("Hi", false, false)
	d := tk.NewStreamDecoder()
	var sb strings.Builder
	sb.WriteString(d.Push(lead))
	for _, id := range hi {
		sb.WriteString(d.Push(id))
	}
	sb.WriteString(d.Flush())
	if got := sb.String(); got != "\uFFFD Hi" {
		t.Errorf("got %q", got)
	}
	// control tokens produce nothing
	if out := d.Push(tk.BOS()) + d.Push(tk.EOS()) + d.Flush(); out != "" {
		t.Errorf("control tokens streamed %q", out)
	}
}

func ExampleStreamDecoder() {
	d := (&Tokenizer{}).NewStreamDecoder()
	for _, b := range []string{"caf", "\xc3", "\xa9!"} {
		fmt.Printf("%q ", d.PushBytes([]byte(b)))
	}
	fmt.Printf("%q\n", d.Flush())
	// Output: "caf" "" "é!" ""
}
