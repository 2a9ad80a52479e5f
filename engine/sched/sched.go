// Package sched decides which sequences advance at each step of inference.
// It knows nothing about models: the engine offers an Executor ("run this
// sequence's prompt", "advance this set of sequences by one token", "this
// sequence is over") and the scheduler decides what goes into each step,
// from a bounded queue, under a mode (simple or batching) and a policy
// (latency, cost or energy). See README.md for each policy's rule.
package sched

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Modes and policies (the plan's scheduler.mode and scheduler.policy).
const (
	ModeSimple   = "simple"
	ModeBatching = "batching"

	PolicyLatency = "latency"
	PolicyCost    = "cost"
	PolicyEnergy  = "energy"
)

// DefaultEnergyMinSteps is how many decode steps of one batch size the
// energy policy needs before it trusts that size's tokens per joule.
const DefaultEnergyMinSteps = 32

var (
	// ErrQueueFull is matched (errors.Is) by the *QueueFullError of Submit.
	ErrQueueFull = errors.New("sched: queue full")
	// ErrClosed: the scheduler was closed (or is draining) and takes no
	// more sequences; sequences still queued at Close are finished with it.
	ErrClosed = errors.New("sched: scheduler closed")
)

// QueueFullError is Submit's error when MaxQueue sequences already wait.
// Nothing was done for the refused sequence.
type QueueFullError struct {
	Queued, MaxQueue int
	// RetryAfter estimates when a slot frees up: the mean time a sequence
	// spent being served, times the sequences ahead, over the batch size.
	RetryAfter time.Duration
}

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("queue full: %d requests waiting (max_queue %d); retry in %d ms", e.Queued, e.MaxQueue, e.RetryAfter.Milliseconds())
}

// Is makes errors.Is(err, ErrQueueFull) true.
func (e *QueueFullError) Is(target error) bool { return target == ErrQueueFull }

// Config is a scheduler's mode and policy, from a resolved plan.
type Config struct {
	Mode     string        // ModeSimple or ModeBatching
	Policy   string        // PolicyLatency, PolicyCost or PolicyEnergy
	MaxBatch int           // most sequences per decode step (1 in simple mode)
	MaxQueue int           // most sequences waiting; Submit refuses more
	MaxWait  time.Duration // cost/energy: how long to wait for a batch to fill
	// Energy reads a cumulative energy meter in joules; ok false when no
	// meter is available. Nil: no meter (the energy policy then behaves as
	// the cost policy).
	Energy func() (joules float64, ok bool)
	// EnergyMinSteps: see DefaultEnergyMinSteps (0 means the default).
	EnergyMinSteps int
	// Thread, if set, runs the scheduler's loop: the scheduler's goroutine
	// calls Thread(loop), and Thread must call loop on that same goroutine
	// and return when it returns. It lets the executor prepare the
	// goroutine its calls arrive on (the engine locks it to an OS thread
	// that becomes worker 0 of the lane's compute pool) and clean up after.
	Thread func(loop func())
}

// Seq is one sequence, as the scheduler sees it. The engine's type carries
// everything else (state, sampler, output).
type Seq interface {
	// Context ends when the sequence is cancelled (run.cancel, client gone):
	// the scheduler then drops it at the next step boundary.
	Context() context.Context
}

// Executor is what the engine offers the scheduler. Calls come from the
// scheduler's goroutine, one at a time.
type Executor interface {
	// Prefill runs the prompts of the sequences joining at this step, in
	// as few forward passes as the executor's step size allows (prompts
	// batched together, long ones in pieces), and samples each one's first
	// token. It sets done[i] when sequence i needs no decode step (it
	// finished on its first token) and errs[i] when it failed.
	Prefill(seqs []Seq, done []bool, errs []error)
	// Step advances every sequence of seqs by one token in ONE batched
	// forward pass, and sets done[i] for those that finished.
	Step(seqs []Seq, done []bool) error
	// Finish ends a sequence and frees its KV cache. err is nil when it
	// completed, the context's cause when it was cancelled, ErrClosed when
	// the scheduler closed, or a Prefill/Step error. Called exactly once
	// for every sequence Submit accepted.
	Finish(s Seq, err error)
}

