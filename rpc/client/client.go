// Package client is a Go client of llm-engined's JSON-RPC API, used by
// enginectl and by tests.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// ErrClosed is returned by calls on a closed client, or when the daemon
// hung up before replying.
var ErrClosed = errors.New("connection to llm-engined closed")

// DialError is returned by Dial when the socket cannot be reached.
type DialError struct {
	Path string
	Err  error
}

func (e *DialError) Error() string { return fmt.Sprintf("cannot connect to %s: %v", e.Path, e.Err) }
func (e *DialError) Unwrap() error { return e.Err }

// Client is a connection to llm-engined. Its methods may be called
// concurrently, except that streaming Generate calls are serialised (the
// daemon answers one call per connection at a time anyway).
type Client struct {
	path string
	conn *jsonrpc2.Conn

	genMu   sync.Mutex // one streaming generate at a time
	mu      sync.Mutex
	onToken func(engine.TokenEvent)
	onNote  func(method string, params json.RawMessage) // other notifications (notify.go)
}

// Dial connects to the daemon's Unix socket at path.
func Dial(path string) (*Client, error) { return DialContext(context.Background(), path) }

// DialContext is Dial with a context for the connect.
func DialContext(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			err = oe.Err
		}
		return nil, &DialError{Path: path, Err: err}
	}
	return NewClient(nc, path), nil
}

// NewClient runs the client protocol over an established connection.
func NewClient(rwc io.ReadWriteCloser, name string) *Client {
	c := &Client{path: name}
	c.conn = jsonrpc2.NewConn(context.Background(), quietStream{jsonrpc2.NewPlainObjectStream(rwc)}, handler{c})
	return c
}

// quietStream reports read errors as EOF so that jsonrpc2 does not log them.
type quietStream struct{ jsonrpc2.ObjectStream }

func (q quietStream) ReadObject(v any) error {
	if err := q.ObjectStream.ReadObject(v); err != nil {
		return io.EOF
	}
	return nil
}

// handler receives the daemon's notifications, synchronously and in order
// (so every generate.token arrives before the generate reply).
type handler struct{ c *Client }

func (h handler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if !req.Notif {
		conn.ReplyWithError(ctx, req.ID, &jsonrpc2.Error{Code: rpc.CodeMethodNotFound, Message: "the client serves no methods"})
		return
	}
	if req.Method != rpc.NotificationGenerateToken || req.Params == nil {
		h.c.note(req.Method, req.Params) // notify.go
		return
	}
	h.c.mu.Lock()
	fn := h.c.onToken
	h.c.mu.Unlock()
	if fn == nil {
		return
	}
	var ev engine.TokenEvent
	if err := json.Unmarshal(*req.Params, &ev); err != nil {
		return
	}
	fn(ev)
}

// Close closes the connection. A streaming Generate in progress on the
// daemon is cancelled.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil && !errors.Is(err, jsonrpc2.ErrClosed) {
		return err
	}
	return nil
}

// Done is closed when the connection is closed (by either side).
func (c *Client) Done() <-chan struct{} { return c.conn.DisconnectNotify() }

// Call calls method with params (nil: none) and decodes the result into
// result (a pointer; nil to discard it). An error reply is returned as
// *rpc.Error. When ctx ends first, Call returns ctx's error; the call goes
// on in the daemon (close the client to cancel it).
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	err := c.conn.Call(ctx, method, params, result)
	return c.mapErr(err)
}

func (c *Client) mapErr(err error) error {
	var je *jsonrpc2.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &je):
		re := &rpc.Error{Code: je.Code, Message: je.Message}
		if je.Data != nil {
			re.Data = append(json.RawMessage(nil), (*je.Data)...)
		}
		return re
	case errors.Is(err, jsonrpc2.ErrClosed):
		return ErrClosed
	}
	return err
}

// Info calls engine.info.
func (c *Client) Info(ctx context.Context) (*engine.Info, error) {
	var out engine.Info
	if err := c.Call(ctx, rpc.MethodEngineInfo, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LoadModel calls model.load.
func (c *Client) LoadModel(ctx context.Context, req engine.LoadRequest) (*engine.ModelInfo, error) {
	return c.LoadModelProgress(ctx, req, nil)
}

// LoadModelProgress calls model.load; progress (may be nil) gets each
// model.progress notification.
func (c *Client) LoadModelProgress(ctx context.Context, req engine.LoadRequest, progress func(engine.ModelLoadingEvent)) (*engine.ModelInfo, error) {
	if progress != nil {
		c.OnNotification(func(method string, params json.RawMessage) {
			if method != rpc.NotificationModelProgress {
				return
			}
			var ev engine.ModelLoadingEvent
			if json.Unmarshal(params, &ev) == nil {
				progress(ev)
			}
		})
		defer c.OnNotification(nil)
	}
	var out engine.ModelInfo
	if err := c.Call(ctx, rpc.MethodModelLoad, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListModels calls model.list.
func (c *Client) ListModels(ctx context.Context) ([]engine.ModelInfo, error) {
	var out rpc.ModelListResult
	if err := c.Call(ctx, rpc.MethodModelList, nil, &out); err != nil {
		return nil, err
	}
	return out.Models, nil
}

// UnloadModel calls model.unload.
func (c *Client) UnloadModel(ctx context.Context, id string) error {
	return c.Call(ctx, rpc.MethodModelUnload, rpc.UnloadParams{ModelID: id}, nil)
}

// Discover calls rpc.discover.
func (c *Client) Discover(ctx context.Context) (*rpc.Document, error) {
	var out rpc.Document
	if err := c.Call(ctx, rpc.MethodDiscover, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Generate calls generate. With onToken non-nil the request streams
// (req.Stream is set) and onToken is called for each token, in order, from
// the connection's read loop, before Generate returns; it must not call the
// client. If ctx ends first the connection is closed, which cancels the run
// in the daemon, and ctx's error is returned; the client is then unusable.
func (c *Client) Generate(ctx context.Context, req engine.GenerateRequest, onToken func(engine.TokenEvent)) (*engine.GenerateResult, error) {
	req.Stream = onToken != nil
	if onToken != nil {
		c.genMu.Lock()
		defer c.genMu.Unlock()
		c.mu.Lock()
		c.onToken = onToken
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.onToken = nil
			c.mu.Unlock()
		}()
	}
	var out engine.GenerateResult
	err := c.Call(ctx, rpc.MethodGenerate, req, &out)
	if err != nil {
		if ctx.Err() != nil {
			c.Close()
		}
		return nil, err
	}
	return &out, nil
}
