package engine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// Run records. Every run that was accepted (queued) ends with a record, one
// JSON object per line in <StateDir>/runs/runs.jsonl, appended and fsynced
// before generate replies: finished, cancelled (queued or running) or
// failed. Records finishing together share one write and one fsync (group
// commit: a batch of 8 streams costs one fsync, not 8). The log is
// append-only; a line cut short by a crash is skipped when the log is read
// (and the next record starts on a fresh line). A record that cannot be
// written is kept in memory and retried at every later write and at
// shutdown. Retention is bounded (Options.MaxRunRecords): the oldest records
// are forgotten beyond it, and the log is compacted (rewritten atomically,
// renameio) once it holds twice that many lines, and at every start. Records of engine versions
// that wrote one file per run (<run_id>.json) are still read, and pruned.

// DefaultMaxRunRecords is the default retention of run records.
const DefaultMaxRunRecords = 1000

// ErrRunCancelled is the cause of a run stopped by run.cancel.
var ErrRunCancelled = errors.New("cancelled by run.cancel")

var runIDRE = regexp.MustCompile(`^run-[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}$`)

// runLogName is the run log's file name in the runs directory.
const runLogName = "runs.jsonl"

// newRunID is "run-<UTC time to the ms>-<6 random hex>": sortable by time,
// unique across restarts.
func newRunID(now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return "run-" + now.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

// recLoc is where a saved record lives: a line of the log, or (legacy) its
// own file.
type recLoc struct {
	off    int64 // offset of the line in the log
	n      int   // its length, without the newline
	legacy bool  // <run_id>.json
}

type runStore struct {
	dir string
	max int

	mu      sync.Mutex
	live    map[string]*seqRun
	index   []RunSummary          // saved records, oldest first
	loc     map[string]recLoc     // where each indexed record is
	pending map[string]*RunRecord // records not yet written (write failed)
	lastErr error

	// The log and its group commit: wmu guards the file, its size and the
	// number of lines; qmu guards the queue of lines waiting for a writer.
	wmu     sync.Mutex
	log     *os.File
	size    int64
	lines   int
	qmu     sync.Mutex
	queue   []*logWrite
	writing bool
}

// logWrite is a record waiting in the group commit.
type logWrite struct {
	rec  *RunRecord
	line []byte
	done chan error
	off  int64
}

func openRuns(dir string, max int) (*runStore, error) {
	if max <= 0 {
		max = DefaultMaxRunRecords
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("run records: %w", err)
	}
	rs := &runStore{dir: dir, max: max, live: map[string]*seqRun{}, loc: map[string]recLoc{}, pending: map[string]*RunRecord{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("run records: %w", err)
	}
	for _, de := range ents { // records of earlier versions, one file each
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || !runIDRE.MatchString(id) || !de.Type().IsRegular() {
			continue // renameio temporaries, foreign files
		}
		rec, err := readRecord(filepath.Join(dir, de.Name()))
		if err != nil {
			continue // unreadable: left alone, not listed
		}
		rs.index = append(rs.index, summarize(rec))
		rs.loc[rec.RunID] = recLoc{legacy: true}
	}
	if err := rs.openLog(); err != nil {
		return nil, err
	}
	sortSummaries(rs.index)
	rs.mu.Lock()
	rs.pruneLocked()
	rs.mu.Unlock()
	rs.compact(false) // lines of records beyond the retention, cut lines: rewritten away
	return rs, nil
}

// openLog reads the log into the index and opens it for appending.
func (rs *runStore) openLog() error {
	path := filepath.Join(rs.dir, runLogName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("run records: %w", err)
	}
	r := bufio.NewReader(f)
	var off int64
	clean := true
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			clean = line[len(line)-1] == '\n'
			body := bytes.TrimSuffix(line, []byte("\n"))
			var rec RunRecord
			if clean && json.Unmarshal(body, &rec) == nil && runIDRE.MatchString(rec.RunID) {
				if _, dup := rs.loc[rec.RunID]; !dup {
					rs.index = append(rs.index, summarize(&rec))
				}
				rs.loc[rec.RunID] = recLoc{off: off, n: len(body)}
			}
			off += int64(len(line))
			rs.lines++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("run records: reading %s: %w", path, err)
		}
	}
	if !clean { // a crash cut the last line: the next record starts afresh
		if _, err := f.Write([]byte("\n")); err != nil {
			f.Close()
			return fmt.Errorf("run records: %w", err)
		}
		off++
	}
	rs.log, rs.size = f, off
	return nil
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
// failed to write), then forgets the live run.
func (rs *runStore) save(rec *RunRecord) error {
	rs.mu.Lock()
	retry := make([]*RunRecord, 0, len(rs.pending))
	for _, r := range rs.pending {
		retry = append(retry, r)
	}
	rs.mu.Unlock()
	err := rs.write(append(retry, rec)...)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	delete(rs.live, rec.RunID)
	if err != nil {
		rs.pending[rec.RunID] = rec
		rs.lastErr = err
		return err
	}
	return nil
}

// write appends records to the log and fsyncs, sharing the write and the
// fsync with the records other goroutines are saving at the same moment;
// written records are indexed. On failure they are kept in pending.
func (rs *runStore) write(recs ...*RunRecord) error {
	ws := make([]*logWrite, 0, len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		ws = append(ws, &logWrite{rec: r, line: append(b, '\n'), done: make(chan error, 1)})
	}
	rs.qmu.Lock()
	rs.queue = append(rs.queue, ws...)
	lead := !rs.writing
	rs.writing = true
	rs.qmu.Unlock()
	if lead {
		rs.commitLoop()
	}
	var errs []error
	for _, w := range ws {
		if err := <-w.done; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// commitLoop writes the queued lines, one write and one fsync per batch,
// until the queue is empty.
func (rs *runStore) commitLoop() {
	for {
		rs.qmu.Lock()
		batch := rs.queue
		rs.queue = nil
		if len(batch) == 0 {
			rs.writing = false
			rs.qmu.Unlock()
			return
		}
		rs.qmu.Unlock()
		err := rs.appendBatch(batch)
		rs.mu.Lock()
		for _, w := range batch {
			id := w.rec.RunID
			if err != nil {
				rs.pending[id] = w.rec
				rs.lastErr = err
				continue
			}
			delete(rs.pending, id)
			if _, known := rs.loc[id]; !known {
				rs.addLocked(w.rec)
			}
			rs.loc[id] = recLoc{off: w.off, n: len(w.line) - 1}
		}
		rs.pruneLocked()
		rs.mu.Unlock()
		for _, w := range batch {
			w.done <- err
		}
		if err == nil {
			rs.maybeCompact()
		}
	}
}

func (rs *runStore) appendBatch(batch []*logWrite) error {
	rs.wmu.Lock()
	defer rs.wmu.Unlock()
	if rs.log == nil {
		return errors.New("run records: the log is closed")
	}
	var buf []byte
	off := rs.size
	for _, w := range batch {
		w.off = off
		off += int64(len(w.line))
		buf = append(buf, w.line...)
	}
	if _, err := rs.log.Write(buf); err != nil {
		return fmt.Errorf("run records: %w", err)
	}
	rs.size = off
	rs.lines += len(batch)
	if err := rs.log.Sync(); err != nil {
		return fmt.Errorf("run records: %w", err)
	}
	return nil
}

// maybeCompact rewrites the log with the indexed records only, once it
// holds twice the retention in lines.
func (rs *runStore) maybeCompact() { rs.compact(true) }

// compact rewrites the log with the indexed records only: when it holds
// twice the retention in lines (lazy), or any line that is not a retained
// record (at start).
func (rs *runStore) compact(lazy bool) {
	rs.wmu.Lock()
	defer rs.wmu.Unlock()
	if rs.log == nil || (lazy && rs.lines < 2*rs.max) {
		return
	}
	rs.mu.Lock()
	type keep struct {
		id  string
		loc recLoc
	}
	var ks []keep
	for _, s := range rs.index {
		if l, ok := rs.loc[s.RunID]; ok && !l.legacy {
			ks = append(ks, keep{s.RunID, l})
		}
	}
	rs.mu.Unlock()
	if len(ks) == rs.lines {
		return // nothing to drop
	}
	path := filepath.Join(rs.dir, runLogName)
	pf, err := renameio.NewPendingFile(path, renameio.WithPermissions(0o640), renameio.WithTempDir(rs.dir))
	if err != nil {
		return // compaction is an optimisation: try again later
	}
	defer pf.Cleanup()
	newLoc := make(map[string]recLoc, len(ks))
	var off int64
	for _, k := range ks {
		line := make([]byte, k.loc.n+1)
		if _, err := rs.log.ReadAt(line, k.loc.off); err != nil {
			return
		}
		if _, err := pf.Write(line); err != nil {
			return
		}
		newLoc[k.id] = recLoc{off: off, n: k.loc.n}
		off += int64(len(line))
	}
	if err := pf.CloseAtomicallyReplace(); err != nil {
		return
	}
	if err := syncDir(rs.dir); err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		return // the old descriptor still appends to the replaced file: reopen at the next compaction
	}
	rs.log.Close()
	rs.log, rs.size, rs.lines = f, off, len(ks)
	rs.mu.Lock()
	for id, l := range newLoc {
		rs.loc[id] = l
	}
	rs.mu.Unlock()
}

// addLocked indexes a written record.
func (rs *runStore) addLocked(r *RunRecord) {
	s := summarize(r)
	rs.index = append(rs.index, s)
	if n := len(rs.index); n > 1 {
		if p := rs.index[n-2]; p.QueuedAt.After(s.QueuedAt) || (p.QueuedAt.Equal(s.QueuedAt) && p.RunID > s.RunID) {
			sortSummaries(rs.index)
		}
	}
}

// pruneLocked forgets the oldest records beyond the retention (deleting
// them when they are legacy files; log lines go at the next compaction).
func (rs *runStore) pruneLocked() {
	for len(rs.index) > rs.max {
		old := rs.index[0]
		if rs.loc[old.RunID].legacy {
			if err := os.Remove(filepath.Join(rs.dir, old.RunID+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
				break // try again at the next save
			}
		}
		delete(rs.loc, old.RunID)
		rs.index = rs.index[1:]
	}
}

// read returns the saved record of id.
func (rs *runStore) read(id string) (*RunRecord, error) {
	rs.mu.Lock()
	l, ok := rs.loc[id]
	rs.mu.Unlock()
	if !ok {
		return nil, fs.ErrNotExist
	}
	if l.legacy {
		return readRecord(filepath.Join(rs.dir, id+".json"))
	}
	rs.wmu.Lock()
	defer rs.wmu.Unlock()
	f := rs.log
	if f == nil { // closed (shutdown): the file is still there to read
		var err error
		if f, err = os.Open(filepath.Join(rs.dir, runLogName)); err != nil {
			return nil, err
		}
		defer f.Close()
	}
	rs.mu.Lock()
	l = rs.loc[id] // compaction may have moved it
	rs.mu.Unlock()
	b := make([]byte, l.n)
	if _, err := f.ReadAt(b, l.off); err != nil {
		return nil, err
	}
	var rec RunRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// flush retries the records not yet written (shutdown), then closes the
// log.
func (rs *runStore) flush() error {
	rs.mu.Lock()
	var retry []*RunRecord
	for _, r := range rs.pending {
		retry = append(retry, r)
	}
	rs.mu.Unlock()
	var err error
	if len(retry) > 0 {
		err = rs.write(retry...)
	}
	rs.wmu.Lock()
	defer rs.wmu.Unlock()
	if rs.log != nil {
		err = errors.Join(err, rs.log.Close())
		rs.log = nil
	}
	return err
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
	rec, err := rs.read(req.RunID)
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
