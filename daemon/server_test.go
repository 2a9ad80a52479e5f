package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

type harness struct {
	*daemontest.Server
	t   *testing.T
	eng *daemontest.FakeEngine
	srv *daemon.Server
}

// start runs a server with a fake engine on a fresh socket; it is shut down
// at the end of the test.
func start(t *testing.T, cfg daemon.Config) *harness {
	t.Helper()
	eng := daemontest.NewFakeEngine()
	s := daemontest.Start(t, cfg, eng)
	return &harness{Server: s, t: t, eng: eng, srv: s.Srv}
}

func (h *harness) client() *client.Client {
	h.t.Helper()
	c, err := client.Dial(h.Path)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) raw() *rawConn {
	h.t.Helper()
	nc, err := net.Dial("unix", h.Path)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { nc.Close() })
	return &rawConn{t: h.t, c: nc.(*net.UnixConn), dec: json.NewDecoder(nc)}
}

// mustServe checks that the server still answers a new client.
func (h *harness) mustServe() {
	h.t.Helper()
	c := h.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil || info.Version != "9.9.9-test" {
		h.t.Fatalf("server no longer serving: %v %+v", err, info)
	}
}

type rawConn struct {
	t   *testing.T
	c   *net.UnixConn
	dec *json.Decoder
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

type msg struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *rpc.Error      `json:"error"`
}

// read returns the next message, or fails the test after 5s.
func (r *rawConn) read() msg {
	r.t.Helper()
	m, err := r.tryRead()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return m
}

func (r *rawConn) tryRead() (msg, error) {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m msg
	err := r.dec.Decode(&m)
	return m, err
}

// expectEOF checks that the server closes the connection.
func (r *rawConn) expectEOF() {
	r.t.Helper()
	m, err := r.tryRead()
	if !errors.Is(err, io.EOF) {
		r.t.Fatalf("expected the server to close the connection, got %+v %v", m, err)
	}
}

