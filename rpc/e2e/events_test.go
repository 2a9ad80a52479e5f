package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc/client"
)

type note struct {
	method string
	params json.RawMessage
}

// subscribe starts a subscriber on its own connection; its notifications
// arrive on the channel; the result (when the subscription ends) on done.
func subscribe(t *testing.T, path string, topics ...string) (<-chan note, <-chan *engine.SubscribeResult, *client.Client) {
	t.Helper()
	c := dial(t, path)
	ch := make(chan note, 1024)
	done := make(chan *engine.SubscribeResult, 1)
	go func() {
		res, _ := c.Subscribe(context.Background(), topics, func(m string, p json.RawMessage) { ch <- note{m, p} })
		done <- res
	}()
	return ch, done, c
}

func waitNote(t *testing.T, ch <-chan note, method string) note {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case n := <-ch:
			if n.method == method {
				return n
			}
		case <-timeout:
			t.Fatalf("no %s", method)
		}
	}
}

// TestEventsSubscribe: a subscriber gets run, plan and model events with
// their details (metrics, diff, actor), only for its topics.
func TestEventsSubscribe(t *testing.T) {
	r := start(t, daemon.Config{}, engine.Options{})
	all, _, _ := subscribe(t, r.srv.Path, "run", "plan", "model")
	planOnly, _, _ := subscribe(t, r.srv.Path, "plan")
	c := dial(t, r.srv.Path)
	ctx := ctxT(t, time.Minute)
	// Both subscriptions are registered once the engine counts them.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if st, _ := c.SchedStats(ctx); st != nil && st.Subscribers == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriptions not registered")
		}
	}
	model := load(t, c, "stories260K.gguf", nil)
	var me engine.ModelEvent
	json.Unmarshal(waitNote(t, all, engine.EventModelLoaded).params, &me)
	if me.ModelID != model || !strings.HasPrefix(me.Plan.Hash, "sha256:") || !me.Actor.Known {
		t.Fatalf("model event %+v", me)
	}
	res, err := c.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "Once upon a time", MaxTokens: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var started, finished engine.RunEvent
	json.Unmarshal(waitNote(t, all, engine.EventRunStarted).params, &started)
	json.Unmarshal(waitNote(t, all, engine.EventRunFinished).params, &finished)
	if started.RunID != res.RunID || finished.RunID != res.RunID || finished.Metrics == nil || finished.Metrics.GeneratedTokens != 5 || finished.FinishReason != "length" || finished.Plan.Hash != res.PlanHash {
		t.Fatalf("run events %+v %+v", started, finished)
	}
	if _, err := c.PutPlan(ctx, "default", raw(map[string]any{"threads": 1}), "fewer threads"); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan note{all, planOnly} {
		var pe engine.AuditEntry
		json.Unmarshal(waitNote(t, ch, engine.EventPlanChanged).params, &pe)
		if pe.Action != engine.AuditPut || pe.Name != "default" || pe.Rationale != "fewer threads" || len(pe.Changes) != 1 || pe.Changes[0].Pointer != "/threads" || !pe.Actor.Known {
			t.Fatalf("plan event %+v", pe)
		}
	}
	c.PutPlan(ctx, "default", raw(map[string]any{"threads": -1}), "")
	var rej engine.AuditEntry
	json.Unmarshal(waitNote(t, planOnly, engine.EventPlanRejected).params, &rej)
	if len(rej.Errors) == 0 || rej.Errors[0].Pointer != "/threads" {
		t.Fatalf("rejection event %+v", rej)
	}
	// The plan-only subscriber saw no run or model events.
	for {
		select {
		case n := <-planOnly:
			if !strings.HasPrefix(n.method, "event.plan.") {
				t.Fatalf("plan subscriber got %s", n.method)
			}
			continue
		default:
		}
		break
	}
	if _, err := c.Subscribe(ctx, []string{"nope"}, nil); rpcErr(err) == nil {
		t.Fatal("unknown topic accepted")
	}
	// Power samples of the energy meter.
	power, _, _ := subscribe(t, r.srv.Path, "power")
	var ps engine.PowerSampleEvent
	json.Unmarshal(waitNote(t, power, engine.EventPowerSample).params, &ps)
	if ps.Source == "" || ps.At.IsZero() {
		t.Fatalf("power sample %+v", ps)
	}
}

// TestSlowSubscriberDropped: a subscriber that does not read is dropped
// with a notice (event.dropped, then the reply) while the engine goes on at
// full speed; a graceful stop ends subscriptions at once.
func TestSlowSubscriberDropped(t *testing.T) {
	r := start(t, daemon.Config{MaxQueuedEvents: 16}, engine.Options{})
	c := dial(t, r.srv.Path)
	ctx := ctxT(t, 2*time.Minute)
	model := load(t, c, "stories260K.gguf", nil)

	nc, err := net.Dial("unix", r.srv.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.UnixConn).SetReadBuffer(4096)
	if _, err := nc.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"events.subscribe","params":{"topics":["run"]}}`)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if st, _ := c.SchedStats(ctx); st != nil && st.Subscribers == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscription not registered")
		}
	}
	// Runs until the subscriber is dropped, from 4 clients.
	t0 := time.Now()
	var runs int64
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		cc := dial(t, r.srv.Path)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := cc.Generate(ctx, engine.GenerateRequest{Model: model, Prompt: "Once", MaxTokens: 1}, nil); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				runs++
				mu.Unlock()
			}
		}()
	}
	for {
		st, err := c.SchedStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Subscribers == 0 {
			break
		}
		if time.Since(t0) > time.Minute {
			t.Fatal("the slow subscriber was never dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(t0)
	t.Logf("dropped after %d runs in %v (%.0f runs/s)", runs, elapsed.Round(time.Millisecond), float64(runs)/elapsed.Seconds())

	// Reading now: the events, the notice, then the reply.
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	sc := bufio.NewScanner(nc)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var events int
	var dropped, reply bool
	for sc.Scan() {
		var msg struct {
			Method string          `json:"method"`
			ID     json.RawMessage `json:"id"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		switch {
		case msg.Method == engine.EventDropped:
			dropped = true
		case strings.HasPrefix(msg.Method, "event.run."):
			events++
		case msg.ID != nil:
			reply = strings.Contains(string(msg.Result), "dropped: too slow")
		}
		if reply {
			break
		}
	}
	if !dropped || !reply || events == 0 {
		t.Fatalf("events %d, notice %v, reply %v", events, dropped, reply)
	}

	// A graceful stop does not wait for subscribers.
	_, done, _ := subscribe(t, r.srv.Path, "run")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if st, _ := c.SchedStats(ctx); st != nil && st.Subscribers == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscription not registered")
		}
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t1 := time.Now()
	go r.srv.Srv.Drain(dctx)
	select {
	case res := <-done:
		if res == nil || res.Reason != "daemon stopping" {
			t.Fatalf("subscription ended with %+v", res)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("drain waited for a subscriber")
	}
	if d := time.Since(t1); d > 2*time.Second {
		t.Fatalf("drain took %v", d)
	}
}
