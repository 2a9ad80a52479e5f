package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
	"github.com/weos/llm-engine/rpc/ctl"
)

// The test binary doubles as the programs under test, so that no nested
// "go build" is needed (and the tests build wherever the package does):
// LLMED_TEST_AS=llm-engined runs the daemon's main (LLMED_TEST_ENGINE=fake
// serves daemontest.FakeEngine), LLMED_TEST_AS=enginectl runs enginectl.
func TestMain(m *testing.M) {
	switch os.Getenv("LLMED_TEST_AS") {
	case "llm-engined":
		if os.Getenv("LLMED_TEST_ENGINE") == "fake" {
			newEngine = func(daemon.EngineOptions) (rpc.Engine, error) { return daemontest.NewFakeEngine(), nil }
		}
		os.Exit(run(os.Args[1:]))
	case "enginectl":
		os.Exit(ctl.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(m.Run())
}

// testDir is a short temporary directory (socket paths are limited to 107
// bytes), traversable by other users (the setpriv test).
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "llmed-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// gorace keeps the race detector's 1s sleep at exit out of the children.
func gorace() string { return strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0") }

// childEnv is the environment of a child process of the tests.
func childEnv(extra ...string) []string {
	return append(append(os.Environ(), "GORACE="+gorace()), extra...)
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// notifySocket is a NOTIFY_SOCKET: the messages the daemon sends.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T, dir string) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(dir, "notify.sock"), msgs: make(chan string, 1024)}
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := pc.ReadFromUnix(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// expect waits for a message containing want; it returns it and the
// messages before it.
func (n *notifySocket) expect(t *testing.T, want string, timeout time.Duration) (string, []string) {
	t.Helper()
	var seen []string
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %q (seen %q)", want, seen)
			}
			if strings.Contains(m, want) {
				return m, seen
			}
			seen = append(seen, m)
		case <-deadline:
			t.Fatalf("no %q on NOTIFY_SOCKET within %v (seen %q)", want, timeout, seen)
		}
	}
}

// none checks that no message containing what arrives within d.
func (n *notifySocket) none(t *testing.T, what string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-n.msgs:
			if ok && strings.Contains(m, what) {
				t.Fatalf("unexpected %q", m)
			}
			if !ok {
				return
			}
		case <-deadline:
			return
		}
	}
}

type proc struct {
	cmd    *exec.Cmd
	logs   *daemontest.LogBuffer
	exited chan error
	sock   string
	dir    string
}

func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exited:
		return err
	case <-time.After(timeout):
		t.Fatalf("daemon did not exit within %v\n%s", timeout, p.logs.String())
		return nil
	}
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until the daemon logged want.
func (p *proc) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not log %q:\n%s", want, p.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "engine.json")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// activate runs the daemon (fake engine) under systemd-socket-activate,
// which binds sock, and execs the daemon on the first connection with
// LISTEN_FDS=1 and LISTEN_FDNAMES=engine, like the socket unit.
func activate(t *testing.T, dir, config string, env ...string) *proc {
	t.Helper()
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("SKIP: systemd-socket-activate not installed: socket activation untested")
	}
	p := &proc{sock: filepath.Join(dir, "engine.sock"), dir: dir, logs: &daemontest.LogBuffer{}, exited: make(chan error, 1)}
	args := []string{"-l", p.sock, "--fdname=" + daemon.SocketName,
		"-E", "LLMED_TEST_AS=llm-engined", "-E", "LLMED_TEST_ENGINE=fake",
		"-E", "HOME=" + filepath.Join(dir, "home"),
		"-E", "STATE_DIRECTORY=" + filepath.Join(dir, "state"),
		"-E", "CACHE_DIRECTORY=" + filepath.Join(dir, "cache"),
		"-E", "GORACE=" + gorace()}
	for _, e := range env {
		args = append(args, "-E", e)
	}
	args = append(args, self(t), "--config", config)
	p.cmd = exec.Command(ssa, args...)
	p.cmd.Stderr = p.logs
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.logs.String())
		}
	})
	// systemd-socket-activate binds before it execs anything.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(p.sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s not bound:\n%s", p.sock, p.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p
}

