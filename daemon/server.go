// Package daemon serves the rpc method table over JSON-RPC 2.0 connections
// (plain JSON objects, sourcegraph/jsonrpc2) on Unix sockets: listeners,
// connection limits, per-call contexts, authorisation of mutating calls by
// SO_PEERCRED, panic recovery and logging. Run (run.go) is the whole
// daemon: configuration, socket activation, sd_notify, signals.
package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weos/llm-engine/rpc"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxRequestBytes = 1 << 20
	DefaultMaxConnections  = 64
	DefaultWriteTimeout    = 30 * time.Second
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultRequestTimeout  = 30 * time.Second
	DefaultMaxQueuedEvents = 1 << 16
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("daemon: server closed")

// Config holds the server's limits and authorisation policy. Zero values
// take the defaults. SetConfig changes it while the server runs.
type Config struct {
	// MaxRequestBytes bounds one JSON-RPC message; a bigger one gets a
	// -32600 error reply and the connection is closed. The server never
	// buffers much more than this per connection.
	MaxRequestBytes int64
	// MaxConnections bounds concurrent connections; extra clients get a
	// -32000 "server busy" reply and are closed.
	MaxConnections int
	// WriteTimeout bounds each write to a client; a client that does not
	// read for that long is disconnected and its run cancelled.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection on which no request arrives for that
	// long while no call runs (default 5m).
	IdleTimeout time.Duration
	// RequestTimeout bounds the time from the first byte of a request to
	// its last: half a request cannot hold a connection slot (default 30s).
	// The client gets a -32600 reply and the connection is closed.
	RequestTimeout time.Duration
	// MaxQueuedEvents bounds the notifications queued for a slow client
	// during one call; beyond it the call is cancelled.
	MaxQueuedEvents int
	// PeerPollInterval is how often a running call checks whether its
	// client hung up (default 100ms).
	PeerPollInterval time.Duration
	// AdminGIDs are the groups whose members (primary or supplementary
	// group of the peer process) may call mutating methods, besides uid 0
	// and the daemon's own uid. See Authorize.
	AdminGIDs []uint32
	// AdminGroupName names AdminGIDs in error messages (optional).
	AdminGroupName string
	// Logger receives the server's logs (default: text on stderr). It is
	// fixed at New: SetConfig ignores it.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxQueuedEvents <= 0 {
		c.MaxQueuedEvents = DefaultMaxQueuedEvents
	}
	if c.PeerPollInterval <= 0 {
		c.PeerPollInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	c.AdminGIDs = slices.Clone(c.AdminGIDs)
	return c
}

// Server serves the JSON-RPC API on any number of listeners.
type Server struct {
	cfg atomic.Pointer[Config]
	svc *rpc.Service
	eng rpc.Engine
	log *slog.Logger
	uid uint32 // the daemon's uid: always allowed to mutate

	// baseCtx is the parent of every call's context; Shutdown cancels it.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	idleSince time.Time // when the last connection closed; zero while any is open
	connWG    sync.WaitGroup
	nextID    atomic.Uint64

	calls atomic.Int64 // calls in progress
	runs  atomic.Int64 // generate calls in progress
}

// New returns a server dispatching to eng.
func New(cfg Config, eng rpc.Engine) (*Server, error) {
	if eng == nil {
		return nil, errors.New("daemon: nil engine")
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		svc:        rpc.NewService(eng),
		eng:        eng,
		log:        cfg.Logger,
		uid:        uint32(os.Getuid()),
		baseCtx:    ctx,
		cancelBase: cancel,
		listeners:  map[net.Listener]struct{}{},
		conns:      map[*conn]struct{}{},
		idleSince:  time.Now(),
	}
	s.cfg.Store(&cfg)
	return s, nil
}

// config returns the configuration in force.
func (s *Server) config() *Config { return s.cfg.Load() }

// SetConfig replaces the limits and the authorisation policy while the
// server runs (cfg.Logger is ignored). New connections and new requests on
// existing connections see the new values; calls in progress keep theirs.
func (s *Server) SetConfig(cfg Config) {
	cfg.Logger = s.log
	cfg = cfg.withDefaults()
	s.cfg.Store(&cfg)
}

