package chat

import (
	"os"
	"path/filepath"
	"testing"
)

func BenchmarkRenderLlama31(b *testing.B) {
	dir := sharedTemplates(b)
	src, err := os.ReadFile(filepath.Join(dir, "templates", "meta-llama-Llama-3.1-8B-Instruct.jinja"))
	if err != nil {
		b.Fatal(err)
	}
	tm, err := Compile(string(src))
	if err != nil {
		b.Fatal(err)
	}
	msgs := []Message{
		{Role: "system", Content: "You are a helpful math tutor."},
		{Role: "user", Content: "What is 12 * 7?"},
		{Role: "assistant", Content: "12 * 7 = 84."},
		{Role: "user", Content: "And divided by 4?"},
	}
	opts := RenderOptions{AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>", EOSToken: "<|eot_id|>", Now: referenceNow}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tm.Render(msgs, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompileLlama31(b *testing.B) {
	dir := sharedTemplates(b)
	src, err := os.ReadFile(filepath.Join(dir, "templates", "meta-llama-Llama-3.1-8B-Instruct.jinja"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(string(src)); err != nil {
			b.Fatal(err)
		}
	}
}
