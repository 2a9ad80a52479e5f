package power

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

var (
	procOnce sync.Once
	procFS   procfs.FS
	procErr  error
)

func defaultProcFS() (procfs.FS, error) {
	procOnce.Do(func() { procFS, procErr = procfs.NewFS(procfs.DefaultMountPoint) })
	return procFS, procErr
}

// ThreadCPUTime returns the CPU time a thread of this process has run:
// clock_gettime on the thread's CPU-time clock (nanoseconds, and current:
// the kernel adds the time of a thread running right now), else
// /proc/self/task/TID/schedstat (nanoseconds, but only brought up to date
// at the thread's scheduling events: a thread that computes without a
// context switch, as a lane's scheduler thread does between two runs, shows
// its runtime up to a tick late), else utime+stime from the thread's stat
// (10 ms ticks).
func ThreadCPUTime(tid int) (time.Duration, error) {
	var ts unix.Timespec
	if tid > 0 && tid < 1<<28 { // the clock id encodes tid in 29 bits
		if err := unix.ClockGettime(threadCPUClock(tid), &ts); err == nil {
			return time.Duration(ts.Nano()), nil
		}
	}
	return threadCPUTime(os.Getpid(), tid)
}

// threadCPUClock is Linux's clock id of a thread's CPU time
// (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED) of include/linux/posix-timers.h,
// as glibc's pthread_getcpuclockid builds it); valid for threads of the
// calling process.
func threadCPUClock(tid int) int32 {
	const cpuclockSched, cpuclockPerThread = 2, 4
	return int32(^uint32(tid)<<3) | cpuclockSched | cpuclockPerThread
}

func threadCPUTime(pid, tid int) (time.Duration, error) {
	fs, err := defaultProcFS()
	if err != nil {
		return 0, err
	}
	th, err := fs.Thread(pid, tid)
	if err != nil {
		return 0, fmt.Errorf("power: thread %d: %w", tid, err)
	}
	ss, err := th.Schedstat()
	if err == nil {
		return time.Duration(ss.RunningNanoseconds), nil
	}
	st, serr := th.Stat()
	if serr != nil {
		return 0, fmt.Errorf("power: thread %d cpu time: %w", tid, err)
	}
	return time.Duration(st.CPUTime() * float64(time.Second)), nil
}

// ProcessCPUTime returns the user+system CPU time of a whole process. For
// pid 0 or this process it uses clock_gettime(CLOCK_PROCESS_CPUTIME_ID)
// (nanoseconds); for another process, utime+stime from procfs
// /proc/PID/stat (10 ms ticks).
func ProcessCPUTime(pid int) (time.Duration, error) {
	if pid == 0 || pid == os.Getpid() {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err == nil {
			return time.Duration(ts.Nano()), nil
		}
		pid = os.Getpid()
	}
	fs, err := defaultProcFS()
	if err != nil {
		return 0, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return time.Duration(st.CPUTime() * float64(time.Second)), nil
}

// SystemBusyCPU returns the CPU time all CPUs spent busy since boot, from
// /proc/stat: user+nice+system+irq+softirq (guest time is part of user; idle,
// iowait and steal are not busy). Resolution: 10 ms ticks per CPU. This is
// the CPU time a RAPL package counter covers, the denominator of attribution.
func SystemBusyCPU() (time.Duration, error) {
	fs, err := defaultProcFS()
	if err != nil {
		return 0, err
	}
	st, err := fs.Stat()
	if err != nil {
		return 0, err
	}
	c := st.CPUTotal
	s := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
	return time.Duration(s * float64(time.Second)), nil
}