func rpcCode(t *testing.T, err error) int64 {
	t.Helper()
	var re *rpc.Error
	if !errors.As(err, &re) {
		t.Fatalf("expected an *rpc.Error, got %T %v", err, err)
	}
	return re.Code
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestInfoRoundTrip(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	info, err := c.Info(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != "9.9.9-test" || info.NumCPU != 2 || !slices.Equal(info.Backends, []string{"cpu-generic"}) {
		t.Fatalf("info = %+v", info)
	}
	// The log names the peer (SO_PEERCRED) and the call.
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(h.Logs.String(), "method=engine.info") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	logs := h.Logs.String()
	if !strings.Contains(logs, "peer_pid=") || !strings.Contains(logs, "method=engine.info") {
		t.Fatalf("log lacks peer credentials or method:\n%s", logs)
	}
}

func TestModelMethods(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	ctx := ctx5(t)
	mi, err := c.LoadModel(ctx, engine.LoadRequest{Path: "/models/a.gguf"})
	if err != nil || mi.ModelID != "m1" {
		t.Fatalf("load: %+v %v", mi, err)
	}
	models, err := c.ListModels(ctx)
	if err != nil || len(models) != 1 || models[0].ModelID != "m1" {
		t.Fatalf("list: %+v %v", models, err)
	}
	if err := c.UnloadModel(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	models, err = c.ListModels(ctx)
	if err != nil || models == nil || len(models) != 0 {
		t.Fatalf("list after unload: %#v %v", models, err)
	}
	// An engine error keeps its code, message and data.
	_, err = c.LoadModel(ctx, engine.LoadRequest{Path: "/missing.gguf"})
	var re *rpc.Error
	if !errors.As(err, &re) || re.Code != -32010 || re.Message != "model not found: /missing.gguf" || string(re.Data) != `{"hint":"test"}` {
		t.Fatalf("load missing: %#v", err)
	}
	if err := c.UnloadModel(ctx, "nope"); rpcCode(t, err) != -32010 {
		t.Fatalf("unload unknown: %v", err)
	}
}

func TestUnknownMethod(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	err := c.Call(ctx5(t), "engine.nope", nil, nil)
	if rpcCode(t, err) != rpc.CodeMethodNotFound || !strings.Contains(err.Error(), `"engine.nope"`) {
		t.Fatalf("got %v", err)
	}
	// The connection goes on.
	if _, err := c.Info(ctx5(t)); err != nil {
		t.Fatal(err)
	}
}

func TestParseError(t *testing.T) {
	h := start(t, daemon.Config{})
	r := h.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"engine.info"}` + "\n" + `{"jsonrpc":"2.0","id":2,"method":}` + "\n")
	if m := r.read(); string(m.ID) != "1" || m.Error != nil {
		t.Fatalf("first reply: %+v", m)
	}
	m := r.read()
	if m.Error == nil || m.Error.Code != rpc.CodeParseError || string(m.ID) != "null" || m.JSONRPC != "2.0" {
		t.Fatalf("parse error reply: %+v", m)
	}
	r.expectEOF()
	h.mustServe()
}

func TestInvalidRequests(t *testing.T) {
	h := start(t, daemon.Config{})
	r := h.raw()
	cases := []struct {
		in, id, msg string
	}{
		{`[{"jsonrpc":"2.0","id":1,"method":"engine.info"}]`, "null", "batch"},
		{`[]`, "null", "batch"},
		{`42`, "null", "JSON object"},
		{`"hello"`, "null", "JSON object"},
		{`{"id":7,"method":"engine.info"}`, "7", `"jsonrpc" must be "2.0"`},
		{`{"jsonrpc":"1.0","id":"a","method":"engine.info"}`, `"a"`, `"jsonrpc" must be "2.0"`},
		{`{"jsonrpc":"2.0","id":8}`, "8", `"method"`},
		{`{"jsonrpc":"2.0","id":9,"method":5}`, "9", `"method"`},
		{`{"jsonrpc":"2.0","id":-3,"method":"engine.info"}`, "null", `"id"`},
		{`{"jsonrpc":"2.0","id":1.5,"method":"engine.info"}`, "null", `"id"`},
		{`{"jsonrpc":"2.0","id":{},"method":"engine.info"}`, "null", `"id"`},
	}
	for _, tc := range cases {
		r.send(tc.in + "\n")
		m := r.read()
		if m.Error == nil || m.Error.Code != rpc.CodeInvalidRequest || string(m.ID) != tc.id || !strings.Contains(m.Error.Message, tc.msg) {
			t.Errorf("%s: got id=%s %+v", tc.in, m.ID, m.Error)
		}
	}
	// A response from the client and a notification get no reply; the
	// connection goes on.
	r.send(`{"jsonrpc":"2.0","id":3,"result":{}}` + `{"jsonrpc":"2.0","method":"model.list"}` + `{"jsonrpc":"2.0","id":"last","method":"engine.info"}`)
	if m := r.read(); string(m.ID) != `"last"` || m.Error != nil || !strings.Contains(string(m.Result), "9.9.9-test") {
		t.Fatalf("after invalid requests: %+v", m)
	}
}

func TestInvalidParams(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	ctx := ctx5(t)
	cases := []struct {
		method string
		params any
		want   string
	}{
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","max_tokens":"ten"}`), `invalid params: field "max_tokens": expected integer, got string`},
		{"generate", json.RawMessage(`{"prompt":"p"}`), `invalid params: missing required field "model"`},
		{"generate", json.RawMessage(`{"model":"m","max_tokens":"x"}`), `invalid params: field "max_tokens": expected integer, got string`},
		{"generate", json.RawMessage(`{"model":"m"}`), `invalid params: missing required field "prompt"`},
		{"generate", json.RawMessage(`{"model":null,"prompt":"p"}`), `missing required field "model"`},
		{"generate", json.RawMessage(`{"model":"","prompt":"p"}`), `field "model": must not be empty`},
		{"generate", json.RawMessage(`{"model":5,"prompt":"p"}`), `field "model": expected string, got number`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","sampling":{"temperature":0.5,"top_k":1.5}}`), `field "sampling.top_k": expected integer, got number`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","sampling":{"temperature":0.5,"topk":1}}`), `unknown field "sampling.topk"`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","sampling":{"top_k":1}}`), `missing required field "sampling.temperature"`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","sampling":{"temperature":1,"seed":-1}}`), `field "sampling.seed": expected non-negative integer`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","sampling":{"temperature":1,"top_p":2}}`), `field "sampling.top_p": must be between 0 and 1`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","max_tokens":-1}`), `field "max_tokens": must be >= 0`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","stream":"yes"}`), `field "stream": expected boolean, got string`},
		{"generate", json.RawMessage(`{"model":"m","prompt":"p","extra":1}`), `unknown field "extra"`},
		{"generate", json.RawMessage(`["m","p"]`), `params must be an object`},
		{"generate", nil, `missing required field "model"`},
		{"model.load", json.RawMessage(`{}`), `missing required field "path"`},
		{"model.load", json.RawMessage(`{"path":["a"]}`), `field "path": expected string, got array`},
		{"model.unload", json.RawMessage(`{"id":"m1"}`), `unknown field "id"`},
		{"model.unload", json.RawMessage(`{}`), `missing required field "model_id"`},
		{"model.unload", json.RawMessage(`"m1"`), `params must be an object, got string`},
		{"engine.info", json.RawMessage(`{"verbose":true}`), `unknown field "verbose"`},
		{"engine.info", json.RawMessage(`[1]`), `params must be an object`},
	}
	for _, tc := range cases {
		err := c.Call(ctx, tc.method, tc.params, nil)
		var re *rpc.Error
		if !errors.As(err, &re) || re.Code != rpc.CodeInvalidParams || !strings.Contains(re.Message, tc.want) {
			t.Errorf("%s %s: got %v, want -32602 %q", tc.method, tc.params, err, tc.want)
		}
	}
	// Params that may be omitted in every accepted form.
	for _, p := range []any{nil, json.RawMessage(`null`), json.RawMessage(`{}`), json.RawMessage(`[]`)} {
		if err := c.Call(ctx, "model.list", p, nil); err != nil {
			t.Errorf("model.list %s: %v", p, err)
		}
	}
}

