package daemon

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Peer identifies the process at the other end of a Unix socket, as the
// kernel recorded it when that process connected.
type Peer struct {
	Known bool // false when the connection is not a Unix socket or SO_PEERCRED failed
	PID   int32
	UID   uint32
	GID   uint32 // primary (effective) gid
	// Groups are the supplementary groups: from SO_PEERGROUPS (Linux 4.13+,
	// taken at connect time like SO_PEERCRED), else from the Groups: line
	// of /proc/PID/status read when the connection was accepted.
	Groups []uint32
}

// peerOf returns the credentials of nc's peer.
func peerOf(nc net.Conn) Peer {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return Peer{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return Peer{}
	}
	var p Peer
	var groups []uint32
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return
		}
		p = Peer{Known: true, PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
		groups, gerr = peerGroups(int(fd))
	}); err != nil || !p.Known {
		return Peer{}
	}
	if gerr != nil {
		groups, gerr = procGroups(p.PID)
	}
	if gerr == nil {
		p.Groups = groups
	}
	return p
}

// peerGroups reads SO_PEERGROUPS: the supplementary groups of the peer when
// it connected.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for range 4 {
		buf := make([]uint32, n)
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return buf[:size/4], nil
		case unix.ERANGE:
			n = int(size/4) + 1
			continue
		default:
			return nil, errno
		}
	}
	return nil, unix.ERANGE
}

// procRoot is where procGroups reads; tests point it elsewhere.
var procRoot = "/proc"

// procGroups reads the Groups: line of /proc/PID/status. It fails when the
// process has exited or /proc hides it (hidepid, ProtectProc=invisible).
func procGroups(pid int32) ([]uint32, error) {
	f, err := os.Open(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, g := range strings.Fields(rest) {
			v, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("/proc/%d/status: bad group %q", pid, g)
			}
			out = append(out, uint32(v))
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("/proc/%d/status: no Groups line", pid)
}

// peerHungUp reports whether the peer closed its end completely. On a Unix
// stream socket POLLHUP is set only when both directions are shut down: a
// client that merely half-closed (shutdown(SHUT_WR)) after sending its
// request, and still waits for the reply, does not trigger it.
func peerHungUp(rc syscall.RawConn) bool {
	hup := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		n, err := unix.Poll(fds, 0)
		hup = err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
	})
	return hup
}
