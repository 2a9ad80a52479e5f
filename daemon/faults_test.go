package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// drainReplies reads replies until the server closes the connection.
func (r *rawConn) drainReplies() []msg {
	r.t.Helper()
	var out []msg
	for {
		m, err := r.tryRead()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			r.t.Fatalf("reading replies: %v (after %d)", err, len(out))
		}
		out = append(out, m)
	}
}

// 1 MiB of random bytes: an error reply, the connection closed, the daemon
// still serving.
func TestRandomMebibyte(t *testing.T) {
	h := start(t, daemon.Config{})
	rng := rand.New(rand.NewPCG(7, 7))
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	r := h.raw()
	go r.c.Write(junk) // fails with EPIPE once the server hangs up
	replies := r.drainReplies()
	if len(replies) == 0 {
		t.Fatal("no error reply")
	}
	for _, m := range replies {
		if m.Error == nil || (m.Error.Code != rpc.CodeParseError && m.Error.Code != rpc.CodeInvalidRequest) {
			t.Fatalf("unexpected reply %+v", m)
		}
	}
	h.mustServe()
}

// A 100 MB JSON value is cut off at the request size limit: the client
// gets a -32600 reply long before it has sent it all, and the server does
// not buffer it.
func TestHugeValueCutOff(t *testing.T) {
	h := start(t, daemon.Config{MaxRequestBytes: 1 << 20})
	const total = 100 << 20
	r := h.raw()
	var sent atomic.Int64
	writeDone := make(chan error, 1)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	go func() {
		head := `{"jsonrpc":"2.0","id":1,"method":"generate","params":{"model":"m","prompt":"`
		n, err := r.c.Write([]byte(head))
		sent.Add(int64(n))
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for err == nil && sent.Load() < total {
			n, err = r.c.Write(chunk)
			sent.Add(int64(n))
		}
		writeDone <- err
	}()
	m := r.read()
	if m.Error == nil || m.Error.Code != rpc.CodeInvalidRequest || !strings.Contains(m.Error.Message, "too large") {
		t.Fatalf("got %+v", m)
	}
	// The server stops reading: the writer fails (EPIPE/ECONNRESET) well
	// before 100 MB.
	select {
	case err := <-writeDone:
		if err == nil {
			t.Fatal("the whole 100 MB was accepted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server keeps reading the oversized request")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if s := sent.Load(); s >= total/2 {
		t.Fatalf("the server read %d bytes of an oversized request", s)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 48<<20 {
		t.Fatalf("allocated %d MiB while refusing the request", grown>>20)
	}
	t.Logf("client managed to send %d MiB before the cut", sent.Load()>>20)
	h.mustServe()
}

// JSON nested 100,000 deep (well under the size limit) is a parse error,
// not a stack overflow.
func TestDeepNesting(t *testing.T) {
	h := start(t, daemon.Config{})
	for _, prefix := range []string{"", `{"jsonrpc":"2.0","id":1,"method":"generate","params":{"model":"m","prompt":"p","plan":`} {
		r := h.raw()
		msg := prefix + strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
		if prefix != "" {
			msg += "}}"
		}
		go r.c.Write([]byte(msg))
		m := r.read()
		if m.Error == nil || m.Error.Code != rpc.CodeParseError || !strings.Contains(m.Error.Message, "max depth") {
			t.Fatalf("got %+v", m)
		}
		r.expectEOF()
	}
	h.mustServe()
}

// Invalid UTF-8 in a prompt is replaced by U+FFFD (as encoding/json does
// for every string): the run goes on with the replaced text. Lone
// surrogate escapes become U+FFFD too.
func TestInvalidUTF8Prompt(t *testing.T) {
	h := start(t, daemon.Config{})
	r := h.raw()
	r.send("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"generate\",\"params\":{\"model\":\"echo\",\"prompt\":\"a\xff\xfeb\\ud800c\"}}")
	m := r.read()
	if m.Error != nil {
		t.Fatalf("error: %+v", m.Error)
	}
	var res engine.GenerateResult
	if err := json.Unmarshal(m.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Text != "a\uFFFD\uFFFDb\uFFFDc" {
		t.Fatalf("prompt reached the engine as %q", res.Text)
	}
	h.mustServe()
}

// Half a request cannot hold a connection slot: after RequestTimeout the
// client is told and disconnected, and the slot is free again.
func TestHalfRequestTimesOut(t *testing.T) {
	h := start(t, daemon.Config{MaxConnections: 1, RequestTimeout: 300 * time.Millisecond})
	r := h.raw()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"eng`)
	start := time.Now()
	m := r.read()
	if m.Error == nil || m.Error.Code != rpc.CodeInvalidRequest || !strings.Contains(m.Error.Message, "incomplete after") {
		t.Fatalf("got %+v", m)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("timed out after %v", d)
	}
	r.expectEOF()
	waitConns(t, h, 0)
	h.mustServe()
}

// A connection with nothing to say is closed after IdleTimeout; one with a
// call in progress is not, however long the call.
func TestIdleTimeout(t *testing.T) {
	h := start(t, daemon.Config{IdleTimeout: 300 * time.Millisecond})
	r := h.raw()
	r.expectEOF()

	c := h.client()
	res, err := c.Generate(ctx5(t), engine.GenerateRequest{Model: "slow", Prompt: "p", MaxTokens: 25}, nil) // 500ms
	if err != nil || res.FinishReason != "length" {
		t.Fatalf("long call on an idle-timeout connection: %+v %v", res, err)
	}
}

func waitConns(t *testing.T, h *harness, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.NumConns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", h.srv.NumConns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Drain lets a run finish and reply, closes idle connections at once and
// refuses new ones.
func TestDrainLetsRunsFinish(t *testing.T) {
	h := start(t, daemon.Config{})
	idle := h.raw()
	c := h.client()
	done := make(chan error, 1)
	var res *engine.GenerateResult
	go func() {
		var err error
		res, err = c.Generate(context.Background(), engine.GenerateRequest{Model: "slow", Prompt: "p", MaxTokens: 15}, func(engine.TokenEvent) {})
		done <- err
	}()
	time.Sleep(60 * time.Millisecond) // the run is under way
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || res.FinishReason != "length" || len(res.Tokens) != 15 {
		t.Fatalf("run during drain: %+v %v", res, err)
	}
	idle.expectEOF()
	if _, err := net.Dial("unix", h.Path); err == nil {
		t.Fatal("still accepting after Drain")
	}
}

// Drain gives up at its deadline; Shutdown then cancels the run, which
// still replies.
func TestDrainDeadlineThenCancel(t *testing.T) {
	h := start(t, daemon.Config{})
	c := h.client()
	done := make(chan *engine.GenerateResult, 1)
	go func() {
		res, _ := c.Generate(context.Background(), engine.GenerateRequest{Model: "block", Prompt: "p"}, nil)
		done <- res
	}()
	<-h.eng.Started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.srv.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("drain: %v", err)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res == nil || res.FinishReason != "cancelled" {
		t.Fatalf("cancelled run: %+v", res)
	}
}

// SetConfig applies to new connections and requests.
func TestSetConfigLive(t *testing.T) {
	h := start(t, daemon.Config{MaxConnections: 1})
	c1 := h.client()
	if _, err := c1.Info(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	r := h.raw()
	if m := r.read(); m.Error == nil || !strings.Contains(m.Error.Message, "too many connections") {
		t.Fatalf("over the limit: %+v", m)
	}
	h.srv.SetConfig(daemon.Config{MaxConnections: 2, MaxRequestBytes: 2048})
	c2 := h.client()
	if _, err := c2.Info(ctx5(t)); err != nil {
		t.Fatalf("after raising the limit: %v", err)
	}
	// The smaller request limit applies to the open connection c1 too.
	_, err := c1.LoadModel(ctx5(t), engine.LoadRequest{Path: strings.Repeat("x", 4096)})
	if err == nil {
		t.Fatal("request over the new size limit accepted")
	}
}

// The daemon serves the peer's credentials: a mutating call from root (the
// test runs as root or as the daemon's own uid) is allowed.
func TestOwnUIDMayMutate(t *testing.T) {
	h := start(t, daemon.Config{AdminGIDs: []uint32{4242}})
	c := h.client()
	if _, err := c.LoadModel(ctx5(t), engine.LoadRequest{Path: "/models/a.gguf"}); err != nil {
		t.Fatal(err)
	}
	// Generate with a loaded id, and with a path (on-demand load): both
	// fine for an admin.
	for _, model := range []string{"m1", "/models/b.gguf"} {
		if _, err := c.Generate(ctx5(t), engine.GenerateRequest{Model: model, Prompt: "p", MaxTokens: 1}, nil); err != nil {
			t.Fatalf("generate %s: %v", model, err)
		}
	}
}