func TestHalfRequestThenClose(t *testing.T) {
	h := start(t, daemon.Config{})
	// Half a request, then a half-close: the client is told why.
	r := h.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"meth`)
	r.c.CloseWrite()
	m := r.read()
	if m.Error == nil || m.Error.Code != rpc.CodeParseError || !strings.Contains(m.Error.Message, "unexpected end") {
		t.Fatalf("got %+v", m)
	}
	r.expectEOF()
	// Half a request, then a full close.
	r2 := h.raw()
	r2.send(`{"jsonrpc":"2.0","id":1,"method":"generate","params":{"mod`)
	r2.c.Close()
	h.mustServe()
}

func TestRandomBytes(t *testing.T) {
	h := start(t, daemon.Config{})
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 99))
		junk := make([]byte, 64<<10)
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if seed == 3 {
			junk[0] = '{' // start like an object
		}
		r := h.raw()
		go r.c.Write(junk) // may fail with EPIPE once the server hangs up
		var replies []msg
		for {
			m, err := r.tryRead()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			replies = append(replies, m)
		}
		if len(replies) == 0 {
			t.Fatalf("seed %d: no error reply", seed)
		}
		for _, m := range replies {
			if m.Error == nil || (m.Error.Code != rpc.CodeParseError && m.Error.Code != rpc.CodeInvalidRequest) {
				t.Fatalf("seed %d: unexpected reply %+v", seed, m)
			}
		}
	}
	h.mustServe()
}

func TestHalfCloseGetsReply(t *testing.T) {
	h := start(t, daemon.Config{})
	r := h.raw()
	// Like printf '…' | socat - UNIX-CONNECT:…: requests, then EOF.
	r.send(`{"jsonrpc":"2.0","id":1,"method":"engine.info"}` +
		`{"jsonrpc":"2.0","id":2,"method":"generate","params":{"model":"m","prompt":"hi","max_tokens":3,"stream":true}}` +
		`{"jsonrpc":"2.0","id":3,"method":"model.list"}`)
	if err := r.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := r.tryRead()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Error != nil {
			t.Fatalf("error reply: %+v", m.Error)
		}
		if m.Method != "" {
			got = append(got, m.Method)
		} else {
			got = append(got, "reply "+string(m.ID))
		}
	}
	want := []string{"reply 1", "generate.token", "generate.token", "generate.token", "reply 2", "reply 3"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A half-closed client is not mistaken for one that hung up, however long
// the call runs.
func TestHalfCloseLongCall(t *testing.T) {
	h := start(t, daemon.Config{PeerPollInterval: 10 * time.Millisecond})
	for _, stream := range []bool{false, true} {
		r := h.raw()
		req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "generate",
			"params": engine.GenerateRequest{Model: "slow", Prompt: "p", MaxTokens: 10, Stream: stream}})
		r.send(string(req))
		r.c.CloseWrite()
		var m msg
		for {
			m = r.read()
			if m.Method == "" {
				break
			}
		}
		var res engine.GenerateResult
		if m.Error != nil || json.Unmarshal(m.Result, &res) != nil || res.FinishReason != "length" || len(res.Tokens) != 10 {
			t.Fatalf("stream=%v: reply %+v", stream, m)
		}
		r.expectEOF()
	}
}

