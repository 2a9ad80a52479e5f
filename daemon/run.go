package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// SocketName is the FileDescriptorName= of the socket unit's listener.
const SocketName = "engine"

// CancelGrace bounds how long Run waits, after cancelling the runs still in
// progress at the end of the shutdown timeout, for their replies to be
// written before closing connections by force.
const CancelGrace = 3 * time.Second

// EngineOptions are what Run passes to Options.NewEngine.
type EngineOptions struct {
	StateDir string
	CacheDir string
	// CacheMaxBytes bounds the quantization cache (engine.Options).
	CacheMaxBytes int64
	Threads       int
	Backend       string
	Power         engine.PowerOptions // the config's "power" section
}

// Options configure Run. Overrides (non-empty) take precedence over the
// configuration file, on start and on reload.
type Options struct {
	ConfigPath     string // DefaultConfigPath when empty
	ConfigExplicit bool   // the path was given on the command line: it must exist

	Listen   string
	StateDir string
	CacheDir string
	LogLevel string

	// NewEngine starts the engine. If the engine has a
	// Shutdown(context.Context) error method Run calls it on the way out
	// (with what is left of the shutdown budget), else Close() error if it
	// has one.
	NewEngine func(EngineOptions) (rpc.Engine, error)
	// Stderr receives the logs (os.Stderr when nil).
	Stderr io.Writer
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
}

// Run is llm-engined: it loads the configuration, takes the listening
// sockets from systemd (socket activation, the socket named "engine") or
// listens on the configured path, starts the engine and serves until
// SIGTERM or SIGINT (graceful: runs in progress may finish within the
// shutdown timeout, then are cancelled; it returns nil), or until idle exit.
// SIGHUP re-reads the configuration. It speaks sd_notify: READY=1 once
// serving, STATUS= lines, RELOADING=1, STOPPING=1, and WATCHDOG=1 every
// half WatchdogSec. A configuration error is a *ConfigError, returned
// before READY=1.
func Run(opts Options) error {
	// Signals first: the default action of SIGHUP is to exit.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if opts.ConfigPath == "" {
		opts.ConfigPath = DefaultConfigPath
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.NewEngine == nil {
		return errors.New("daemon: Options.NewEngine is nil")
	}
	set, err := opts.load()
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(parseLevel(set.LogLevel))
	log := slog.New(slog.NewTextHandler(opts.Stderr, &slog.HandlerOptions{Level: level}))

	// Socket activation (this unsets LISTEN_*), else the configured path.
	listeners, activated, err := listenersFor(set.Listen, log)
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for _, d := range []string{set.StateDir, set.CacheDir} {
		if err := EnsureDir(d); err != nil {
			closeAll()
			return err
		}
	}
	eng, err := opts.NewEngine(EngineOptions{StateDir: set.StateDir, CacheDir: set.CacheDir, CacheMaxBytes: set.CacheMaxBytes, Threads: set.Threads, Backend: set.Backend, Power: set.Power})
	if err != nil {
		closeAll()
		return fmt.Errorf("starting the engine (threads %d, backend %q): %w", set.Threads, set.Backend, err)
	}
	scfg := set.Server
	scfg.Logger = log
	srv, err := New(scfg, eng)
	if err != nil {
		closeAll()
		return err
	}

	stopMetrics, err := startMetrics(set.MetricsListen, eng, log) // power.go
	if err != nil {
		closeAll()
		if c, ok := eng.(interface{ Close() error }); ok {
			c.Close()
		}
		return err
	}
	defer stopMetrics()

	d := &runner{opts: opts, log: log, level: level, srv: srv, eng: eng, activated: activated}
	d.set.Store(set)
	return d.run(listeners, sigs)
}

type runner struct {
	opts      Options
	log       *slog.Logger
	level     *slog.LevelVar
	srv       *Server
	eng       rpc.Engine
	activated bool
	set       atomic.Pointer[Settings]

	loading    atomic.Int32 // default-model loads in progress (they keep idle exit away)
	statusMu   sync.Mutex
	lastStatus string
}

