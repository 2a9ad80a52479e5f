// Package completion holds the shell completion scripts of enginectl
// (enginectl.bash, _enginectl); its test keeps them in step with the
// command line of rpc/ctl.
package completion

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/weos/llm-engine/rpc/ctl"
)

func help(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Main(context.Background(), append(args, "--help"), &out, &errb, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("enginectl %v --help: %d %s", args, code, errb.String())
	}
	return out.String()
}

var (
	commandRE = regexp.MustCompile(`(?m)^  ([a-z]+)  `)
	flagRE    = regexp.MustCompile(`(?m)^\s+(?:(-[a-z]), )?(--[a-z-]+)`)
)

// commands returns enginectl's commands and, for each, its flags.
func commands(t *testing.T) map[string][]string {
	top := help(t)
	i := strings.Index(top, "Commands:")
	if i < 0 {
		t.Fatalf("no command list in:\n%s", top)
	}
	out := map[string][]string{}
	for _, m := range commandRE.FindAllStringSubmatch(top[i:], -1) {
		cmd := m[1]
		for _, f := range flagRE.FindAllStringSubmatch(help(t, cmd), -1) {
			if f[1] != "" {
				out[cmd] = append(out[cmd], f[1])
			}
			out[cmd] = append(out[cmd], f[2])
		}
	}
	if len(out) < 6 {
		t.Fatalf("found commands %v in:\n%s", out, top)
	}
	return out
}

// Every command and flag of enginectl appears in both scripts.
func TestScriptsCoverTheCommandLine(t *testing.T) {
	cmds := commands(t)
	for _, script := range []string{"enginectl.bash", "_enginectl"} {
		b, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for cmd, flags := range cmds {
			if !regexp.MustCompile(`\b` + cmd + `\b`).MatchString(text) {
				t.Errorf("%s: command %q missing", script, cmd)
			}
			for _, f := range flags {
				name := strings.TrimLeft(f, "-")
				if script == "_enginectl" && len(name) == 1 {
					f = "-" + name // zsh specs write {-m+,--model=}
				}
				if !strings.Contains(text, f) {
					t.Errorf("%s: flag %s of %s missing", script, f, cmd)
				}
			}
		}
	}
}

func TestScriptsParse(t *testing.T) {
	for _, sh := range []struct{ shell, script string }{{"bash", "enginectl.bash"}, {"zsh", "_enginectl"}} {
		path, err := exec.LookPath(sh.shell)
		if err != nil {
			t.Logf("SKIP: %s not installed: %s not checked", sh.shell, sh.script)
			continue
		}
		if out, err := exec.Command(path, "-n", sh.script).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", sh.shell, sh.script, err, out)
		}
	}
}

// The bash function completes commands and flags (without bash-completion
// installed: the script falls back to COMP_WORDS).
func TestBashCompletes(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("SKIP: bash not installed")
	}
	complete := func(line string) []string {
		t.Helper()
		script := `source ./enginectl.bash
COMP_LINE="` + line + `"
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_enginectl
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script)
		cmd.Env = []string{"PATH=/nonexistent"} // enginectl itself is not called
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", line, err, out)
		}
		got := strings.Fields(string(out))
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"enginectl ge", []string{"generate"}},
		{"enginectl ", []string{"api", "bench", "cancel", "chat", "detokenize", "discover", "events", "generate", "help", "info", "load", "metrics", "models", "plan", "power", "run", "runs", "sched", "tokenize", "tune", "unload"}},
		{"enginectl tokenize --p", []string{"--parse-special"}},
		{"enginectl plan pro", []string{"promote", "propose"}},
		{"enginectl tune --obj", []string{"--objective"}},
		{"enginectl --socket /tmp/x generate --to", []string{"--top-k", "--top-p"}},
		{"enginectl --j", []string{"--json"}},
		{"enginectl help un", []string{"unload"}},
		{"enginectl load --p", []string{"--plan"}},
	} {
		if got := complete(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.line, got, tc.want)
		}
	}
}
