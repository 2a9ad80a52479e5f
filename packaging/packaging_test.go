// Package packaging holds the systemd units, sysusers.d and tmpfiles.d
// snippets, the default configuration and the .deb definition (nfpm.yaml,
// built by the separate module in deb/). Its tests verify the units with
// systemd-analyze and build the .deb.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("SKIP: %s not installed: not checked", name)
	}
	return p
}

// fakeExecutable writes a shell script that does nothing.
func fakeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestUnitsVerify runs systemd-analyze verify on the units, with their
// /usr/bin/llm-engined pointing at an executable that exists.
func TestUnitsVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "llm-engined")
	fakeExecutable(t, bin)
	var units []string
	for _, u := range []string{"llm-engine.socket", "llm-engine.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/bin/llm-engined", bin)
		path := filepath.Join(dir, u)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, path)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The security exposure stays low (offline analysis, systemd >= 252).
	out, err = exec.Command(analyze, "security", "--offline=true", units[1]).CombinedOutput()
	if err != nil {
		t.Logf("systemd-analyze security --offline unavailable: %v", err)
	} else if m := regexp.MustCompile(`Overall exposure level for .*: ([0-9.]+) (\w+)`).FindStringSubmatch(string(out)); m == nil || m[2] != "OK" {
		t.Errorf("exposure: %q", m)
	}
}

// The socket unit names its listener as the daemon expects, and the
// service waits for READY=1.
func TestUnitsMatchTheDaemon(t *testing.T) {
	sock, _ := os.ReadFile("systemd/llm-engine.socket")
	svc, _ := os.ReadFile("systemd/llm-engine.service")
	for _, want := range []string{"FileDescriptorName=engine\n", "SocketMode=0660\n", "SocketGroup=llm-engine\n"} {
		if !bytes.Contains(sock, []byte(want)) {
			t.Errorf("llm-engine.socket lacks %q", want)
		}
	}
	for _, want := range []string{"Type=notify\n", "WatchdogSec=", "RestartPreventExitStatus=78\n", "ExecStart=/usr/bin/llm-engined --config /etc/llm-engine/engine.json\n"} {
		if !bytes.Contains(svc, []byte(want)) {
			t.Errorf("llm-engine.service lacks %q", want)
		}
	}
}

func TestSysusers(t *testing.T) {
	sysusers := tool(t, "systemd-sysusers")
	abs, _ := filepath.Abs("llm-engine.sysusers")
	out, err := exec.Command(sysusers, "--dry-run", abs).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("ignoring")) || bytes.Contains(out, []byte("Failed")) {
		t.Fatalf("systemd-sysusers --dry-run: %v\n%s", err, out)
	}
}

// TestDeb builds the .deb (with stand-in binaries) and checks its contents
// and maintainer scripts.
func TestDeb(t *testing.T) {
	dpkgDeb := tool(t, "dpkg-deb")
	goTool := tool(t, "go")
	dir := t.TempDir()
	bindir := filepath.Join(dir, "bin")
	for _, b := range []string{"llm-engined", "enginectl", "llm-bench"} {
		fakeExecutable(t, filepath.Join(bindir, b))
	}
	deb := filepath.Join(dir, "llm-engine.deb")
	root, _ := filepath.Abs("..")
	cmd := exec.Command(goTool, "run", "-C", "deb", ".", "-root", root, "-bindir", bindir, "-version", "v1.2.3-test", "-out", deb)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the .deb: %v\n%s", err, out)
	}
	out, err := exec.Command(dpkgDeb, "-c", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/llm-engined\n",
		"-rwxr-xr-x root/root .* ./usr/bin/enginectl\n",
		"-rwxr-xr-x root/root .* ./usr/bin/llm-bench\n",
		" ./usr/lib/systemd/system/llm-engine.socket\n",
		" ./usr/lib/systemd/system/llm-engine.service\n",
		" ./usr/lib/sysusers.d/llm-engine.conf\n",
		" ./usr/lib/tmpfiles.d/llm-engine.conf\n",
		" ./etc/llm-engine/engine.json\n",
		" ./usr/share/bash-completion/completions/enginectl\n",
		" ./usr/share/zsh/vendor-completions/_enginectl\n",
	} {
		if !regexp.MustCompile(want).MatchString(listing) {
			t.Errorf("the .deb lacks %q:\n%s", strings.TrimSpace(want), listing)
		}
	}
	info, err := exec.Command(dpkgDeb, "-f", deb, "Package", "Version", "Depends").CombinedOutput()
	if err != nil || !strings.Contains(string(info), "Package: llm-engine") || !strings.Contains(string(info), "Version: 1.2.3-test") {
		t.Errorf("control fields: %v\n%s", err, info)
	}
	ctrl := filepath.Join(dir, "control")
	if out, err := exec.Command(dpkgDeb, "-e", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	conffiles, _ := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if !strings.Contains(string(conffiles), "/etc/llm-engine/engine.json") {
		t.Errorf("engine.json is not a conffile: %q", conffiles)
	}
	postinst, _ := os.ReadFile(filepath.Join(ctrl, "postinst"))
	for _, want := range []string{"systemd-sysusers llm-engine.conf", "systemd-tmpfiles --create llm-engine.conf", "systemctl daemon-reload"} {
		if !strings.Contains(string(postinst), want) {
			t.Errorf("postinst lacks %q", want)
		}
	}
}
