package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/weos/llm-engine/rpc"
)

// A connection is served by one jsonrpc2.Conn with a SYNCHRONOUS handler:
// the read loop runs one call at a time, so requests of one connection are
// answered in order and a client that half-closes after writing its request
// (printf … | socat - UNIX-CONNECT:…) still gets its reply: EOF is only read
// after the reply is written. (jsonrpc2.AsyncHandler would cancel the call
// and drop the reply on that EOF.) Connections do not block each other: each
// has its own read loop.
//
// Because the read loop is busy during a call, a client that hangs up is
// detected by polling the socket for POLLHUP (set only when the peer closed
// both directions, not on a half-close) and by failed writes; either cancels
// the call's context.
type conn struct {
	srv  *Server
	id   uint64
	nc   net.Conn
	raw  syscall.RawConn // nil when nc is not a socket
	peer Peer
	log  *slog.Logger

	st *stream
	jc *jsonrpc2.Conn
}

func newConn(s *Server, nc net.Conn, id uint64, peer Peer, log *slog.Logger) *conn {
	c := &conn{srv: s, id: id, nc: nc, peer: peer, log: log}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
		}
	}
	c.st = newStream(nc, s.config, log)
	return c
}

func (c *conn) start() {
	c.jc = jsonrpc2.NewConn(context.Background(), c.st, c)
}

// Handle implements jsonrpc2.Handler; it runs in the connection's read loop.
func (c *conn) Handle(connCtx context.Context, jc *jsonrpc2.Conn, req *jsonrpc2.Request) {
	start := time.Now()
	cfg := c.srv.config()
	c.srv.calls.Add(1)
	defer c.srv.calls.Add(-1)
	if req.Method == rpc.MethodGenerate {
		c.srv.runs.Add(1)
		defer c.srv.runs.Add(-1)
	}
	ctx, cancel := context.WithCancelCause(c.srv.baseCtx)
	defer cancel(nil)
	ctx = rpc.WithPeer(ctx, c.rpcPeer(cfg)) // peerctx.go: who calls, for the engine's records
	stopAfter := context.AfterFunc(connCtx, func() { cancel(errConnClosed) })
	defer stopAfter()
	stopWatch := c.watchPeer(ctx, cancel)

	n := newNotifier(jc, cancel, cfg.MaxQueuedEvents)
	var params json.RawMessage
	if req.Params != nil {
		params = *req.Params
	}
	var result any
	err := c.srv.authorize(c.peer, req.Method, params, cfg)
	if err != nil {
		if c.peer.Known { // the connection's logger names peer_pid and peer_uid
			c.log.Warn("call denied", "method", req.Method, "peer_gid", c.peer.GID, "peer_groups", c.peer.Groups)
		} else {
			c.log.Warn("call denied", "method", req.Method, "peer", "unknown")
		}
	} else {
		result, err = c.call(ctx, req.Method, params, n)
	}
	stopWatch()
	writeErr := n.close()

	attrs := []any{"method", req.Method, "ms", float64(time.Since(start).Microseconds()) / 1000}
	if !req.Notif {
		attrs = append(attrs, "id", req.ID.String())
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		attrs = append(attrs, "cancelled", cause.Error())
	}

	if writeErr != nil {
		// The stream may hold half a message: hang up without replying.
		c.log.Warn("call aborted: cannot write to client", append(attrs, "err", writeErr)...)
		jc.Close()
		return
	}
	if errors.Is(context.Cause(ctx), errPeerGone) {
		c.log.Info("call cancelled: client hung up", attrs...)
		jc.Close()
		return
	}
	if req.Notif {
		if err != nil {
			c.log.Info("notification failed", append(attrs, "err", err)...)
		} else {
			c.log.Info("notification", attrs...)
		}
		return
	}

	resp := &jsonrpc2.Response{ID: req.ID}
	if err == nil {
		if merr := resp.SetResult(result); merr != nil {
			c.log.Error("cannot encode result", append(attrs, "err", merr)...)
			err = rpc.Errorf(rpc.CodeInternalError, "internal error: cannot encode the result of %s", req.Method)
		}
	}
	if err != nil {
		re := rpc.AsError(err)
		resp.Result = nil
		resp.Error = &jsonrpc2.Error{Code: re.Code, Message: re.Message}
		if len(re.Data) > 0 {
			d := json.RawMessage(re.Data)
			resp.Error.Data = &d
		}
		attrs = append(attrs, "code", re.Code, "err", re.Message)
	}
	if serr := jc.SendResponse(connCtx, resp); serr != nil {
		c.log.Warn("cannot send reply", append(attrs, "err", serr)...)
		jc.Close()
		return
	}
	switch {
	case err == nil:
		c.log.Info("call", attrs...)
	case resp.Error.Code == rpc.CodeInternalError:
		c.log.Error("call failed", attrs...)
	default:
		c.log.Info("call failed", attrs...)
	}
}