func TestStreamingOrder(t *testing.T) {
	h := start(t, daemon.Config{})
	// On the wire: the notifications, in order, then the reply.
	r := h.raw()
	r.send(`{"jsonrpc":"2.0","id":"g","method":"generate","params":{"model":"m","prompt":"hi","max_tokens":50,"stream":true}}`)
	for i := range 50 {
		m := r.read()
		var ev engine.TokenEvent
		if m.Method != rpc.NotificationGenerateToken || m.ID != nil || json.Unmarshal(m.Params, &ev) != nil || ev.Index != i {
			t.Fatalf("notification %d: %+v", i, m)
		}
	}
	if m := r.read(); string(m.ID) != `"g"` || m.Error != nil {
		t.Fatalf("reply: %+v", m)
	}

	// Through the client.
	c := h.client()
	var events []engine.TokenEvent
	res, err := c.Generate(ctx5(t), engine.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 20}, func(ev engine.TokenEvent) {
		events = append(events, ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for i, ev := range events {
		if ev.Index != i || ev.RunID != res.RunID {
			t.Fatalf("event %d: %+v", i, ev)
		}
		text.WriteString(ev.Text)
	}
	if len(events) != 20 || text.String() != res.Text || res.FinishReason != "length" {
		t.Fatalf("%d events, text %q, result %+v", len(events), text.String(), res)
	}
	// Without a callback nothing is streamed.
	res, err = c.Generate(ctx5(t), engine.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 2}, nil)
	if err != nil || res.Text != "t0 t1 " {
		t.Fatalf("non-streaming: %+v %v", res, err)
	}
}

func TestDisconnectCancelsRun(t *testing.T) {
	h := start(t, daemon.Config{})
	for _, stream := range []bool{true, false} {
		r := h.raw()
		req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "generate",
			"params": engine.GenerateRequest{Model: "block", Prompt: "p", Stream: stream}})
		r.send(string(req))
		var runID string
		select {
		case runID = <-h.eng.Started:
		case <-time.After(5 * time.Second):
			t.Fatal("run did not start")
		}
		if stream {
			if m := r.read(); m.Method != rpc.NotificationGenerateToken {
				t.Fatalf("got %+v", m)
			}
		}
		r.c.Close()
		select {
		case got := <-h.eng.Cancelled:
			if got != runID {
				t.Fatalf("cancelled %s, want %s", got, runID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream=%v: run not cancelled after the client hung up", stream)
		}
	}
	h.mustServe()
}

func TestClientContextCancelsRun(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-h.eng.Started
		cancel()
	}()
	_, err := c.Generate(ctx, engine.GenerateRequest{Model: "block", Prompt: "p"}, func(engine.TokenEvent) {})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	select {
	case <-h.eng.Cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("run not cancelled")
	}
}

func TestDiscover(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	doc, err := c.Discover(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenRPC, "1.") || doc.Info.Version != "9.9.9-test" {
		t.Fatalf("doc header: %+v %+v", doc.OpenRPC, doc.Info)
	}
	var names []string
	for _, m := range doc.Methods {
		names = append(names, m.Name)
		if m.Summary == "" || m.Result == nil || m.Result.Schema == nil || m.Params == nil {
			t.Errorf("method %s incomplete: %+v", m.Name, m)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, rpc.MethodNames()) {
		t.Fatalf("document lists %v, table has %v", names, rpc.MethodNames())
	}
	for _, want := range []string{"engine.info", "model.load", "model.list", "model.unload", "generate", "rpc.discover"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing", want)
		}
	}
}