func (d *runner) run(listeners []net.Listener, sigs <-chan os.Signal) error {
	set := d.set.Load()
	serveErr := make(chan error, len(listeners))
	var serving sync.WaitGroup
	for _, l := range listeners {
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := d.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
				serveErr <- fmt.Errorf("serving %s: %w", l.Addr(), err)
			}
		}()
	}
	mode := "foreground"
	if d.activated {
		mode = "socket-activated"
	}
	d.log.Info("llm-engined started", "version", d.eng.Info().Version, "mode", mode, "pid", os.Getpid(),
		"state_dir", set.StateDir, "cache_dir", set.CacheDir, "cache_max_bytes", set.CacheMaxBytes, "admin_group", set.AdminGroup, "idle_exit", set.IdleExit)
	if set.IdleExit > 0 && !d.activated {
		d.log.Info("idle_exit_seconds ignored: not socket-activated (nobody would start the daemon again)")
	}
	d.notify(sddaemon.SdNotifyReady + "\n" + "STATUS=" + d.status())

	stopBg := make(chan struct{})
	var bg sync.WaitGroup
	if wd, err := sddaemon.SdWatchdogEnabled(false); err != nil {
		d.log.Warn("watchdog: bad environment", "err", err)
	} else if wd > 0 {
		d.log.Info("watchdog enabled", "interval", wd)
		bg.Add(1)
		go func() { defer bg.Done(); d.watchdog(wd/2, stopBg) }()
	}
	bg.Add(1)
	go func() { defer bg.Done(); d.statusLoop(stopBg) }()
	if set.DefaultModel != "" {
		d.loadDefaultModel(set.DefaultModel)
	}

	var runErr error
	idleTick := time.NewTicker(250 * time.Millisecond)
	defer idleTick.Stop()
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.log.Info("stopping", "signal", sig.String())
			break loop
		case err := <-serveErr:
			d.log.Error("listener failed; stopping", "err", err)
			runErr = err
			break loop
		case <-idleTick.C:
			set := d.set.Load()
			if d.activated && set.IdleExit > 0 && d.loading.Load() == 0 && d.srv.ShutdownIfIdle(set.IdleExit) {
				d.log.Info("idle: exiting; systemd starts the daemon again on the next connection", "idle_exit", set.IdleExit)
				break loop
			}
		}
	}

	set = d.set.Load()
	d.notify(sddaemon.SdNotifyStopping + "\nSTATUS=stopping: waiting for runs to finish")
	start := time.Now()
	dctx, cancel := context.WithTimeout(context.Background(), set.ShutdownTimeout)
	go func() { // a second SIGTERM/SIGINT cancels the runs at once
		for {
			select {
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					d.log.Info("second signal: cancelling the runs now", "signal", sig.String())
					cancel()
					return
				}
			case <-dctx.Done():
				return
			}
		}
	}()
	if err := d.srv.Drain(dctx); err != nil {
		st := d.srv.Stats()
		d.log.Warn("cancelling the calls still in progress", "shutdown_timeout", set.ShutdownTimeout, "waited", time.Since(start).Round(time.Millisecond), "calls", st.Calls, "runs", st.Runs)
		d.notify(fmt.Sprintf("STATUS=stopping: cancelling %d runs", st.Runs))
		gctx, gcancel := context.WithTimeout(context.Background(), CancelGrace)
		if err := d.srv.Shutdown(gctx); err != nil {
			d.log.Warn("connections closed forcibly", "err", err)
		}
		gcancel()
	} else {
		d.srv.Shutdown(dctx) // releases the base context; nothing is left to cancel
	}
	cancel()
	serving.Wait()
	close(stopBg)
	bg.Wait()
	d.stopEngine()
	d.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return runErr
}

