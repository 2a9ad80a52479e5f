package engine

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// auditLog is the plan audit log: one JSON object per line (AuditEntry),
// appended and fsynced before the change it records is reported done. It is
// never rewritten. A line cut short by a crash is skipped by readers (and
// the next entry starts on a fresh line).
type auditLog struct {
	path string
	mu   sync.Mutex
	f    *os.File
	seq  int64
}

func openAudit(path string) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("plan audit log: %w", err)
	}
	a := &auditLog{path: path, f: f}
	// The last seq, and whether the file ends mid-line.
	entries, endsClean, err := readAudit(path)
	if err != nil {
		f.Close()
		return nil, err
	}
	for _, e := range entries {
		a.seq = max(a.seq, e.Seq)
	}
	if !endsClean {
		if _, err := f.Write([]byte("\n")); err != nil {
			f.Close()
			return nil, fmt.Errorf("plan audit log: %w", err)
		}
	}
	return a, nil
}

// append assigns the next seq to e, writes it and fsyncs.
func (a *auditLog) append(e *AuditEntry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return errors.New("plan audit log closed")
	}
	e.Seq = a.seq + 1
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := a.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("plan audit log: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("plan audit log: %w", err)
	}
	a.seq = e.Seq
	return nil
}

// entries returns the entries about name (all when name is ""), oldest
// first.
func (a *auditLog) entries(name string) ([]AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	all, _, err := readAudit(a.path)
	if err != nil {
		return nil, err
	}
	out := []AuditEntry{}
	for _, e := range all {
		if name == "" || e.Name == name {
			out = append(out, e)
		}
	}
	return out, nil
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

func readAudit(path string) ([]AuditEntry, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("plan audit log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var out []AuditEntry
	clean := true
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			clean = line[len(line)-1] == '\n'
			var e AuditEntry
			if t := bytes.TrimSpace(line); len(t) > 0 && json.Unmarshal(t, &e) == nil {
				out = append(out, e)
			}
		}
		if err == io.EOF {
			return out, clean, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("plan audit log: %w", err)
		}
	}
}
