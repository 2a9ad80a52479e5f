package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
)

// Run records. Every run that was accepted (queued) ends with a record in
// <StateDir>/runs/<run_id>.json, written atomically (renameio: temporary
// file in the same directory, fsync, rename; then the directory is
// fsynced) before generate
// replies: finished, cancelled (queued or running) or failed. A record that
// cannot be written is kept in memory and retried at every later write and
// at shutdown. Retention is bounded (Options.MaxRunRecords): the oldest
// records are deleted beyond it.

// DefaultMaxRunRecords is the default retention of run records.
const DefaultMaxRunRecords = 1000

// ErrRunCancelled is the cause of a run stopped by run.cancel.
var ErrRunCancelled = errors.New("cancelled by run.cancel")

var runIDRE = regexp.MustCompile(`^run-[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}$`)

// newRunID is "run-<UTC time to the ms>-<6 random hex>": sortable by time,
// unique across restarts.
func newRunID(now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return "run-" + now.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

type runStore struct {
	dir string
	max int

	mu      sync.Mutex
	live    map[string]*seqRun
	index   []RunSummary          // saved records, oldest first
	pending map[string]*RunRecord // records not yet written (write failed)
	lastErr error
}

func openRuns(dir string, max int) (*runStore, error) {
	if max <= 0 {
		max = DefaultMaxRunRecords
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("run records: %w", err)
	}
	rs := &runStore{dir: dir, max: max, live: map[string]*seqRun{}, pending: map[string]*RunRecord{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("run records: %w", err)
	}
	for _, de := range ents {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || !runIDRE.MatchString(id) || !de.Type().IsRegular() {
			continue // renameio temporaries, foreign files
		}
		rec, err := readRecord(filepath.Join(dir, de.Name()))
		if err != nil {
			continue // unreadable: left alone, not listed
		}
		rs.index = append(rs.index, summarize(rec))
	}
	sortSummaries(rs.index)
	rs.mu.Lock()
	rs.pruneLocked()
	rs.mu.Unlock()
	return rs, nil
}

func sortSummaries(s []RunSummary) {
	sort.Slice(s, func(i, j int) bool {
		if !s[i].QueuedAt.Equal(s[j].QueuedAt) {
			return s[i].QueuedAt.Before(s[j].QueuedAt)
		}
		return s[i].RunID < s[j].RunID
	})
}

func readRecord(path string) (*RunRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec RunRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

func summarize(r *RunRecord) RunSummary {
	return RunSummary{RunID: r.RunID, Status: r.Status, ModelID: r.ModelID, Plan: r.Plan, FinishReason: r.FinishReason,
		GeneratedTokens: len(r.Tokens), TokensPerSecond: r.Metrics.TokensPerSecond, TTFTMS: r.Metrics.TTFTMS,
		TotalMS: r.Metrics.TotalMS, QueuedAt: r.QueuedAt, FinishedAt: r.FinishedAt, BenchID: r.BenchID, Actor: r.Actor}
}

func (rs *runStore) register(sr *seqRun) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.live[sr.id] = sr
}

func (rs *runStore) unregister(id string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.live, id)
}

// save writes a finished run's record (and retries any earlier one that
// failed to write), then forgets the live run. Records are written outside
// the store's lock: concurrent runs do not wait for each other's fsync.
func (rs *runStore) save(rec *RunRecord) error {
	err := rs.write(rec)
	rs.mu.Lock()
	delete(rs.live, rec.RunID)
	if err != nil {
		rs.pending[rec.RunID] = rec
		rs.lastErr = err
		rs.mu.Unlock()
		return err
	}
	rs.addLocked(rec)
	var retry []*RunRecord
	for _, r := range rs.pending {
		retry = append(retry, r)
	}
	rs.mu.Unlock()
	for _, r := range retry {
		if rs.write(r) == nil {
			rs.mu.Lock()
			if _, ok := rs.pending[r.RunID]; ok {
				delete(rs.pending, r.RunID)
				rs.addLocked(r)
			}
			rs.mu.Unlock()
		}
	}
	return nil
}

// addLocked indexes a written record and applies the retention.
func (rs *runStore) addLocked(r *RunRecord) {
	s := summarize(r)
	rs.index = append(rs.index, s)
	if n := len(rs.index); n > 1 {
		if p := rs.index[n-2]; p.QueuedAt.After(s.QueuedAt) || (p.QueuedAt.Equal(s.QueuedAt) && p.RunID > s.RunID) {
			sortSummaries(rs.index)
		}
	}
	rs.pruneLocked()
}

func (rs *runStore) write(r *RunRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(filepath.Join(rs.dir, r.RunID+".json"), append(b, '\n'), 0o640, renameio.WithTempDir(rs.dir)); err != nil {
		return fmt.Errorf("run record %s: %w", r.RunID, err)
	}
	return syncDir(rs.dir)
}

// pruneLocked deletes the oldest records beyond the retention.
func (rs *runStore) pruneLocked() {
	for len(rs.index) > rs.max {
		old := rs.index[0]
		if err := os.Remove(filepath.Join(rs.dir, old.RunID+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			break // try again at the next save
		}
		rs.index = rs.index[1:]
	}
}

// flush retries the records not yet written (shutdown).
func (rs *runStore) flush() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var errs []error
	for id, r := range rs.pending {
		if err := rs.write(r); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(rs.pending, id)
		rs.addLocked(r)
	}
	return errors.Join(errs...)
}

func (rs *runStore) liveRuns() []*seqRun {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]*seqRun, 0, len(rs.live))
	for _, sr := range rs.live {
		out = append(out, sr)
	}
	return out
}

