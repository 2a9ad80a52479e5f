package chat

import (
	"regexp"
	"strings"
)

// endOfTurnMarkers are the end-of-turn token strings of the common template
// families, in the order EndOfTurnMarkers reports them.
var endOfTurnMarkers = []string{
	"<|eot_id|>",    // Llama 3.x: end of turn
	"<|eom_id|>",    // Llama 3.1: end of message, after a built-in tool call
	"<|im_end|>",    // ChatML: Qwen, SmolLM, …
	"<end_of_turn>", // Gemma
	"<|end|>",       // Phi-3 / Phi-3.5
	"</s>",          // Llama 2 / Mistral (usually written through eos_token)
}

var (
	jinjaComment = regexp.MustCompile(`(?s)\{#.*?#\}`)
	eosTokenVar  = regexp.MustCompile(`\beos_token\b`)
)

// EndOfTurnMarkers reports which end-of-turn markers the template emits:
// those of <|eot_id|>, <|eom_id|>, <|im_end|>, <end_of_turn>, <|end|> and
// </s> that it writes literally
// (outside {# comments #}), in that order. A template that ends turns
// with `eos_token` instead (Mistral, Llama 2, Phi-3.5 at the end of a
// conversation) has the EOS token as a marker too, which only the
// vocabulary names: see StopTokens.
func EndOfTurnMarkers(tmplSrc string) []string {
	src := jinjaComment.ReplaceAllString(tmplSrc, "")
	var out []string
	for _, m := range endOfTurnMarkers {
		if strings.Contains(src, m) {
			out = append(out, m)
		}
	}
	return out
}

// EmitsEOSToken reports whether the template writes the `eos_token`
// variable (outside comments).
func EmitsEOSToken(tmplSrc string) bool {
	src := jinjaComment.ReplaceAllString(tmplSrc, "")
	return eosTokenVar.MatchString(src)
}

// StopTokens returns the token strings generation should stop at for a
// model with chat template tmplSrc whose GGUF vocabulary pieces are vocab
// and whose EOS token is eosToken (tokenizer.ggml.eos_token_id's piece;
// "" if none): the template's EndOfTurnMarkers that are pieces of the
// vocabulary, then eosToken if it is a piece and not already listed. The
// EOS token is always included: a model stops with it whatever the
// template (Mistral's turns end with eos_token = "</s>", Phi-3.5 ends a
// conversation with <|endoftext|>).
func StopTokens(tmplSrc string, vocab []string, eosToken string) []string {
	pieces := make(map[string]bool, 16)
	want := make(map[string]bool, len(endOfTurnMarkers)+1)
	for _, m := range endOfTurnMarkers {
		want[m] = true
	}
	want[eosToken] = true
	for _, p := range vocab {
		if want[p] {
			pieces[p] = true
		}
	}
	var out []string
	for _, m := range EndOfTurnMarkers(tmplSrc) {
		if pieces[m] {
			out = append(out, m)
		}
	}
	if eosToken != "" && pieces[eosToken] {
		dup := false
		for _, m := range out {
			dup = dup || m == eosToken
		}
		if !dup {
			out = append(out, eosToken)
		}
	}
	return out
}