// Stats are a scheduler's counters.
type Stats struct {
	Queued    int   `json:"queued"`
	Active    int   `json:"active"`
	MaxActive int   `json:"max_active"` // largest decode batch so far
	Submitted int64 `json:"submitted"`
	Rejected  int64 `json:"rejected"` // queue full
	Completed int64 `json:"completed"`
	Cancelled int64 `json:"cancelled"`
	Failed    int64 `json:"failed"`
	Steps     int64 `json:"steps"`  // decode steps
	Tokens    int64 `json:"tokens"` // tokens decoded by those steps
	// StepsBySize[b] counts decode steps of b sequences.
	StepsBySize map[int]int64 `json:"steps_by_size"`
	// EnergyTarget is the batch size the energy policy aims for (0 when
	// the policy is not energy).
	EnergyTarget int `json:"energy_target,omitempty"`
}

type item struct {
	seq   Seq
	enq   time.Time
	admit time.Time
	stop  func() bool
}

type energyBucket struct {
	steps  int64
	tokens int64
	joules float64
}

// Scheduler runs sequences through an Executor on its own goroutine.
type Scheduler struct {
	cfg Config
	ex  Executor

	mu       sync.Mutex
	queue    []*item
	active   int
	closed   bool // Close: finish everything with ErrClosed
	draining bool // Drain: refuse new sequences, finish the others
	stats    Stats
	service  time.Duration // EWMA of admit→finish per sequence
	energy   map[int]*energyBucket

	wake chan struct{}
	done chan struct{}
}

// New starts a scheduler. Invalid configurations are an error: the plan's
// validation should have refused them.
func New(cfg Config, ex Executor) (*Scheduler, error) {
	switch cfg.Mode {
	case ModeSimple:
		if cfg.MaxBatch != 1 {
			return nil, fmt.Errorf("sched: simple mode runs one sequence at a time: max_batch must be 1, got %d", cfg.MaxBatch)
		}
	case ModeBatching:
	default:
		return nil, fmt.Errorf("sched: unknown mode %q", cfg.Mode)
	}
	switch cfg.Policy {
	case PolicyLatency, PolicyCost, PolicyEnergy:
	default:
		return nil, fmt.Errorf("sched: unknown policy %q", cfg.Policy)
	}
	if cfg.MaxBatch < 1 || cfg.MaxQueue < 1 || cfg.MaxWait < 0 {
		return nil, fmt.Errorf("sched: max_batch and max_queue must be ≥ 1 and max_wait ≥ 0 (got %d, %d, %v)", cfg.MaxBatch, cfg.MaxQueue, cfg.MaxWait)
	}
	if cfg.EnergyMinSteps <= 0 {
		cfg.EnergyMinSteps = DefaultEnergyMinSteps
	}
	s := &Scheduler{cfg: cfg, ex: ex, wake: make(chan struct{}, 1), done: make(chan struct{}), energy: map[int]*energyBucket{}}
	s.stats.StepsBySize = map[int]int64{}
	if cfg.Thread != nil {
		go cfg.Thread(s.loop)
	} else {
		go s.loop()
	}
	return s, nil
}

// Config returns the scheduler's configuration.
func (s *Scheduler) Config() Config { return s.cfg }

// Submit queues a sequence. It fails with a *QueueFullError when MaxQueue
// sequences already wait, or ErrClosed; either way nothing was done and
// Finish will not be called for seq. Otherwise Finish will be, exactly once.
func (s *Scheduler) Submit(seq Seq) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return ErrClosed
	}
	if len(s.queue) >= s.cfg.MaxQueue {
		s.stats.Rejected++
		err := &QueueFullError{Queued: len(s.queue), MaxQueue: s.cfg.MaxQueue, RetryAfter: s.retryAfterLocked()}
		s.mu.Unlock()
		return err
	}
	it := &item{seq: seq, enq: time.Now()}
	it.stop = context.AfterFunc(seq.Context(), s.poke)
	s.queue = append(s.queue, it)
	s.stats.Submitted++
	s.mu.Unlock()
	s.poke()
	return nil
}

