package client

import (
	"context"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// Tokenize calls tokenize.
func (c *Client) Tokenize(ctx context.Context, req engine.TokenizeRequest) (*engine.TokenizeResult, error) {
	var out engine.TokenizeResult
	if err := c.Call(ctx, rpc.MethodTokenize, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Detokenize calls detokenize.
func (c *Client) Detokenize(ctx context.Context, req engine.DetokenizeRequest) (*engine.DetokenizeResult, error) {
	var out engine.DetokenizeResult
	if err := c.Call(ctx, rpc.MethodDetokenize, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Chat calls chat; onToken, if not nil, streams the reply's tokens (as
// Generate's).
func (c *Client) Chat(ctx context.Context, req engine.ChatRequest, onToken func(engine.TokenEvent)) (*engine.ChatResult, error) {
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
	var out engine.ChatResult
	if err := c.Call(ctx, rpc.MethodChat, req, &out); err != nil {
		if ctx.Err() != nil {
			c.Close()
		}
		return nil, err
	}
	return &out, nil
}
