package kernels

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func gettid() int { return unix.Gettid() }

func newTestPool(t testing.TB, n int, o PoolOptions) *Pool {
	t.Helper()
	p, err := NewPoolWith(n, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func checkCover(t *testing.T, run func(n int, fn func(w, s, e int)), threads, n int) {
	t.Helper()
	hits := make([]int32, n)
	var mu sync.Mutex
	var chunks [][2]int
	running := make([]atomic.Int32, threads)
	run(n, func(w, s, e int) {
		if w < 0 || w >= threads {
			t.Errorf("worker %d out of range", w)
			return
		}
		if running[w].Add(1) != 1 {
			t.Errorf("worker %d runs two chunks at once", w)
		}
		defer running[w].Add(-1)
		mu.Lock()
		chunks = append(chunks, [2]int{s, e})
		mu.Unlock()
		for i := s; i < e; i++ {
			atomic.AddInt32(&hits[i], 1)
		}
	})
	for i, h := range hits {
		if h != 1 {
			t.Fatalf("n=%d: index %d visited %d times", n, i, h)
		}
	}
	// exactly the k = min(n, threads) chunks [i*n/k, (i+1)*n/k)
	k := min(n, threads)
	slices.SortFunc(chunks, func(a, b [2]int) int { return a[0] - b[0] })
	if len(chunks) != k {
		t.Fatalf("n=%d: %d chunks, want %d", n, len(chunks), k)
	}
	for i, c := range chunks {
		if c != [2]int{i * n / k, (i + 1) * n / k} {
			t.Fatalf("n=%d: chunks %v, want the %d even splits", n, chunks, k)
		}
	}
}

// TestPoolLateWorkerChunkTaken: a worker done with its chunk takes the
// chunk of a worker that has not started yet. Workers that never spin
// sleep between jobs and wake through the futex, microseconds after worker
// 0 (inside Exec) has finished its own trivial chunk: worker 0 must then
// run both chunks of some steps.
func TestPoolLateWorkerChunkTaken(t *testing.T) {
	p := newTestPool(t, 2, PoolOptions{WorkerSpin: -1})
	stolen := 0
	for range 2000 {
		var by [2]int
		p.Exec(func(ip *Pool) {
			ip.Run(2, func(w, s, _ int) { by[s] = w })
		})
		if by[0] == 0 && by[1] == 0 {
			stolen++
		}
	}
	if stolen == 0 {
		t.Fatal("worker 0 never took the chunk of a sleeping worker")
	}
	t.Logf("worker 0 ran both chunks in %d of 2000 steps", stolen)
}

func TestPoolClaim(t *testing.T) {
	c := &poolCore{}
	c.next.Store(7<<32 | 3<<16)
	for want := 0; want < 3; want++ {
		if i, k, ok := c.claim(7); !ok || i != want || k != 3 {
			t.Fatalf("claim %d: got %d/%d %v", want, i, k, ok)
		}
	}
	if _, _, ok := c.claim(7); ok {
		t.Fatal("claimed a fourth chunk of three")
	}
	c.next.Store(8<<32 | 2<<16)
	if _, _, ok := c.claim(7); ok {
		t.Fatal("claimed a chunk of another job")
	}
}

func TestPoolRunCovers(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 4} {
		for _, spin := range []time.Duration{-1, 0} {
			p := newTestPool(t, threads, PoolOptions{WorkerSpin: spin})
			for _, n := range []int{1, 2, 3, 5, 7, 64, 1000} {
				checkCover(t, p.Run, threads, n)
				p.Exec(func(ip *Pool) {
					if !ip.Inner() {
						t.Error("Exec body got the outer pool")
					}
					checkCover(t, ip.Run, threads, n)
				})
			}
			p.Run(0, func(int, int, int) { t.Error("called for n=0") })
		}
	}
}

func TestPoolExecRunsOnWorker0(t *testing.T) {
	p := newTestPool(t, 2, PoolOptions{})
	var tid int
	p.Exec(func(*Pool) { tid = gettid() })
	if tid != p.TIDs()[0] {
		t.Fatalf("Exec ran on thread %d, worker 0 is %d", tid, p.TIDs()[0])
	}
	// inner Run: every chunk on a pool thread, chunk w on worker w's thread
	tids := p.TIDs()
	p.Exec(func(ip *Pool) {
		ip.Run(2, func(w, _, _ int) {
			if got := gettid(); got != tids[w] {
				t.Errorf("chunk %d ran on thread %d, want %d", w, got, tids[w])
			}
		})
	})
	p.Run(2, func(w, _, _ int) {
		if got := gettid(); got != tids[w] {
			t.Errorf("outer chunk %d ran on thread %d, want %d", w, got, tids[w])
		}
	})
}

func TestPoolTIDs(t *testing.T) {
	p := newTestPool(t, 3, PoolOptions{})
	tids := p.TIDs()
	if len(tids) != 3 || p.Threads() != 3 {
		t.Fatalf("TIDs %v, Threads %d", tids, p.Threads())
	}
	uniq := map[int]bool{}
	for _, tid := range tids {
		if tid <= 0 || uniq[tid] {
			t.Fatalf("bad TIDs %v", tids)
		}
		uniq[tid] = true
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err != nil {
			t.Errorf("thread %d not in /proc/self/task: %v", tid, err)
		}
	}
}

func TestPoolPanicPropagates(t *testing.T) {
	p := newTestPool(t, 2, PoolOptions{})
	for _, exec := range []bool{false, true} {
		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Errorf("exec=%v: recovered %v, want boom", exec, r)
				}
			}()
			fn := func(_, s, _ int) {
				if s > 0 { // the second chunk, whoever runs it
					panic("boom")
				}
			}
			if exec {
				p.Exec(func(ip *Pool) { ip.Run(2, fn) })
			} else {
				p.Run(2, fn)
			}
		}()
	}
	// still usable
	checkCover(t, p.Run, 2, 10)
}