func (s *Scheduler) retryAfterLocked() time.Duration {
	per := s.service
	if per == 0 {
		per = 100 * time.Millisecond
	}
	d := per * time.Duration(len(s.queue)+s.active) / time.Duration(s.cfg.MaxBatch)
	return min(max(d, 10*time.Millisecond), time.Minute)
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Queued, st.Active = len(s.queue), s.active
	st.StepsBySize = make(map[int]int64, len(s.stats.StepsBySize))
	for k, v := range s.stats.StepsBySize {
		st.StepsBySize[k] = v
	}
	if s.cfg.Policy == PolicyEnergy {
		st.EnergyTarget = s.energyTargetLocked()
	}
	return st
}

// Drain stops accepting sequences; those queued or running go on. Done is
// closed once they have all finished.
func (s *Scheduler) Drain() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.poke()
}

// Close stops the scheduler: sequences still queued or running are
// finished with ErrClosed (running ones at the next step boundary). It
// waits for the scheduler's goroutine to end.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.poke()
	<-s.done
}

// Done is closed when the scheduler's goroutine has ended (after Close, or
// after Drain once idle).
func (s *Scheduler) Done() <-chan struct{} { return s.done }

// energyTargetLocked is the batch size with the best measured tokens per
// joule among sizes with at least EnergyMinSteps steps; MaxBatch until any
// size qualifies (or without a meter).
func (s *Scheduler) energyTargetLocked() int {
	best, bestTPJ := s.cfg.MaxBatch, 0.0
	for size, b := range s.energy {
		if b.steps < int64(s.cfg.EnergyMinSteps) || b.joules <= 0 || size > s.cfg.MaxBatch {
			continue
		}
		tpj := float64(b.tokens) / b.joules
		if tpj > bestTPJ || (tpj == bestTPJ && size > best) {
			best, bestTPJ = size, tpj
		}
	}
	return best
}

// admitLocked pops the sequences that join now, given n running; wait > 0
// means "nothing to admit yet: a batch is filling, look again then".
func (s *Scheduler) admitLocked(n int) (admit []*item, wait time.Duration) {
	if len(s.queue) == 0 {
		return nil, 0
	}
	limit := s.cfg.MaxBatch
	if s.cfg.Mode == ModeBatching && s.cfg.Policy == PolicyEnergy {
		limit = s.energyTargetLocked()
	}
	room := limit - n
	if room <= 0 {
		return nil, 0
	}
	if s.cfg.Mode == ModeBatching && s.cfg.Policy != PolicyLatency && n == 0 && len(s.queue) < limit && !s.draining {
		if waited := time.Since(s.queue[0].enq); waited < s.cfg.MaxWait {
			return nil, s.cfg.MaxWait - waited
		}
	}
	k := min(room, len(s.queue))
	admit = append(admit, s.queue[:k]...)
	s.queue = append(s.queue[:0], s.queue[k:]...)
	return admit, 0
}

