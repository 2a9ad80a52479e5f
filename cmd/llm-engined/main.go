// Command llm-engined is the llm-engine daemon: it serves the JSON-RPC API
// (package rpc) on a Unix socket (package daemon), socket-activated by
// systemd (llm-engine.socket) or in the foreground:
//
//	llm-engined [--config FILE] [--listen PATH] [--state-dir DIR] [--cache-dir DIR] [--log-level LEVEL]
//	llm-engined --check-config [--config FILE]
//	llm-engined --print-schema
//
// See daemon/README.md for signals, sd_notify and the configuration file.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/alecthomas/kong"

	"github.com/weos/llm-engine/daemon"
	"github.com/weos/llm-engine/engine"
	"github.com/weos/llm-engine/rpc"
)

// Exit statuses.
const (
	exitError  = 1
	exitConfig = 78 // EX_CONFIG: the unit's RestartPreventExitStatus
)

type cli struct {
	Config      string `placeholder:"FILE" help:"Configuration file (default /etc/llm-engine/engine.json; a missing default file means defaults, a missing --config file is an error)."`
	Listen      string `placeholder:"PATH" help:"Unix socket to listen on when not socket-activated (overrides \"listen\")."`
	StateDir    string `placeholder:"DIR" help:"State directory (overrides \"state_dir\"; default $STATE_DIRECTORY, else $XDG_STATE_HOME/llm-engine or ~/.local/state/llm-engine)."`
	CacheDir    string `placeholder:"DIR" help:"Cache directory (overrides \"cache_dir\"; default $CACHE_DIRECTORY, else $XDG_CACHE_HOME/llm-engine or ~/.cache/llm-engine)."`
	LogLevel    string `enum:"debug,info,warn,error," default:"" placeholder:"LEVEL" help:"Log level: debug, info, warn or error (overrides \"log_level\")."`
	CheckConfig bool   `help:"Validate the configuration and exit (0: valid, 78: invalid)."`
	PrintSchema bool   `help:"Print the configuration file's JSON Schema and exit."`
}

const description = `The llm-engine daemon: runs GGUF language models on the CPU and serves them
over JSON-RPC 2.0 on a Unix socket (enginectl is its client).

Under systemd it is started by llm-engine.socket on the first connection and
takes the socket named "engine" from it; otherwise it listens on --listen.
Signals: SIGTERM/SIGINT stop it gracefully (runs may finish within
shutdown_timeout_seconds, then are cancelled; exit 0), SIGHUP re-reads the
configuration. Exit status 78 means the configuration is invalid.`

// newEngine constructs the engine the daemon serves (tests replace it).
var newEngine = func(o daemon.EngineOptions) (rpc.Engine, error) {
	eng, err := engine.New(engine.Options{StateDir: o.StateDir, CacheDir: o.CacheDir, CacheMaxBytes: o.CacheMaxBytes, Threads: o.Threads, Backend: o.Backend, Power: o.Power})
	if err != nil {
		return nil, err
	}
	return eng, nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var c cli
	parser := kong.Must(&c, kong.Name("llm-engined"), kong.Description(description))
	if _, err := parser.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "llm-engined: %v (see llm-engined --help)\n", err)
		return 2
	}
	opts := daemon.Options{
		ConfigPath:     c.Config,
		ConfigExplicit: c.Config != "",
		Listen:         c.Listen,
		StateDir:       c.StateDir,
		CacheDir:       c.CacheDir,
		LogLevel:       c.LogLevel,
		NewEngine:      newEngine,
	}
	switch {
	case c.PrintSchema:
		os.Stdout.Write(daemon.ConfigSchema())
		return 0
	case c.CheckConfig:
		if _, err := daemon.CheckConfig(opts); err != nil {
			return fail(err)
		}
		path := c.Config
		if path == "" {
			path = daemon.DefaultConfigPath
		}
		if _, err := os.Stat(path); err != nil && c.Config == "" {
			fmt.Printf("%s: absent: defaults apply\n", path)
		} else {
			fmt.Printf("%s: ok\n", path)
		}
		return 0
	}
	if err := daemon.Run(opts); err != nil {
		return fail(err)
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "llm-engined: %v\n", err)
	var ce *daemon.ConfigError
	if errors.As(err, &ce) {
		return exitConfig
	}
	return exitError
}
