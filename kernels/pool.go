package kernels

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Pool is a fixed set of worker goroutines, each locked to its own OS thread,
// that runs every computation of the engine. The threads' kernel ids (TIDs)
// are recorded so that a power-capping cgroup can move exactly these threads.
//
// Two ways in:
//
//   - Run(n, fn) is a parallel for: [0,n) is cut into contiguous chunks, one
//     per worker, which the workers claim (a late worker's chunk is taken by
//     one done with its own); the calling goroutine waits and computes
//     nothing itself.
//   - Exec(f) runs f on worker 0 and waits. Inside f, f's argument is an
//     "inner" view of the same pool whose Run lets worker 0 take the first
//     chunk itself. A whole forward pass is one Exec: every op, glue
//     included, runs on pool threads, and each parallel step costs a
//     thread-to-thread handoff rather than a wake-up of the caller.
//
// Handoff is spin-then-park: an idle worker polls an atomic job word for a
// while (PoolOptions.WorkerSpin, yielding the CPU between polls after the
// first microseconds) and then sleeps on a futex; a dispatcher publishes a
// job with one atomic store and issues a futex wake only for workers that
// sleep. Waiting callers do the same. Measured on this project's 2-CPU
// machine kind (BenchmarkPoolDispatch): a parallel step costs ~0.3-1 µs when
// the threads spin, ~10-15 µs through the futex alone, and 15-45 µs through
// Go channels (the first design: waking a goroutine locked to a thread goes
// through the Go scheduler's hand-off, which the futex avoids).
//
// A Pool runs one job at a time: Run and Exec calls from different
// goroutines are serialised. Inside Exec, only f (on worker 0) may use the
// inner view.
//
// Because spinning workers hold a Go P, NewPool raises GOMAXPROCS to at least
// the number of pool threads (of all live pools) plus one, so that the rest
// of the program (RPC, the caller) always has a P.
type Pool struct {
	c     *poolCore
	inner bool
}

// PoolOptions tune the handoff. Zero values mean the defaults.
type PoolOptions struct {
	// WorkerSpin is how long an idle worker polls for the next job before
	// sleeping. Negative means never spin (futex handoff only).
	WorkerSpin time.Duration
	// CallerSpin is how long a goroutine waiting in Run or Exec polls before
	// parking. Negative means never spin. The default spins only when the
	// pool leaves a CPU free for the caller.
	CallerSpin time.Duration
}

// DefaultWorkerSpin is the default idle spin of a worker: long enough to
// cover the gap between two tokens of a decode loop.
const DefaultWorkerSpin = 200 * time.Microsecond

const (
	kindFor  = 1
	kindExec = 2
	kindQuit = 3
)

// parker lets one thread sleep until another wakes it. Every wait is tagged
// (with the generation of the job it concerns, plus a flag bit so that a tag
// is never 0), and a waker names the tag it means: a late wake-up for an
// earlier job can never release a later wait.
//
// Sleeping is a raw futex wait on seq, not a Go channel: the waker's
// FUTEX_WAKE makes the kernel run the sleeping thread directly, without the
// Go scheduler's hand-off of a locked goroutine (which costs several thread
// switches and, with every CPU busy spinning, tens of microseconds).
type parker struct {
	state atomic.Uint64 // 0, or the tag of the current wait
	seq   atomic.Uint32 // futex word, bumped by every release
	_     [52]byte      // keep the hot atomics of different parkers apart
}

const tagFlag = 1 << 32

// wake releases the owner if it is parked on exactly tag.
func (p *parker) wake(tag uint64) {
	if p.state.Load() == tag && p.state.CompareAndSwap(tag, 0) {
		p.release()
	}
}

// wakeUnless releases the owner if it is parked on any tag but tag.
func (p *parker) wakeUnless(tag uint64) {
	if s := p.state.Load(); s != 0 && s != tag && p.state.CompareAndSwap(s, 0) {
		p.release()
	}
}

func (p *parker) release() {
	p.seq.Add(1)
	futexWake(&p.seq)
}

// await spins on done for up to spin, then parks under tag until a waker
// releases it or done holds. A waker must make done true before waking.
func (p *parker) await(tag uint64, done func() bool, spin time.Duration) {
	if spinUntil(done, spin) {
		return
	}
	p.state.Store(tag)
	if done() && p.state.CompareAndSwap(tag, 0) {
		return
	}
	// Either not done, or a waker already took the tag: sleep until the
	// waker has released it (state back to 0).
	for {
		s := p.seq.Load()
		if p.state.Load() != tag {
			return
		}
		futexWait(&p.seq, s)
	}
}