func (s *Scheduler) loop() {
	defer close(s.done)
	var active []*item
	var seqs []Seq
	var done []bool
	var errs []error
	var timer *time.Timer
	for {
		// Wait for work, or for a filling batch's deadline.
		s.mu.Lock()
		var cancelled []*item
		keep := s.queue[:0]
		for _, it := range s.queue {
			if it.seq.Context().Err() != nil {
				cancelled = append(cancelled, it)
			} else {
				keep = append(keep, it)
			}
		}
		clear(s.queue[len(keep):])
		s.queue = keep
		closed := s.closed
		var admit []*item
		var wait time.Duration
		if !closed {
			admit, wait = s.admitLocked(len(active))
		}
		idle := len(s.queue) == 0 && len(active) == 0 && len(admit) == 0
		drained := s.draining && idle
		var rest []*item
		if closed {
			rest = append(rest, s.queue...)
			s.queue = nil
		}
		s.active = len(active) + len(admit)
		s.mu.Unlock()

		for _, it := range cancelled {
			s.finish(it, context.Cause(it.seq.Context()))
		}
		if closed {
			for _, it := range append(rest, active...) {
				s.finish(it, ErrClosed)
			}
			s.mu.Lock()
			s.active = 0
			s.mu.Unlock()
			return
		}
		if drained {
			return
		}
		if len(cancelled) > 0 && len(admit) == 0 && len(active) == 0 {
			continue // look again: the queue changed
		}
		if len(admit) == 0 && len(active) == 0 {
			if wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-s.wake:
				case <-timer.C:
				}
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
			} else {
				<-s.wake
			}
			continue
		}

		// Sequences cancelled while running leave before the step.
		keepA := active[:0]
		for _, it := range active {
			if err := it.seq.Context().Err(); err != nil {
				s.finish(it, context.Cause(it.seq.Context()))
			} else {
				keepA = append(keepA, it)
			}
		}
		clear(active[len(keepA):])
		active = keepA

		// Joining sequences: their prompts batched together.
		joining := admit[:0]
		for _, it := range admit {
			it.admit = time.Now()
			if it.seq.Context().Err() != nil {
				s.finish(it, context.Cause(it.seq.Context()))
				continue
			}
			joining = append(joining, it)
		}
		if len(joining) > 0 {
			seqs = seqs[:0]
			for _, it := range joining {
				seqs = append(seqs, it.seq)
			}
			done = append(done[:0], make([]bool, len(seqs))...)
			errs = append(errs[:0], make([]error, len(seqs))...)
			s.ex.Prefill(seqs, done, errs)
			for i, it := range joining {
				switch {
				case errs[i] != nil:
					s.finish(it, errs[i])
				case done[i]:
					s.finish(it, nil)
				default:
					active = append(active, it)
				}
			}
			clear(errs)
		}
		s.mu.Lock()
		s.active = len(active)
		s.mu.Unlock()
		if len(active) == 0 {
			continue
		}

		// One decode step for every running sequence.
		seqs = seqs[:0]
		for _, it := range active {
			seqs = append(seqs, it.seq)
		}
		done = append(done[:0], make([]bool, len(seqs))...)
		j0, eok := s.readEnergy()
		err := s.ex.Step(seqs, done)
		j1, eok1 := s.readEnergy()
		s.mu.Lock()
		n := len(seqs)
		s.stats.Steps++
		s.stats.Tokens += int64(n)
		s.stats.StepsBySize[n]++
		s.stats.MaxActive = max(s.stats.MaxActive, n)
		if eok && eok1 && j1 >= j0 && err == nil {
			b := s.energy[n]
			if b == nil {
				b = &energyBucket{}
				s.energy[n] = b
			}
			b.steps++
			b.tokens += int64(n)
			b.joules += j1 - j0
		}
		s.mu.Unlock()
		keepA = active[:0]
		for i, it := range active {
			switch {
			case err != nil:
				s.finish(it, err)
			case done[i]:
				s.finish(it, nil)
			default:
				keepA = append(keepA, it)
			}
		}
		clear(active[len(keepA):])
		active = keepA
		s.mu.Lock()
		s.active = len(active)
		s.mu.Unlock()
	}
}

func (s *Scheduler) readEnergy() (float64, bool) {
	if s.cfg.Energy == nil {
		return 0, false
	}
	j, ok := s.cfg.Energy()
	if !ok || math.IsNaN(j) {
		return 0, false
	}
	return j, true
}

// finish updates the counters, then calls the executor's Finish (so that
// whoever the Finish unblocks sees the counters include it).
func (s *Scheduler) finish(it *item, err error) {
	it.stop()
	s.mu.Lock()
	if !it.admit.IsZero() {
		s.active-- // it was counted as running since its admission
	}
	switch {
	case err == nil:
		s.stats.Completed++
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrClosed) || it.seq.Context().Err() != nil:
		s.stats.Cancelled++
	default:
		s.stats.Failed++
	}
	if !it.admit.IsZero() {
		d := time.Since(it.admit)
		if s.service == 0 {
			s.service = d
		} else {
			s.service = (7*s.service + d) / 8
		}
	}
	s.mu.Unlock()
	s.ex.Finish(it.seq, err)
}
