// Package daemontest starts an in-process llm-engined server on a temporary
// Unix socket, for tests of the daemon, of enginectl and end-to-end tests
// with a real engine. It also provides FakeEngine, a deterministic
// rpc.Engine.
package daemontest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/rpc"
)

// Server is a running in-process server.
type Server struct {
	Path string         // socket path
	Srv  *daemon.Server // the server
	Logs *LogBuffer     // everything it logged (debug level)
	Eng  rpc.Engine     // the engine it serves

	serveErr chan error
	once     sync.Once
	stopErr  error
}

// Start serves eng on a fresh socket in a temporary directory; the server is
// shut down (and its log printed if the test failed) when the test ends.
// cfg.Logger is replaced by one writing to Logs.
func Start(t testing.TB, cfg daemon.Config, eng rpc.Engine) *Server {
	t.Helper()
	// Not t.TempDir(): socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "llme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{Path: filepath.Join(dir, "engine.sock"), Logs: &LogBuffer{}, Eng: eng, serveErr: make(chan error, 1)}
	l, err := daemon.ListenUnix(s.Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(s.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.Srv, err = daemon.New(cfg, eng)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	go func() { s.serveErr <- s.Srv.Serve(l) }()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.Logs.String())
		}
	})
	return s
}

// Stop shuts the server down (5s budget) and waits for Serve to return; it
// returns an error if either misbehaved. Later calls return the same result.
func (s *Server) Stop() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := s.Srv.Shutdown(ctx)
		if serr := <-s.serveErr; !errors.Is(serr, daemon.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		s.stopErr = err
	})
	return s.stopErr
}

// LogBuffer is a goroutine-safe bytes.Buffer.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
