package daemon

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestIsAdmin(t *testing.T) {
	const daemonUID = 990
	admin := []uint32{4242}
	for _, tc := range []struct {
		name string
		p    Peer
		want bool
	}{
		{"unknown peer", Peer{}, false},
		{"root", Peer{Known: true, UID: 0, GID: 100}, true},
		{"daemon's uid", Peer{Known: true, UID: daemonUID, GID: 100}, true},
		{"primary admin group", Peer{Known: true, UID: 1000, GID: 4242}, true},
		{"supplementary admin group", Peer{Known: true, UID: 1000, GID: 100, Groups: []uint32{27, 4242}}, true},
		{"other user", Peer{Known: true, UID: 1000, GID: 100, Groups: []uint32{27}}, false},
	} {
		if got := IsAdmin(tc.p, daemonUID, admin); got != tc.want {
			t.Errorf("%s: IsAdmin = %v", tc.name, got)
		}
	}
	if IsAdmin(Peer{Known: true, UID: 1000, GID: 4242}, daemonUID, nil) {
		t.Error("no admin group configured: only root and the daemon's uid")
	}
}

func TestProcGroups(t *testing.T) {
	root := t.TempDir()
	old := procRoot
	procRoot = root
	defer func() { procRoot = old }()
	os.MkdirAll(filepath.Join(root, "42"), 0o755)
	os.WriteFile(filepath.Join(root, "42", "status"), []byte("Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 4242 \nNgid:\t0\n"), 0o644)
	g, err := procGroups(42)
	if err != nil || !slices.Equal(g, []uint32{4, 24, 4242}) {
		t.Fatalf("groups %v %v", g, err)
	}
	os.MkdirAll(filepath.Join(root, "43"), 0o755)
	os.WriteFile(filepath.Join(root, "43", "status"), []byte("Name:\tx\nGroups:\n"), 0o644)
	if g, err := procGroups(43); err != nil || len(g) != 0 {
		t.Fatalf("no groups: %v %v", g, err)
	}
	if _, err := procGroups(44); err == nil {
		t.Fatal("a missing process has no groups")
	}
}

// peerOf reads SO_PEERCRED and SO_PEERGROUPS: for a connection to ourselves
// they match our own credentials.
func TestPeerOfSelf(t *testing.T) {
	dir, err := os.MkdirTemp("", "llme-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := ListenUnix(filepath.Join(dir, "s"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("unix", filepath.Join(dir, "s"))
		if err == nil {
			defer c.Close()
			buf := make([]byte, 1)
			c.Read(buf)
		}
	}()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := peerOf(nc)
	if !p.Known || int(p.PID) != os.Getpid() || int(p.UID) != os.Getuid() || int(p.GID) != os.Getegid() {
		t.Fatalf("peer %+v", p)
	}
	want, _ := os.Getgroups()
	got := make([]int, len(p.Groups))
	for i, g := range p.Groups {
		got[i] = int(g)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	if _, ok := nc.(*net.UnixConn); ok {
		rc, _ := nc.(*net.UnixConn).SyscallConn()
		var pg []uint32
		var perr error
		rc.Control(func(fd uintptr) { pg, perr = peerGroups(int(fd)) })
		if perr != nil {
			t.Logf("SO_PEERGROUPS unsupported here (%v): /proc fallback used", perr)
		} else if len(pg) != len(want) {
			t.Fatalf("SO_PEERGROUPS %v, want %v", pg, want)
		}
	}
}
