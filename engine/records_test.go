package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recModel is a shared model for the run-record and plan-store tests.
func recModel(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("LLM_ENGINE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared")
	}
	p, _ := filepath.Abs(filepath.Join(dir, "models", name))
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("SKIPPING %s: shared model %s not found (set LLM_ENGINE_SHARED)", t.Name(), p)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return p
}

func recEngine(t *testing.T, state string, maxRecords int) *Engine {
	t.Helper()
	e, err := New(Options{StateDir: state, CacheDir: t.TempDir(), Threads: 1, MaxRunRecords: maxRecords})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRunRecordsRetentionAndRestart: every run leaves a record, a line of
// the run log; the oldest are pruned beyond the retention; records, plans,
// the active versions and the audit log survive a restart; a line cut by a
// crash and temporary files left by one are ignored; records of the
// one-file-per-run format are still read.
func TestRunRecordsRetentionAndRestart(t *testing.T) {
	model := recModel(t, "stories260K.gguf")
	state := t.TempDir()
	ctx := context.Background()
	e := recEngine(t, state, 3)
	var ids []string
	for i := range 5 {
		res, err := e.Generate(ctx, GenerateRequest{Model: model, Prompt: fmt.Sprintf("Once upon a time %d", i), MaxTokens: 3}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.RunID)
	}
	if n := logLines(t, state); n != 5 {
		t.Fatalf("%d lines in the run log, want 5 (compaction at twice the retention)", n)
	}
	if list, _ := e.ListRuns(ctx, RunListRequest{}); len(list.Runs) != 3 {
		t.Fatalf("%d runs listed, want 3 (retention)", len(list.Runs))
	}
	if _, err := e.GetRun(ctx, RunIDRequest{RunID: ids[0]}); err == nil || err.(*Error).Code != CodeRunNotFound {
		t.Fatalf("pruned record: %v", err)
	}
	rec, err := e.GetRun(ctx, RunIDRequest{RunID: ids[4]})
	if err != nil || rec.Status != RunFinished || len(rec.Tokens) != 3 || rec.Resolved == nil || rec.Resolved.Hash != rec.PlanHash || rec.Plan.Name != "default" || rec.EngineVersion == "" {
		t.Fatalf("record: %+v %v", rec, err)
	}
	if err := rec.Resolved.VerifyHash(); err != nil {
		t.Fatalf("recorded resolved plan: %v", err)
	}
	if _, err := e.PutPlan(ctx, PlanPutRequest{Name: "p", Plan: json.RawMessage(`{"threads":1}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ProposePlan(ctx, PlanProposeRequest{Name: "p", Plan: json.RawMessage(`{"threads":1,"limits":{"max_tokens":9}}`), Rationale: "r"}); err != nil {
		t.Fatal(err)
	}
	e.Close()

	// A crash's leftovers: a renameio temporary file, a cut run record
	// and a cut audit line; and a record in the older one-file format.
	os.WriteFile(filepath.Join(state, "runs", ".run-x.json123"), []byte("{"), 0o640)
	lf, _ := os.OpenFile(filepath.Join(state, "runs", "runs.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	lf.WriteString(`{"run_id":"run-20260101T000000.000Z-abcdef","sta`)
	lf.Close()
	legacy := *rec
	legacy.RunID, legacy.QueuedAt = "run-20200101T000000.000Z-0a0b0c", rec.QueuedAt.Add(-time.Nanosecond) // between runs 3 and 4
	lb, _ := json.Marshal(&legacy)
	os.WriteFile(filepath.Join(state, "runs", legacy.RunID+".json"), lb, 0o640)
	f, _ := os.OpenFile(filepath.Join(state, "plan-audit.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":99,"action":"pu`)
	f.Close()

	e = recEngine(t, state, 3)
	list, err := e.ListRuns(ctx, RunListRequest{})
	if err != nil || len(list.Runs) != 3 || list.Runs[0].RunID != ids[4] || list.Runs[1].RunID != legacy.RunID || list.Runs[2].RunID != ids[3] {
		t.Fatalf("after restart: %+v %v", list, err)
	}
	if got, err := e.GetRun(ctx, RunIDRequest{RunID: legacy.RunID}); err != nil || got.Text != rec.Text {
		t.Fatalf("legacy record: %+v %v", got, err)
	}
	// A new run goes on a fresh line after the cut one.
	res, err := e.Generate(ctx, GenerateRequest{Model: model, Prompt: "after", MaxTokens: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.GetRun(ctx, RunIDRequest{RunID: res.RunID}); err != nil || got.Status != RunFinished {
		t.Fatalf("record after the cut line: %+v %v", got, err)
	}
	e.Close()
	// With a retention of 1 only that run remains: the legacy file is
	// deleted, and the log is compacted at start.
	e = recEngine(t, state, 1)
	defer e.Close()
	if list, _ := e.ListRuns(ctx, RunListRequest{}); len(list.Runs) != 1 || list.Runs[0].RunID != res.RunID {
		t.Fatalf("retention 1: %+v", list)
	}
	if _, err := os.Stat(filepath.Join(state, "runs", legacy.RunID+".json")); !os.IsNotExist(err) {
		t.Fatalf("legacy record not pruned: %v", err)
	}
	if n := logLines(t, state); n != 1 {
		t.Fatalf("%d lines in the run log after a start with retention 1", n)
	}
	g, err := e.GetPlan(ctx, PlanGetRequest{Name: "p"})
	if err != nil || g.Version != 1 || g.Active != 1 {
		t.Fatalf("active version after restart: %+v %v", g, err)
	}
	if g2, _ := e.GetPlan(ctx, PlanGetRequest{Name: "p", Version: 2}); g2.Status != "candidate" {
		t.Fatalf("proposal after restart: %+v", g2)
	}
	if _, err := e.PromotePlan(ctx, PlanPromoteRequest{Name: "p", Version: 2}); err != nil {
		t.Fatal(err)
	}
	h, err := e.PlanHistory(ctx, PlanNameRequest{Name: "p"})
	if err != nil || len(h.Entries) != 3 || h.Entries[2].Action != AuditPromote || h.Entries[2].Seq != 3 {
		t.Fatalf("audit after a cut line: %+v %v", h, err)
	}
	raw, _ := os.ReadFile(filepath.Join(state, "plan-audit.jsonl"))
	if !strings.Contains(string(raw), "\"action\":\"pu\n") {
		t.Fatalf("the cut line was rewritten (the log is append-only):\n%s", raw)
	}
}

func logLines(t *testing.T, state string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(state, "runs", "runs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(raw), "\n")
}

// TestRunLogGroupCommitAndCompaction: runs finishing together share the
// log's writes; every one is readable; the log is compacted to the
// retained records once it holds twice the retention.
func TestRunLogGroupCommitAndCompaction(t *testing.T) {
	model := recModel(t, "stories260K.gguf")
	state := t.TempDir()
	ctx := context.Background()
	e := recEngine(t, state, 10)
	defer e.Close()
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.Generate(ctx, GenerateRequest{Model: model, Prompt: fmt.Sprintf("Tom %d", i), MaxTokens: 2}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids = append(ids, res.RunID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := logLines(t, state); n >= 20 || n < 10 {
		t.Fatalf("%d log lines after 16 runs with a retention of 10: want compaction to 10 at 20 lines", n)
	}
	list, _ := e.ListRuns(ctx, RunListRequest{Limit: 100})
	if len(list.Runs) != 10 {
		t.Fatalf("%d runs listed, want 10", len(list.Runs))
	}
	for _, s := range list.Runs {
		rec, err := e.GetRun(ctx, RunIDRequest{RunID: s.RunID})
		if err != nil || rec.RunID != s.RunID || len(rec.Tokens) != 2 {
			t.Fatalf("run %s: %+v %v", s.RunID, rec, err)
		}
	}
	// Past twice the retention, the log is rewritten with the retained.
	for i := range 6 {
		if _, err := e.Generate(ctx, GenerateRequest{Model: model, Prompt: fmt.Sprintf("Sue %d", i), MaxTokens: 2}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := logLines(t, state); n > 12 {
		t.Fatalf("%d log lines: the log was not compacted", n)
	}
	list, _ = e.ListRuns(ctx, RunListRequest{Limit: 100})
	for _, s := range list.Runs {
		if _, err := e.GetRun(ctx, RunIDRequest{RunID: s.RunID}); err != nil {
			t.Fatalf("run %s after compaction: %v", s.RunID, err)
		}
	}
}

// TestPlanChecksInTheEngine: the engine refuses what it cannot honour, and
// peers without admin rights cannot change plans or cancel others' runs.
func TestPlanChecksInTheEngine(t *testing.T) {
	e := recEngine(t, t.TempDir(), 0)
	defer e.Close()
	ctx := WithActor(context.Background(), Actor{Known: true, UID: 1000, PID: 7})
	for _, f := range []func() error{
		func() error {
			_, err := e.PutPlan(ctx, PlanPutRequest{Name: "x", Plan: json.RawMessage(`{}`)})
			return err
		},
		func() error {
			_, err := e.PromotePlan(ctx, PlanPromoteRequest{Name: "default", Version: 1})
			return err
		},
		func() error { _, err := e.RollbackPlan(ctx, PlanNameRequest{Name: "default"}); return err },
		func() error { _, err := e.DeletePlan(ctx, PlanNameRequest{Name: "default"}); return err },
	} {
		if err := f(); err == nil || err.(*Error).Code != CodeUnauthorized {
			t.Fatalf("non-admin change: %v", err)
		}
	}
	// A proposal by a non-admin is fine; its audit entry names the peer.
	res, err := e.ProposePlan(ctx, PlanProposeRequest{Name: "x", Plan: json.RawMessage(`{"threads":1}`), Rationale: "why not"})
	if err != nil || res.Active != 0 {
		t.Fatalf("propose: %+v %v", res, err)
	}
	if _, err := e.choosePlan("x"); err == nil || err.(*Error).Code != CodePlanNotFound || !strings.Contains(err.Error(), "no active version") {
		t.Fatalf("a name with only proposals: %v", err)
	}
	// Reading a model file that is not loaded, or another user's run record,
	// needs admin rights.
	model := recModel(t, "stories260K.gguf")
	if _, err := e.ResolvePlan(ctx, PlanResolveRequest{Plan: json.RawMessage(`{}`), Model: model}); err == nil || err.(*Error).Code != CodeUnauthorized {
		t.Fatalf("non-admin resolve on a file: %v", err)
	}
	gres, err2 := e.Generate(context.Background(), GenerateRequest{Model: model, Prompt: "hi", MaxTokens: 1}, nil)
	if err2 != nil {
		t.Fatal(err2)
	}
	if _, err := e.GetRun(ctx, RunIDRequest{RunID: gres.RunID}); err == nil || err.(*Error).Code != CodeUnauthorized {
		t.Fatalf("non-admin reads another's run: %v", err)
	}
	if _, err := e.ResolvePlan(ctx, PlanResolveRequest{Plan: json.RawMessage(`{}`), Model: "stories260K"}); err != nil {
		t.Fatalf("non-admin resolve on a loaded model: %v", err)
	}
	h, _ := e.PlanHistory(ctx, PlanNameRequest{Name: "x"})
	if len(h.Entries) != 1 || h.Entries[0].Actor.UID != 1000 || h.Entries[0].Actor.Admin {
		t.Fatalf("history: %+v", h)
	}
}
