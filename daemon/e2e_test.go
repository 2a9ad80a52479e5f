package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
)

// sharedDir finds ../shared (from the repo root) or $LLM_ENGINE_SHARED, or
// skips loudly: these tests compare against llama.cpp's reference outputs.
func sharedDir(t *testing.T) string {
	t.Helper()
	for _, d := range []string{os.Getenv("LLM_ENGINE_SHARED"), "../../shared"} {
		if d == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(d, "reference")); err == nil && st.IsDir() {
			return d
		}
	}
	t.Skip("SKIP (LOUD): ../shared (or $LLM_ENGINE_SHARED) is absent: the end-to-end comparison with llama.cpp's reference outputs did not run")
	return ""
}

type refGen struct {
	PromptTokens []int32 `json:"prompt_tokens"`
	GenTokens    []int32 `json:"gen_tokens"`
	PromptHex    string  `json:"prompt_hex"`
}

// Greedy 64-token continuations of stories260K through the real daemon over
// a real socket equal llama.cpp's (f32kv_nofa, 1 thread) exactly, streamed
// notifications included; and the logits are bit-identical whether the
// engine runs on 1 or 2 worker threads.
func TestEndToEndStories260KMatchesLlamaCpp(t *testing.T) {
	shared := sharedDir(t)
	modelPath := filepath.Join(shared, "models", "stories260K.gguf")
	var digests [][]string
	for _, threads := range []int{1, 2} {
		eng, err := engine.New(engine.Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		s := daemontest.Start(t, daemon.Config{}, eng)
		c := dialT(t, s.Path)
		var runDigests []string
		for _, p := range []string{"p1", "p2", "p5"} {
			raw, err := os.ReadFile(filepath.Join(shared, "reference/gen/stories260K-F32", p, "f32kv_nofa-t1.json"))
			if err != nil {
				t.Fatal(err)
			}
			var ref refGen
			if err := json.Unmarshal(raw, &ref); err != nil {
				t.Fatal(err)
			}
			prompt := decodeHex(t, ref.PromptHex)
			var streamed []engine.TokenEvent
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			res, err := c.Generate(ctx, engine.GenerateRequest{
				Model: modelPath, Prompt: prompt, MaxTokens: len(ref.GenTokens),
				Stream: true, LogitsDigest: true,
			}, func(ev engine.TokenEvent) { streamed = append(streamed, ev) })
			cancel()
			if err != nil {
				t.Fatalf("threads=%d %s: %v", threads, p, err)
			}
			if !slices.Equal(res.PromptTokens, ref.PromptTokens) {
				t.Errorf("threads=%d %s: prompt tokens %v, llama.cpp %v", threads, p, res.PromptTokens, ref.PromptTokens)
			}
			if !slices.Equal(res.Tokens, ref.GenTokens) {
				t.Errorf("threads=%d %s: tokens differ from llama.cpp\n got %v\nwant %v", threads, p, res.Tokens, ref.GenTokens)
			}
			if res.FinishReason != "length" || res.Metrics.GeneratedTokens != len(ref.GenTokens) {
				t.Errorf("threads=%d %s: finish %q, %d tokens", threads, p, res.FinishReason, res.Metrics.GeneratedTokens)
			}
			var sb strings.Builder
			for i, ev := range streamed {
				if ev.Index != i && ev.Token != -1 {
					t.Fatalf("%s: notification %d has index %d", p, i, ev.Index)
				}
				sb.WriteString(ev.Text)
			}
			if sb.String() != res.Text {
				t.Errorf("%s: streamed text %q != result text %q", p, sb.String(), res.Text)
			}
			if len(res.LogitsDigests) != len(res.Tokens) {
				t.Fatalf("%s: %d digests for %d tokens", p, len(res.LogitsDigests), len(res.Tokens))
			}
			runDigests = append(runDigests, res.LogitsDigests...)
			t.Logf("threads=%d %s: %d tokens identical to llama.cpp, %.0f tokens/s, %q", threads, p, len(res.Tokens), res.Metrics.TokensPerSecond, res.Text[:min(40, len(res.Text))])
		}
		digests = append(digests, runDigests)
	}
	if !slices.Equal(digests[0], digests[1]) {
		t.Errorf("logits differ between 1 and 2 worker threads")
	}
}

func decodeHex(t *testing.T, h string) string {
	t.Helper()
	b := make([]byte, len(h)/2)
	for i := range b {
		var v byte
		for _, c := range h[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c - 'a' + 10)
			default:
				t.Fatalf("bad hex %q", h)
			}
		}
		b[i] = v
	}
	return string(b)
}