// dial connects, retrying while systemd-socket-activate has bound the
// socket but not yet called listen.
func dial(t *testing.T, sock string) *client.Client {
	t.Helper()
	var c *client.Client
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err = client.Dial(sock); err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSocketActivation: the daemon starts on the first connection, serves
// it, says READY=1 with a STATUS line, pings the watchdog, reloads on
// SIGHUP and stops on SIGTERM with STOPPING=1 and exit status 0.
func TestSocketActivation(t *testing.T) {
	dir := testDir(t)
	n := listenNotify(t, dir)
	cfg := writeConfig(t, dir, `{"log_level":"info"}`)
	// WATCHDOG_PID is left unset: systemd-socket-activate execs the daemon,
	// so systemd's WATCHDOG_PID would be this very pid; go-systemd treats
	// an unset WATCHDOG_PID as "the watchdog is for you".
	p := activate(t, dir, cfg, "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=300000")

	// Nothing runs before the first connection.
	n.none(t, "READY=1", 200*time.Millisecond)
	if strings.Contains(p.logs.String(), "llm-engined started") {
		t.Fatal("the daemon started before any connection")
	}
	c := dial(t, p.sock)
	info, err := c.Info(ctx10(t))
	if err != nil || info.Version != "9.9.9-test" {
		t.Fatalf("info through the activated socket: %+v %v", info, err)
	}
	ready, _ := n.expect(t, "READY=1", 10*time.Second)
	if !strings.Contains(ready, "STATUS=serving; 0 runs; 0 models; ") {
		t.Errorf("READY message: %q", ready)
	}
	p.waitLog(t, "mode=socket-activated")
	n.expect(t, "WATCHDOG=1", 5*time.Second)
	n.expect(t, "WATCHDOG=1", 5*time.Second)
	// STATUS follows the state.
	if _, err := c.LoadModel(ctx10(t), engine.LoadRequest{Path: "/models/a.gguf"}); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "STATUS=serving; 0 runs; 1 model; 1 client", 5*time.Second)

	// SIGHUP: the new log level applies, a restart-only change is logged.
	writeConfig(t, dir, `{"log_level":"debug","threads":2,"limits":{"max_connections":5}}`)
	p.signal(t, syscall.SIGHUP)
	msg, _ := n.expect(t, "RELOADING=1", 5*time.Second)
	if !strings.Contains(msg, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING without MONOTONIC_USEC: %q", msg)
	}
	n.expect(t, "READY=1", 5*time.Second)
	p.waitLog(t, "configuration reloaded")
	p.waitLog(t, `msg="configuration change needs a restart; still using the old value" field=threads running=0 configured=2`)
	if _, err := dial(t, p.sock).Info(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `level=DEBUG msg="client connected"`)

	// A bad file on reload changes nothing.
	writeConfig(t, dir, `{"limits":{"max_connections":-3}}`)
	p.signal(t, syscall.SIGHUP)
	msg, _ = n.expect(t, "READY=1", 5*time.Second)
	if !strings.Contains(msg, "last reload failed") || !strings.Contains(msg, "/limits/max_connections") {
		t.Errorf("READY after a failed reload: %q", msg)
	}
	if _, err := c.Info(ctx10(t)); err != nil {
		t.Fatal(err)
	}

	p.signal(t, syscall.SIGTERM)
	n.expect(t, "STOPPING=1", 5*time.Second)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.logs.String())
	}
	if logs := p.logs.String(); !strings.Contains(logs, "engine stopped") || !strings.Contains(logs, "msg=stopped") {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestIdleExit: with idle_exit_seconds, a socket-activated daemon with no
// client and no run exits 0 (systemd keeps the socket and would start it
// again); it leaves the socket file in place.
func TestIdleExit(t *testing.T) {
	dir := testDir(t)
	n := listenNotify(t, dir)
	cfg := writeConfig(t, dir, `{"idle_exit_seconds":0.5}`)
	p := activate(t, dir, cfg, "NOTIFY_SOCKET="+n.path)
	c := dial(t, p.sock)
	if _, err := c.Info(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	n.expect(t, "READY=1", 10*time.Second)
	// Not while a client is connected.
	time.Sleep(900 * time.Millisecond)
	if _, err := c.Info(ctx10(t)); err != nil {
		t.Fatalf("idle exit with a client connected: %v", err)
	}
	c.Close()
	start := time.Now()
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("exited %v after the last client left", d)
	}
	if !strings.Contains(p.logs.String(), "idle: exiting") {
		t.Fatalf("log:\n%s", p.logs.String())
	}
	if _, err := os.Lstat(p.sock); err != nil {
		t.Fatalf("the activated socket file was removed: %v", err)
	}
}

// TestSIGTERMDuringGeneration: a run in progress at SIGTERM finishes within
// shutdown_timeout_seconds and replies; past it, it is cancelled and still
// replies. Either way the daemon exits 0 and leaves no partial file.
func TestSIGTERMDuringGeneration(t *testing.T) {
	for _, tc := range []struct {
		name, model string
		timeout     string
		finish      string
		tokens      int
		twice       bool // a second SIGTERM cancels at once
	}{
		{"finishes", "slow", "10", "length", 25, false},
		{"cancelled", "block", "0.3", "cancelled", -1, false},
		{"second signal", "block", "60", "cancelled", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDir(t)
			n := listenNotify(t, dir)
			cfg := writeConfig(t, dir, `{"shutdown_timeout_seconds":`+tc.timeout+`}`)
			p := activate(t, dir, cfg, "NOTIFY_SOCKET="+n.path)
			c := dial(t, p.sock)
			first := make(chan struct{}, 1)
			type out struct {
				res *engine.GenerateResult
				err error
			}
			done := make(chan out, 1)
			go func() {
				res, err := c.Generate(context.Background(), engine.GenerateRequest{Model: tc.model, Prompt: "p", MaxTokens: max(tc.tokens, 0)},
					func(engine.TokenEvent) {
						select {
						case first <- struct{}{}:
						default:
						}
					})
				done <- out{res, err}
			}()
			select {
			case <-first:
			case <-time.After(10 * time.Second):
				t.Fatal("no token")
			}
			idle := dial(t, p.sock) // an idle client is disconnected at once
			p.signal(t, syscall.SIGTERM)
			n.expect(t, "STOPPING=1", 5*time.Second)
			if tc.twice {
				p.signal(t, syscall.SIGTERM)
			}
			o := <-done
			if o.err != nil || o.res.FinishReason != tc.finish || (tc.tokens > 0 && len(o.res.Tokens) != tc.tokens) {
				t.Fatalf("run across SIGTERM: %+v %v", o.res, o.err)
			}
			select {
			case <-idle.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("idle client not disconnected")
			}
			if err := p.wait(t, 15*time.Second); err != nil {
				t.Fatalf("exit: %v", err)
			}
			if !strings.Contains(p.logs.String(), "engine stopped") {
				t.Fatalf("engine not shut down:\n%s", p.logs.String())
			}
			// No temporary or partial file in the state and cache dirs.
			for _, d := range []string{"state", "cache"} {
				filepath.WalkDir(filepath.Join(dir, d), func(path string, e fs.DirEntry, err error) error {
					if err == nil && !e.IsDir() && (strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), "tmp")) {
						t.Errorf("partial file left: %s", path)
					}
					return nil
				})
			}
		})
	}
}

