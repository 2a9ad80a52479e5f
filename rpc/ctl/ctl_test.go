package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/ctl"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(env map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	code := ctl.Main(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

func TestCommands(t *testing.T) {
	s := daemontest.Start(t, daemon.Config{}, daemontest.NewFakeEngine())
	sock := "--socket=" + s.Path

	r := run(nil, sock, "info")
	if r.code != 0 || !strings.Contains(r.stdout, "version:      9.9.9-test\n") || !strings.Contains(r.stdout, "backends:     cpu-generic\n") {
		t.Fatalf("info: %+v", r)
	}

	// The socket from the environment.
	r = run(map[string]string{"LLM_ENGINE_SOCKET": s.Path}, "--json", "info")
	var info engine.Info
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &info) != nil || info.NumCPU != 2 {
		t.Fatalf("info --json: %+v", r)
	}

	r = run(nil, sock, "models")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "no models loaded") {
		t.Fatalf("models (none): %+v", r)
	}
	r = run(nil, sock, "load", "/models/tiny.gguf", "--plan", `{"threads":1}`)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "loaded m1: llama, 1.0K params, F32:3 tensors") {
		t.Fatalf("load: %+v", r)
	}
	r = run(nil, sock, "models")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "MODEL ID") || !strings.HasPrefix(lines[1], "m1 ") || !strings.HasSuffix(lines[1], "/models/tiny.gguf") {
		t.Fatalf("models: %+v", r)
	}
	r = run(nil, sock, "--json", "models")
	var models []engine.ModelInfo
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &models) != nil || len(models) != 1 {
		t.Fatalf("models --json: %+v", r)
	}
	r = run(nil, sock, "unload", "m1")
	if r.code != 0 || r.stdout != "unloaded m1\n" {
		t.Fatalf("unload: %+v", r)
	}
	r = run(nil, sock, "unload", "m1")
	if r.code != 1 || r.stdout != "" || r.stderr != "enginectl: model not found: m1 (code -32010)\n" {
		t.Fatalf("unload again: %+v", r)
	}

	r = run(nil, sock, "generate", "-m", "tiny", "-p", "hello", "-n", "3", "--seed", "7")
	if r.code != 0 || r.stdout != "t0 t1 t2 " || !strings.Contains(r.stderr, "3 tokens (length)") || !strings.Contains(r.stderr, "seed 7") {
		t.Fatalf("generate: %+v", r)
	}
	r = run(nil, sock, "--json", "generate", "--model", "tiny", "--prompt", "hello", "-n", "2", "--temperature", "0.5", "--top-k", "4")
	var res engine.GenerateResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.Text != "t0 t1 " || res.Sampling.TopK != 4 || res.Sampling.Temperature != 0.5 {
		t.Fatalf("generate --json: %+v", r)
	}
	r = run(nil, sock, "generate", "-m", "panic", "-p", "x")
	if r.code != 1 || r.stdout != "" || !strings.HasSuffix(r.stderr, "(code -32603)\n") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("generate panic: %+v", r)
	}

	r = run(nil, sock, "discover")
	var doc map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &doc) != nil || doc["openrpc"] == nil {
		t.Fatalf("discover: %+v", r)
	}
}

func TestErrors(t *testing.T) {
	r := run(nil, "--socket", "/nonexistent/engine.sock", "info")
	if r.code != 1 || r.stdout != "" || r.stderr != "enginectl: cannot connect to /nonexistent/engine.sock: no such file (is llm-engined running?)\n" {
		t.Fatalf("missing socket: %+v", r)
	}
	r = run(nil, "info", "--bogus")
	if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "enginectl: unknown flag --bogus") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("bad flag: %+v", r)
	}
	r = run(nil, "generate", "-p", "x")
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "--model") {
		t.Fatalf("missing --model: %+v", r)
	}
	r = run(nil, "load", "x", "--plan", "{bad")
	if r.code != 2 || !strings.Contains(r.stderr, "--plan: invalid JSON") {
		t.Fatalf("bad plan: %+v", r)
	}
	r = run(nil, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "generate") {
		t.Fatalf("help: %+v", r)
	}
}
