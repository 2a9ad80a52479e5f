// Package chat renders a model's chat template (a GGUF's
// tokenizer.chat_template) into a prompt exactly as Hugging Face
// transformers' apply_chat_template(messages, tokenize=False, ...) does.
//
//	tmpl, err := chat.Compile(src)            // once per model; safe for concurrent use
//	prompt, err := tmpl.Render(msgs, chat.RenderOptions{
//		AddGenerationPrompt: true,
//		BOSToken:            "<|begin_of_text|>", // vocab strings; "" = not defined
//		EOSToken:            "<|eot_id|>",
//		Extra:               map[string]any{"tools": json.RawMessage(toolsJSON)},
//	})
//	var te *chat.TemplateError // raise_exception("…") in the template
//	if errors.As(err, &te) { … te.Message … }
//
//	stops := chat.StopTokens(src, vocabPieces, eosPiece) // Llama 3.1: ["<|eot_id|>", "<|eom_id|>"]
//
// # What "exactly as transformers" means
//
// transformers renders with Python's Jinja2 as
// ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
// extensions=[AssistantTracker, loopcontrols]), keep_trailing_newline off,
// lenient undefined; it adds raise_exception(msg), strftime_now(fmt) and a
// tojson filter that is json.dumps(x, ensure_ascii=False, indent=…,
// separators=…, sort_keys=False) (insertion-ordered keys, no HTML escaping,
// Python float reprs); and it passes messages, add_generation_prompt,
// tools=None, documents=None and the tokenizer's special tokens (a token the
// tokenizer lacks is not passed at all). Render does the same: an empty
// BOSToken/EOSToken leaves the variable undefined, Extra adds or overrides
// variables, and strftime_now formats RenderOptions.Now (default
// time.Now()).
//
// A Message is the dict {"role", "content"} plus reasoning_content,
// tool_calls, tool_call_id and name when set (absent otherwise, so
// `'tool_calls' in message` is false for a plain message). Tool-call
// arguments and Extra values keep the key order of a json.RawMessage or a
// struct (through encoding/json, which also turns a whole float into an
// int); Go maps reach the template with sorted keys.
//
// # The Jinja engine: github.com/ardanlabs/jinja v1.8.0
//
// Candidates served by the Go module proxy, each run on the shared
// references (shared/templates/renderings.json: 8 vendors' templates ×
// conversations × add_generation_prompt = 64 renderings, 4 of them Gemma's
// "System role not supported" error) and on this package's own Jinja2
// references (testdata/: 208 tool-calling, unicode and thinking renderings
// of the same templates; 78 one-feature snippets; 300 random
// whitespace-control templates), with only the glue every caller needs
// (strftime_now pinned to the reference date; for gonja, trim_blocks and
// lstrip_blocks switched on):
//
//	                                           shared    extra  snippets  whitespace
//	ardanlabs/jinja v1.8.0, as is               64/64  180/208     52/78      23/300
//	nikolalohinski/gonja/v2 v2.9.1, as is       60/64  148/208     39/78     103/300
//	gonja + registered fixes (str.replace/
//	  strip methods, tojson, raise_exception)   64/64  162/208     44/78     103/300
//	this package (ardanlabs/jinja + the
//	  registrations and rewrite below)          64/64  208/208     69/78     300/300
//
// ardanlabs/jinja's own strftime_now reads the clock (56/64 unpinned).
// Both engines die of a Go stack overflow, a fatal error, on a macro that
// recurses without end (Python raises RecursionError).
//
// ardanlabs/jinja was chosen: it is written for LLM chat templates, has no
// dependencies, reproduces all 64 shared renderings unaided, and its values
// are ordered (Dict keeps insertion order and its constructors are public),
// which tool schemas and tool-call arguments need for tojson to match
// Python byte for byte. gonja's SmolLM3 failures (str.replace without a
// count, str.rstrip() without arguments) can be fixed by registering
// methods, but it holds dicts as Go maps and iterates and serialises them
// in sorted key order, so every tool schema comes out reordered, which no
// registration fixes; it also panics (integer divide by zero) on the `%`
// string-formatting operator, and it brings logrus, json-iterator and
// pkg/errors along. github.com/kluctl/go-jinja2 runs Python and
// github.com/flosch/pongo2 is a Django-template dialect; neither was
// considered. ardanlabs/jinja v1.9.0 and later fix its tojson indent and
// filtered-unpacking loop bugs but require Go 1.27; the project is on Go
// 1.26, so v1.8.0 it is (the workarounds below stay correct after an
// upgrade).
//
// # Workarounds
//
// Registered per render (template variables shadow the engine's
// built-ins): raise_exception (returns a *TemplateError), strftime_now
// (Python's strftime, glibc flags, on RenderOptions.Now), range (with the
// sandbox's 100000-item limit, which also bounds what one loop costs), and
// two filters the rewrite routes to: __chat_tojson (transformers' tojson)
// and __chat_print (Python's str() for {{ … }} output: None, True, 1.0,
// reprs of lists and dicts).
//
// Source rewrite, applied by Compile (rewrite.go has the details): Jinja2's
// lexer-level whitespace handling (trim_blocks, lstrip_blocks, `-`, `+`,
// one trailing newline dropped, \r\n) is done here, literal text is handed
// to the engine as string literals so that the engine's own, buggy
// whitespace trimming has nothing to act on, Python string-literal escapes
// are decoded, `| tojson` is renamed to __chat_tojson, `{{ x }}` becomes
// `{{ (x) | __chat_print }}`, `{% for k, v in X if C %}` is split into a
// collecting loop and a plain one, {% generation %} tags are dropped, and
// macro bodies count their nesting (an error past 1000 levels instead of a
// crash). Line numbers are preserved.
//
// # Known differences from Jinja2
//
// None of them is hit by the shared templates on any reference
// conversation (TestSnippets lists and checks them): str.title() keeps the
// case of the rest of each word (the title filter is right); `~` joins none
// as "" instead of "None"; `**` gives a float; // and % of negative numbers
// truncate instead of flooring; an attribute of an undefined variable is
// undefined instead of an error; a {% set %} in a loop body carries over to
// the next iteration; the `%` string operator and the format filter are
// missing; list.append() works where transformers' sandbox refuses it.
//
// # Stop tokens
//
// EndOfTurnMarkers reports which of <|eot_id|>, <|eom_id|>, <|im_end|>,
// <end_of_turn>, <|end|> and </s> a template writes literally; StopTokens
// keeps those that are pieces of the model's vocabulary and adds the EOS
// piece, which templates such as Mistral's emit through eos_token.
//
// # Tests
//
// TestSharedRenderings needs shared/ ($LLM_ENGINE_SHARED, else ../shared
// beside the repository; it skips loudly without it) and reproduces all 64
// shared renderings byte for byte, including Gemma's error as a
// *TemplateError with the same message; TestExtraRenderings needs the
// shared templates too. testdata/gen_testdata.py regenerates the other
// references with Python's Jinja2 set up like transformers (not run by the
// tests). FuzzCompileRender checks that no template panics or hangs the
// rewrite.
package chat
