package e2e_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/engine/chat"
	"github.com/weos/llm-engine/engine/gguf"
	"github.com/weos/llm-engine/engine/tokenizer"
)

// sharedPath returns the path of a file of the shared data, or skips loudly.
func sharedPath(t testing.TB, rel string) string {
	t.Helper()
	p := sharedModel(t, filepath.Join("..", rel)) // sharedModel joins "models"
	return filepath.Clean(p)
}

// cleanPunct drops the spaces before punctuation, as llama.cpp's
// detokenize does for clean_spaces vocabularies.
func cleanPunct(s string) string {
	for _, p := range []string{"?", "!", ".", ",", "'"} {
		s = strings.ReplaceAll(s, " "+p, p)
	}
	return s
}

type vocabCase struct {
	text string
	ids  []int32
}

func readVocabCases(t *testing.T, gg string) []vocabCase {
	t.Helper()
	inp, err := os.ReadFile(gg + ".inp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(gg + ".out")
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	texts := strings.Split(strings.TrimSuffix(string(inp), sep), sep)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(texts) != len(lines) {
		t.Fatalf("%s: %d strings, %d lines", gg, len(texts), len(lines))
	}
	cases := make([]vocabCase, len(texts))
	for i := range texts {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(lines[i]) {
			var v int32
			for _, c := range f {
				v = v*10 + int32(c-'0')
			}
			cases[i].ids = append(cases[i].ids, v)
		}
	}
	return cases
}

// TestTokenizeDetokenize: tokenize reproduces llama.cpp's vectors on
// vocab-only GGUFs (SPM and BPE) given by path, and on a loaded model by
// id; detokenize round-trips them.
func TestTokenizeDetokenize(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	c := dial(t, r.srv.Path)
	ctx := ctxT(t, 2*time.Minute)

	for _, name := range []string{"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"} {
		gg := sharedPath(t, filepath.Join("vocab", name))
		cases := readVocabCases(t, gg)
		for i, vc := range cases {
			res, err := c.Tokenize(ctx, engine.TokenizeRequest{Model: gg, Text: vc.text})
			if err != nil {
				t.Fatalf("%s: tokenize: %v", name, err)
			}
			if !slices.Equal(res.Tokens, vc.ids) && !(len(res.Tokens) == 0 && len(vc.ids) == 0) {
				t.Errorf("%s case %d %q: got %v, want %v", name, i, vc.text, res.Tokens, vc.ids)
				continue
			}
			if len(vc.ids) == 0 {
				continue
			}
			dt, err := c.Detokenize(ctx, engine.DetokenizeRequest{Model: gg, Tokens: res.Tokens})
			if err != nil {
				t.Fatalf("%s: detokenize: %v", name, err)
			}
			// Exact, but for llama.cpp's clean-up of spaces before
			// punctuation (clean_spaces vocabularies: gpt-2).
			if dt.Text != vc.text && cleanPunct(dt.Text) != cleanPunct(vc.text) {
				t.Errorf("%s case %d: %q detokenizes to %q", name, i, vc.text, dt.Text)
			}
		}
		t.Logf("%s: %d vectors", name, len(cases))
	}

	// Special tokens: add_special and parse_special.
	spm := sharedPath(t, filepath.Join("vocab", "ggml-vocab-llama-spm.gguf"))
	res, err := c.Tokenize(ctx, engine.TokenizeRequest{Model: spm, Text: "<s>Hi", AddSpecial: true, ParseSpecial: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) < 3 || res.Tokens[0] != 1 || res.Tokens[1] != 1 {
		t.Errorf("add_special + parse_special: %v (want BOS, BOS, …)", res.Tokens)
	}
	plain, err := c.Tokenize(ctx, engine.TokenizeRequest{Model: spm, Text: "<s>Hi"})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(plain.Tokens, 1) {
		t.Errorf("without parse_special <s> is text: %v", plain.Tokens)
	}
	dt, err := c.Detokenize(ctx, engine.DetokenizeRequest{Model: spm, Tokens: res.Tokens[1:]})
	if err != nil || !strings.HasPrefix(dt.Text, "<s>") {
		t.Errorf("detokenize renders special tokens: %q %v", dt.Text, err)
	}
	if _, err := c.Detokenize(ctx, engine.DetokenizeRequest{Model: spm, Tokens: []int32{1 << 30}}); rpcErr(err) == nil || rpcErr(err).Code != engine.CodeInvalidParams {
		t.Errorf("out-of-vocabulary id: %v", err)
	}

	// A loaded model, by id, agrees with the file by path.
	path := sharedModel(t, "stories260K.gguf")
	id := load(t, c, "stories260K.gguf", nil)
	byID, err := c.Tokenize(ctx, engine.TokenizeRequest{Model: id, Text: "Once upon a time", AddSpecial: true})
	if err != nil {
		t.Fatal(err)
	}
	byPath, err := c.Tokenize(ctx, engine.TokenizeRequest{Model: path, Text: "Once upon a time", AddSpecial: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(byID.Tokens, byPath.Tokens) || len(byID.Tokens) < 2 || byID.Tokens[0] != 1 {
		t.Fatalf("by id %v, by path %v", byID.Tokens, byPath.Tokens)
	}
	gen, err := c.Generate(ctx, engine.GenerateRequest{Model: id, Prompt: "Once upon a time", MaxTokens: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gen.PromptTokens, byID.Tokens) {
		t.Errorf("generate's prompt tokens %v, tokenize's %v", gen.PromptTokens, byID.Tokens)
	}
	back, err := c.Detokenize(ctx, engine.DetokenizeRequest{Model: id, Tokens: byID.Tokens[1:]})
	if err != nil || back.Text != "Once upon a time" {
		t.Errorf("detokenize: %q %v", back.Text, err)
	}
	if _, err := c.Tokenize(ctx, engine.TokenizeRequest{Model: "/nonexistent/x.gguf", Text: "a"}); rpcErr(err) == nil || rpcErr(err).Code != engine.CodeModelNotFound {
		t.Errorf("missing file: %v", err)
	}
}

// withTemplate writes a copy of a GGUF model with tokenizer.chat_template
// set to tmpl.
func withTemplate(t *testing.T, src, tmpl string) string {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, kv := range f.KV {
		if kv.Key == engine.ChatTemplateKey {
			continue
		}
		if err := w.AddKV(kv); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Set(engine.ChatTemplateKey, tmpl); err != nil {
		t.Fatal(err)
	}
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		if err := w.AddTensor(gguf.TensorSpec{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: f.TensorData(ti)}); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "chat-"+filepath.Base(src))
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(out); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestChat: no shared model carries a chat template, so the test writes
// qwen2-Q8_0 with Qwen 2.5's. chat renders exactly what engine/chat renders,
// tokenizes it with special tokens parsed, generates through generate's
// path (run record, plan) and stops at end-of-generation tokens; a model
// without a template is refused naming "template" unless the request
// gives one.
func TestChat(t *testing.T) {
	tmplBytes, err := os.ReadFile(sharedPath(t, filepath.Join("templates", "templates", "Qwen-Qwen2.5-7B-Instruct.jinja")))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := string(tmplBytes)
	model := withTemplate(t, sharedPath(t, filepath.Join("models", "arch", "qwen2-Q8_0.gguf")), tmpl)

	r := start(t, daemon.Config{}, engine.Options{})
	c := dial(t, r.srv.Path)
	ctx := ctxT(t, 2*time.Minute)
	mi, err := c.LoadModel(ctx, engine.LoadRequest{Path: model})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []engine.ChatMessage{{Role: "system", Content: "You are terse."}, {Role: "user", Content: "Hello there!"}}

	// What engine/chat renders directly.
	f, err := gguf.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ct, err := chat.Compile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	str := func(id int32) string {
		if id == tokenizer.Null {
			return ""
		}
		return tok.Text(id)
	}
	want, err := ct.Render([]chat.Message{{Role: "system", Content: "You are terse."}, {Role: "user", Content: "Hello there!"}},
		chat.RenderOptions{AddGenerationPrompt: true, BOSToken: str(tok.BOS()), EOSToken: str(tok.EOS())})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(want, "<|im_start|>assistant\n") {
		t.Fatalf("rendering: %q", want)
	}
	wantToks, err := tok.Encode(want, tok.AddBOS(), true)
	if err != nil {
		t.Fatal(err)
	}

	var streamed []int32
	res, err := c.Chat(ctx, engine.ChatRequest{Model: mi.ModelID, Messages: msgs, MaxTokens: 12, Sampling: &engine.Sampling{Temperature: 0}},
		func(ev engine.TokenEvent) { streamed = append(streamed, ev.Token) })
	if err != nil {
		t.Fatal(err)
	}
	if res.PromptText != want {
		t.Errorf("prompt_text %q, engine/chat renders %q", res.PromptText, want)
	}
	if !slices.Equal(res.PromptTokens, wantToks) {
		t.Errorf("prompt tokens %v, want %v", res.PromptTokens, wantToks)
	}
	if !slices.Equal(streamed, res.Tokens) || len(res.Tokens) == 0 {
		t.Errorf("streamed %v, result %v", streamed, res.Tokens)
	}
	switch res.FinishReason {
	case "eos":
		last := res.Tokens[len(res.Tokens)-1]
		if !tok.IsEOG(last) && tok.Text(last) != "<|im_end|>" {
			t.Errorf("finish eos on token %d %q", last, tok.Text(last))
		}
	case "length":
		if len(res.Tokens) != 12 {
			t.Errorf("length after %d tokens", len(res.Tokens))
		}
	default:
		t.Errorf("finish_reason %q", res.FinishReason)
	}
	t.Logf("chat: %d prompt tokens, %d generated, finish %s", len(res.PromptTokens), len(res.Tokens), res.FinishReason)
	// The run record holds the rendered prompt; the run is repeatable.
	rec, err := c.GetRun(ctx, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Request.Prompt != want {
		t.Errorf("record prompt %q", rec.Request.Prompt)
	}
	again, err := c.Chat(ctx, engine.ChatRequest{Model: mi.ModelID, Messages: msgs, MaxTokens: 12, Sampling: &engine.Sampling{Temperature: 0}}, nil)
	if err != nil || !slices.Equal(again.Tokens, res.Tokens) {
		t.Errorf("not repeatable: %v %v", again, err)
	}

	// add_generation_prompt false: the rendering ends with the last turn.
	noGen := false
	ng, err := c.Chat(ctx, engine.ChatRequest{Model: mi.ModelID, Messages: msgs, MaxTokens: 1, AddGenerationPrompt: &noGen}, nil)
	if err != nil || strings.HasSuffix(ng.PromptText, "assistant\n") {
		t.Errorf("add_generation_prompt false: %q %v", ng.PromptText, err)
	}

	// A model without a template: -32602 naming "template"; with one given
	// in the request it works.
	sid := load(t, c, "stories260K.gguf", nil)
	_, err = c.Chat(ctx, engine.ChatRequest{Model: sid, Messages: msgs, MaxTokens: 2}, nil)
	if e := rpcErr(err); e == nil || e.Code != engine.CodeInvalidParams || !strings.Contains(e.Message, "template") {
		t.Fatalf("no template: %v", err)
	}
	sres, err := c.Chat(ctx, engine.ChatRequest{Model: sid, Messages: msgs, MaxTokens: 2, Template: tmpl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sres.PromptText, "<|im_start|>user\nHello there!<|im_end|>") {
		t.Errorf("request template: %q", sres.PromptText)
	}
	if _, err := c.Chat(ctx, engine.ChatRequest{Model: sid, Messages: msgs, Template: "{% if %}"}, nil); rpcErr(err) == nil || !strings.Contains(rpcErr(err).Message, "template") {
		t.Errorf("bad template: %v", err)
	}
	if _, err := c.Chat(ctx, engine.ChatRequest{Model: sid, Messages: nil}, nil); rpcErr(err) == nil || rpcErr(err).Code != -32602 {
		t.Errorf("no messages: %v", err)
	}
}