// TestBadConfigRefusesToStart: exit status 78, the field named, no READY.
func TestBadConfigRefusesToStart(t *testing.T) {
	dir := testDir(t)
	n := listenNotify(t, dir)
	for _, tc := range []struct {
		name, body string
		args       []string
		want       string
	}{
		{"bad field", `{"limits":{"max_request_bytes":"big"},"idle_exit_seconds":-1}`, nil, "at /idle_exit_seconds: minimum: got -1, want 0; at /limits/max_request_bytes: got string, want integer"},
		{"unknown group", `{"admin_group":"no-such-group-llme"}`, nil, "at /admin_group: no such group"},
		{"missing explicit file", "", []string{"--config", filepath.Join(dir, "missing.json")}, "no such file or directory"},
	} {
		args := tc.args
		if args == nil {
			args = []string{"--config", writeConfig(t, dir, tc.body)}
		}
		cmd := exec.Command(self(t), append(args, "--listen", filepath.Join(dir, "e.sock"))...)
		cmd.Env = childEnv("LLMED_TEST_AS=llm-engined", "LLMED_TEST_ENGINE=fake", "NOTIFY_SOCKET="+n.path, "HOME="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 78 {
			t.Errorf("%s: exit %v, want 78\n%s", tc.name, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: stderr %q, want %q", tc.name, stderr.String(), tc.want)
		}
	}
	n.none(t, "READY", 100*time.Millisecond)
	// --check-config agrees.
	cmd := exec.Command(self(t), "--check-config", "--config", writeConfig(t, dir, `{"threads":"x"}`))
	cmd.Env = childEnv("LLMED_TEST_AS=llm-engined")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 || !strings.Contains(string(out), "at /threads") {
		t.Errorf("--check-config: %v %s", err, out)
	}
}

// TestPeerAuthorization runs enginectl as another user (setpriv): reads are
// allowed, mutations denied with -32030 unless the peer is in the admin
// group (primary or supplementary).
func TestPeerAuthorization(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("SKIP: needs root and setpriv to connect as another uid")
	}
	dir := testDir(t)
	// A copy of this binary that uid 65534 can execute.
	bin := filepath.Join(dir, "enginectl")
	data, err := os.ReadFile(self(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "engine.sock")
	cfg := writeConfig(t, dir, `{"admin_group":"4242"}`)
	p := &proc{logs: &daemontest.LogBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(self(t), "--config", cfg, "--listen", sock)
	p.cmd.Env = childEnv("LLMED_TEST_AS=llm-engined", "LLMED_TEST_ENGINE=fake", "HOME="+dir, "NOTIFY_SOCKET=")
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	defer func() {
		p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.logs.String())
		}
	}()
	p.waitLog(t, "llm-engined started")
	// Let uid 65534 reach the socket (what group llm-engine does in
	// production): the socket's permissions are not under test here.
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(sock, 0o666)
	root := dial(t, sock)
	if _, err := root.LoadModel(ctx10(t), engine.LoadRequest{Path: "/models/a.gguf"}); err != nil {
		t.Fatal(err)
	}

	as := func(ids []string, args ...string) (string, int) {
		cmdArgs := append(append([]string{}, ids...), bin, "--socket", sock)
		cmd := exec.Command(setpriv, append(cmdArgs, args...)...)
		cmd.Env = []string{"LLMED_TEST_AS=enginectl", "PATH=" + os.Getenv("PATH"), "GORACE=" + gorace()}
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("setpriv: %v", err)
		}
		return string(out), code
	}
	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
	if out, code := as(nobody, "--json", "info"); code != 0 || !strings.Contains(out, "9.9.9-test") {
		t.Fatalf("info as nobody: %d %s", code, out)
	}
	if out, code := as(nobody, "models"); code != 0 || !strings.Contains(out, "m1") {
		t.Fatalf("models as nobody: %d %s", code, out)
	}
	if out, code := as(nobody, "generate", "-m", "m1", "-p", "hi", "-n", "2"); code != 0 || !strings.Contains(out, "t0 t1") {
		t.Fatalf("generate with a loaded model as nobody: %d %s", code, out)
	}
	for _, args := range [][]string{
		{"load", "/models/b.gguf"},
		{"unload", "m1"},
		{"generate", "-m", "/models/c.gguf", "-p", "hi"}, // would load it
	} {
		out, code := as(nobody, args...)
		if code != 1 || !strings.Contains(out, "unauthorized") || !strings.Contains(out, fmt.Sprintf("(code %d)", engine.CodeUnauthorized)) || !strings.Contains(out, "group 4242") {
			t.Errorf("%v as nobody: %d %s", args, code, out)
		}
	}
	p.waitLog(t, `msg="call denied"`)
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, `msg="call denied"`) && strings.Contains(line, "method=model.load") &&
			(!strings.Contains(line, "peer_uid=65534") || !strings.Contains(line, "peer_pid=") || !strings.Contains(line, "peer_gid=65534")) {
			t.Errorf("denial logged without the peer's uid, gid and pid: %s", line)
		}
	}
	// Members of the admin group may mutate: supplementary, then primary.
	if out, code := as([]string{"--reuid=65534", "--regid=65534", "--groups=4242"}, "load", "/models/b.gguf"); code != 0 || !strings.Contains(out, "loaded m2") {
		t.Fatalf("load as a supplementary member of the admin group: %d %s", code, out)
	}
	if out, code := as([]string{"--reuid=65534", "--regid=4242", "--clear-groups"}, "unload", "m2"); code != 0 {
		t.Fatalf("unload with the admin group as primary group: %d %s", code, out)
	}
	p.signal(t, syscall.SIGTERM)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestForeground: without socket activation the daemon listens on