// stopEngine lets the engine drain and release its resources.
func (d *runner) stopEngine() {
	ctx, cancel := context.WithTimeout(context.Background(), CancelGrace)
	defer cancel()
	var err error
	switch e := d.eng.(type) {
	case interface{ Shutdown(context.Context) error }:
		err = e.Shutdown(ctx)
	case io.Closer:
		err = e.Close()
	default:
		return
	}
	if err != nil {
		d.log.Warn("engine shutdown", "err", err)
	} else {
		d.log.Info("engine stopped")
	}
}

// load reads and resolves the configuration, with the command-line
// overrides applied.
func (o *Options) load() (*Settings, error) {
	fc, err := LoadConfig(o.ConfigPath, o.ConfigExplicit)
	if err != nil {
		return nil, err
	}
	if o.Listen != "" {
		fc.Listen = o.Listen
	}
	if o.StateDir != "" {
		fc.StateDir = o.StateDir
	}
	if o.CacheDir != "" {
		fc.CacheDir = o.CacheDir
	}
	if o.LogLevel != "" {
		fc.LogLevel = o.LogLevel
	}
	return fc.Resolve(o.ConfigPath, o.Getenv)
}

// CheckConfig loads and resolves the configuration as Run would, without
// starting anything (llm-engined --check-config).
func CheckConfig(opts Options) (*Settings, error) {
	if opts.ConfigPath == "" {
		opts.ConfigPath = DefaultConfigPath
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	return opts.load()
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if l.UnmarshalText([]byte(s)) != nil {
		return slog.LevelInfo
	}
	return l
}

// listenersFor returns the socket-activated listeners (those named
// "engine"; all of them, with a warning, when none has that name), or a
// new listener on path.
func listenersFor(path string, log *slog.Logger) ([]net.Listener, bool, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, false, fmt.Errorf("socket activation: %w", err)
	}
	var ls []net.Listener
	if len(named) > 0 {
		ls = named[SocketName]
		if len(ls) == 0 {
			names := make([]string, 0, len(named))
			for n, l := range named {
				names = append(names, n)
				ls = append(ls, l...)
			}
			slices.Sort(names)
			log.Warn("no activated socket is named "+SocketName+"; serving all of them", "names", strings.Join(names, ","))
		} else {
			for n, l := range named {
				if n != SocketName {
					log.Warn("ignoring an activated socket", "name", n)
					for _, x := range l {
						x.Close()
					}
				}
			}
		}
		for _, l := range ls {
			if _, ok := l.(*net.UnixListener); !ok {
				for _, x := range ls {
					x.Close()
				}
				return nil, false, fmt.Errorf("socket activation: %s is not a Unix stream socket (authorisation needs SO_PEERCRED)", l.Addr())
			}
		}
		return ls, true, nil
	}
	if path == "" {
		return nil, false, errors.New("not socket-activated and no socket path: use --listen PATH, \"listen\" in the config, or set $XDG_RUNTIME_DIR")
	}
	l, err := ListenUnix(path, DefaultSocketMode)
	if err != nil {
		return nil, false, err
	}
	return []net.Listener{l}, false, nil
}

// notify sends an sd_notify message (a no-op without $NOTIFY_SOCKET).
func (d *runner) notify(state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		d.log.Debug("sd_notify failed", "err", err, "state", state)
	}
}

// status is the STATUS= line: "serving; 1 run; 2 models; 3 clients".
func (d *runner) status() string {
	st := d.srv.Stats()
	models := len(d.eng.ListModels())
	s := fmt.Sprintf("serving; %s; %s; %s", plural(st.Runs, "run"), plural(int64(models), "model"), plural(int64(st.Conns), "client"))
	if n := d.loading.Load(); n > 0 {
		s += "; loading the default model"
	}
	return s
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// statusLoop refreshes STATUS= when it changes.
func (d *runner) statusLoop(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			d.pushStatus()
		}
	}
}

func (d *runner) pushStatus() {
	s := d.status()
	d.statusMu.Lock()
	changed := s != d.lastStatus
	d.lastStatus = s
	d.statusMu.Unlock()
	if changed {
		d.notify("STATUS=" + s)
	}
}

