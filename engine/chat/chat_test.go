package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustCompile(t testing.TB, src string) *Template {
	t.Helper()
	tm, err := Compile(src)
	if err != nil {
		t.Fatalf("Compile(%q): %v", src, err)
	}
	return tm
}

func mustRender(t testing.TB, src string, msgs []Message, opts RenderOptions) string {
	t.Helper()
	out, err := mustCompile(t, src).Render(msgs, opts)
	if err != nil {
		t.Fatalf("Render(%q): %v", src, err)
	}
	return out
}

func TestRaiseExceptionIsTyped(t *testing.T) {
	tm := mustCompile(t, "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}")
	_, err := tm.Render([]Message{{Role: "system", Content: "x"}}, RenderOptions{})
	var te *TemplateError
	if !errors.As(err, &te) || te.Message != "System role not supported" || err.Error() != "System role not supported" {
		t.Fatalf("err = %#v, want *TemplateError{System role not supported}", err)
	}
	out, err := tm.Render([]Message{{Role: "user", Content: "hi"}}, RenderOptions{})
	if err != nil || out != "hi" {
		t.Fatalf("Render = %q, %v", out, err)
	}

	// Other failures are plain errors.
	_, err = mustCompile(t, "{{ messages | nosuchfilter }}").Render(nil, RenderOptions{})
	if err == nil || errors.As(err, &te) {
		t.Fatalf("unknown filter: err = %v, want a non-TemplateError error", err)
	}
}

func TestCompileError(t *testing.T) {
	for _, src := range []string{"{% if x %}", "{{ x ", "{% for in %}{% endfor %}"} {
		if _, err := Compile(src); err == nil {
			t.Errorf("Compile(%q) succeeded", src)
		}
	}
}

func TestVariables(t *testing.T) {
	const src = "[{{ bos_token is defined }}|{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ documents is none }}|{{ add_generation_prompt }}|{{ enable_thinking is defined }}]"
	got := mustRender(t, src, nil, RenderOptions{EOSToken: "</s>"})
	if want := "[False||</s>|True|True|False|False]"; got != want {
		t.Errorf("defaults: got %s, want %s", got, want)
	}
	got = mustRender(t, src, nil, RenderOptions{
		AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "</s>",
		Extra: map[string]any{"tools": []any{}, "enable_thinking": false},
	})
	if want := "[True|<s>|</s>|False|True|True|True]"; got != want {
		t.Errorf("set: got %s, want %s", got, want)
	}
}

func TestStrftimeNowClock(t *testing.T) {
	const src = "{{ strftime_now('%Y-%m-%d') }}"
	if got := mustRender(t, src, nil, RenderOptions{Now: time.Date(2030, 2, 3, 4, 5, 6, 0, time.UTC)}); got != "2030-02-03" {
		t.Errorf("pinned clock: %s", got)
	}
	before := time.Now()
	got := mustRender(t, src, nil, RenderOptions{})
	if got != before.Format("2006-01-02") && got != time.Now().Format("2006-01-02") {
		t.Errorf("default clock: %s", got)
	}
}