var (
	errConnClosed = errors.New("connection closed")
	errPeerGone   = errors.New("client hung up")
	errSlowClient = errors.New("client too slow: notification queue full")
)

// call runs the method and turns a panic into a -32603 error.
func (c *conn) call(ctx context.Context, method string, params json.RawMessage, n rpc.Notifier) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("panic in handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result = nil
			err = rpc.Errorf(rpc.CodeInternalError, "internal error in %s: %v", method, p)
		}
	}()
	return c.srv.svc.Call(ctx, method, params, n)
}

// watchPeer cancels the call when the client hangs up while the call runs.
func (c *conn) watchPeer(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	if c.raw == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(c.srv.config().PeerPollInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if peerHungUp(c.raw) {
					cancel(errPeerGone)
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// notifier queues a call's notifications and writes them from its own
// goroutine, so that the engine never blocks on a slow client. close waits
// until everything queued is written, so notifications precede the reply.
type notifier struct {
	jc       *jsonrpc2.Conn
	cancel   context.CancelCauseFunc
	maxQueue int

	mu      sync.Mutex
	queue   []queued
	started bool
	closed  bool
	failed  bool
	err     error
	wake    chan struct{}
	done    chan struct{}
}

type queued struct {
	method string
	params any
}

func newNotifier(jc *jsonrpc2.Conn, cancel context.CancelCauseFunc, maxQueue int) *notifier {
	return &notifier{jc: jc, cancel: cancel, maxQueue: maxQueue, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Notify implements rpc.Notifier.
func (n *notifier) Notify(method string, params any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.failed {
		return
	}
	if len(n.queue) >= n.maxQueue {
		n.failed = true
		n.err = errSlowClient
		n.cancel(errSlowClient)
		return
	}
	n.queue = append(n.queue, queued{method, params})
	if !n.started {
		n.started = true
		go n.run()
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	defer close(n.done)
	for {
		n.mu.Lock()
		batch := n.queue
		n.queue = nil
		closed := n.closed
		n.mu.Unlock()
		for _, q := range batch {
			if err := n.jc.Notify(context.Background(), q.method, q.params); err != nil {
				n.mu.Lock()
				n.failed = true
				n.err = err
				n.queue = nil
				n.mu.Unlock()
				n.cancel(fmt.Errorf("%w: %v", errConnClosed, err))
				return
			}
		}
		if len(batch) == 0 {
			if closed {
				return
			}
			<-n.wake
		}
	}
}

// close stops accepting notifications, waits for the queued ones to be
// written and returns the first write error (or errSlowClient).
func (n *notifier) close() error {
	n.mu.Lock()
	n.closed = true
	started := n.started
	n.mu.Unlock()
	if started {
		select {
		case n.wake <- struct{}{}:
		default:
		}
		<-n.done
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// stream is the connection's jsonrpc2.ObjectStream: jsonrpc2's plain object
// stream (one JSON value after another, replies end in a newline) wrapped
// to enforce the request size limit and read timeouts, to reply to
// malformed input instead of hanging up silently, and to bound writes with
// a deadline.
//
//   - invalid JSON (including nesting deeper than encoding/json's 10000
//     levels): a -32700 reply (id null), then the connection closes (the
//     stream cannot be resynchronised);
//   - valid JSON that is not a request (not an object, a batch, no method,
//     a wrong "jsonrpc" member, a bad id): a -32600 reply and the connection
//     goes on;
//   - a message over the size limit: a -32600 reply, then close; at most
//     about the limit plus one read buffer is held in memory;
//   - a request not complete within RequestTimeout of its first byte: a
//     -32600 reply, then close; no request within IdleTimeout: close;
//   - responses from the client are ignored (the server sends no requests).
//
// Limits are read from the server's Config at each message, so SetConfig
// applies to open connections too.
type stream struct {
	nc     net.Conn
	lr     *limitReader
	inner  jsonrpc2.ObjectStream
	config func() *Config
	log    *slog.Logger

	// dmu orders read-deadline changes with stopReading: once closing is
	// set no deadline but "now" is installed.
	dmu     sync.Mutex
	closing atomic.Bool

	wmu sync.Mutex
}

var errTooLarge = errors.New("request too large")

// limitReader fails once more than max bytes were read since the last reset
// (the decoder reads ahead at most one buffer beyond the value it decodes).
// When the first bytes of a message arrive it shortens the read deadline to
// the request timeout.
type limitReader struct {
	st *stream
	r  io.Reader
	n  int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n > l.st.config().MaxRequestBytes {
		return 0, errTooLarge
	}
	k, err := l.r.Read(p)
	if l.n == 0 && k > 0 {
		l.st.setReadDeadline(time.Now().Add(l.st.config().RequestTimeout))
	}
	l.n += int64(k)
	return k, err
}

type readWriteCloser struct {
	io.Reader
	io.Writer
	io.Closer
}

func newStream(nc net.Conn, config func() *Config, log *slog.Logger) *stream {
	s := &stream{nc: nc, config: config, log: log}
	s.lr = &limitReader{st: s, r: nc}
	s.inner = jsonrpc2.NewPlainObjectStream(readWriteCloser{s.lr, nc, nc})
	return s
}

// setReadDeadline sets the read deadline unless the stream is closing.
func (s *stream) setReadDeadline(t time.Time) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.closing.Load() {
		return
	}
	s.nc.SetReadDeadline(t)
}

// stopReading makes the read loop end at its next read (now, if it is
// blocked reading): used by Drain and Shutdown. A call in progress still
// replies.
func (s *stream) stopReading() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.closing.Store(true)
	s.nc.SetReadDeadline(time.Now())
}

// WriteObject implements jsonrpc2.ObjectStream.
func (s *stream) WriteObject(obj any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.nc.SetWriteDeadline(time.Now().Add(s.config().WriteTimeout))
	return s.inner.WriteObject(obj)
}

// Close implements jsonrpc2.ObjectStream.
func (s *stream) Close() error { return s.inner.Close() }

// ReadObject implements jsonrpc2.ObjectStream. Errors it returns make
// jsonrpc2 close the connection; it returns io.EOF for all of them (after
// replying and logging as needed) so that jsonrpc2 does not log them again.
func (s *stream) ReadObject(v any) error {
	for {
		s.lr.n = 0
		s.setReadDeadline(time.Now().Add(s.config().IdleTimeout))
		if s.closing.Load() {
			return io.EOF
		}
		var raw json.RawMessage
		err := s.inner.ReadObject(&raw)
		cfg := s.config() // SetConfig may have run while this read waited
		if err != nil {
			return s.readFailed(err, cfg)
		}
		if int64(len(raw)) > cfg.MaxRequestBytes {
			return s.tooLarge(cfg)
		}
		if s.closing.Load() {
			return io.EOF
		}
		if s.admit(raw, v) {
			return nil
		}
	}
}

func (s *stream) tooLarge(cfg *Config) error {
	s.log.Warn("request too large; closing", "max_bytes", cfg.MaxRequestBytes)
	s.replyError(nil, rpc.Errorf(rpc.CodeInvalidRequest, "request too large: over %d bytes", cfg.MaxRequestBytes))
	lingerClose(s.nc)
	return io.EOF
}

// Budget of lingerClose.
const (
	lingerTimeout  = time.Second
	lingerMaxBytes = 16 << 20
)

// lingerClose prepares closing a connection after an error reply while the
// client may still be sending: closing a Unix socket with unread input makes
// the peer's reads fail with ECONNRESET, losing the reply. So shut down our
// write side (the client reads the reply, then EOF) and discard the client's
// input until it stops, within a time and byte budget.
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(nc, lingerMaxBytes))
}

func (s *stream) readFailed(err error, cfg *Config) error {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return io.EOF
	case errors.Is(err, errTooLarge):
		return s.tooLarge(cfg)
	case s.closing.Load():
		return io.EOF
	case errors.Is(err, os.ErrDeadlineExceeded):
		if s.lr.n == 0 {
			s.log.Info("closing idle connection", "idle_timeout", cfg.IdleTimeout)
			return io.EOF
		}
		s.log.Warn("request incomplete in time; closing", "request_timeout", cfg.RequestTimeout, "bytes", s.lr.n)
		s.replyError(nil, rpc.Errorf(rpc.CodeInvalidRequest, "invalid request: incomplete after %s", cfg.RequestTimeout))
		lingerClose(s.nc)
		return io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		s.log.Info("parse error: input ended inside a JSON value; closing")
		s.replyError(nil, rpc.Errorf(rpc.CodeParseError, "parse error: unexpected end of input"))
		lingerClose(s.nc)
		return io.EOF
	case errors.As(err, &se):
		s.log.Info("parse error; closing", "err", err, "offset", se.Offset)
		s.replyError(nil, rpc.Errorf(rpc.CodeParseError, "parse error: %s", strings.TrimPrefix(err.Error(), "json: ")))
		lingerClose(s.nc)
		return io.EOF
	case errors.Is(err, net.ErrClosed):
		return io.EOF
	}
	s.log.Debug("read failed; closing", "err", err)
	return io.EOF
}

// envelope is the part of a message checked before jsonrpc2 decodes it.
type envelope struct {
	JSONRPC *string         `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  json.RawMessage `json:"method"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// admit checks one message and decodes it into v (jsonrpc2's message type).
// It returns false after replying to (or dropping) a message that is not a
// valid request.
func (s *stream) admit(raw json.RawMessage, v any) bool {
	raw = bytes.TrimSpace(raw)
	switch raw[0] {
	case '{':
	case '[':
		s.invalid(nil, "batch requests are not supported")
		return false
	default:
		s.invalid(nil, "a request must be a JSON object")
		return false
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		s.invalid(nil, err.Error())
		return false
	}
	id := validID(env.ID)
	if env.ID != nil && id == nil {
		s.invalid(nil, `"id" must be a string or a non-negative integer`)
		return false
	}
	if env.Method == nil && (env.Result != nil || env.Error != nil) {
		s.log.Debug("ignoring a response from the client")
		return false
	}
	if env.JSONRPC == nil || *env.JSONRPC != "2.0" {
		s.invalid(id, `"jsonrpc" must be "2.0"`)
		return false
	}
	var name string
	if env.Method == nil || json.Unmarshal(env.Method, &name) != nil || name == "" {
		s.invalid(id, `"method" must be a non-empty string`)
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		s.invalid(id, err.Error())
		return false
	}
	return true
}

// validID returns the id as it should be echoed, or nil when it is absent,
// null or not representable by jsonrpc2 (which takes strings and uint64).
func validID(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return raw
	}
	var num uint64
	if json.Unmarshal(raw, &num) == nil {
		return raw
	}
	return nil
}

func (s *stream) invalid(id json.RawMessage, msg string) {
	s.log.Info("invalid request", "err", msg)
	s.replyError(id, rpc.Errorf(rpc.CodeInvalidRequest, "invalid request: %s", msg))
}

func (s *stream) replyError(id json.RawMessage, e *rpc.Error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.nc.SetWriteDeadline(time.Now().Add(s.config().WriteTimeout))
	if err := writeRawError(s.nc, id, e); err != nil {
		s.log.Debug("cannot send error reply", "err", err)
	}
}

// writeRawError writes a JSON-RPC error response with the given raw id
// (null when nil), newline-terminated like jsonrpc2's plain stream.
func writeRawError(w io.Writer, id json.RawMessage, e *rpc.Error) error {
	if id == nil {
		id = json.RawMessage("null")
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *rpc.Error      `json:"error"`
	}{"2.0", id, e})
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