func TestPoolConcurrentCallers(t *testing.T) {
	p := newTestPool(t, 2, PoolOptions{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				var sum atomic.Int64
				p.Run(100, func(_, s, e int) {
					for j := s; j < e; j++ {
						sum.Add(int64(j))
					}
				})
				if sum.Load() != 4950 {
					t.Errorf("sum %d", sum.Load())
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestPoolCloseNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 5; i++ {
		p, err := NewPool(3)
		if err != nil {
			t.Fatal(err)
		}
		p.Run(10, func(int, int, int) {})
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Run on a closed pool did not panic")
				}
			}()
			p.Run(1, func(int, int, int) {})
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("goroutines: %d before, %d after Close", before, n)
	}
	if _, err := NewPool(0); err == nil {
		t.Error("NewPool(0) succeeded")
	}
}

// BenchmarkPoolDispatch measures the cost of one parallel step with an
// empty body: "outer" is Run from an ordinary goroutine, "exec" is Run from
// inside Exec (worker 0 dispatching to the others, as in a forward pass).
// spin = spin-then-park handoff (default), chan = park immediately
// (futex handoff only).
func BenchmarkPoolDispatch(b *testing.B) {
	nop := func(int, int, int) {}
	for _, mode := range []struct {
		name string
		o    PoolOptions
	}{{"spin", PoolOptions{}}, {"park", PoolOptions{WorkerSpin: -1, CallerSpin: -1}}} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/outer/t%d", mode.name, threads), func(b *testing.B) {
				p := newTestPool(b, threads, mode.o)
				for b.Loop() {
					p.Run(threads, nop)
				}
			})
			b.Run(fmt.Sprintf("%s/exec100/t%d", mode.name, threads), func(b *testing.B) {
				p := newTestPool(b, threads, mode.o)
				body := func(ip *Pool) {
					for i := 0; i < 100; i++ {
						ip.Run(threads, nop)
					}
				}
				for b.Loop() {
					p.Exec(body)
				}
			})
		}
	}
}

// TestPoolStress hammers the park/wake paths (tiny spin budgets, so threads
// park and wake constantly) and checks that no step is lost or repeated.
func TestPoolStress(t *testing.T) {
	iters := 100
	if testing.Short() {
		iters = 50
	}
	for _, threads := range []int{2, 3, 4} {
		for _, spin := range []time.Duration{time.Nanosecond, -1, 0} {
			p := newTestPool(t, threads, PoolOptions{WorkerSpin: spin, CallerSpin: spin})
			var hits atomic.Int64
			fn := func(_, s, e int) {
				hits.Add(int64(e - s))
				if s%3 == 0 {
					runtime.Gosched()
				}
			}
			want := int64(0)
			for i := 0; i < iters; i++ {
				p.Exec(func(ip *Pool) {
					for j := 0; j < 10; j++ {
						ip.Run(threads+j%3, fn)
					}
				})
				p.Run(7, fn)
				want += 7
				for j := 0; j < 10; j++ {
					want += int64(threads + j%3)
				}
			}
			if hits.Load() != want {
				t.Fatalf("threads %d spin %v: %d chunk elements, want %d", threads, spin, hits.Load(), want)
			}
		}
	}
}

// TestPoolHere: a NewPoolHere pool computes chunk 0 and Exec bodies on the
// calling thread, its other chunks on its own workers, and refuses use from
// another thread.
func TestPoolHere(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // for the pool's lifetime (the thread then exits with the goroutine)
		done <- func() error {
			me := unix.Gettid()
			p, err := NewPoolHere(3, PoolOptions{})
			if err != nil {
				return err
			}
			defer p.Close()
			if p.TIDs()[0] != me || p.Threads() != 3 {
				return fmt.Errorf("TIDs %v, caller %d", p.TIDs(), me)
			}
			var tids [3]atomic.Int64
			var sum atomic.Int64
			p.Run(30, func(w, s, e int) {
				tids[w].Store(int64(unix.Gettid()))
				sum.Add(int64(e - s))
			})
			if sum.Load() != 30 || tids[0].Load() != int64(me) || tids[1].Load() == int64(me) || tids[2].Load() == int64(me) {
				return fmt.Errorf("chunks: sum %d, threads %d %d %d (caller %d)", sum.Load(), tids[0].Load(), tids[1].Load(), tids[2].Load(), me)
			}
			var execTID int
			p.Exec(func(ip *Pool) {
				execTID = unix.Gettid()
				ip.Run(5, func(_, s, e int) { sum.Add(int64(e - s)) })
			})
			if execTID != me || sum.Load() != 35 {
				return fmt.Errorf("Exec ran on %d (caller %d), sum %d", execTID, me, sum.Load())
			}
			other := make(chan any)
			go func() {
				defer func() { other <- recover() }()
				p.Run(4, func(int, int, int) {})
			}()
			if <-other == nil {
				return errors.New("use from another goroutine did not panic")
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
