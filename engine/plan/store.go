package plan

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"
)

// DefaultName names the plan that always exists in a Store.
const DefaultName = "default"

// DefaultPlanJSON is the content of the "default" plan a new Store starts
// with: every field left to Resolve's defaults.
const DefaultPlanJSON = "{\"version\": 1}\n"

// MaxPlanBytes bounds a stored plan document.
const MaxPlanBytes = 1 << 20

var (
	// ErrNotFound: no such plan, or no such version of it.
	ErrNotFound = errors.New("plan not found")
	// ErrInvalidName: the name does not match NamePattern.
	ErrInvalidName = errors.New("invalid plan name")
	// ErrDefaultPlan: the default plan cannot be deleted.
	ErrDefaultPlan = errors.New("the default plan cannot be deleted")
)

// NamePattern is what a plan name must match.
const NamePattern = `^[a-z0-9][a-z0-9._-]{0,63}$`

var (
	nameRE    = regexp.MustCompile(NamePattern)
	versionRE = regexp.MustCompile(`^([1-9][0-9]{0,8})\.json$`)
)

// ValidName reports whether name can name a stored plan.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Store keeps named plans, each as a sequence of immutable versions, in a
// directory: DIR/NAME/N.json holds version N of plan NAME, byte for byte as
// it was put. Every file is written to a temporary name and renamed into
// place (renameio), so a crash never leaves a partial version; anything that
// is not NAME/N.json (temporary files, hidden directories) is ignored.
// A Store is safe for concurrent use, and writers in different processes
// serialise on DIR/.lock.
type Store struct {
	dir string
	mu  sync.Mutex // serialises writers in this process; .lock serialises processes
}

// Entry is one version of a stored plan.
type Entry struct {
	Name    string    `json:"name"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Plan    *Plan     `json:"plan"`
	Raw     []byte    `json:"-"` // the document as it was put
}

// Info lists a stored plan's versions (ascending).
type Info struct {
	Name     string `json:"name"`
	Latest   int    `json:"latest"`
	Versions []int  `json:"versions"`
}

// OpenStore opens (creating if needed) the store in dir and makes sure the
// default plan exists.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("plan store: %w", err)
	}
	s := &Store{dir: dir}
	err := s.locked(func() error {
		if err := s.removeStaleTemps(); err != nil {
			return err
		}
		vs, err := s.versions(DefaultName)
		if err != nil || len(vs) > 0 {
			return err
		}
		return s.write(DefaultName, 1, []byte(DefaultPlanJSON))
	})
	if err != nil {
		return nil, fmt.Errorf("plan store: %w", err)
	}
	return s, nil
}

// removeStaleTemps deletes the temporary files (".name…", renameio's) that a
// writer killed between create and rename leaves behind. Every write holds the
// store lock, which the caller holds, so none of them is in progress.
func (s *Store) removeStaleTemps() error {
	plans, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, p := range plans {
		if !p.IsDir() {
			continue
		}
		dir := filepath.Join(s.dir, p.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
		}
	}
	return nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Put validates raw (see Validate) and stores it as the next version of
// name, returning that version. An invalid document yields FieldErrors and
// leaves the store untouched.
func (s *Store) Put(name string, raw []byte) (int, []FieldError, error) {
	if !ValidName(name) {
		return 0, nil, fmt.Errorf("%w %q: must match %s", ErrInvalidName, name, NamePattern)
	}
	if len(raw) > MaxPlanBytes {
		return 0, []FieldError{{Pointer: "", Message: fmt.Sprintf("plan document of %d bytes exceeds %d", len(raw), MaxPlanBytes)}}, nil
	}
	if _, errs, err := Validate(raw); err != nil || len(errs) > 0 {
		return 0, errs, err
	}
	var version int
	err := s.locked(func() error {
		vs, err := s.versions(name)
		if err != nil {
			return err
		}
		version = 1
		if len(vs) > 0 {
			version = vs[len(vs)-1] + 1
		}
		return s.write(name, version, raw)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("plan store: put %s: %w", name, err)
	}
	return version, nil, nil
}

// Get returns a version of a plan; version 0 means the latest.
func (s *Store) Get(name string, version int) (*Entry, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w %q: must match %s", ErrInvalidName, name, NamePattern)
	}
	if version < 0 {
		return nil, fmt.Errorf("%w: %s version %d", ErrNotFound, name, version)
	}
	if version == 0 {
		vs, err := s.versions(name)
		if err != nil {
			return nil, err
		}
		if len(vs) == 0 {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		version = vs[len(vs)-1]
	}
	file := s.file(name, version)
	raw, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s version %d", ErrNotFound, name, version)
	}
	if err != nil {
		return nil, fmt.Errorf("plan store: %w", err)
	}
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("plan store: %w", err)
	}
	p, errs, err := Validate(raw)
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("plan store: %s version %d no longer validates: %w", name, version, FieldErrors(errs))
	}
	return &Entry{Name: name, Version: version, Created: st.ModTime().UTC(), Plan: p, Raw: raw}, nil
}

// List returns every stored plan, sorted by name.
func (s *Store) List() ([]Info, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("plan store: %w", err)
	}
	var out []Info
	for _, e := range ents {
		if !e.IsDir() || !ValidName(e.Name()) {
			continue
		}
		vs, err := s.versions(e.Name())
		if err != nil {
			return nil, err
		}
		if len(vs) == 0 {
			continue
		}
		out = append(out, Info{Name: e.Name(), Latest: vs[len(vs)-1], Versions: vs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes a plan and all its versions. The default plan cannot be
// deleted (put a new version of it instead).
func (s *Store) Delete(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w %q: must match %s", ErrInvalidName, name, NamePattern)
	}
	if name == DefaultName {
		return ErrDefaultPlan
	}
	return s.locked(func() error {
		vs, err := s.versions(name)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		// Rename out of sight first: a crash during RemoveAll leaves a
		// hidden directory that List and Get ignore, never half a plan.
		trash, err := os.MkdirTemp(s.dir, ".deleted-"+name+"-")
		if err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(s.dir, name), filepath.Join(trash, name)); err != nil {
			os.Remove(trash)
			return err
		}
		if err := syncDir(s.dir); err != nil {
			return err
		}
		return os.RemoveAll(trash)
	})
}

func (s *Store) file(name string, version int) string {
	return filepath.Join(s.dir, name, strconv.Itoa(version)+".json")
}

// versions lists the stored versions of name, ascending.
func (s *Store) versions(name string) ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plan store: %w", err)
	}
	var vs []int
	for _, e := range ents {
		m := versionRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		v, _ := strconv.Atoi(m[1])
		vs = append(vs, v)
	}
	sort.Ints(vs)
	return vs, nil
}

func (s *Store) write(name string, version int, raw []byte) error {
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := renameio.WriteFile(s.file(name, version), raw, 0o640, renameio.WithTempDir(dir)); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// locked runs fn holding the in-process mutex and the store's file lock.
func (s *Store) locked(fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