func TestMessageShape(t *testing.T) {
	const src = "{% for m in messages %}{{ m | tojson }}\n{% endfor %}"
	msgs := []Message{
		{Role: "user", Content: "hi"},
		{Role: "assistant", Content: "", ReasoningContent: "think", ToolCalls: []ToolCall{
			{ID: "call1", Type: "function", Function: FunctionCall{Name: "f", Arguments: json.RawMessage(`{"z": 1, "a": [2.5]}`)}},
			{Function: FunctionCall{Name: "g", Arguments: `{"q": "x"}`}},
			{Function: FunctionCall{Name: "h", Arguments: map[string]any{"b": 1, "a": 2}}},
		}},
		{Role: "tool", Content: "42", ToolCallID: "call1", Name: "f"},
	}
	want := `{"role": "user", "content": "hi"}
{"role": "assistant", "content": "", "reasoning_content": "think", "tool_calls": [{"id": "call1", "type": "function", "function": {"name": "f", "arguments": {"z": 1, "a": [2.5]}}}, {"function": {"name": "g", "arguments": "{\"q\": \"x\"}"}}, {"function": {"name": "h", "arguments": {"a": 2, "b": 1}}}]}
{"role": "tool", "content": "42", "tool_call_id": "call1", "name": "f"}
`
	if got := mustRender(t, src, msgs, RenderOptions{}); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestMessagesFromJSON(t *testing.T) {
	var msgs []Message
	err := json.Unmarshal([]byte(`[
		{"role": "user", "content": "hi"},
		{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"z": 1, "a": 2}}}]},
		{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "g", "arguments": "{\"q\": 1}"}}]}
	]`), &msgs)
	if err != nil {
		t.Fatal(err)
	}
	got := mustRender(t, "{% for m in messages if m.tool_calls is defined %}{{ m.tool_calls[0].function.arguments | tojson }};{{ m.tool_calls[0].function.arguments is string }}|{% endfor %}", msgs, RenderOptions{})
	if want := `{"z": 1, "a": 2};False|"{\"q\": 1}";True|`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestExtraValues(t *testing.T) {
	type param struct {
		Type        string `json:"type"`
		Description string `json:"description,omitempty"`
	}
	type tool struct {
		Name   string           `json:"name"`
		Params map[string]param `json:"params"`
		Weight float64          `json:"weight"`
	}
	got := mustRender(t, "{{ tools | tojson }} {{ n }} {{ f }} {{ u }} {{ s | join(',') }} {{ p }} {{ raw.b }}", nil, RenderOptions{Extra: map[string]any{
		"tools": []tool{{Name: "t", Params: map[string]param{"y": {Type: "int"}, "x": {Type: "str", Description: "d"}}, Weight: 1}},
		"n":     int32(-3),
		"f":     float32(0.5),
		"u":     uint64(7),
		"s":     []string{"a", "b"},
		"p":     (*int)(nil),
		"raw":   json.RawMessage(`{"b": [1, 2]}`),
	}})
	// Structs go through encoding/json: field order is kept, a whole float
	// comes back as an int.
	want := `[{"name": "t", "params": {"x": {"type": "str", "description": "d"}, "y": {"type": "int"}}, "weight": 1}] -3 0.5 7 a,b None [1, 2]`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	_, err := mustCompile(t, "x").Render(nil, RenderOptions{Extra: map[string]any{"bad": json.RawMessage(`{`)}})
	if err == nil {
		t.Error("invalid json.RawMessage accepted")
	}
	_, err = mustCompile(t, "x").Render([]Message{{Role: "assistant", ToolCalls: []ToolCall{{Function: FunctionCall{Name: "f", Arguments: json.RawMessage(`{"a":`)}}}}}, RenderOptions{})
	if err == nil || !strings.Contains(err.Error(), "message 0: tool call 0: arguments") {
		t.Errorf("invalid tool-call arguments: err = %v", err)
	}
}

func TestConcurrentRender(t *testing.T) {
	tm := mustCompile(t, "{%- set ns = namespace(n=0) -%}{% for m in messages %}{% set ns.n = ns.n + 1 %}<{{ m.role }}:{{ m.content | trim }}>{% endfor %}{{ ns.n }}{% if add_generation_prompt %}<assistant>{% endif %}")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				n := (g+i)%5 + 1
				msgs := make([]Message, n)
				want := ""
				for k := range msgs {
					msgs[k] = Message{Role: "user", Content: " " + strconv.Itoa(g*1000+i*10+k) + " "}
					want += "<user:" + strconv.Itoa(g*1000+i*10+k) + ">"
				}
				want += strconv.Itoa(n)
				agp := i%2 == 0
				if agp {
					want += "<assistant>"
				}
				got, err := tm.Render(msgs, RenderOptions{AddGenerationPrompt: agp})
				if err != nil || got != want {
					errs <- fmt.Errorf("goroutine %d iteration %d: got %q, %v; want %q", g, i, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEndOfTurnMarkers(t *testing.T) {
	for _, c := range []struct {
		src  string
		want []string
	}{
		{"{{ '<|im_start|>' + m.content + '<|im_end|>' }}", []string{"<|im_end|>"}},
		{"{# ends with <|eot_id|> #}{{ x + '<end_of_turn>\n' }}", []string{"<end_of_turn>"}},
		{"{{ '<|end|>' }}{{ '<|endoftext|>' }}", []string{"<|end|>"}},
		{"{{ content + eos_token }}", nil},
		{"[INST] {{ c }} [/INST]{{ a }}</s>", []string{"</s>"}},
	} {
		if got := EndOfTurnMarkers(c.src); !reflect.DeepEqual(got, c.want) {
			t.Errorf("EndOfTurnMarkers(%q) = %q, want %q", c.src, got, c.want)
		}
	}
	if !EmitsEOSToken("{{ content + eos_token }}") || EmitsEOSToken("{# eos_token #}{{ x }}") || EmitsEOSToken("{{ my_eos_token_x }}") {
		t.Error("EmitsEOSToken")
	}

	vocab := []string{"<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "hello"}
	if got := StopTokens("{{ '<|im_end|>' }}{{ '<|eot_id|>' }}", vocab, "<|endoftext|>"); !reflect.DeepEqual(got, []string{"<|im_end|>", "<|endoftext|>"}) {
		t.Errorf("StopTokens chatml = %q", got)
	}
	if got := StopTokens("{{ c + eos_token }}", vocab, "</s>"); !reflect.DeepEqual(got, []string{"</s>"}) {
		t.Errorf("StopTokens mistral = %q", got)
	}
	if got := StopTokens("{{ c }}</s>", vocab, "</s>"); !reflect.DeepEqual(got, []string{"</s>"}) {
		t.Errorf("StopTokens dedup = %q", got)
	}
	if got := StopTokens("{{ c }}", vocab, ""); got != nil {
		t.Errorf("StopTokens none = %q", got)
	}
}

func TestEndOfTurnMarkersShared(t *testing.T) {
	dir := sharedTemplates(t)
	want := map[string][]string{
		"HuggingFaceTB-SmolLM3-3B.jinja":             {"<|im_end|>"},
		"Qwen-Qwen2.5-7B-Instruct.jinja":             {"<|im_end|>"},
		"Qwen-Qwen3-0.6B.jinja":                      {"<|im_end|>"},
		"google-gemma-2-2b-it.jinja":                 {"<end_of_turn>"},
		"meta-llama-Llama-3.1-8B-Instruct.jinja":     {"<|eot_id|>", "<|eom_id|>"},
		"meta-llama-Llama-3.2-3B-Instruct.jinja":     {"<|eot_id|>"},
		"microsoft-Phi-3.5-mini-instruct.jinja":      {"<|end|>"},
		"mistralai-Mistral-Nemo-Instruct-2407.jinja": nil,
	}
	eos := map[string]string{
		"mistralai-Mistral-Nemo-Instruct-2407.jinja": "</s>",
		"microsoft-Phi-3.5-mini-instruct.jinja":      "<|endoftext|>",
	}
	for name, w := range want {
		b, err := os.ReadFile(filepath.Join(dir, "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		tm := mustCompile(t, string(b))
		if got := tm.EndOfTurnMarkers(); !reflect.DeepEqual(got, w) {
			t.Errorf("%s: EndOfTurnMarkers = %q, want %q", name, got, w)
		}
		if e, ok := eos[name]; ok {
			if !EmitsEOSToken(string(b)) {
				t.Errorf("%s: EmitsEOSToken = false", name)
			}
			vocab := append(append([]string{}, w...), e, "<unk>")
			if got := StopTokens(string(b), vocab, e); !reflect.DeepEqual(got, append(append([]string{}, w...), e)) {
				t.Errorf("%s: StopTokens = %q", name, got)
			}
		}
	}
}

// TestRewritePreservesLines checks that the source rewrite keeps every
// line break, so that the engine's line numbers are the template's.
func TestRewritePreservesLines(t *testing.T) {
	dir := findShared()
	var srcs []string
	if dir != "" {
		names, _ := filepath.Glob(filepath.Join(dir, "templates", "templates", "*.jinja"))
		for _, n := range names {
			b, _ := os.ReadFile(n)
			srcs = append(srcs, string(b))
		}
	}
	srcs = append(srcs, "a\n  {%- if x -%}\n\n b {# c\n #}\n{% raw %}\n{{ y }}\n{% endraw %}\n  {{- z -}}\n\n{% for k, v in d.items() if k %}\n{% endfor %}\n")
	for _, src := range srcs {
		want := strings.Count(normalizeNewlines(src), "\n")
		if got := strings.Count(rewriteSource(src), "\n"); got != want {
			t.Errorf("rewrite has %d line breaks, want %d, for %.60q", got, want, src)
		}
	}
}
