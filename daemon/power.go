package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// PowerConfig is FileConfig's "power" section: the energy meter and the
// power cap of the inference worker threads.
type PowerConfig struct {
	Meter            string  `json:"meter,omitempty" jsonschema:"enum=auto,enum=rapl,enum=estimate" jsonschema_description:"Energy meter: auto (default: RAPL when readable, else the estimate when allow_estimate), rapl, or estimate (a model of CPU time, never reported as a measurement)."`
	AllowEstimate    *bool   `json:"allow_estimate,omitempty" jsonschema_description:"Fall back to the estimate when RAPL is absent or unreadable (default true). false: the daemon refuses to start without RAPL (see power/README.md for the energy_uj permission fix)."`
	WattsPerBusyCore float64 `json:"watts_per_busy_core,omitempty" jsonschema:"exclusiveMinimum=0,maximum=1000" jsonschema_description:"Estimator: watts per core kept 100% busy (default 10). Also maps a cap to a CPU quota (open loop) and scales the closed loop's gains."`
	IdleWatts        float64 `json:"idle_watts,omitempty" jsonschema:"minimum=0,maximum=10000" jsonschema_description:"Estimator: share of the machine's idle/static power charged to the engine (default 0)."`
	MaxWatts         float64 `json:"max_watts,omitempty" jsonschema:"minimum=0,maximum=100000" jsonschema_description:"Operator's power cap on the inference worker threads at start (as power.set_cap); absent or 0: none."`
	Enforcement      string  `json:"enforcement,omitempty" jsonschema:"enum=strict,enum=best_effort" jsonschema_description:"For max_watts: strict (default: the daemon refuses to start if this host cannot enforce it) or best_effort (run uncapped and report it)."`
}

func (p PowerConfig) options() engine.PowerOptions {
	return engine.PowerOptions{
		Meter:              p.Meter,
		NoEstimateFallback: p.AllowEstimate != nil && !*p.AllowEstimate,
		WattsPerBusyCore:   p.WattsPerBusyCore,
		IdleWatts:          p.IdleWatts,
		MaxWatts:           p.MaxWatts,
		Enforcement:        p.Enforcement,
	}
}

// checkMetricsListen accepts "" (off) or host:port with a loopback host
// (127.0.0.0/8, ::1 or localhost): the endpoint has no authentication.
func checkMetricsListen(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port (e.g. 127.0.0.1:9464): %v", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port must be 1-65535", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: only a loopback address (127.0.0.1, ::1, localhost) is allowed: /metrics has no authentication", addr)
	}
	return nil
}

// MetricsHandler serves the engine's counters in the Prometheus text format
// at /metrics (GET and HEAD).
func MetricsHandler(pe rpc.PowerEngine) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var b bytes.Buffer
		if err := rpc.WritePrometheus(&b, pe.Counters()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", rpc.PrometheusContentType)
		w.Write(b.Bytes())
	})
	return mux
}

// startMetrics serves /metrics on addr (a loopback host:port) when set. It
// returns a function that stops the server.
func startMetrics(addr string, eng rpc.Engine, log *slog.Logger) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	if err := checkMetricsListen(addr); err != nil {
		return nil, err
	}
	pe, ok := eng.(rpc.PowerEngine)
	if !ok {
		log.Warn("metrics_listen is set but the engine has no metrics; not serving /metrics", "metrics_listen", addr)
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen %s: %w (under the packaged unit, add a drop-in with PrivateNetwork=no and RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6, or use enginectl metrics --prometheus)", addr, err)
	}
	srv := &http.Server{Handler: MetricsHandler(pe), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("serving Prometheus metrics", "url", "http://"+l.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
