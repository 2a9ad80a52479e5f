package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
)

func sharedFile(t *testing.T, rel string) string {
	t.Helper()
	dir := os.Getenv("LLM_ENGINE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	p, _ := filepath.Abs(filepath.Join(dir, rel))
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("SKIPPING %s: shared file %s not found (set LLM_ENGINE_SHARED)", t.Name(), p)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return p
}

func runCtl(stdinText string, terminal bool, args ...string) (int, string, string) {
	stdin = strings.NewReader(stdinText)
	stdinIsTerminal = func() bool { return terminal }
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb, func(string) string { return "" })
	return code, out.String(), errb.String()
}

// TestTokenizeChatAPICommands: enginectl tokenize, detokenize, chat (one
// turn, stdin, interactive) and api against the real engine.
func TestTokenizeChatAPICommands(t *testing.T) {
	origTerm := stdinIsTerminal
	defer func() { stdin, stdinIsTerminal = os.Stdin, origTerm }()
	model := sharedFile(t, "models/stories260K.gguf")
	vocab := sharedFile(t, "vocab/ggml-vocab-gpt-2.gguf")
	eng, err := engine.New(engine.Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := daemontest.Start(t, daemon.Config{}, eng)
	t.Cleanup(func() { eng.Close() })
	sock := "--socket=" + s.Path

	code, out, errs := runCtl("", false, sock, "tokenize", "-m", vocab, "Hello world")
	if code != 0 || out != "15496 995\n" {
		t.Fatalf("tokenize: %d %q %q", code, out, errs)
	}
	code, out, errs = runCtl("", false, sock, "detokenize", "-m", vocab, "15496", "995")
	if code != 0 || out != "Hello world" {
		t.Fatalf("detokenize: %d %q %q", code, out, errs)
	}
	code, out, _ = runCtl("", false, sock, "tokenize", "-m", model, "--special", "Hello")
	if code != 0 || !strings.HasPrefix(out, "1 ") {
		t.Fatalf("tokenize --special: %d %q", code, out)
	}

	code, out, errs = runCtl("", false, sock, "api")
	var doc struct {
		Methods []struct{ Name string } `json:"methods"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Methods) < 10 {
		t.Fatalf("api: %d %q", code, errs)
	}

	// No template in stories260K: the error names it; with --template it works.
	code, _, errs = runCtl("", false, sock, "chat", "-m", model, "-n", "3", "Hi")
	if code != ExitError || !strings.Contains(errs, "template") {
		t.Fatalf("chat without a template: %d %q", code, errs)
	}
	tmpl := filepath.Join(t.TempDir(), "t.jinja")
	os.WriteFile(tmpl, []byte("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"), 0o644)
	code, out, errs = runCtl("", false, sock, "chat", "-m", model, "--template", tmpl, "-n", "3", "-s", "Be brief.", "Once", "upon")
	if code != 0 || out == "" || !strings.Contains(errs, "3 tokens (length)") {
		t.Fatalf("chat one turn: %d %q %q", code, out, errs)
	}
	code, out, errs = runCtl("Once upon\n", false, sock, "--json", "chat", "-m", model, "--template", tmpl, "-n", "2")
	var res engine.ChatResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.PromptText != "<user>Once upon\n<assistant>" {
		t.Fatalf("chat from stdin: %d %q %q", code, out, errs)
	}
	// Interactive: two turns, the second sees the first's history; EOF ends.
	code, _, errs = runCtl("Hello\nAgain\n", true, sock, "chat", "-m", model, "--template", tmpl, "-n", "2")
	if code != 0 || strings.Count(errs, "] 2 tokens (length)") != 2 {
		t.Fatalf("interactive chat: %d %q", code, errs)
	}
	runs, err := eng.ListRuns(context.Background(), engine.RunListRequest{})
	if err != nil || len(runs.Runs) == 0 {
		t.Fatal(err)
	}
	rec, err := eng.GetRun(context.Background(), engine.RunIDRequest{RunID: runs.Runs[0].RunID})
	if err != nil || !strings.Contains(rec.Request.Prompt, "<user>Hello\n<assistant>") || !strings.HasSuffix(rec.Request.Prompt, "<user>Again\n<assistant>") {
		t.Fatalf("second turn's prompt lacks the history: %q %v", rec.Request.Prompt, err)
	}
}
