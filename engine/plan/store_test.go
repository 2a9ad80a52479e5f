package plan_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/weos/llm-engine/engine/plan"
)

// snapshot returns every file under dir with its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if info.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	s, err := plan.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The default plan exists from the start.
	e, err := s.Get(plan.DefaultName, 0)
	if err != nil || e.Version != 1 || string(e.Raw) != plan.DefaultPlanJSON {
		t.Fatalf("default: %+v %v", e, err)
	}

	v1 := `{"threads": 1}`
	v2 := `{"threads": 2, "quantization": {"default": "Q8_0"}}`
	for i, doc := range []string{v1, v2} {
		v, errs, err := s.Put("fast", []byte(doc))
		if err != nil || len(errs) > 0 || v != i+1 {
			t.Fatalf("put %d: v%d %v %v", i, v, errs, err)
		}
	}
	if e, err := s.Get("fast", 0); err != nil || e.Version != 2 || string(e.Raw) != v2 || *e.Plan.Threads != 2 {
		t.Fatalf("latest: %+v %v", e, err)
	}
	if e, err := s.Get("fast", 1); err != nil || string(e.Raw) != v1 || e.Created.IsZero() {
		t.Fatalf("v1: %+v %v", e, err)
	}
	if _, err := s.Get("fast", 3); !errors.Is(err, plan.ErrNotFound) {
		t.Errorf("v3: %v", err)
	}
	if _, err := s.Get("nope", 0); !errors.Is(err, plan.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}

	// A rejected put changes nothing, not even for a new name.
	before := snapshot(t, dir)
	for _, name := range []string{"fast", "newname"} {
		v, errs, err := s.Put(name, []byte(`{"threads": 0, "limits": {"max_watts": -1}}`))
		if err != nil || v != 0 || len(errs) != 2 || errs[0].Pointer != "/limits/max_watts" || errs[1].Pointer != "/threads" {
			t.Errorf("rejected put: v%d %v %v", v, errs, err)
		}
		if _, _, err := s.Put(name, []byte(`not json`)); err != nil {
			t.Error(err)
		}
	}
	if after := snapshot(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("rejected put changed the store:\n%v\n%v", before, after)
	}

	for _, bad := range []string{"", "Fast", ".hidden", "-x", "a/b", "..", string(make([]byte, 65))} {
		if _, _, err := s.Put(bad, []byte(`{}`)); !errors.Is(err, plan.ErrInvalidName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if _, _, err := s.Put("a.b_c-9", []byte(`{}`)); err != nil {
		t.Error(err)
	}

	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(list); got != "[{a.b_c-9 1 [1]} {default 1 [1]} {fast 2 [1 2]}]" {
		t.Errorf("list %s", got)
	}

	if err := s.Delete(plan.DefaultName); !errors.Is(err, plan.ErrDefaultPlan) {
		t.Errorf("delete default: %v", err)
	}
	if err := s.Delete("fast"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("fast"); !errors.Is(err, plan.ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	if _, err := s.Get("fast", 0); !errors.Is(err, plan.ErrNotFound) {
		t.Errorf("get deleted: %v", err)
	}
	// Versions restart after a delete.
	if v, _, err := s.Put("fast", []byte(v1)); err != nil || v != 1 {
		t.Errorf("put after delete: v%d %v", v, err)
	}
	// The default plan can be replaced by a new version.
	if v, _, err := s.Put(plan.DefaultName, []byte(`{"threads": 1}`)); err != nil || v != 2 {
		t.Errorf("put default: v%d %v", v, err)
	}

	// Reopening keeps everything.
	s2, err := plan.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s2.Get(plan.DefaultName, 0); err != nil || e.Version != 2 {
		t.Errorf("reopen: %+v %v", e, err)
	}
}

// A crash mid-write leaves at most a temporary file (renameio writes
// ".N.json<random>" and renames it into place): it is ignored on load, and
// the next put does not collide with it.
func TestStoreIgnoresLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := plan.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Put("p", []byte(`{"threads": 1}`)); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{"p/.2.json8412093", "p/2.json.tmp", "p/notes.txt", ".deleted-q-123/q/1.json"} {
		path := filepath.Join(dir, junk)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(`{"threads": 1, "trunc`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e, err := s.Get("p", 0)
	if err != nil || e.Version != 1 {
		t.Fatalf("get with leftovers: %+v %v", e, err)
	}
	list, _ := s.List()
	if fmt.Sprint(list) != "[{default 1 [1]} {p 1 [1]}]" {
		t.Errorf("list %v", list)
	}
	if v, _, err := s.Put("p", []byte(`{"threads": 2}`)); err != nil || v != 2 {
		t.Fatalf("put: v%d %v", v, err)
	}
	if e, err := s.Get("p", 0); err != nil || *e.Plan.Threads != 2 {
		t.Errorf("latest: %+v %v", e, err)
	}
}

// A version file edited by hand into something invalid is reported, not
// returned.
func TestStoreInvalidOnDisk(t *testing.T) {
	dir := t.TempDir()
	s, _ := plan.OpenStore(dir)
	os.WriteFile(filepath.Join(dir, "default", "1.json"), []byte(`{"threads": -1}`), 0o644)
	var fe plan.FieldErrors
	if _, err := s.Get(plan.DefaultName, 0); !errors.As(err, &fe) || fe[0].Pointer != "/threads" {
		t.Errorf("invalid stored plan: %v", err)
	}
}

func TestStoreConcurrent(t *testing.T) {
	dir := t.TempDir()
	s, err := plan.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := plan.OpenStore(dir) // a second handle: serialised by the file lock
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	versions := make(chan int, 2*n)
	for i := range n {
		for _, st := range []*plan.Store{s, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, errs, err := st.Put("shared", []byte(fmt.Sprintf(`{"threads": %d}`, i+1)))
				if err != nil || len(errs) > 0 {
					t.Error(err, errs)
				}
				versions <- v
				if _, err := st.Get("shared", 0); err != nil {
					t.Error(err)
				}
				if _, err := st.List(); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	close(versions)
	var got []int
	for v := range versions {
		got = append(got, v)
	}
	sort.Ints(got)
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("versions %v: want 1..%d, each once", got, 2*n)
		}
	}
}
