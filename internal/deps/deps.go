//go:build tools

package deps

import (
	_ "github.com/alecthomas/kong"
	_ "github.com/containerd/cgroups/v3"
	_ "github.com/coreos/go-systemd/v22/activation"
	_ "github.com/google/renameio/v2"
	_ "github.com/invopop/jsonschema"
	_ "github.com/prometheus/procfs"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/sourcegraph/jsonrpc2"
	_ "golang.org/x/sys/unix"
)
