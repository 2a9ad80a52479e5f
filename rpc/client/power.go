package client

import (
	"context"
	"time"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// PowerStatus calls power.status.
func (c *Client) PowerStatus(ctx context.Context) (*engine.PowerStatus, error) {
	var out engine.PowerStatus
	if err := c.Call(ctx, rpc.MethodPowerStatus, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPowerCap calls power.set_cap (0 watts lifts the cap).
func (c *Client) SetPowerCap(ctx context.Context, maxWatts float64, enforcement string) (*engine.PowerStatus, error) {
	var out engine.PowerStatus
	if err := c.Call(ctx, rpc.MethodPowerSetCap, rpc.SetCapParams{MaxWatts: maxWatts, Enforcement: enforcement}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Counters calls metrics.get.
func (c *Client) Counters(ctx context.Context) (*engine.Counters, error) {
	var out engine.Counters
	if err := c.Call(ctx, rpc.MethodMetricsGet, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CountersWindow calls metrics.get with the aggregates over the last window.
func (c *Client) CountersWindow(ctx context.Context, window time.Duration) (*engine.Counters, error) {
	var out engine.Counters
	if err := c.Call(ctx, rpc.MethodMetricsGet, engine.MetricsRequest{WindowS: window.Seconds()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Prometheus calls metrics.prometheus and returns the text exposition.
func (c *Client) Prometheus(ctx context.Context) (string, error) {
	var out rpc.PrometheusResult
	if err := c.Call(ctx, rpc.MethodMetricsPrometheus, nil, &out); err != nil {
		return "", err
	}
	return out.Text, nil
}