// --listen (replacing a stale socket file), mode 0660, creates its default
// directories, and removes the socket on SIGTERM.
func TestForeground(t *testing.T) {
	dir := testDir(t)
	sock := filepath.Join(dir, "run", "engine.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := makeStaleSocket(sock); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	p := &proc{logs: &daemontest.LogBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(self(t), "--listen", sock, "--config", writeConfig(t, dir, `{}`))
	p.cmd.Env = childEnv("LLMED_TEST_AS=llm-engined", "LLMED_TEST_ENGINE=fake", "HOME="+home,
		"XDG_STATE_HOME=", "XDG_CACHE_HOME=", "NOTIFY_SOCKET=", "STATE_DIRECTORY=", "CACHE_DIRECTORY=")
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	defer func() {
		if t.Failed() {
			p.cmd.Process.Kill()
			t.Logf("daemon log:\n%s", p.logs.String())
		}
	}()
	var c *client.Client
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err = client.Dial(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not listening: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.Info(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	for _, d := range []string{".local/state/llm-engine", ".cache/llm-engine"} {
		if fi, err := os.Stat(filepath.Join(home, d)); err != nil || !fi.IsDir() {
			t.Errorf("default dir %s not created: %v", d, err)
		}
	}
	p.signal(t, syscall.SIGTERM)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	p.waitLog(t, "msg=stopped")
}

// makeStaleSocket leaves a socket file nobody listens on.
func makeStaleSocket(path string) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}