// Serve accepts connections on l until Shutdown (then it returns
// ErrServerClosed) or until l fails. Serve closes l when it returns. It may
// be called for several listeners concurrently.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()

	s.log.Info("listening", "addr", l.Addr().String())
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.accept(nc)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) accept(nc net.Conn) {
	id := s.nextID.Add(1)
	log := s.log.With("conn", id)
	peer := peerOf(nc)
	if peer.Known {
		log = log.With("peer_pid", peer.PID, "peer_uid", peer.UID)
	}
	cfg := s.config()

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		log.Info("connection refused: shutting down")
		nc.Close()
		return
	}
	if len(s.conns) >= cfg.MaxConnections {
		s.mu.Unlock()
		log.Warn("connection refused: too many connections", "max", cfg.MaxConnections)
		go refuse(nc, cfg.MaxConnections)
		return
	}
	c := newConn(s, nc, id, peer, log)
	s.conns[c] = struct{}{}
	s.idleSince = time.Time{}
	s.connWG.Add(1)
	s.mu.Unlock()

	log.Debug("client connected", "peer_gid", peer.GID, "peer_groups", peer.Groups)
	c.start()
	go func() {
		<-c.jc.DisconnectNotify()
		s.mu.Lock()
		delete(s.conns, c)
		if len(s.conns) == 0 {
			s.idleSince = time.Now()
		}
		s.mu.Unlock()
		log.Debug("client disconnected")
		s.connWG.Done()
	}()
}

// refuse tells a client over the connection limit why, then hangs up.
func refuse(nc net.Conn, maxConns int) {
	defer nc.Close()
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	writeRawError(nc, nil, rpc.Errorf(rpc.CodeServerError, "server busy: too many connections (max %d)", maxConns))
	lingerClose(nc)
}

// stopAccepting marks the server closing and closes its listeners. Caller
// holds s.mu.
func (s *Server) stopAcceptingLocked() {
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
}

// Drain is the graceful half of a shutdown: it closes the listeners, closes
// idle connections, stops reading further requests on the others, and waits
// until the calls in progress have finished and replied (their connections
// then close). It returns nil when every connection closed, or ctx's error
// when calls still run as ctx expires: follow with Shutdown to cancel them.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.stopAcceptingLocked()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.svc.Drain() // end long-lived calls (event subscriptions): they would hold the drain
	for _, c := range conns {
		c.st.stopReading()
	}
	return s.waitConns(ctx)
}

func (s *Server) waitConns(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops the server: it closes the listeners, cancels the context
// of every call in progress (runs end as "cancelled" and their replies are
// still sent), stops reading new requests, and waits for the connections to
// close. When ctx expires first the remaining connections are closed
// forcibly and ctx's error is returned. For a graceful stop call Drain
// first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopAcceptingLocked()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	s.cancelBase()
	for _, c := range conns {
		c.st.stopReading()
	}
	if err := s.waitConns(ctx); err != nil {
		s.mu.Lock()
		for c := range s.conns {
			c.jc.Close()
		}
		s.mu.Unlock()
		s.connWG.Wait()
		return err
	}
	return nil
}

// ShutdownIfIdle stops accepting connections, as the first step of a
// shutdown, if no connection has been open for at least idle. It reports
// whether it did; the caller goes on with Drain/Shutdown. The check and the
// closing of the listeners are atomic with respect to new connections
// (one that the kernel accepted in the same instant is closed unserved).
func (s *Server) ShutdownIfIdle(idle time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || len(s.conns) > 0 || s.idleSince.IsZero() || time.Since(s.idleSince) < idle {
		return false
	}
	s.stopAcceptingLocked()
	return true
}

// Stats are counters for status lines.
type Stats struct {
	Conns int   // open client connections
	Calls int64 // calls in progress
	Runs  int64 // generate calls in progress
	// IdleFor is how long no connection has been open (0 while any is).
	IdleFor time.Duration
}

// Stats returns the server's counters. It takes the server's lock, so it
// also serves as a liveness check (the watchdog pings only if it returns).
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Conns: len(s.conns)}
	if !s.idleSince.IsZero() {
		st.IdleFor = time.Since(s.idleSince)
	}
	s.mu.Unlock()
	st.Calls = s.calls.Load()
	st.Runs = s.runs.Load()
	return st
}

// NumConns returns the number of open client connections.
func (s *Server) NumConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
