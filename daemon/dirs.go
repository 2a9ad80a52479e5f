package daemon

import (
	"errors"
	"os"
	"path/filepath"
)

// DefaultStateDir is $XDG_STATE_HOME/llm-engine, or ~/.local/state/llm-engine.
func DefaultStateDir() (string, error) {
	return xdgDirEnv(os.Getenv, "XDG_STATE_HOME", filepath.Join(".local", "state"))
}

// DefaultCacheDir is $XDG_CACHE_HOME/llm-engine, or ~/.cache/llm-engine.
func DefaultCacheDir() (string, error) {
	return xdgDirEnv(os.Getenv, "XDG_CACHE_HOME", ".cache")
}

func xdgDirEnv(getenv func(string) string, env, fallback string) (string, error) {
	base := getenv(env)
	if !filepath.IsAbs(base) { // the XDG spec says to ignore relative paths
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("cannot choose a default directory: $" + env + " and $HOME are unset")
		}
		base = filepath.Join(home, fallback)
	}
	return filepath.Join(base, "llm-engine"), nil
}

// EnsureDir creates dir (and its parents) if missing, mode 0750.
func EnsureDir(dir string) error {
	return os.MkdirAll(dir, 0o750)
}
