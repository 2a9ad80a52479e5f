package engine

import (
	"context"
	"strings"
	"testing"
)

// TestChatStopTokens: a run stops with finish_reason "eos" at a token of
// the chat's stop set (the template family's end-of-turn tokens), not only
// at the vocabulary's EOG tokens. Synthetic models rarely produce their
// end-of-turn token, so the test makes the second greedy token a stop token.
func TestChatStopTokens(t *testing.T) {
	e := recEngine(t, t.TempDir(), 0)
	defer e.Close()
	ctx := context.Background()
	path := recModel(t, "stories260K.gguf")
	const tmpl = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
		"{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
	req := ChatRequest{Model: path, Messages: []ChatMessage{{Role: "user", Content: "Once upon a time"}},
		Template: tmpl, MaxTokens: 6, Sampling: &Sampling{}}
	res, err := e.Chat(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.FinishReason != "length" || len(res.Tokens) != 6 || !strings.HasSuffix(res.PromptText, "<|im_start|>assistant\n") {
		t.Fatalf("%s %v %q", res.FinishReason, res.Tokens, res.PromptText)
	}
	m := e.modelByID(res.ModelID)
	stopAt := res.Tokens[1]
	if res.Tokens[0] == stopAt {
		t.Skip("first two tokens equal: the stop would hit the first")
	}
	o := runOpts{prompt: func(m *loaded) (string, []int32, map[int32]bool, error) {
		text, prompt, stop, err := e.renderChat(m.tok, tmpl, false, req.Messages, true)
		stop[stopAt] = true
		return text, prompt, stop, err
	}}
	g, err := e.generate(ctx, GenerateRequest{Model: m.info.ModelID, MaxTokens: 6, Sampling: &Sampling{}}, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if g.FinishReason != "eos" || len(g.Tokens) != 2 || g.Tokens[1] != stopAt {
		t.Fatalf("finish %s tokens %v (stop at %d)", g.FinishReason, g.Tokens, stopAt)
	}
}
