package tokenizer

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchText is a mixed corpus: the llama.cpp vocab test strings (prose,
// code, numbers, CJK, emoji, whitespace runs) repeated to ~64 KiB.
func benchText(b *testing.B) string {
	cases := readVocabTests(b, "ggml-vocab-llama-spm.gguf")
	var sb strings.Builder
	for sb.Len() < 64<<10 {
		for _, c := range cases {
			sb.WriteString(c.text)
			sb.WriteString("\n")
		}
	}
	return sb.String()
}

func benchEncode(b *testing.B, vocab string) {
	benchEncodeTok(b, loadTok(b, filepath.Join("vocab", vocab)))
}

// benchEncodeNoCache measures the merge loops themselves: word cache off.
func benchEncodeNoCache(b *testing.B, vocab string) {
	tk, err := openTok(filepath.Join(sharedDir(b), "vocab", vocab))
	if err != nil {
		b.Fatal(err)
	}
	tk.cache.disabled = true
	benchEncodeTok(b, tk)
}

func benchEncodeTok(b *testing.B, tk *Tokenizer) {
	text := benchText(b)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	b.ResetTimer()
	c0 := processCPU()
	for i := 0; i < b.N; i++ {
		if _, err := tk.Encode(text, true, false); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, c0, len(text))
}

// reportCPU adds "cpuMB/s": throughput per CPU second used by the process
// (GC included), steadier than MB/s on a loaded machine.
func reportCPU(b *testing.B, c0 time.Duration, n int) {
	if d := processCPU() - c0; d > 0 {
		b.ReportMetric(float64(n)*float64(b.N)/d.Seconds()/1e6, "cpuMB/s")
	}
}

func BenchmarkEncodeSPM(b *testing.B) { benchEncode(b, "ggml-vocab-llama-spm.gguf") }
func BenchmarkEncodeBPE(b *testing.B) { benchEncode(b, "ggml-vocab-gpt-2.gguf") }

func BenchmarkEncodeSPMNoCache(b *testing.B) { benchEncodeNoCache(b, "ggml-vocab-llama-spm.gguf") }
func BenchmarkEncodeBPENoCache(b *testing.B) { benchEncodeNoCache(b, "ggml-vocab-gpt-2.gguf") }

func BenchmarkEncodeBPEFalcon(b *testing.B)        { benchEncode(b, "ggml-vocab-falcon.gguf") }
func BenchmarkEncodeBPEDeepseekCoder(b *testing.B) { benchEncode(b, "ggml-vocab-deepseek-coder.gguf") }

func BenchmarkDecodeSPM(b *testing.B) {
	tk := loadTok(b, "vocab/ggml-vocab-llama-spm.gguf")
	text := benchText(b)
	ids, _ := tk.Encode(text, true, false)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	c0 := processCPU()
	for i := 0; i < b.N; i++ {
		tk.Decode(ids)
	}
	reportCPU(b, c0, len(text))
}
