package rpc

import (
	"context"
	"maps"
	"reflect"
	"slices"

	"github.com/weos/llm-engine/engine"
)

// Tokenizer and chat methods (issue 8).
const (
	MethodTokenize   = "tokenize"
	MethodDetokenize = "detokenize"
	MethodChat       = "chat"
)

// ChatEngine is implemented by engines with tokenizers and chat templates
// (*engine.Engine). These methods answer -32040 for engines without it.
type ChatEngine interface {
	Tokenize(ctx context.Context, req engine.TokenizeRequest) (*engine.TokenizeResult, error)
	Detokenize(ctx context.Context, req engine.DetokenizeRequest) (*engine.DetokenizeResult, error)
	Chat(ctx context.Context, req engine.ChatRequest, onToken func(engine.TokenEvent)) (*engine.ChatResult, error)
}

func chatEngine(s *Service) (ChatEngine, error) {
	ce, ok := s.eng.(ChatEngine)
	if !ok {
		return nil, Errorf(engine.CodeNotImplemented, "this engine has no tokenize, detokenize or chat")
	}
	return ce, nil
}

// Example is an OpenRPC example pairing: params by name and the result.
type Example struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Params      []ExampleObject `json:"params"`
	Result      *ExampleObject  `json:"result,omitempty"`
}

// ExampleObject is an OpenRPC example object.
type ExampleObject struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// example builds an Example from a params object (by name) and a result.
func example(name string, params map[string]any, result any) Example {
	ex := Example{Name: name, Params: []ExampleObject{}}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		ex.Params = append(ex.Params, ExampleObject{Name: k, Value: params[k]})
	}
	if result != nil {
		ex.Result = &ExampleObject{Name: "result", Value: result}
	}
	return ex
}

func validateModelRef(model string) error {
	if model == "" {
		return InvalidParams(`field "model": must not be empty`)
	}
	return nil
}

func chatMethods() []*Method {
	tok := method(MethodTokenize, "Tokenize text with a model's tokenizer.",
		"model is a loaded model id, a model path or a vocab-only GGUF (only its tokenizer is read, and cached). "+
			"add_special adds the BOS/EOS tokens the vocabulary asks for; parse_special turns the text of special "+
			"tokens (\"<|im_start|>\") into those tokens. Reading a file that is not loaded needs an admin peer, "+
			"like generate with a path.",
		func(p *engine.TokenizeRequest) error { return validateModelRef(p.Model) },
		func(ctx context.Context, s *Service, p *engine.TokenizeRequest, _ Notifier) (*engine.TokenizeResult, error) {
			ce, err := chatEngine(s)
			if err != nil {
				return nil, err
			}
			return ce.Tokenize(ctx, *p)
		})
	tok.Examples = []Example{example("hello", map[string]any{"model": "stories260K", "text": "Hello world", "add_special": true},
		map[string]any{"tokens": []int{1, 400, 1134}})}

	detok := method(MethodDetokenize, "Turn token ids back into text.",
		"llama.cpp's detokenize with special tokens rendered as their text. model as in tokenize.",
		func(p *engine.DetokenizeRequest) error { return validateModelRef(p.Model) },
		func(ctx context.Context, s *Service, p *engine.DetokenizeRequest, _ Notifier) (*engine.DetokenizeResult, error) {
			ce, err := chatEngine(s)
			if err != nil {
				return nil, err
			}
			return ce.Detokenize(ctx, *p)
		})
	detok.Examples = []Example{example("hello", map[string]any{"model": "stories260K", "tokens": []int{400, 1134}},
		map[string]any{"text": "Hello world"})}

	ch := method(MethodChat, "Generate the assistant's reply to a conversation.",
		"Renders messages with the model's tokenizer.chat_template (or template), tokenizes the prompt with "+
			"special tokens parsed and generates like generate (same options, plan, scheduler and run record), "+
			"stopping at the vocabulary's end-of-generation and the template's end-of-turn tokens "+
			"(finish_reason \"eos\"). The result is generate's plus prompt_text, the rendered prompt. A model "+
			"without a chat template is refused (-32602) unless template is given.",
		func(p *engine.ChatRequest) error {
			if err := validateGenerate(&engine.GenerateRequest{Model: p.Model, MaxTokens: p.MaxTokens, Logprobs: p.Logprobs, Sampling: p.Sampling}); err != nil {
				return err
			}
			if len(p.Messages) == 0 {
				return InvalidParams(`field "messages": must not be empty`)
			}
			for i, m := range p.Messages {
				if m.Role == "" {
					return InvalidParams(`field "messages[%d].role": must not be empty`, i)
				}
			}
			return nil
		},
		func(ctx context.Context, s *Service, p *engine.ChatRequest, n Notifier) (*engine.ChatResult, error) {
			ce, err := chatEngine(s)
			if err != nil {
				return nil, err
			}
			var onToken func(engine.TokenEvent)
			if p.Stream && n != nil {
				onToken = func(ev engine.TokenEvent) { n.Notify(NotificationGenerateToken, ev) }
			}
			return ce.Chat(ctx, *p, onToken)
		})
	ch.Notifications = []Notification{{
		Name:    NotificationGenerateToken,
		Summary: "One generated token (sent only when stream is true).",
		Params:  reflect.TypeFor[engine.TokenEvent](),
	}}
	ch.Examples = []Example{example("one turn", map[string]any{
		"model":      "qwen2-chat",
		"messages":   []map[string]any{{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}},
		"max_tokens": 16,
		"stream":     true,
	}, nil)}
	return []*Method{tok, detok, ch}
}
