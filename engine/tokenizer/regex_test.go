package tokenizer

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// randomText draws from an alphabet that exercises the pre-tokenizer
// classes: ASCII letters/digits/punctuation, whitespace of several kinds,
// apostrophes, accented and CJK letters, marks, symbols, emoji.
func randomText(r *rand.Rand, n int) string {
	alpha := []string{"a", "b", "Z", "s", "t", "'", "'", "1", "2", "3", " ", " ", " ", "  ", "\n", "\r", "\t", "\v",
		".", ",", "!", "?", "-", "$", "+", "<", "~", "|", "`", "_", "(", "é", "Ä", "ß", "ж", "我", "想", "½", "²",
		"\u0301", "\u00a0", "\u3000", "\u2028", "€", "😁", "🦙", "\u200d", "ll", "re", "VE", "D", "M", "\x00", "\x1f",
		"\u0085", "\u00ad", "٣", "Ⅻ", "\U0001d7d8", "\uffff", "\U000e0001", "\ud7ff", "ǅ", "ʰ", "\u0903", "\u20dd"}
	var sb strings.Builder
	for i := 0; i < n; i++ {
		sb.WriteString(alpha[r.Intn(len(alpha))])
	}
	return sb.String()
}

func splitWith(t *testing.T, src string, custom func([]rune, []int, []int) []int, text string) (a, b []int) {
	t.Helper()
	cpts := decodeCpts(text, nil)
	offs := []int{len(cpts)}
	a = custom(cpts, offs, nil)
	re, err := compileRegex(src, true)
	if err != nil {
		t.Fatal(err)
	}
	coll := make([]rune, len(cpts))
	for i, c := range cpts {
		coll[i] = collapse(c)
	}
	b = re.split(coll, 0, len(coll), nil)
	return
}

// TestCustomSplittersMatchRegex cross-checks the hand-written splitters
// against the backtracking engine running the same pattern on collapsed
// text. llama.cpp uses the hand-written GPT-2 and Llama-3 splitters (so
// they are the reference there) and std::regex for Qwen2 (so the pattern
// is the reference and our hand-written Qwen2 splitter must agree with it).
func TestCustomSplittersMatchRegex(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for _, c := range []struct {
		name, re string
		f        func([]rune, []int, []int) []int
	}{
		{"gpt2", reGPT2, splitCustomGPT2},
		{"llama3", reLlama3, func(c []rune, o, out []int) []int { return splitCustomLlama3(c, o, out, 3) }},
		{"qwen2", reQwen2, func(c []rune, o, out []int) []int { return splitCustomLlama3(c, o, out, 1) }},
	} {
		r := rand.New(rand.NewSource(1))
		for i := 0; i < n; i++ {
			text := randomText(r, 1+r.Intn(40))
			a, b := splitWith(t, c.re, c.f, text)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s %q: custom %v, regex %v", c.name, text, a, b)
			}
		}
	}
}

func TestRegexEngine(t *testing.T) {
	cases := []struct {
		re        string
		collapsed bool
		text      string
		want      []string
	}{
		{"\\s+(?!\\S)|\\s+", false, "a   b  ", []string{"a", "  ", " ", "b", "  "}},
		{"[0-9][0-9][0-9]", false, "1234567", []string{"123", "456", "7"}},
		{"\\p{N}{1,3}", true, "12345x", []string{"123", "45", "x"}},
		{"\\s?\\p{L}+", true, "hi there, Ärger", []string{"hi", " there", ",", " Ärger"}},
		{"[\\p{P}\\$\\+<=>\\^~\\|]+", true, "a+b...c~", []string{"a", "+", "b", "...", "c", "~"}},
		{"\\s+$", false, "ab  ", []string{"ab", "  "}},
		{"(?:'[sS]|'[tT])|\\p{L}+", true, "it'S", []string{"it", "'S"}},
		{"((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+", true, "HTMLParser", []string{"HTMLParser"}},
		{"((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+", true, "helloWorld", []string{"hello", "World"}},
		{"\\d{1,3}(?=(?:\\d{3})*\\b)", false, "1234567", []string{"1", "234", "567"}},
		{"(?=(\\d{3})+(?!\\d))", false, "1234", []string{"1", "", "234"}},
		{"a*?b", false, "aab", []string{"aab"}},
		{"(ab)*c", false, "ababc", []string{"ababc"}},
		{"(a|)*b", false, "aab", []string{"aab"}},
		{" ?[^(\\s|.,!?…。，、।۔،)]+", false, "hi, you…ok", []string{"hi", ",", " you", "…", "ok"}},
	}
	for _, c := range cases {
		re, err := compileRegex(c.re, c.collapsed)
		if err != nil {
			t.Fatalf("%q: %v", c.re, err)
		}
		cpts := []rune(c.text)
		eff := make([]rune, len(cpts))
		for i, r := range cpts {
			if c.collapsed {
				eff[i] = collapse(r)
			} else {
				eff[i] = wide(r)
			}
		}
		offs := re.split(eff, 0, len(eff), nil)
		var got []string
		p := 0
		for _, o := range offs {
			got = append(got, string(cpts[p:p+o]))
			p += o
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q on %q: got %q, want %q", c.re, c.text, got, c.want)
		}
	}
	// every pre-tokenizer's patterns compile
	for name := range preTable {
		if _, err := lookupPre(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestFlagTable(t *testing.T) {
	for r := rune(0); r < maxCodepoint; r++ {
		if a, b := flagsOf(r), computeFlags(r); a != b {
			t.Fatalf("U+%04X: table %#x, direct %#x", r, a, b)
		}
	}
	if flagsOf(maxCodepoint) != flagUndefined || flagsOf(-1) != flagUndefined {
		t.Error("out of range")
	}
	// a few llama.cpp facts
	for _, c := range []struct {
		r rune
		f cptFlags
	}{{' ', flagSeparator | flagWhitespace}, {'\n', flagControl | flagWhitespace}, {0x85, flagControl | flagWhitespace},
		{0xA0, flagSeparator | flagWhitespace}, {0x1C, flagControl}, {'~', flagSymbol}, {'_', flagPunctuation},
		{0x0301, flagAccentMark}, {0x2163, flagNumber}, {0xFFFF, flagControl}, {0x3000, flagSeparator | flagWhitespace}} {
		if f := flagsOf(c.r); f != c.f {
			t.Errorf("U+%04X: %#x, want %#x", c.r, f, c.f)
		}
	}
}
