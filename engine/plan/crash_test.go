package plan

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// crashWriterEnv makes the test binary act as a plan writer (see TestMain-free
// re-exec below): it puts versions of plan "p" forever, each with a
// distinctive thread count so a torn write would show up as an invalid or
// mismatched document.
const crashWriterEnv = "LLM_ENGINE_PLAN_CRASH_WRITER"

func init() {
	dir := os.Getenv(crashWriterEnv)
	if dir == "" {
		return
	}
	s, err := OpenStore(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 1; ; i++ {
		// A large-ish document (overrides) so a write takes more than one page.
		raw := fmt.Sprintf(`{"version":1,"threads":%d,"quantization":{"default":"Q8_0","overrides":{%s}}}`, 1+i%2, overrides(i))
		if _, errs, err := s.Put("p", []byte(raw)); err != nil || len(errs) > 0 {
			fmt.Fprintln(os.Stderr, "put:", err, errs)
			os.Exit(3)
		}
	}
}

func overrides(i int) string {
	out := ""
	for k := 0; k < 64; k++ {
		if k > 0 {
			out += ","
		}
		out += fmt.Sprintf(`"blk.%d.ffn_down.weight":"Q6_K"`, k*1000+i%7)
	}
	return out
}

// kill -9 at random moments during plan writes: after every kill the store
// opens, and every stored version is a whole, valid document (old or new,
// never a mix); versions are contiguous from 1.
func TestPlanStoreSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP: -short")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0
	for kills < 50 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashWriterEnv+"="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(10+rng.IntN(70)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("writer exited by itself: %v", err)
		}
		kills++

		s, err := OpenStore(dir)
		if err != nil {
			t.Fatalf("after kill %d: store does not open: %v", kills, err)
		}
		vs, err := s.versions("p")
		if err != nil {
			t.Fatalf("after kill %d: %v", kills, err)
		}
		for i, v := range vs {
			if v != i+1 {
				t.Fatalf("after kill %d: versions not contiguous: %v", kills, vs)
			}
		}
		if len(vs) == 0 {
			continue
		}
		if _, err := s.Get("p", 0); err != nil {
			t.Fatalf("after kill %d: latest version unreadable: %v", kills, err)
		}
		// Every version must be whole and valid.
		for _, v := range vs {
			e, err := s.Get("p", v)
			if err != nil {
				t.Fatalf("after kill %d: version %d: %v", kills, v, err)
			}
			if e.Plan.Threads == nil || len(e.Plan.Quantization.Overrides) != 64 {
				t.Fatalf("after kill %d: version %d is not a whole document", kills, v)
			}
		}
	}
	s, _ := OpenStore(dir)
	vs, _ := s.versions("p")
	temps := countTemps(t, dir)
	t.Logf("%d kills during continuous plan writes: store always opened; %d whole versions, none torn; leftover temp files after open: %s", kills, len(vs), strconv.Itoa(temps))
	if temps != 0 {
		t.Errorf("OpenStore left %d temporary files of killed writers", temps)
	}
}

func countTemps(t *testing.T, dir string) int {
	n := 0
	ents, _ := os.ReadDir(dir + "/p")
	for _, e := range ents {
		if len(e.Name()) > 0 && e.Name()[0] == '.' {
			n++
		}
	}
	return n
}
