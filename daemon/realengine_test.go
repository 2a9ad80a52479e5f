package daemon_test

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/engine/synth"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

// realEngine starts the real engine, or skips (loudly) while engine/ is
// stubbed out (go test -overlay while a colleague finishes engine/model).
func realEngine(t *testing.T) *engine.Engine {
	t.Helper()
	eng, err := engine.New(engine.Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: 1})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() { eng.Close() })
	_, err = eng.LoadModel(t.Context(), engine.LoadRequest{Path: "/nonexistent/x.gguf"})
	var ce rpc.CodedError
	if !errors.As(err, &ce) {
		t.Skipf("SKIP: the engine is a stub here (LoadModel: %v): model-path cases need the real engine", err)
	}
	return eng
}

// Model paths that are not regular files are refused with a clear error,
// without blocking (a FIFO with no writer would block an open), and the
// daemon goes on serving. These inputs reach the real engine.
func TestBadModelPaths(t *testing.T) {
	eng := realEngine(t)
	s := daemontest.Start(t, daemon.Config{}, eng)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "model.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop.gguf")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.gguf")
	os.WriteFile(empty, nil, 0o644)
	c := dialT(t, s.Path)
	for _, tc := range []struct {
		name, path string
		code       int64
		msg        string
	}{
		{"directory", dir, engine.CodeModelInvalid, "directory"},
		{"FIFO", fifo, engine.CodeModelInvalid, "FIFO"},
		{"/dev/zero", "/dev/zero", engine.CodeModelInvalid, "character device"},
		{"symlink loop", loop, engine.CodeModelInvalid, "too many levels of symbolic links"},
		{"missing", filepath.Join(dir, "nope.gguf"), engine.CodeModelNotFound, "no such file"},
		{"empty file", empty, engine.CodeModelInvalid, ""},
	} {
		start := time.Now()
		_, err := c.LoadModel(ctx5(t), engine.LoadRequest{Path: tc.path})
		var re *rpc.Error
		if !errors.As(err, &re) || re.Code != tc.code || !strings.Contains(re.Message, tc.msg) {
			t.Errorf("%s: got %v, want code %d containing %q", tc.name, err, tc.code, tc.msg)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %v", tc.name, d)
		}
		// The same paths through generate (loaded on demand).
		_, err = c.Generate(ctx5(t), engine.GenerateRequest{Model: tc.path, Prompt: "hi", MaxTokens: 1}, nil)
		if !errors.As(err, &re) || re.Code != tc.code {
			t.Errorf("%s via generate: got %v", tc.name, err)
		}
	}
	if _, err := c.Info(ctx5(t)); err != nil {
		t.Fatalf("daemon no longer serving: %v", err)
	}
}

func dialT(t *testing.T, path string) *client.Client {
	t.Helper()
	c, err := client.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A prompt with invalid UTF-8 reaches the real engine with U+FFFD in place
// of the bad bytes: the run is the same as with the replaced text.
func TestInvalidUTF8PromptRealEngine(t *testing.T) {
	eng := realEngine(t)
	s := daemontest.Start(t, daemon.Config{}, eng)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	spec := synth.Presets["tiny"]
	spec.Seed = 1
	if err := synth.Llama(f, spec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c := dialT(t, s.Path)
	mi, err := c.LoadModel(ctx5(t), engine.LoadRequest{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	gen := func(rawPrompt string) msg {
		r := &rawConn{t: t}
		nc, err := net.Dial("unix", s.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		r.c, r.dec = nc.(*net.UnixConn), json.NewDecoder(nc)
		r.send(`{"jsonrpc":"2.0","id":1,"method":"generate","params":{"model":"` + mi.ModelID + `","max_tokens":3,"prompt":"` + rawPrompt + `"}}`)
		return r.read()
	}
	bad := gen("caf\xc3 \xff\xfe ok \\ud800")
	good := gen("caf\uFFFD \uFFFD\uFFFD ok \uFFFD")
	if bad.Error != nil || good.Error != nil {
		t.Fatalf("errors: %+v %+v", bad.Error, good.Error)
	}
	var rb, rg engine.GenerateResult
	json.Unmarshal(bad.Result, &rb)
	json.Unmarshal(good.Result, &rg)
	if !slices.Equal(rb.PromptTokens, rg.PromptTokens) || !slices.Equal(rb.Tokens, rg.Tokens) || len(rb.Tokens) != 3 {
		t.Fatalf("invalid UTF-8 run %v→%v, replaced-text run %v→%v", rb.PromptTokens, rb.Tokens, rg.PromptTokens, rg.Tokens)
	}
}