// ---- RPC facade ----

// GetRun answers run.get: the record of a run, live (queued or running:
// tokens so far) or finished. A record holds the prompt and the text: only
// the peer that made the run (same uid) or an admin may read it.
func (e *Engine) GetRun(ctx context.Context, req RunIDRequest) (*RunRecord, error) {
	rec, err := e.getRun(req)
	if err != nil {
		return nil, err
	}
	if a, ok := ActorFrom(ctx); ok && !a.Admin && !(a.Known && rec.Actor.Known && a.UID == rec.Actor.UID) {
		return nil, &Error{Code: CodeUnauthorized, Msg: fmt.Sprintf("unauthorized: run %s belongs to uid %d; only that user or an admin peer may read its record (run.list shows its summary)", req.RunID, rec.Actor.UID)}
	}
	return rec, nil
}

func (e *Engine) getRun(req RunIDRequest) (*RunRecord, error) {
	rs := e.runs
	rs.mu.Lock()
	sr := rs.live[req.RunID]
	pend := rs.pending[req.RunID]
	rs.mu.Unlock()
	if sr != nil {
		rec := sr.snapshot()
		return &rec, nil
	}
	if pend != nil {
		rec := *pend
		return &rec, nil
	}
	if !runIDRE.MatchString(req.RunID) {
		return nil, errorf(CodeInvalidParams, "invalid params: field \"run_id\": %q is not a run id", req.RunID)
	}
	rec, err := readRecord(filepath.Join(rs.dir, req.RunID+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errorf(CodeRunNotFound, "run %s not found (unknown, or pruned by the record retention)", req.RunID)
	}
	if err != nil {
		return nil, errorf(CodeInternal, "run %s: %v", req.RunID, err)
	}
	return rec, nil
}

// ListRuns answers run.list: runs in progress, then records, newest first.
func (e *Engine) ListRuns(ctx context.Context, req RunListRequest) (*RunListResult, error) {
	limit := req.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	rs := e.runs
	rs.mu.Lock()
	live := make([]*seqRun, 0, len(rs.live))
	for _, sr := range rs.live {
		live = append(live, sr)
	}
	saved := append([]RunSummary(nil), rs.index...)
	for _, p := range rs.pending {
		saved = append(saved, summarize(p))
	}
	rs.mu.Unlock()
	var cur []RunSummary
	for _, sr := range live {
		rec := sr.snapshot()
		cur = append(cur, summarize(&rec))
	}
	sortSummaries(cur)
	sortSummaries(saved)
	out := &RunListResult{Runs: []RunSummary{}}
	add := func(s []RunSummary) {
		for i := len(s) - 1; i >= 0 && len(out.Runs) < limit; i-- {
			if !req.Since.IsZero() && s[i].QueuedAt.Before(req.Since) {
				continue
			}
			out.Runs = append(out.Runs, s[i])
		}
	}
	add(cur)
	add(saved)
	return out, nil
}

// CancelRun answers run.cancel: a queued or running run stops at its next
// step (its KV cache is freed; its result and record say "cancelled"). The
// peer that started the run, or an admin, may cancel it.
func (e *Engine) CancelRun(ctx context.Context, req RunIDRequest) (*RunCancelResult, error) {
	rs := e.runs
	rs.mu.Lock()
	sr := rs.live[req.RunID]
	rs.mu.Unlock()
	if sr == nil {
		rec, err := e.getRun(req)
		if err != nil {
			return nil, err
		}
		return &RunCancelResult{RunID: req.RunID, Cancelled: false, Status: rec.Status}, nil
	}
	if a, ok := ActorFrom(ctx); ok && !a.Admin && !(a.Known && sr.actor.Known && a.UID == sr.actor.UID) {
		return nil, &Error{Code: CodeUnauthorized, Msg: fmt.Sprintf("unauthorized: run %s belongs to uid %d; only that user or an admin peer may cancel it", req.RunID, sr.actor.UID)}
	}
	sr.cancel(ErrRunCancelled)
	rec := sr.snapshot()
	return &RunCancelResult{RunID: req.RunID, Cancelled: true, Status: rec.Status}, nil
}
