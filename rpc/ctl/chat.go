package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/client"
)

// stdin and stdinIsTerminal are os.Stdin and whether it is a terminal;
// tests replace them.
var (
	stdin           io.Reader = os.Stdin
	stdinIsTerminal           = func() bool {
		st, err := os.Stdin.Stat()
		return err == nil && st.Mode()&os.ModeCharDevice != 0
	}
)

type tokenizeCmd struct {
	Model        string `short:"m" required:"" help:"Model id, model path or vocab-only GGUF (a path that is not loaded needs the admin rights of load)."`
	Special      bool   `help:"Add the BOS/EOS tokens the vocabulary asks for (add_special)."`
	ParseSpecial bool   `name:"parse-special" help:"Turn special tokens' text (\"<|im_start|>\") into those tokens."`
	Text         string `arg:"" help:"Text to tokenize."`
}

func (tokenizeCmd) Help() string {
	return "Prints the token ids of TEXT, space-separated (--json: {tokens}). The model may be a vocab-only GGUF: only its tokenizer is read."
}

func (t tokenizeCmd) Run(e *env) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Tokenize(e.ctx, engine.TokenizeRequest{Model: t.Model, Text: t.Text, AddSpecial: t.Special, ParseSpecial: t.ParseSpecial})
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	ids := make([]string, len(res.Tokens))
	for i, id := range res.Tokens {
		ids[i] = strconv.Itoa(int(id))
	}
	fmt.Fprintln(e.stdout, strings.Join(ids, " "))
	return nil
}

type detokenizeCmd struct {
	Model string   `short:"m" required:"" help:"Model id, model path or vocab-only GGUF."`
	IDs   []string `arg:"" name:"ids" help:"Token ids (separated by spaces or commas)."`
}

func (detokenizeCmd) Help() string {
	return "Prints the text of the token ids (special tokens as their text), without adding a newline (--json: {text})."
}

func (d detokenizeCmd) Run(e *env) error {
	var ids []int32
	for _, a := range d.IDs {
		for _, f := range strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == ' ' || r == '[' || r == ']' }) {
			n, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				return usageError{fmt.Errorf("token id %q: not an integer", f)}
			}
			ids = append(ids, int32(n))
		}
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Detokenize(e.ctx, engine.DetokenizeRequest{Model: d.Model, Tokens: ids})
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	_, err = io.WriteString(e.stdout, res.Text)
	return err
}

type chatCmd struct {
	Model       string   `short:"m" required:"" help:"Model id, or a model path (loaded on demand)."`
	System      string   `short:"s" help:"System message."`
	Template    string   `type:"existingfile" help:"File holding a Jinja chat template to use instead of the model's."`
	MaxTokens   int      `short:"n" name:"max-tokens" help:"Tokens to generate per reply (0: the engine's default)."`
	Temperature *float32 `help:"Sampling temperature; 0 is greedy."`
	TopK        *int     `name:"top-k" help:"Sample among the K most likely tokens."`
	TopP        *float32 `name:"top-p" help:"Nucleus sampling threshold, in (0,1]."`
	Seed        *uint64  `help:"Sampling seed."`
	Plan        string   `help:"Plan: a name, or an inline JSON object."`
	Message     []string `arg:"" optional:"" help:"The user's message (one turn). Without it: an interactive conversation when stdin is a terminal, else stdin is the message."`
}

func (chatCmd) Help() string {
	return `Renders the conversation with the model's chat template and streams the assistant's reply to stdout (a summary goes to stderr). With MESSAGE: one turn. Without it and stdin a terminal: an interactive conversation that keeps its history; end it with Ctrl-D. Without it and stdin not a terminal: stdin is the message.

Errors: -32602 naming "template" when the model has no chat template (give one with --template).`
}

func (ch chatCmd) Run(e *env) error {
	g := generateCmd{Model: ch.Model, MaxTokens: ch.MaxTokens, Temperature: ch.Temperature, TopK: ch.TopK, TopP: ch.TopP, Seed: ch.Seed, Plan: ch.Plan}
	greq, err := g.request()
	if err != nil {
		return err
	}
	req := engine.ChatRequest{Model: ch.Model, MaxTokens: greq.MaxTokens, Sampling: greq.Sampling, Plan: greq.Plan}
	if ch.Template != "" {
		b, err := os.ReadFile(ch.Template)
		if err != nil {
			return usageError{err}
		}
		req.Template = string(b)
	}
	var history []engine.ChatMessage
	if ch.System != "" {
		history = append(history, engine.ChatMessage{Role: "system", Content: ch.System})
	}
	interactive := len(ch.Message) == 0 && stdinIsTerminal()
	if !interactive {
		msg := strings.Join(ch.Message, " ")
		if len(ch.Message) == 0 {
			b, err := io.ReadAll(stdin)
			if err != nil {
				return err
			}
			msg = strings.TrimRight(string(b), "\n")
		}
		if msg == "" {
			return usageError{errors.New("no message (give MESSAGE, or run on a terminal for a conversation)")}
		}
		c, err := e.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		req.Messages = append(history, engine.ChatMessage{Role: "user", Content: msg})
		_, err = e.chatTurn(c, req)
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for {
		fmt.Fprint(e.stderr, "> ")
		if !sc.Scan() {
			fmt.Fprintln(e.stderr)
			return sc.Err()
		}
		msg := sc.Text()
		if strings.TrimSpace(msg) == "" {
			continue
		}
		req.Messages = append(history, engine.ChatMessage{Role: "user", Content: msg})
		res, err := e.chatTurn(c, req)
		if err != nil {
			return err
		}
		history = append(req.Messages, engine.ChatMessage{Role: "assistant", Content: res.Text})
	}
}

// chatTurn runs one chat call, streaming the reply (or printing the JSON
// result with --json).
func (e *env) chatTurn(c *client.Client, req engine.ChatRequest) (*engine.ChatResult, error) {
	if e.json {
		res, err := c.Chat(e.ctx, req, nil)
		if err != nil {
			return nil, err
		}
		return res, e.printJSON(res)
	}
	var last string
	res, err := c.Chat(e.ctx, req, func(ev engine.TokenEvent) {
		if ev.Text != "" {
			io.WriteString(e.stdout, ev.Text)
			last = ev.Text
		}
	})
	if last != "" && (err != nil || !strings.HasSuffix(last, "\n")) {
		fmt.Fprintln(e.stdout)
	}
	if err != nil {
		return nil, err
	}
	m := res.Metrics
	fmt.Fprintf(e.stderr, "[%s %s] %d tokens (%s): prompt %d tokens, ttft %.1f ms, %.2f tokens/s\n",
		res.RunID, res.ModelID, m.GeneratedTokens, res.FinishReason, m.PromptTokens, m.TTFTMS, m.TokensPerSecond)
	return res, nil
}

type apiCmd struct{ discoverCmd }

func (apiCmd) Help() string {
	return "Prints the OpenRPC document of the daemon's API (rpc.discover); the same as discover."
}
