package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/daemon/daemontest"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
	"github.com/weos/llm-engine/rpc/client"
)

// 64 concurrent clients each run a series of streaming generations on
// stories260K through the real daemon while other clients disconnect
// mid-stream: every response is complete and equal to the solo run, no token
// notification is lost or reordered, and RSS stays flat.
func TestLoad64ClientsStreaming(t *testing.T) {
	shared := sharedDir(t)
	if testing.Short() {
		t.Skip("SKIP: -short")
	}
	eng, err := engine.New(engine.Options{StateDir: t.TempDir(), CacheDir: t.TempDir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	s := daemontest.Start(t, daemon.Config{MaxConnections: 256}, eng)
	model := filepath.Join(shared, "models", "stories260K.gguf")

	clients, perClient, nTok := 64, 20, 24
	if raceEnabled { // the race detector slows compute ~10×: same shape, fewer rounds
		perClient, nTok = 3, 12
	}
	prompts := []string{"Once upon a time", "The little dog", "Tom and Sue", ""}
	solo := map[string]*engine.GenerateResult{}
	c0 := dialT(t, s.Path)
	for _, p := range prompts {
		r, err := c0.Generate(ctx5(t), engine.GenerateRequest{Model: model, Prompt: p, MaxTokens: nTok}, nil)
		if err != nil {
			t.Fatal(err)
		}
		solo[p] = r
	}
	// Two identical rounds: the first warms up (connection buffers, pools,
	// the Go heap's high-water mark); the second must not grow RSS further.
	var rss []int
	for round := 0; round < 2; round++ {
		runLoadRound(t, s.Path, clients, perClient, nTok, prompts, solo)
		rss = append(rss, rssKB(t))
	}
	if _, err := c0.Info(ctx5(t)); err != nil {
		t.Fatalf("daemon no longer serving: %v", err)
	}
	t.Logf("2 rounds of %d clients × %d streaming generations of %d tokens + 16 killed mid-stream: all complete and identical; RSS after each round %d, %d KiB", clients, perClient, nTok, rss[0], rss[1])
	limit := rss[0] + 32*1024
	if raceEnabled {
		limit = rss[0] * 2 // the race detector's shadow memory grows with every goroutine ever run
	}
	if rss[1] > limit {
		t.Errorf("RSS grew from %d to %d KiB between two identical rounds", rss[0], rss[1])
	}
}

func runLoadRound(t *testing.T, path string, clients, perClient, nTok int, prompts []string, solo map[string]*engine.GenerateResult) {
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient+64)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := dialClient(path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := 0; j < perClient; j++ {
				p := prompts[(i+j)%len(prompts)]
				var evs []engine.TokenEvent
				var r *engine.GenerateResult
				var err error
				// A full queue is an answer, not a failure: the client
				// retries after the hint the error carries.
				for attempt := 0; ; attempt++ {
					evs = evs[:0]
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
					r, err = c.Generate(ctx, engine.GenerateRequest{Model: "stories260K", Prompt: p, MaxTokens: nTok, Stream: true},
						func(ev engine.TokenEvent) { evs = append(evs, ev) })
					cancel()
					var re *rpc.Error
					if attempt < 100 && errors.As(err, &re) && re.Code == engine.CodeBusy {
						time.Sleep(retryAfter(re))
						continue
					}
					break
				}
				if err != nil {
					errs <- fmt.Errorf("client %d gen %d: %v", i, j, err)
					return
				}
				if !slices.Equal(r.Tokens, solo[p].Tokens) {
					errs <- fmt.Errorf("client %d gen %d: tokens %v differ from the solo run %v", i, j, r.Tokens, solo[p].Tokens)
				}
				var sb strings.Builder
				n := 0
				for _, ev := range evs {
					if ev.RunID != r.RunID {
						errs <- fmt.Errorf("client %d: notification of run %s during run %s", i, ev.RunID, r.RunID)
					}
					if ev.Token >= 0 {
						if ev.Index != n || ev.Token != r.Tokens[n] {
							errs <- fmt.Errorf("client %d gen %d: notification %d is index %d token %d", i, j, n, ev.Index, ev.Token)
							return
						}
						n++
					}
					sb.WriteString(ev.Text)
				}
				if n != len(r.Tokens) || sb.String() != r.Text {
					errs <- fmt.Errorf("client %d gen %d: %d notifications for %d tokens, text %q vs %q", i, j, n, len(r.Tokens), sb.String(), r.Text)
				}
			}
		}(i)
	}
	// Clients that vanish mid-stream: raw connections closed after the
	// first notification arrives.
	for k := 0; k < 16; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			nc, err := net.Dial("unix", path)
			if err != nil {
				errs <- err
				return
			}
			req := `{"jsonrpc":"2.0","id":` + strconv.Itoa(k) + `,"method":"generate","params":{"model":"stories260K","prompt":"Once upon a time","max_tokens":200,"stream":true}}`
			nc.Write([]byte(req))
			buf := make([]byte, 64)
			nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
			nc.Read(buf)
			nc.Close()
		}(k)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func rssKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func dialClient(path string) (*client.Client, error) { return client.Dial(path) }

// retryAfter reads the retry hint of a busy error (data.retry_after_ms),
// with a small default when absent.
func retryAfter(re *rpc.Error) time.Duration {
	var d struct {
		RetryAfterMS int `json:"retry_after_ms"`
	}
	if raw, err := json.Marshal(re.Data); err == nil {
		json.Unmarshal(raw, &d)
	}
	if d.RetryAfterMS <= 0 {
		d.RetryAfterMS = 50
	}
	return time.Duration(min(d.RetryAfterMS, 500)) * time.Millisecond
}
