package power

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestThreadCPUTimeIsCurrent: the CPU time of a thread that is running right
// now, with no context switch since it started, is read as of now (schedstat
// would show it a scheduler tick late), and it agrees with schedstat once the
// thread has stopped.
func TestThreadCPUTimeIsCurrent(t *testing.T) {
	tidc, stop, done := make(chan int), make(chan struct{}), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tidc <- unix.Gettid()
		for {
			select {
			case <-stop:
				close(done)
				return
			default:
			}
		}
	}()
	tid := <-tidc
	t0, err := ThreadCPUTime(tid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	t1, err := ThreadCPUTime(tid)
	if err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	if d := t1 - t0; d < 5*time.Millisecond {
		t.Fatalf("a spinning thread gained %v of CPU time in 30 ms", d)
	}
	time.Sleep(5 * time.Millisecond)
	c, err := ThreadCPUTime(tid)
	if err != nil {
		t.Fatal(err)
	}
	s, err := threadCPUTime(unix.Getpid(), tid)
	if err != nil {
		t.Fatal(err)
	}
	// The thread went back to Go's pool and may run between the two reads
	// (then schedstat, read second, is ahead): a few ms either way.
	if diff := c - s; diff < -5*time.Millisecond || diff > 5*time.Millisecond {
		t.Fatalf("clock %v, schedstat %v", c, s)
	}
}