func TestPanicBecomesInternalError(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	ctx := ctx5(t)
	_, err := c.LoadModel(ctx, engine.LoadRequest{Path: "panic"})
	if rpcCode(t, err) != rpc.CodeInternalError || !strings.Contains(err.Error(), "boom in LoadModel") {
		t.Fatalf("got %v", err)
	}
	_, err = c.Generate(ctx, engine.GenerateRequest{Model: "panic", Prompt: "p"}, func(engine.TokenEvent) {})
	if rpcCode(t, err) != rpc.CodeInternalError {
		t.Fatalf("got %v", err)
	}
	// Same connection, and the server, still serve.
	if _, err := c.Info(ctx); err != nil {
		t.Fatal(err)
	}
	h.mustServe()
	if !strings.Contains(h.Logs.String(), "panic in handler") {
		t.Fatal("panic not logged")
	}
}

func TestRequestTooLarge(t *testing.T) {
	h := start(t, daemon.Config{MaxRequestBytes: 4096})
	r := h.raw()
	// A request just under the limit is fine.
	small := `{"jsonrpc":"2.0","id":1,"method":"model.load","params":{"path":"` + strings.Repeat("a", 3900) + `"}}`
	r.send(small)
	if m := r.read(); m.Error != nil {
		t.Fatalf("small request: %+v", m.Error)
	}
	big := `{"jsonrpc":"2.0","id":2,"method":"model.load","params":{"path":"` + strings.Repeat("a", 1<<20) + `"}}`
	go r.c.Write([]byte(big))
	m := r.read()
	if m.Error == nil || m.Error.Code != rpc.CodeInvalidRequest || !strings.Contains(m.Error.Message, "too large") {
		t.Fatalf("got %+v", m)
	}
	r.expectEOF()
	h.mustServe()
}

func TestMaxConnections(t *testing.T) {
	h := start(t, daemon.Config{MaxConnections: 2})
	c1, c2 := h.client(), h.client()
	for _, c := range []*client.Client{c1, c2} {
		if _, err := c.Info(ctx5(t)); err != nil {
			t.Fatal(err)
		}
	}
	r := h.raw()
	m := r.read()
	if m.Error == nil || m.Error.Code != rpc.CodeServerError || !strings.Contains(m.Error.Message, "too many connections") {
		t.Fatalf("got %+v", m)
	}
	r.expectEOF()
	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.NumConns() > 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	h.mustServe()
}

func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	h := start(t, daemon.Config{WriteTimeout: 300 * time.Millisecond})
	// A client that streams lots of text and never reads.
	r := h.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"generate","params":{"model":"big","prompt":"p","stream":true}}`)
	<-h.eng.Started
	// Others are served meanwhile.
	for range 3 {
		h.mustServe()
	}
	// The stuck client's writes time out: it is dropped and its run cancelled.
	select {
	case <-h.eng.Cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("run of a client that does not read was not cancelled")
	}
	h.mustServe()
}

func TestShutdownCancelsRuns(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	type out struct {
		res *engine.GenerateResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := c.Generate(context.Background(), engine.GenerateRequest{Model: "block", Prompt: "p"}, nil)
		done <- out{res, err}
	}()
	<-h.eng.Started
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil || o.res.FinishReason != "cancelled" {
		t.Fatalf("in-flight run: %+v %v", o.res, o.err)
	}
	if _, err := os.Lstat(h.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
	if _, err := net.Dial("unix", h.Path); err == nil {
		t.Fatal("still accepting")
	}
}

func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "llme-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "sub", "e.sock")
	l, err := daemon.ListenUnix(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}
	// A live socket is not taken over.
	if _, err := daemon.ListenUnix(path, 0); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen: %v", err)
	}
	// A stale socket (nobody listening) is replaced.
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal("test setup: socket file should remain")
	}
	l2, err := daemon.ListenUnix(path, 0)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket not removed on close: %v", err)
	}
	// A regular file is never removed.
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := daemon.ListenUnix(path, 0); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen over a file: %v", err)
	}
}