// Linux futex operations (linux/futex.h).
const (
	futexWaitPrivate = 0 | 128 // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
	futexWakePrivate = 1 | 128 // FUTEX_WAKE | FUTEX_PRIVATE_FLAG
)

func futexWait(addr *atomic.Uint32, val uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate, uintptr(val), 0, 0, 0)
}

func futexWake(addr *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakePrivate, 1, 0, 0, 0)
}

// spinUntil polls done for up to d, with PAUSE instructions between polls.
// It reports whether done became true. After the first microseconds it
// yields the CPU between polls (sched_yield), so that a spinning thread
// does not starve the thread it is waiting for when the machine is
// oversubscribed.
func spinUntil(done func() bool, d time.Duration) bool {
	if done() {
		return true
	}
	if d <= 0 {
		return false
	}
	start := time.Now()
	for i := 1; ; i++ {
		if done() {
			return true
		}
		cpuPause(spinPauses)
		if i&15 == 0 {
			el := time.Since(start)
			if el > d {
				return false
			}
			if el > politeAfter {
				yieldThread()
			}
		}
	}
}

// politeAfter is how long a spin polls before yielding between polls.
const politeAfter = 3 * time.Microsecond

// spinPauses is how many PAUSE instructions separate two polls: a spinning
// thread leaves the core's execution resources to the thread it waits for
// when the two share a core (SMT, or vCPUs on a busy host), and burns less
// power.
const spinPauses = 4

func yieldThread() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

type poolCore struct {
	n          int
	tids       []int
	owner      int // TID of the calling thread that is worker 0 (NewPoolHere), else 0
	workerSpin time.Duration
	callerSpin time.Duration

	mu     sync.Mutex // serialises outer Run / Exec / Close
	closed bool

	// job word: gen<<32 | k<<2 | kind. Written only by the current
	// dispatcher, after the job fields below.
	job atomic.Uint64
	gen uint32

	fn   func(worker, start, end int)
	size int

	execFn   func(*Pool)
	execDone atomic.Int32

	pending atomic.Int32
	// next hands out the chunks of the current Run job: gen<<32 | k<<16 |
	// index of the next unclaimed chunk. Workers claim chunks with a CAS,
	// so a chunk whose worker is late (descheduled by another process on
	// a busy host) is taken by a worker that is done with its own.
	next   atomic.Uint64
	panicV atomic.Pointer[panicValue]

	runWait  parker
	execWait parker
	workers  []parker

	innerPool Pool
	wg        sync.WaitGroup

	// per-dispatch scratch owned by the pool (one job at a time)
	mm       mmJob
	mmFn     func(worker, start, end int)
	convFn   func(worker, start, end int)
	pendDone func() bool
	execOK   func() bool
}

type panicValue struct{ v any }

var poolThreads atomic.Int64 // threads of all live pools

// NewPool starts n worker threads with the default options.
func NewPool(n int) (*Pool, error) { return NewPoolWith(n, PoolOptions{}) }

// NewPoolWith starts n worker threads.
func NewPoolWith(n int, o PoolOptions) (*Pool, error) { return newPool(n, o, 0) }

// NewPoolHere makes a pool of n threads whose worker 0 is the calling
// goroutine's OS thread, which must be locked to it (runtime.LockOSThread)
// for the pool's lifetime; n-1 worker threads are started. Exec and Run
// must then be called from that goroutine only, and compute on its thread:
// no hand-off between the thread that decides what to compute and the one
// that computes (a scheduler loop that steps a model every few hundred
// microseconds would otherwise pay a cross-thread wake-up per step, and on
// a machine with as many CPUs as threads keep one more thread runnable than
// there are CPUs). The caller's TID is TIDs()[0]: a power cap moving the
// pool's threads moves it too. Close from the same goroutine.
func NewPoolHere(n int, o PoolOptions) (*Pool, error) {
	if n < 1 || n > 1024 {
		return nil, fmt.Errorf("kernels: pool size %d out of range (1..1024)", n)
	}
	return newPool(n, o, unix.Gettid())
}

