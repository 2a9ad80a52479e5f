package engine

import (
	"context"
	"os"
	"time"

	"github.com/weos/llm-engine/engine/tokenizer"
)

// TokenizeRequest is tokenize's params. Model is a loaded model id, a model
// path or a vocab-only GGUF (only its tokenizer is read).
type TokenizeRequest struct {
	Model string `json:"model"`
	Text  string `json:"text"`
	// AddSpecial adds the BOS/EOS tokens the vocabulary asks for
	// (tokenizer.ggml.add_bos_token / add_eos_token).
	AddSpecial bool `json:"add_special,omitempty"`
	// ParseSpecial turns the text of control and user-defined tokens
	// ("<|im_start|>", "<s>") into those tokens; otherwise it is plain text.
	ParseSpecial bool `json:"parse_special,omitempty"`
}

// TokenizeResult is tokenize's result.
type TokenizeResult struct {
	Tokens []int32 `json:"tokens"`
}

// DetokenizeRequest is detokenize's params (Model as in TokenizeRequest).
type DetokenizeRequest struct {
	Model  string  `json:"model"`
	Tokens []int32 `json:"tokens"`
}

// DetokenizeResult is detokenize's result: llama.cpp's detokenize with
// special tokens rendered as their text (remove_special=false,
// unparse_special=true). It may hold invalid UTF-8 when the ids split a
// character (JSON then carries U+FFFD).
type DetokenizeResult struct {
	Text string `json:"text"`
}

// tokEntry caches the tokenizer of a file that is not loaded, keyed by its
// absolute path and checked against its size and modification time.
type tokEntry struct {
	size  int64
	mtime time.Time
	tok   *tokenizer.Tokenizer
}

// tokenizerFor returns the tokenizer of a model reference: a loaded
// model's, else that of a loaded instance of the same file, else the file's
// own (loaded once and cached: a vocab-only GGUF works). Reading a file
// that is not loaded follows the rule of generate and plan.resolve for
// paths: it reads an arbitrary file of the daemon's host, so it needs an
// admin peer.
func (e *Engine) tokenizerFor(ctx context.Context, ref, what string) (*tokenizer.Tokenizer, error) {
	if m := e.modelByID(ref); m != nil {
		return m.tok, nil
	}
	abs, err := e.modelPath(ref)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	for _, m := range e.models {
		if m.key.path == abs {
			e.mu.Unlock()
			return m.tok, nil
		}
	}
	e.mu.Unlock()
	if err := needAdmin(ctx, what+" with a model file that is not loaded ("+ref+")"); err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, errorf(CodeModelNotFound, "model %s: no such file", ref)
	}
	if v, ok := e.toks.Load(abs); ok {
		if te := v.(*tokEntry); te.size == st.Size() && te.mtime.Equal(st.ModTime()) {
			return te.tok, nil
		}
	}
	f, err := openGGUF(abs, ref)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, errorf(CodeModelInvalid, "model %s: tokenizer: %v", ref, err)
	}
	e.toks.Store(abs, &tokEntry{size: st.Size(), mtime: st.ModTime(), tok: tok})
	return tok, nil
}

// Tokenize answers tokenize.
func (e *Engine) Tokenize(ctx context.Context, req TokenizeRequest) (*TokenizeResult, error) {
	tok, err := e.tokenizerFor(ctx, req.Model, "tokenize")
	if err != nil {
		return nil, err
	}
	ids, err := tok.Encode(req.Text, req.AddSpecial, req.ParseSpecial)
	if err != nil {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"text\": %v", err)
	}
	if ids == nil {
		ids = []int32{}
	}
	return &TokenizeResult{Tokens: ids}, nil
}

// Detokenize answers detokenize.
func (e *Engine) Detokenize(ctx context.Context, req DetokenizeRequest) (*DetokenizeResult, error) {
	tok, err := e.tokenizerFor(ctx, req.Model, "detokenize")
	if err != nil {
		return nil, err
	}
	for i, id := range req.Tokens {
		if id < 0 || int(id) >= tok.NVocab() {
			return nil, errorf(CodeInvalidParams, "invalid params: field \"tokens\": tokens[%d] = %d is outside the vocabulary (0..%d)", i, id, tok.NVocab()-1)
		}
	}
	return &DetokenizeResult{Text: tok.Detokenize(req.Tokens, false, true)}, nil
}
