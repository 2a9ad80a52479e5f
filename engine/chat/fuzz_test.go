package chat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzCompileRender feeds arbitrary templates through the rewrite and the
// engine: Compile and Render must return (an error or not) without
// panicking, and the rewrite must keep every line break.
func FuzzCompileRender(f *testing.F) {
	var snips []struct {
		Template string `json:"template"`
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "snippets.json")); err == nil {
		_ = json.Unmarshal(b, &snips)
	}
	for _, s := range snips {
		f.Add(s.Template)
	}
	if d := findShared(); d != "" {
		names, _ := filepath.Glob(filepath.Join(d, "templates", "templates", "*.jinja"))
		for _, n := range names {
			if b, err := os.ReadFile(n); err == nil {
				f.Add(string(b))
			}
		}
	}
	msgs := []Message{
		{Role: "system", Content: "sys"},
		{Role: "user", Content: "hi {{ x }}"},
		{Role: "assistant", Content: "", ToolCalls: []ToolCall{{ID: "call12345", Type: "function", Function: FunctionCall{Name: "f", Arguments: json.RawMessage(`{"a": 1}`)}}}},
		{Role: "tool", Content: "1", ToolCallID: "call12345"},
	}
	f.Fuzz(func(t *testing.T, src string) {
		tm, err := Compile(src)
		if err != nil {
			return
		}
		_, _ = tm.Render(msgs, RenderOptions{AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "</s>", Now: referenceNow})
	})
}