// watchdog pings systemd every interval, provided the server answers
// (Stats takes the server's lock: a deadlocked server stops the pings and
// systemd restarts it).
func (d *runner) watchdog(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			d.srv.Stats()
			d.notify(sddaemon.SdNotifyWatchdog)
		}
	}
}

// loadDefaultModel loads path in the background.
func (d *runner) loadDefaultModel(path string) {
	for _, m := range d.eng.ListModels() {
		if m.Path == path {
			return
		}
	}
	d.loading.Add(1)
	go func() {
		defer d.loading.Add(-1)
		defer func() {
			if p := recover(); p != nil {
				d.log.Error("loading the default model panicked", "path", path, "panic", fmt.Sprint(p))
			}
		}()
		start := time.Now()
		mi, err := d.eng.LoadModel(context.Background(), engine.LoadRequest{Path: path})
		if err != nil {
			d.log.Error("cannot load the default model", "path", path, "err", err)
			return
		}
		d.log.Info("default model loaded", "model_id", mi.ModelID, "path", path, "took", time.Since(start).Round(time.Millisecond))
		d.pushStatus()
	}()
}

// reload re-reads the configuration (SIGHUP). What can change live is
// applied; what needs a restart is logged. A bad file changes nothing.
func (d *runner) reload() {
	d.notify(fmt.Sprintf("%s\nMONOTONIC_USEC=%d\nSTATUS=reloading the configuration", sddaemon.SdNotifyReloading, monotonicUsec()))
	old := d.set.Load()
	set, err := d.opts.load()
	if err != nil {
		d.log.Error("reload failed; configuration unchanged", "err", err)
		d.notify(sddaemon.SdNotifyReady + "\nSTATUS=" + d.status() + "; last reload failed: " + err.Error())
		return
	}
	restart := func(field string, was, now any) {
		d.log.Warn("configuration change needs a restart; still using the old value", "field", field, "running", was, "configured", now)
	}
	if d.activated {
		set.Listen = old.Listen // the socket unit owns it
	} else if set.Listen != old.Listen {
		restart("listen", old.Listen, set.Listen)
	}
	if set.StateDir != old.StateDir {
		restart("state_dir", old.StateDir, set.StateDir)
	}
	if set.CacheDir != old.CacheDir {
		restart("cache_dir", old.CacheDir, set.CacheDir)
	}
	if set.CacheMaxBytes != old.CacheMaxBytes {
		restart("cache_max_bytes", old.CacheMaxBytes, set.CacheMaxBytes)
	}
	if set.Threads != old.Threads {
		restart("threads", old.Threads, set.Threads)
	}
	if set.Backend != old.Backend {
		restart("backend", old.Backend, set.Backend)
	}
	if set.Power != old.Power {
		restart("power", old.Power, set.Power)
	}
	if set.MetricsListen != old.MetricsListen {
		restart("metrics_listen", old.MetricsListen, set.MetricsListen)
	}
	set.Power, set.MetricsListen = old.Power, old.MetricsListen
	// Keep the running values of restart-only fields so that later reloads
	// compare against what runs.
	set.Listen, set.StateDir, set.CacheDir, set.Threads, set.Backend = old.Listen, old.StateDir, old.CacheDir, old.Threads, old.Backend
	set.CacheMaxBytes = old.CacheMaxBytes

	d.level.Set(parseLevel(set.LogLevel))
	d.srv.SetConfig(set.Server)
	d.set.Store(set)
	if set.DefaultModel != "" && set.DefaultModel != old.DefaultModel {
		d.loadDefaultModel(set.DefaultModel)
	}
	d.log.Info("configuration reloaded", "log_level", set.LogLevel, "admin_group", set.AdminGroup,
		"max_connections", set.Server.MaxConnections, "max_request_bytes", set.Server.MaxRequestBytes,
		"idle_exit", set.IdleExit, "shutdown_timeout", set.ShutdownTimeout)
	d.notify(sddaemon.SdNotifyReady + "\nSTATUS=" + d.status())
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1000
}
