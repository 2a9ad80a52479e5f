package tokenizer

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/weos/llm-engine/engine/gguf"
)

func findShared() string {
	for _, d := range []string{os.Getenv("LLM_ENGINE_SHARED"), "../../../shared", "../../shared"} {
		if d == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(d, "vocab")); err == nil && st.IsDir() {
			return d
		}
	}
	return ""
}

// sharedDir locates the shared reference data ($LLM_ENGINE_SHARED, else
// ../shared from the repository root) and skips loudly without it.
func sharedDir(t testing.TB) string {
	t.Helper()
	if d := findShared(); d != "" {
		return d
	}
	msg := fmt.Sprintf("!!!!! SKIPPING %s: shared reference data not found (set LLM_ENGINE_SHARED, or put it at ../shared from the repository root): llama.cpp tokenizer checks SKIPPED !!!!!", t.Name())
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

var (
	tokCacheMu sync.Mutex
	tokCache   = map[string]*Tokenizer{}
)

// loadTok loads (once) the tokenizer of a shared GGUF, path relative to the
// shared folder.
func loadTok(t testing.TB, rel string) *Tokenizer {
	t.Helper()
	dir := sharedDir(t)
	path := filepath.Join(dir, rel)
	tokCacheMu.Lock()
	defer tokCacheMu.Unlock()
	if tk, ok := tokCache[path]; ok {
		return tk
	}
	tk, err := openTok(path)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	tokCache[path] = tk
	return tk
}

func openTok(path string) (*Tokenizer, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return FromGGUF(f)
}

func loadTokErr(path string) (*Tokenizer, error) {
	tokCacheMu.Lock()
	defer tokCacheMu.Unlock()
	if tk, ok := tokCache[path]; ok {
		return tk, nil
	}
	tk, err := openTok(path)
	if err == nil {
		tokCache[path] = tk
	}
	return tk, err
}

// vocabCase is one string of llama.cpp's test-tokenizer-0 data.
type vocabCase struct {
	text string
	ids  []int32
}

// readVocabTests reads vocab/<name>.inp/.out.
func readVocabTests(t testing.TB, name string) []vocabCase {
	t.Helper()
	dir := sharedDir(t)
	inp, err := os.ReadFile(filepath.Join(dir, "vocab", name+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join(dir, "vocab", name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	s := strings.TrimSuffix(string(inp), sep)
	texts := strings.Split(s, sep)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(texts) != len(lines) {
		t.Fatalf("%s: %d strings but %d result lines", name, len(texts), len(lines))
	}
	cases := make([]vocabCase, len(texts))
	for i := range texts {
		cases[i].text = texts[i]
		cases[i].ids = parseIDs(t, lines[i])
	}
	return cases
}

func parseIDs(t testing.TB, line string) []int32 {
	var ids []int32
	for _, f := range strings.Fields(line) {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			t.Fatalf("bad id %q", f)
		}
		ids = append(ids, int32(v))
	}
	return ids
}

// refCase is one entry of reference/tokenizer/*.json.
type refCase struct {
	TextHex       string   `json:"text_hex"`
	IDs           []int32  `json:"ids"`
	IDsAddSpecial []int32  `json:"ids_add_special"`
	PiecesHex     []string `json:"pieces_hex"`
}

func readRefTests(t testing.TB, name string) []refCase {
	t.Helper()
	dir := sharedDir(t)
	b, err := os.ReadFile(filepath.Join(dir, "reference", "tokenizer", name))
	if err != nil {
		t.Fatal(err)
	}
	var cases []refCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cases
}

func unhex(t testing.TB, s string) string {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q", s)
	}
	return string(b)
}

func eqIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// firstDiff describes where two id lists diverge.
func firstDiff(tk *Tokenizer, got, want []int32) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	show := func(ids []int32) string {
		var sb strings.Builder
		for j := max(0, i-2); j < min(len(ids), i+4); j++ {
			fmt.Fprintf(&sb, " %d%q", ids[j], tk.Text(ids[j]))
		}
		return sb.String()
	}
	return fmt.Sprintf("diverge at %d (got %d ids, want %d)\n  got: %s\n want: %s", i, len(got), len(want), show(got), show(want))
}
