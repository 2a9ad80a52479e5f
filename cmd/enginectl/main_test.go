package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
)

var binary string

// TestMain builds enginectl once into a temporary directory.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "enginectl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "enginectl")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building enginectl: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func enginectl(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestJSONInfo(t *testing.T) {
	s := daemontest.Start(t, daemon.Config{}, daemontest.NewFakeEngine())
	stdout, stderr, code := enginectl(t, nil, "--socket", s.Path, "--json", "info")
	var info engine.Info
	if code != 0 || stderr != "" || json.Unmarshal([]byte(stdout), &info) != nil || info.Version != "9.9.9-test" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The socket from the environment; streaming generate.
	stdout, stderr, code = enginectl(t, []string{"LLM_ENGINE_SOCKET=" + s.Path}, "generate", "-m", "x", "-p", "hi", "-n", "2")
	if code != 0 || stdout != "t0 t1 " || !strings.Contains(stderr, "2 tokens (length)") {
		t.Fatalf("generate: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	stdout, stderr, code := enginectl(t, []string{"LLM_ENGINE_SOCKET=" + path}, "info")
	want := "enginectl: cannot connect to " + path + ": no such file (is llm-engined running?)\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Usage errors: one line on stderr, nothing on stdout.
	stdout, stderr, code = enginectl(t, nil, "--json", "frobnicate")
	if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("bad command: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
