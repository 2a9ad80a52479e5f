//go:build unix

package tokenizer

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user+system) this process has used. The
// benchmarks report throughput against it as well as wall time, since a
// shared machine's wall clock says little.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
