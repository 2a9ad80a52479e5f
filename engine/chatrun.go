package engine

import (
	"context"
	"errors"
	"strings"

	"github.com/weos/llm-engine/engine/chat"
	"github.com/weos/llm-engine/engine/tokenizer"
)

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatRequest is chat's params: the messages rendered with the model's
// tokenizer.chat_template (or Template, when given) and generated from like
// generate, with the same options.
type ChatRequest struct {
	Model    string        `json:"model"` // a model_id or a path (loaded on demand)
	Messages []ChatMessage `json:"messages"`
	// Template, if set, is the Jinja chat template to use instead of the
	// model's tokenizer.chat_template.
	Template string `json:"template,omitempty"`
	// AddGenerationPrompt (default true) ends the prompt with the opening
	// of the assistant's turn.
	AddGenerationPrompt *bool     `json:"add_generation_prompt,omitempty"`
	MaxTokens           int       `json:"max_tokens,omitempty"`
	Sampling            *Sampling `json:"sampling,omitempty"`
	Stream              bool      `json:"stream,omitempty"`
	Logprobs            int       `json:"logprobs,omitempty"`
	LogitsDigest        bool      `json:"logits_digest,omitempty"`
	Plan                any       `json:"plan,omitempty"`
}

// ChatResult is chat's result: generate's plus the rendered prompt.
type ChatResult struct {
	GenerateResult
	PromptText string `json:"prompt_text"`
}

// ChatTemplateKey is the GGUF metadata key of a model's chat template.
const ChatTemplateKey = "tokenizer.chat_template"

// Chat answers chat: it renders the conversation with the model's chat
// template (engine/chat; bos_token and eos_token are the vocabulary's),
// tokenizes it with special tokens parsed, and runs it through generate's
// path (plan, scheduler, run record, energy), stopping at the vocabulary's
// end-of-generation tokens and the template's end-of-turn tokens
// (chat.StopTokens). The prompt is tokenized like llama.cpp's server: when
// the vocabulary adds a BOS and the rendering starts with the BOS text, that
// text is dropped and the tokenizer adds the BOS (likewise a trailing EOS),
// so the prompt never holds two.
func (e *Engine) Chat(ctx context.Context, req ChatRequest, onToken func(TokenEvent)) (*ChatResult, error) {
	if !req.Stream {
		onToken = nil
	}
	if len(req.Messages) == 0 {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"messages\": must not be empty")
	}
	addGen := req.AddGenerationPrompt == nil || *req.AddGenerationPrompt
	greq := GenerateRequest{Model: req.Model, MaxTokens: req.MaxTokens, Sampling: req.Sampling, Stream: req.Stream,
		Logprobs: req.Logprobs, LogitsDigest: req.LogitsDigest, Plan: req.Plan}
	var text string
	o := runOpts{}
	o.prompt = func(m *loaded) (string, []int32, map[int32]bool, error) {
		src, cache := req.Template, false
		if src == "" {
			cache = true // a model's template: compiled once
			s, ok := m.file.String(ChatTemplateKey)
			if !ok || s == "" {
				return "", nil, nil, errorf(CodeInvalidParams, "invalid params: model %s has no chat template (%s): give one in field \"template\"", m.info.ModelID, ChatTemplateKey)
			}
			src = s
		}
		var err error
		var prompt []int32
		var stop map[int32]bool
		text, prompt, stop, err = e.renderChat(m.tok, src, cache, req.Messages, addGen)
		return text, prompt, stop, err
	}
	res, err := e.generate(ctx, greq, onToken, o)
	if err != nil {
		return nil, err
	}
	return &ChatResult{GenerateResult: *res, PromptText: text}, nil
}

// renderChat renders msgs with template src for tok's vocabulary and
// returns the text, its tokens and the stop tokens beyond tok's EOG set.
func (e *Engine) renderChat(tok *tokenizer.Tokenizer, src string, cache bool, msgs []ChatMessage, addGen bool) (string, []int32, map[int32]bool, error) {
	t, err := e.chatTemplate(src, cache)
	if err != nil {
		return "", nil, nil, err
	}
	bos, eos := tokenString(tok, tok.BOS()), tokenString(tok, tok.EOS())
	cm := make([]chat.Message, len(msgs))
	for i, m := range msgs {
		cm[i] = chat.Message{Role: m.Role, Content: m.Content}
	}
	text, err := t.Render(cm, chat.RenderOptions{AddGenerationPrompt: addGen, BOSToken: bos, EOSToken: eos})
	if err != nil {
		return "", nil, nil, errorf(CodeInvalidParams, "invalid params: chat template: %v", err)
	}
	in := text
	if tok.AddBOS() && bos != "" {
		in = strings.TrimPrefix(in, bos)
	}
	if tok.AddEOS() && eos != "" {
		in = strings.TrimSuffix(in, eos)
	}
	prompt, err := tok.Encode(in, true, true)
	if err != nil {
		return "", nil, nil, errorf(CodeInvalidParams, "invalid params: rendered chat prompt: %v", err)
	}
	vocab := make([]string, tok.NVocab())
	for i := range vocab {
		vocab[i] = tok.Text(int32(i))
	}
	stop := map[int32]bool{}
	for _, s := range chat.StopTokens(src, vocab, eos) {
		if id, ok := tok.TokenID(s); ok {
			stop[id] = true
		}
	}
	return text, prompt, stop, nil
}

// chatTemplate compiles a template; models' templates (cache) once.
func (e *Engine) chatTemplate(src string, cache bool) (*chat.Template, error) {
	if v, ok := e.tmpls.Load(src); ok {
		return v.(*chat.Template), nil
	}
	t, err := chat.Compile(src)
	if err != nil {
		var te *chat.TemplateError
		if errors.As(err, &te) {
			return nil, errorf(CodeInvalidParams, "invalid params: chat template: %v", te)
		}
		return nil, errorf(CodeInvalidParams, "invalid params: chat template: %v", err)
	}
	if cache {
		e.tmpls.Store(src, t)
	}
	return t, nil
}

func tokenString(tok *tokenizer.Tokenizer, id int32) string {
	if id == tokenizer.Null {
		return ""
	}
	return tok.Text(id)
}