func newPool(n int, o PoolOptions, owner int) (*Pool, error) {
	if n < 1 || n > 1024 {
		return nil, fmt.Errorf("kernels: pool size %d out of range (1..1024)", n)
	}
	c := &poolCore{n: n, tids: make([]int, n), workers: make([]parker, n), owner: owner}
	switch {
	case o.WorkerSpin < 0:
		c.workerSpin = 0
	case o.WorkerSpin == 0:
		c.workerSpin = DefaultWorkerSpin
	default:
		c.workerSpin = o.WorkerSpin
	}
	switch {
	case o.CallerSpin < 0:
		c.callerSpin = 0
	case o.CallerSpin == 0:
		if n < runtime.NumCPU() {
			c.callerSpin = 20 * time.Microsecond
		}
	default:
		c.callerSpin = o.CallerSpin
	}
	c.innerPool = Pool{c: c, inner: true}
	c.mmFn = c.mmChunk
	c.convFn = c.convChunk
	c.pendDone = func() bool { return c.pending.Load() == 0 }
	c.execOK = func() bool { return c.execDone.Load() == 1 }

	total := poolThreads.Add(int64(n))
	if need := int(total) + 1; runtime.GOMAXPROCS(0) < need {
		runtime.GOMAXPROCS(need)
	}

	type started struct{ id, tid int }
	first := 0
	if owner != 0 {
		c.tids[0], first = owner, 1 // worker 0 is the caller
	}
	ready := make(chan started, n)
	c.wg.Add(n - first)
	for i := first; i < n; i++ {
		go c.worker(i, func(tid int) { ready <- started{i, tid} })
	}
	for i := first; i < n; i++ {
		s := <-ready
		c.tids[s.id] = s.tid
	}
	return &Pool{c: c}, nil
}

// checkOwner panics unless a caller-owned pool is used from its thread.
func (c *poolCore) checkOwner() {
	if c.owner != 0 && unix.Gettid() != c.owner {
		panic("kernels: a NewPoolHere pool used from a thread other than the one that made it")
	}
}

// Threads returns the number of worker threads.
func (p *Pool) Threads() int { return p.c.n }

// TIDs returns the Linux thread ids of the workers, worker 0 first.
func (p *Pool) TIDs() []int { return append([]int(nil), p.c.tids...) }

// Close stops the workers and waits for them. A worker exits with its OS
// thread still locked, so the Go runtime terminates that thread rather than
// reusing it: a thread moved into a power-capping cgroup never comes back to
// run unrelated goroutines. Close is idempotent; the pool is unusable after.
func (p *Pool) Close() error {
	if p.inner {
		return errors.New("kernels: Close called on the inner view of a pool")
	}
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.checkOwner()
	c.closed = true
	tag := c.publish(kindQuit, c.n)
	for i := range c.workers {
		c.workers[i].wakeUnless(tag)
	}
	c.wg.Wait()
	poolThreads.Add(-int64(c.n))
	return nil
}

// publish makes a job visible to the workers and returns its wait tag.
func (c *poolCore) publish(kind, k int) uint64 {
	c.gen++
	g := uint64(c.gen)
	c.job.Store(g<<32 | uint64(k)<<2 | uint64(kind))
	return g | tagFlag
}

func (c *poolCore) worker(id int, started func(int)) {
	runtime.LockOSThread()
	// No UnlockOSThread: see Close.
	defer c.wg.Done()
	started(unix.Gettid())
	me := &c.workers[id]
	var seen uint32
	for {
		j := c.waitJob(me, seen)
		seen = uint32(j >> 32)
		k := int(j>>2) & (1<<30 - 1)
		switch j & 3 {
		case kindQuit:
			return
		case kindExec:
			if id == 0 {
				seen = c.runExec(seen)
			}
		case kindFor:
			if id < k {
				c.runChunks(id, seen)
			}
		}
	}
}

// waitJob returns the first job word whose generation differs from seen.
func (c *poolCore) waitJob(me *parker, seen uint32) uint64 {
	fresh := func() bool { return uint32(c.job.Load()>>32) != seen }
	if !spinUntil(fresh, c.workerSpin) {
		for !fresh() {
			me.await(uint64(seen)|tagFlag, fresh, 0)
		}
	}
	return c.job.Load()
}

// runChunks runs chunks of job gen until none is left to claim.
func (c *poolCore) runChunks(id int, gen uint32) {
	for {
		i, k, ok := c.claim(gen)
		if !ok {
			return
		}
		c.runChunk(id, i, k, gen)
	}
}

