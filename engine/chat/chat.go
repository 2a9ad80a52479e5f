package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation as a chat template sees it: a dict
// with "role" and "content", plus the optional keys below, each present only
// when set (a template's `message.tool_calls is defined` or
// `'tool_calls' in message` is false for a message without tool calls, as it
// is for the plain {role, content} dicts transformers is usually given).
//
// The JSON tags follow the OpenAI / transformers message shape, so a
// request's messages decode straight into []Message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`

	// ReasoningContent is the "reasoning_content" key (Qwen3 and other
	// thinking templates render it inside <think>…</think>).
	ReasoningContent string `json:"reasoning_content,omitempty"`
	// ToolCalls is the "tool_calls" key of an assistant message.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is the "tool_call_id" key of a tool-result message.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// Name is the "name" key (the tool's name on a tool-result message).
	Name string `json:"name,omitempty"`
}

// ToolCall is one entry of Message.ToolCalls, in the OpenAI / transformers
// shape {"id", "type", "function": {"name", "arguments"}}; ID and Type are
// left out of the dict when empty.
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is ToolCall.Function.
type FunctionCall struct {
	Name string `json:"name"`
	// Arguments is what the template gets as "arguments": usually a JSON
	// object. Pass json.RawMessage (or a struct) to keep the key order of
	// the object, which `tojson` reproduces; a map[string]any is given to
	// the template with its keys sorted. A Go string stays a string (some
	// templates accept an already-encoded JSON string). Decoding JSON into
	// a FunctionCall keeps "arguments" as a json.RawMessage, so an object
	// keeps its key order and an OpenAI-style encoded string stays a
	// string.
	Arguments any `json:"arguments"`
}

// UnmarshalJSON decodes {"name", "arguments"}, keeping the arguments as a
// json.RawMessage.
func (f *FunctionCall) UnmarshalJSON(b []byte) error {
	var raw struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	f.Name = raw.Name
	f.Arguments = nil
	if len(raw.Arguments) > 0 && string(raw.Arguments) != "null" {
		f.Arguments = raw.Arguments
	}
	return nil
}

// RenderOptions are the variables transformers' apply_chat_template passes
// besides the messages.
type RenderOptions struct {
	// AddGenerationPrompt is `add_generation_prompt`: end the prompt with
	// the header of an assistant turn.
	AddGenerationPrompt bool
	// BOSToken and EOSToken are `bos_token` and `eos_token`, the special
	// tokens' strings from the vocabulary. An empty string leaves the
	// variable undefined, as transformers does for a tokenizer without that
	// token (it then prints as "" and `bos_token is defined` is false).
	BOSToken, EOSToken string
	// Extra holds further variables: "tools" (a list of tool schemas),
	// "documents", "enable_thinking", "date_string", … . transformers
	// passes tools=None and documents=None when not given, and so does
	// Render. Values may be nil, bools, numbers, strings, slices, maps,
	// json.RawMessage (decoded, keeping object key order) or structs
	// (encoded through encoding/json, keeping field order); Go maps are
	// given to the template with sorted keys.
	Extra map[string]any
	// Now is the time strftime_now() formats; the zero value means
	// time.Now(). transformers formats the local wall-clock time.
	Now time.Time
}

// TemplateError is the error a template raises itself through
// raise_exception(msg), e.g. Gemma's "System role not supported". Error()
// returns the template's message unchanged, as Python's str(exc) does.
type TemplateError struct {
	Message string
}

func (e *TemplateError) Error() string { return e.Message }

// maxMacroDepth bounds macro recursion. Python's Jinja2 stops at about 150
// nested macro calls (RecursionError); the engine would overflow the Go
// stack, which kills the process.
const maxMacroDepth = 1000

// Template is a compiled chat template. It is safe for concurrent use.
type Template struct {
	src  string
	tmpl *jinja.Template
}

// Compile parses a chat template (a GGUF's tokenizer.chat_template or a
// tokenizer_config.json's chat_template). The source is rewritten first
// (rewrite.go; the package documentation sums it up) to route around the
// Jinja engine's gaps: whitespace control, tojson, printing, filtered
// unpacking loops, macro recursion.
func Compile(src string) (_ *Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("chat: compile template: internal error: %v", r)
		}
	}()
	t, err := jinja.Compile(rewriteSource(src))
	if err != nil {
		return nil, fmt.Errorf("chat: compile template: %w", err)
	}
	return &Template{src: src, tmpl: t}, nil
}

// Source returns the template source as given to Compile.
func (t *Template) Source() string { return t.src }

// EndOfTurnMarkers is EndOfTurnMarkers(t.Source()).
func (t *Template) EndOfTurnMarkers() []string { return EndOfTurnMarkers(t.src) }

// Render renders msgs the way transformers' apply_chat_template(msgs,
// tokenize=False, ...) does. An error the template raises itself is a
// *TemplateError; any other failure (a type error, an undefined method,
// etc.) comes back as a plain error.
func (t *Template) Render(msgs []Message, opts RenderOptions) (_ string, err error) {
	// Templates come from model files: a template that trips the engine
	// fails its render rather than the process.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("chat: render template: internal error: %v", r)
		}
	}()
	vars := make(map[string]jinja.Value, 8+len(opts.Extra))
	list, err := messagesValue(msgs)
	if err != nil {
		return "", fmt.Errorf("chat: %w", err)
	}
	vars["messages"] = list
	vars["add_generation_prompt"] = jinja.NewBool(opts.AddGenerationPrompt)
	vars["tools"] = jinja.None()
	vars["documents"] = jinja.None()
	if opts.BOSToken != "" {
		vars["bos_token"] = jinja.NewString(opts.BOSToken)
	}
	if opts.EOSToken != "" {
		vars["eos_token"] = jinja.NewString(opts.EOSToken)
	}
	for k, v := range opts.Extra {
		val, err := toValue(v)
		if err != nil {
			return "", fmt.Errorf("chat: variable %q: %w", k, err)
		}
		vars[k] = val
	}

	// Per-render functions. raise_exception records the error it raises, so
	// it comes back typed whatever the engine wraps it in.
	var raised *TemplateError
	vars["raise_exception"] = jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := ""
		if len(args) > 0 {
			msg = pyStr(args[0])
		}
		raised = &TemplateError{Message: msg}
		return jinja.Undefined(), raised
	})
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	vars["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 || !args[0].IsString() {
			return jinja.Undefined(), errors.New("strftime_now: expected a format string")
		}
		return jinja.NewString(strftime(now, args[0].AsString())), nil
	})
	vars["range"] = jinja.NewCallable("range", sandboxRange)
	depth := 0
	vars[macroEnterName] = jinja.NewCallable("macro_enter", func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
		if depth++; depth > maxMacroDepth {
			return jinja.Undefined(), fmt.Errorf("maximum recursion depth exceeded (%d nested macro calls)", maxMacroDepth)
		}
		return jinja.NewString(""), nil
	})
	vars[macroLeaveName] = jinja.NewCallable("macro_leave", func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
		depth--
		return jinja.NewString(""), nil
	})
	vars[tojsonFilterName] = jinja.NewCallable("tojson", tojsonFilter)
	vars[printFilterName] = jinja.NewCallable("print", printFilter)

	out, err := t.tmpl.RenderValues(vars)
	if raised != nil {
		return "", raised
	}
	if err != nil {
		return "", fmt.Errorf("chat: render template: %w", err)
	}
	return out, nil
}
