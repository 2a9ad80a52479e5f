package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/ctl"
)

func sharedModel(t *testing.T, name string) string {
	dir := os.Getenv("LLM_ENGINE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	p, _ := filepath.Abs(filepath.Join(dir, "models", name))
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("SKIPPING %s: shared model %s not found (set LLM_ENGINE_SHARED)", t.Name(), p)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return p
}

func runCtx(ctx context.Context, args ...string) result {
	var out, errb bytes.Buffer
	code := ctl.Main(ctx, args, &out, &errb, func(string) string { return "" })
	return result{code, out.String(), errb.String()}
}

// TestPlanCommands: enginectl plan validate | apply | list | show | diff |
// propose | promote | history | rollback | schema | resolve, runs, run,
// cancel, bench, tune and events against the real engine.
func TestPlanCommands(t *testing.T) {
	model := sharedModel(t, "stories260K.gguf")
	eng, err := engine.New(engine.Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := daemontest.Start(t, daemon.Config{}, eng)
	t.Cleanup(func() { eng.Close() })
	sock := "--socket=" + s.Path
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(doc), 0o644)
		return p
	}
	good := write("good.json", `{"threads": 1}`)
	better := write("better.json", `{"threads": 2, "scheduler": {"mode": "batching", "max_batch": 4}}`)
	bad := write("bad.json", `{"threads": 0, "limits": {"max_wats": 3}}`)

	must := func(r result, what string) result {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s: %+v", what, r)
		}
		return r
	}
	if r := must(run(nil, sock, "load", model), "load"); !strings.HasPrefix(r.stdout, "loaded stories260K") {
		t.Fatalf("load: %+v", r)
	}
	r := must(run(nil, sock, "plan", "validate", good, "--model", "stories260K"), "validate")
	if !strings.Contains(r.stdout, "valid") || !strings.Contains(r.stdout, "hash sha256:") || !strings.Contains(r.stdout, "threads 1") {
		t.Fatalf("validate: %+v", r)
	}
	r = run(nil, sock, "plan", "validate", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "/threads: minimum") || !strings.Contains(r.stderr, "/limits/max_wats: unknown field") || !strings.Contains(r.stderr, "(code -32020)") {
		t.Fatalf("validate bad: %+v", r)
	}
	r = must(run(nil, sock, "plan", "apply", "fast", good, "--rationale", "one thread"), "apply")
	if !strings.HasPrefix(r.stdout, "fast@1 stored and activated") || !strings.Contains(r.stdout, "/threads: (absent) → 1") {
		t.Fatalf("apply: %+v", r)
	}
	if r = run(nil, sock, "plan", "apply", "fast", bad); r.code != 1 || !strings.Contains(r.stderr, "/threads") {
		t.Fatalf("apply bad: %+v", r)
	}
	r = must(run(nil, sock, "plan", "list"), "list")
	if !regexp.MustCompile(`(?m)^default\s+1\s+1\s+1$`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^fast\s+1\s+1\s+1$`).MatchString(r.stdout) {
		t.Fatalf("list: %+v", r)
	}
	r = must(run(nil, sock, "plan", "show", "fast"), "show")
	if !strings.Contains(r.stdout, `"threads": 1`) || !strings.Contains(r.stderr, "fast@1 (active") {
		t.Fatalf("show: %+v", r)
	}
	r = must(run(nil, sock, "plan", "diff", "default", better), "diff")
	if !strings.Contains(r.stdout, "/scheduler/max_batch: (absent) → 4") || !strings.Contains(r.stdout, "--- default@1") {
		t.Fatalf("diff: %+v", r)
	}
	r = must(run(nil, sock, "plan", "diff", "fast", "fast@1"), "diff same")
	if !strings.Contains(r.stdout, "same plan") {
		t.Fatalf("diff same: %+v", r)
	}
	r = must(run(nil, sock, "plan", "propose", "fast", better, "--rationale", "batching"), "propose")
	if !strings.HasPrefix(r.stdout, "fast@2 proposed (active: 1, was 1)") {
		t.Fatalf("propose: %+v", r)
	}
	must(run(nil, sock, "plan", "promote", "fast", "2", "--rationale", "ok"), "promote")
	r = must(run(nil, sock, "plan", "history", "fast"), "history")
	if strings.Count(r.stdout, "\n#") != 3 || !strings.Contains(r.stdout, "reject by uid") || !strings.Contains(r.stdout, "promote version 2 by uid") || !strings.Contains(r.stdout, "why: batching") {
		t.Fatalf("history: %+v", r)
	}
	must(run(nil, sock, "plan", "rollback", "fast"), "rollback")
	r = must(run(nil, sock, "--json", "plan", "show", "fast"), "show json")
	var g engine.PlanGetResult
	if json.Unmarshal([]byte(r.stdout), &g) != nil || g.Version != 1 || g.Status != "active" {
		t.Fatalf("after rollback: %+v", r)
	}
	r = must(run(nil, sock, "plan", "schema"), "schema")
	if !strings.Contains(r.stdout, `"max_watts"`) {
		t.Fatalf("schema: %+v", r)
	}
	r = must(run(nil, sock, "plan", "resolve", "fast", "-m", "stories260K"), "resolve")
	if !strings.Contains(r.stdout, "token_embd.weight") || !strings.Contains(r.stdout, "TENSOR") {
		t.Fatalf("resolve: %+v", r)
	}

	r = must(run(nil, sock, "--json", "generate", "-m", "stories260K", "-p", "Once upon a time", "-n", "4", "--plan", "fast"), "generate")
	var res engine.GenerateResult
	if json.Unmarshal([]byte(r.stdout), &res) != nil || res.Plan.Name != "fast" || res.Plan.Version != 1 {
		t.Fatalf("generate --plan fast: %+v", r)
	}
	r = must(run(nil, sock, "runs"), "runs")
	if !strings.Contains(r.stdout, res.RunID) || !strings.Contains(r.stdout, "fast@1") {
		t.Fatalf("runs: %+v", r)
	}
	r = must(run(nil, sock, "run", res.RunID), "run")
	if !strings.Contains(r.stdout, "plan:     fast@1 sha256:") || !strings.Contains(r.stdout, "threads 1") {
		t.Fatalf("run: %+v", r)
	}
	if r2 := must(run(nil, sock, "runs", "show", res.RunID), "runs show"); r2.stdout != r.stdout {
		t.Fatalf("runs show ID differs from run ID:\n%s\n%s", r2.stdout, r.stdout)
	}
	for _, bad := range [][]string{{"runs", "show"}, {"runs", "list", "x"}} {
		if r2 := run(nil, append([]string{sock}, bad...)...); r2.code != 2 {
			t.Errorf("%v: %+v", bad, r2)
		}
	}
	if r = must(run(nil, sock, "cancel", res.RunID), "cancel"); !strings.Contains(r.stdout, "already finished") {
		t.Fatalf("cancel: %+v", r)
	}
	if r = run(nil, sock, "run", "run-20200101T000000.000Z-000000"); r.code != 1 || !strings.Contains(r.stderr, "(code -32022)") {
		t.Fatalf("run unknown: %+v", r)
	}

	r = must(run(nil, sock, "bench", "-m", "stories260K", "--plan", "fast", "--plan", `{"threads":2}`, "-n", "4", "-r", "1"), "bench")
	if !strings.Contains(r.stdout, "fast@1") || !strings.Contains(r.stdout, "inline#1") || !strings.Contains(r.stdout, "outputs identical across plans: true") {
		t.Fatalf("bench: %+v", r)
	}
	r = must(run(nil, sock, "tune", "-m", "stories260K", "--name", "fast", "--objective", "throughput", "--threads", "1,2", "--batch", "1", "--kv", "F32,F16", "-n", "4", "-r", "1", "--dry-run"), "tune")
	if !strings.Contains(r.stdout, "CANDIDATE") || !strings.Contains(r.stdout, "threads=2,batch=1,kv=F32") || !strings.Contains(r.stdout, "threads=2,batch=1,kv=F16") || !strings.Contains(r.stdout, "winner") && !strings.Contains(r.stdout, "no winner") {
		t.Fatalf("tune: %+v", r)
	}
	r = must(run(nil, sock, "sched"), "sched")
	if !strings.Contains(r.stdout, "IDLE CACHES") || !strings.Contains(r.stdout, "stories260K") || !strings.Contains(r.stdout, "runs in progress 0") {
		t.Fatalf("sched: %+v", r)
	}
	r = must(run(nil, sock, "--json", "sched"), "sched --json")
	var sst engine.SchedStats
	if err := json.Unmarshal([]byte(r.stdout), &sst); err != nil || len(sst.Lanes) == 0 || sst.Lanes[0].Steps == 0 {
		t.Fatalf("sched --json: %v %+v", err, r)
	}

	// events: lines until interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	evDone := make(chan result, 1)
	go func() { evDone <- runCtx(ctx, sock, "events", "--topic", "plan") }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if st := eng.SchedStats(); st.Subscribers == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events did not subscribe")
		}
	}
	must(run(nil, sock, "plan", "apply", "fast", better), "apply again")
	time.Sleep(200 * time.Millisecond)
	cancel()
	r = <-evDone
	if r.code != ctl.ExitInterrupted || !strings.Contains(r.stdout, `"method":"event.plan.changed"`) {
		t.Fatalf("events: %+v", r)
	}
}