// claim takes the next unclaimed chunk i of the k of job gen. A successful
// claim means job gen is still running (its chunk i is not done), so the
// job's fields (fn, size) are still gen's.
func (c *poolCore) claim(gen uint32) (i, k int, ok bool) {
	for {
		v := c.next.Load()
		i, k = int(v&0xffff), int(v>>16&0xffff)
		if uint32(v>>32) != gen || i >= k {
			return 0, 0, false
		}
		if c.next.CompareAndSwap(v, v+1) {
			return i, k, true
		}
	}
}

func (c *poolCore) runChunk(id, i, k int, gen uint32) {
	defer c.finishChunk(gen)
	n := c.size
	c.fn(id, i*n/k, (i+1)*n/k)
}

func (c *poolCore) finishChunk(gen uint32) {
	if r := recover(); r != nil {
		c.panicV.CompareAndSwap(nil, &panicValue{r})
	}
	if c.pending.Add(-1) == 0 {
		c.runWait.wake(uint64(gen) | tagFlag)
	}
}

// runExec runs the Exec body on worker 0 and returns the generation to wait
// past (inner Runs advanced it).
func (c *poolCore) runExec(gen uint32) (seen uint32) {
	func() {
		defer func() {
			if r := recover(); r != nil {
				c.panicV.CompareAndSwap(nil, &panicValue{r})
			}
		}()
		c.execFn(&c.innerPool)
	}()
	seen = uint32(c.job.Load() >> 32)
	c.execDone.Store(1)
	c.execWait.wake(uint64(gen) | tagFlag)
	return seen
}

func (c *poolCore) rethrow() {
	if pv := c.panicV.Swap(nil); pv != nil {
		panic(pv.v)
	}
}

// Run calls fn(worker, start, end) for min(n, Threads()) contiguous chunks
// covering [0,n), and returns when all are done. Each worker claims chunks
// until none is left: usually one each, but a worker that comes late (its
// thread descheduled) finds its chunk taken by one that was done with its
// own. worker identifies the calling worker (for per-worker scratch): a
// worker runs one chunk at a time. A panic in fn is re-raised in the
// caller.
func (p *Pool) Run(n int, fn func(worker, start, end int)) {
	if n <= 0 {
		return
	}
	c := p.c
	if p.inner {
		c.run(true, n, fn)
		return
	}
	c.lock()
	defer c.mu.Unlock()
	if c.owner != 0 { // the caller is worker 0
		c.checkOwner()
		c.run(true, n, fn)
		return
	}
	c.run(false, n, fn)
}

// lock takes the pool for one outer operation.
func (c *poolCore) lock() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		panic("kernels: use of a closed pool")
	}
}

// run is Run with the pool already held (outer) or from worker 0 (inner).
func (c *poolCore) run(inner bool, n int, fn func(worker, start, end int)) {
	k := min(n, c.n)
	if inner && k == 1 {
		fn(0, 0, n)
		return
	}
	c.fn, c.size = fn, n
	c.pending.Store(int32(k))
	c.next.Store(uint64(c.gen+1)<<32 | uint64(k)<<16) // the job publish makes
	tag := c.publish(kindFor, k)
	first := 0
	if inner {
		first = 1
	}
	for i := first; i < k; i++ {
		c.workers[i].wakeUnless(tag)
	}
	spin := c.callerSpin
	if inner {
		c.runChunks(0, uint32(tag))
		spin = c.workerSpin
	}
	c.runWait.await(tag, c.pendDone, spin)
	c.fn = nil
	c.rethrow()
}

// Exec runs f on worker 0 with the inner view of the pool and returns when f
// has returned. On the inner view it simply calls f. A panic in f is
// re-raised in the caller.
func (p *Pool) Exec(f func(*Pool)) {
	if p.inner {
		f(p)
		return
	}
	c := p.c
	c.lock()
	defer c.mu.Unlock()
	if c.owner != 0 { // the caller is worker 0: run f here
		c.checkOwner()
		f(&c.innerPool)
		return
	}
	c.execFn = f
	c.execDone.Store(0)
	tag := c.publish(kindExec, 1)
	c.workers[0].wakeUnless(tag)
	c.execWait.await(tag, c.execOK, c.callerSpin)
	c.execFn = nil
	c.rethrow()
}

// Inner reports whether p is the inner view handed to an Exec body.
func (p *Pool) Inner() bool { return p.inner }
