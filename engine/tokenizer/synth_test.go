package tokenizer

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weos/llm-engine/engine/gguf"
)

// withKVs rewrites a shared vocabulary GGUF in memory with some metadata
// replaced (nil value: removed) and builds its tokenizer.
func withKVs(t *testing.T, rel string, set map[string]any) (*Tokenizer, error) {
	t.Helper()
	f, err := gguf.Open(filepath.Join(sharedDir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kvs []gguf.KV
	seen := map[string]bool{}
	for _, kv := range f.KV {
		if v, ok := set[kv.Key]; ok {
			seen[kv.Key] = true
			if v == nil {
				continue
			}
			kv = mkKV(kv.Key, v)
		}
		kvs = append(kvs, kv)
	}
	for k, v := range set {
		if !seen[k] && v != nil {
			kvs = append(kvs, mkKV(k, v))
		}
	}
	var buf bytes.Buffer
	if err := gguf.Write(&buf, kvs, nil); err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return FromGGUF(g)
}

func mkKV(k string, v any) gguf.KV {
	switch x := v.(type) {
	case string:
		return gguf.KV{Key: k, Type: gguf.TypeString, Value: x}
	case bool:
		return gguf.KV{Key: k, Type: gguf.TypeBool, Value: x}
	case uint32:
		return gguf.KV{Key: k, Type: gguf.TypeUint32, Value: x}
	}
	panic("mkKV")
}

func TestErrors(t *testing.T) {
	_, err := withKVs(t, "vocab/ggml-vocab-gpt-2.gguf", map[string]any{"tokenizer.ggml.pre": "no-such-pre"})
	if err == nil || !strings.Contains(err.Error(), `"no-such-pre"`) {
		t.Errorf("unknown pre: %v", err)
	}
	_, err = withKVs(t, "vocab/ggml-vocab-gpt-2.gguf", map[string]any{"tokenizer.ggml.model": "t5"})
	if err == nil || !strings.Contains(err.Error(), `"t5"`) {
		t.Errorf("unknown model: %v", err)
	}
	_, err = withKVs(t, "vocab/ggml-vocab-gpt-2.gguf", map[string]any{"tokenizer.ggml.merges": nil})
	if err == nil || !strings.Contains(err.Error(), "merges") {
		t.Errorf("missing merges: %v", err)
	}
	_, err = withKVs(t, "vocab/ggml-vocab-gpt-2.gguf", map[string]any{"tokenizer.ggml.add_bos_token": true, "tokenizer.ggml.bos_token_id": uint32(1 << 30)})
	if err != nil {
		t.Errorf("out-of-range bos keeps the default: %v", err)
	}
	if _, err := FromGGUF(nil); err == nil {
		t.Error("nil file accepted")
	}
}

// TestMPTRefgen: MPT uses the GPT-NeoX-20B vocabulary; the gpt-neox vocab
// file with tokenizer.ggml.pre = "mpt" must reproduce llama.cpp's mpt
// vectors (this also exercises NeoX's user-defined whitespace tokens,
// matched before BPE even without parse_special).
func TestMPTRefgen(t *testing.T) {
	tk, err := withKVs(t, "vocab/ggml-vocab-gpt-neox.gguf", map[string]any{"tokenizer.ggml.pre": "mpt"})
	if err != nil {
		t.Fatal(err)
	}
	checkRefCases(t, tk, readRefTests(t, "ggml-vocab-mpt.gguf.refgen.json"), "mpt (gpt-neox vocab)")
}

// overlay is metadata with some keys replaced.
type overlay struct {
	*gguf.File
	str map[string]string
}

func (o overlay) String(key string) (string, bool) {
	if v, ok := o.str[key]; ok {
		return v, true
	}
	return o.File.String(key)
}

// TestPreVariants runs the other pre-tokenizers over a real merge table
// (GPT-2's) to check they load, split and round-trip.
func TestPreVariants(t *testing.T) {
	cases := readVocabTests(t, "ggml-vocab-gpt-2.gguf")
	f, err := gguf.Open(filepath.Join(sharedDir(t), "vocab/ggml-vocab-gpt-2.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, pre := range []string{"llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "falcon", "starcoder",
		"refact", "smollm", "mpt", "default", "command-r", "stablelm2", "olmo", "dbrx", "poro-chat", "viking",
		"jais", "tekken", "chameleon", "gpt-4o", "bailingmoe", "seed-coder", "grok-2", "exaone-moe", "minicpm5",
		"superbpe", "tiny_aya", "deepseek-v3", "youtu", "afmoe", "jais-2", "granite-embed-multi-97m", "laguna", "qwen35"} {
		t.Run(pre, func(t *testing.T) {
			tk, err := fromMetadata(overlay{f, map[string]string{"tokenizer.ggml.pre": pre}})
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range cases {
				ids, err := tk.Encode(c.text, false, false)
				if err != nil {
					t.Fatal(err)
				}
				var sb strings.Builder
				for _, id := range ids {
					sb.Write(tk.Piece(id))
				}
				if sb.String() != c.text {
					t.Errorf("case %d: pieces %q, want %q", i, sb.String(), c.text)
				}
			}
		})
	}
}
