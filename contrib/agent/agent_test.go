package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

// The test binary doubles as the agent (and as a peer trying to promote)
// when run as another user under setpriv.
func TestMain(m *testing.M) {
	var args []string
	json.Unmarshal([]byte(os.Getenv("LLME_AGENT_ARGS")), &args)
	switch os.Getenv("LLME_AGENT_AS") {
	case "agent":
		os.Exit(run(context.Background(), args, os.Stdout, os.Stderr, os.Getenv))
	case "promote": // args: socket, name, version
		c, err := client.Dial(args[0])
		if err == nil {
			var v int
			fmt.Sscan(args[2], &v)
			_, err = c.PromotePlan(context.Background(), args[1], v, "let me")
		}
		var re *rpc.Error
		if errors.As(err, &re) {
			fmt.Printf("%d %s\n", re.Code, re.Message)
			os.Exit(0)
		}
		fmt.Printf("0 %v\n", err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

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

// peerRunner runs the agent (or a promote attempt) as uid 65534 through
// setpriv when the test runs as root, else in this process (as this uid).
type peerRunner struct {
	t       *testing.T
	bin     string // a copy of the test binary that uid 65534 can run
	setpriv string
}

func newPeerRunner(t *testing.T, dir string) *peerRunner {
	pr := &peerRunner{t: t}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Logf("NOTE: not root or no setpriv: the agent runs in-process under this uid; the unauthorised promote is simulated through the peer in the call's context")
		return pr
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	pr.bin = filepath.Join(dir, "agent.test")
	if err := os.WriteFile(pr.bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	pr.setpriv = setpriv
	return pr
}

func (pr *peerRunner) real() bool { return pr.setpriv != "" }

func (pr *peerRunner) run(as string, args ...string) (string, string) {
	t := pr.t
	if !pr.real() {
		if as != "agent" {
			t.Fatal("in-process runner only runs the agent")
		}
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb, os.Getenv); code != 0 {
			t.Fatalf("agent exited %d: %s", code, errb.String())
		}
		return out.String(), errb.String()
	}
	a, _ := json.Marshal(args)
	cmd := exec.Command(pr.setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", pr.bin)
	cmd.Env = []string{"LLME_AGENT_AS=" + as, "LLME_AGENT_ARGS=" + string(a), "GORACE=atexit_sleep_ms=0", "PATH=" + os.Getenv("PATH")}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s as uid 65534: %v\n%s", as, err, errb.String())
	}
	return out.String(), errb.String()
}

// TestAgentEndToEnd is issue 7's scenario: an agent (another user, no
// rights) subscribes to events, benches the active plan against a
// candidate, and proposes the better one; it cannot promote it; an admin
// does; a run in progress keeps its plan, a new generate uses the promoted
// one; rollback restores the old one; the audit log holds the put, the
// proposal, the promotion and the rollback with their actors.
func TestAgentEndToEnd(t *testing.T) {
	modelPath := sharedModel(t, "stories260K.gguf")
	dir, err := os.MkdirTemp("", "llme-agent-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	eng, err := engine.New(engine.Options{StateDir: filepath.Join(dir, "state"), CacheDir: filepath.Join(dir, "cache"), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := daemontest.Start(t, daemon.Config{}, eng)
	t.Cleanup(func() { eng.Close() })
	os.Chmod(filepath.Dir(s.Path), 0o755)
	os.Chmod(s.Path, 0o666)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := client.Dial(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	mi, err := admin.LoadModel(ctx, engine.LoadRequest{Path: modelPath})
	if err != nil {
		t.Fatal(err)
	}
	// The base plan makes every request wait 60 ms for a batch that never
	// fills (cost policy): a simple-mode candidate is clearly better.
	base := map[string]any{"threads": 1, "scheduler": map[string]any{"mode": "batching", "policy": "cost", "max_batch": 8, "max_wait_ms": 60}}
	b, _ := json.Marshal(base)
	put, err := admin.PutPlan(ctx, "default", b, "initial plan")
	if err != nil {
		t.Fatal(err)
	}

	pr := newPeerRunner(t, dir)
	stdout, stderr := pr.run("agent", "--socket", s.Path, "--model", mi.ModelID, "--objective", "throughput", "--threads", "1",
		"--batch", "1", "--max-tokens", "12", "--repetitions", "2", "--max-p95-ms", "1000", "--max-seconds", "60")
	var rep Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("agent output: %v\n%s\n%s", err, stdout, stderr)
	}
	o := rep.Outcome
	if o == nil || o.Winner == nil || o.Proposal == nil {
		t.Fatalf("the agent proposed nothing: %s\n%s", stdout, stderr)
	}
	if !strings.Contains(o.Winner.Label, "batch=1") || o.Winner.Score <= o.Base.Score || !o.Winner.Result.Identical {
		t.Fatalf("winner %+v", o.Winner)
	}
	if rep.Events[engine.EventRunFinished] < 4 || rep.Events[engine.EventPlanProposed] != 1 {
		t.Fatalf("events seen by the agent: %v", rep.Events)
	}
	proposed := o.Proposal.Version
	if o.Proposal.Active != put.Version {
		t.Fatalf("a proposal changed the active version: %+v", o.Proposal)
	}

	// The agent's user cannot promote.
	if pr.real() {
		out, _ := pr.run("promote", s.Path, "default", fmt.Sprint(proposed))
		if !strings.HasPrefix(out, fmt.Sprint(engine.CodeUnauthorized)) {
			t.Fatalf("uid 65534 promote: %s", out)
		}
	} else {
		svc := rpc.NewService(eng)
		pctx := rpc.WithPeer(ctx, rpc.Peer{Known: true, UID: 4242, PID: 1, Admin: false})
		_, err := svc.Call(pctx, rpc.MethodPlanPromote, json.RawMessage(fmt.Sprintf(`{"name":"default","version":%d}`, proposed)), nil)
		if re := rpc.AsError(err); re == nil || re.Code != engine.CodeUnauthorized {
			t.Fatalf("simulated unauthorised promote: %v", err)
		}
	}
	if g, _ := admin.GetPlan(ctx, "default", 0); g.Version != put.Version {
		t.Fatalf("active version %d after the refused promotion", g.Version)
	}

	// A run in progress keeps its plan through the promotion.
	long, err := client.Dial(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	started := make(chan struct{})
	type result struct {
		res *engine.GenerateResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		var once bool
		res, err := long.Generate(ctx, engine.GenerateRequest{Model: mi.ModelID, Prompt: "Once upon a time", MaxTokens: 400, Sampling: &engine.Sampling{Temperature: 1, Seed: 3}},
			func(engine.TokenEvent) {
				if !once {
					once = true
					close(started)
				}
			})
		done <- result{res, err}
	}()
	<-started
	prom, err := admin.PromotePlan(ctx, "default", proposed, "agent's evidence checked")
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.res.Plan.Version != put.Version {
		t.Fatalf("the run in progress switched plans: ran %s", r.res.Plan)
	}
	gen := func() *engine.GenerateResult {
		res, err := admin.Generate(ctx, engine.GenerateRequest{Model: mi.ModelID, Prompt: "Once upon a time", MaxTokens: 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	after := gen()
	if after.Plan.Version != proposed {
		t.Fatalf("new generate ran %s, want the promoted version %d", after.Plan, proposed)
	}
	rec, err := admin.GetRun(ctx, after.RunID)
	if err != nil || rec.Resolved == nil || *rec.Resolved.Plan.Scheduler.Mode != "simple" {
		t.Fatalf("run record of the new generate: %v", err)
	}
	rb, err := admin.RollbackPlan(ctx, "default", "back to the old plan")
	if err != nil || rb.Active != put.Version {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
	if res := gen(); res.Plan.Version != put.Version || res.PlanHash != r.res.PlanHash {
		t.Fatalf("after rollback ran %s %s", res.Plan, res.PlanHash)
	}

	// The audit log: put, propose, promote, rollback, with their actors.
	h, err := admin.PlanHistory(ctx, "default", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range h.Entries {
		got = append(got, e.Action)
	}
	want := []string{engine.AuditPut, engine.AuditPropose, engine.AuditPromote, engine.AuditRollback}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("audit actions %v, want %v", got, want)
	}
	agentUID := uint32(os.Getuid())
	if pr.real() {
		agentUID = 65534
	}
	for i, e := range h.Entries {
		wantUID := uint32(os.Getuid())
		if e.Action == engine.AuditPropose {
			wantUID = agentUID
		}
		if !e.Actor.Known || e.Actor.UID != wantUID || e.Actor.PID == 0 || e.Actor.Exe == "" {
			t.Errorf("entry %d (%s): actor %+v, want uid %d", i, e.Action, e.Actor, wantUID)
		}
	}
	pe := h.Entries[1]
	if pe.Actor.Admin || pe.Rationale == "" || len(pe.Evidence) == 0 || len(pe.Changes) == 0 || pe.Version != proposed {
		t.Fatalf("proposal entry: %+v", pe)
	}
	if pr.real() && !strings.HasSuffix(pe.Actor.Exe, "agent.test") {
		t.Errorf("the proposal's executable is %q", pe.Actor.Exe)
	}
	if h.Entries[2].Actor.Admin != true || h.Entries[2].Version != proposed || prom.PreviousActive != put.Version {
		t.Fatalf("promote entry: %+v", h.Entries[2])
	}
	t.Logf("agent (uid %d) proposed %s (%s: %.1f vs %.1f tok/s aggregate); promoted by uid %d; rolled back", agentUID, o.Winner.Label,
		o.Winner.ScoreKind, o.Winner.Score, o.Base.Score, os.Getuid())
}
