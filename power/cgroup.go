package power

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const defaultCgroupRoot = "/sys/fs/cgroup"

// CapperConfig configures a Capper. Zero values pick the defaults.
type CapperConfig struct {
	// Version is 1 (cgroup v1 cpu+cpuacct controllers), 2 (a threaded child
	// of the process's own cgroup v2 group) or 0 to pick what the host has.
	Version int
	// Root is the cgroup filesystem root (default /sys/fs/cgroup). With
	// another root, Version must be given.
	Root string
	// Group: for v1 the group's path in the cpu and cpuacct hierarchies
	// (default "/llm-engine/infer"); for v2 the name of the threaded child
	// created under the process's own cgroup (default "llm-engine-infer").
	Group string
	// PeriodUs is the CFS bandwidth period (default 20000 µs). A throttled
	// worker thread keeps its Go P, so a stop-the-world waits for it for up
	// to a period: short periods bound that stall. The period is stretched
	// (up to MaxPeriodUs) for quotas below the kernel's 1 ms minimum.
	PeriodUs uint64
	// MaxPeriodUs bounds the stretched period (default 100000 µs).
	MaxPeriodUs uint64

	procRoot string // tests: where "self/cgroup" and "self/task/TID/cgroup" are read
}

func (c CapperConfig) withDefaults() CapperConfig {
	if c.Root == "" {
		c.Root = defaultCgroupRoot
	}
	if c.PeriodUs == 0 {
		c.PeriodUs = 20000
	}
	if c.MaxPeriodUs == 0 {
		c.MaxPeriodUs = 100000
	}
	if c.MaxPeriodUs < c.PeriodUs {
		c.MaxPeriodUs = c.PeriodUs
	}
	if c.procRoot == "" {
		c.procRoot = "/proc"
	}
	return c
}

func (c CapperConfig) group(version int) string {
	if c.Group != "" {
		return c.Group
	}
	if version == 1 {
		return "/llm-engine/infer"
	}
	return "llm-engine-infer"
}

// Capability says whether this host can enforce a power cap with the default
// CapperConfig, and why (not).
func Capability() (ok bool, reason string) {
	return CapabilityFor(CapperConfig{})
}

// CapabilityFor is Capability for a given configuration.
func CapabilityFor(cfg CapperConfig) (ok bool, reason string) {
	_, ok, reason = pickVersion(cfg.withDefaults())
	return ok, reason
}

// pickVersion chooses the cgroup version to use and explains the choice.
func pickVersion(cfg CapperConfig) (int, bool, string) {
	switch cfg.Version {
	case 1:
		ok, why := checkV1(cfg)
		return 1, ok, why
	case 2:
		ok, why := checkV2(cfg)
		return 2, ok, why
	case 0:
	default:
		return 0, false, fmt.Sprintf("unknown cgroup version %d", cfg.Version)
	}
	mode := cgroups.Unavailable
	if cfg.Root == defaultCgroupRoot {
		mode = cgroups.Mode()
	} else if exists(filepath.Join(cfg.Root, "cgroup.controllers")) {
		mode = cgroups.Unified
	} else if exists(filepath.Join(cfg.Root, "cpu")) {
		mode = cgroups.Hybrid
	}
	switch mode {
	case cgroups.Unified:
		ok, why := checkV2(cfg)
		return 2, ok, why
	case cgroups.Legacy, cgroups.Hybrid:
		ok1, why1 := checkV1(cfg)
		if ok1 {
			return 1, true, why1
		}
		if mode == cgroups.Hybrid {
			ok2, why2 := checkV2(cfg)
			if ok2 {
				return 2, true, why2
			}
			return 1, false, why1 + "; " + why2
		}
		return 1, false, why1
	default:
		return 0, false, "no cgroup filesystem at " + cfg.Root
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func checkV1(cfg CapperConfig) (bool, string) {
	cpu := filepath.Join(cfg.Root, "cpu")
	if !exists(filepath.Join(cpu, "cpu.cfs_quota_us")) {
		if !exists(cpu) {
			return false, "cgroup v1: no cpu controller mounted at " + cpu
		}
		return false, "cgroup v1: " + cpu + " has no cpu.cfs_quota_us (kernel without CONFIG_CFS_BANDWIDTH)"
	}
	for _, d := range []string{cpu, filepath.Join(cfg.Root, "cpuacct")} {
		if !exists(d) {
			return false, "cgroup v1: no controller at " + d
		}
		if err := unix.Access(d, unix.W_OK); err != nil {
			return false, fmt.Sprintf("cgroup v1: %s is not writable (%v): the power cap needs root or a delegated cpu hierarchy", d, err)
		}
	}
	return true, fmt.Sprintf("cgroup v1: worker threads go to %s in %s and %s; the cap sets cpu.cfs_quota_us",
		cfg.group(1), cpu, filepath.Join(cfg.Root, "cpuacct"))
}

// v2Mount is the unified hierarchy's mount point under cfg.Root.
func v2Mount(cfg CapperConfig) string {
	if exists(filepath.Join(cfg.Root, "cgroup.controllers")) {
		return cfg.Root
	}
	return filepath.Join(cfg.Root, "unified")
}

// ownV2Group returns the process's cgroup v2 path ("0::/path").
func ownV2Group(procRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "self/cgroup"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

func checkV2(cfg CapperConfig) (bool, string) {
	mount := v2Mount(cfg)
	ctl, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		return false, "cgroup v2: no unified hierarchy at " + mount
	}
	own, err := ownV2Group(cfg.procRoot)
	if err != nil {
		return false, "cgroup v2: " + err.Error()
	}
	dir := filepath.Join(mount, own)
	if own != "/" {
		ctl, err = os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return false, "cgroup v2: cannot read the process's cgroup " + dir + ": " + err.Error()
		}
	}
	if !hasWord(string(ctl), "cpu") {
		return false, fmt.Sprintf("cgroup v2: the cpu controller is not available in %s (controllers: %q); "+
			"delegate it (systemd Delegate=yes or Delegate=cpu)", dir, strings.TrimSpace(string(ctl)))
	}
	if own == "/" {
		return false, "cgroup v2: the process sits in the root cgroup; run it in a delegated service cgroup (systemd Delegate=yes)"
	}
	for _, f := range []string{"cgroup.subtree_control", "cgroup.threads"} {
		if err := unix.Access(filepath.Join(dir, f), unix.W_OK); err != nil {
			return false, fmt.Sprintf("cgroup v2: %s is not writable (%v); delegate the service cgroup (systemd Delegate=yes)",
				filepath.Join(dir, f), err)
		}
	}
	return true, fmt.Sprintf("cgroup v2: worker threads go to the threaded child %s; the cap sets cpu.max",
		filepath.Join(dir, cfg.group(2)))
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// backend is one cgroup version's implementation.
type backend interface {
	add(tid int) error
	remove(tid int) error                        // back to where the thread came from
	setMax(quotaUs int64, periodUs uint64) error // quotaUs < 0: unlimited
	tasks() ([]int, error)
	destroy() error // the group must be empty
	path() string
	usage() (time.Duration, error)
}

// Capper limits the CPU time of a set of worker threads (not the whole
// process) by putting them in a dedicated cgroup with a CPU quota.
//
// Threads must be removed (RemoveThreads or Close) before their goroutine
// calls runtime.UnlockOSThread: otherwise the throttled OS thread returns to
// Go's pool and runs arbitrary goroutines under the quota.
type Capper struct {
	cfg     CapperConfig
	version int
	reason  string
	be      backend

	mu      sync.Mutex
	threads map[int]bool
	cores   float64 // 0: unlimited
	closed  bool
}

// NewCapper creates the cgroup (unlimited quota) or says why it cannot.
func NewCapper(cfg CapperConfig) (*Capper, error) {
	cfg = cfg.withDefaults()
	v, ok, why := pickVersion(cfg)
	if !ok {
		return nil, errors.New("power: cannot cap: " + why)
	}
	c := &Capper{cfg: cfg, version: v, reason: why, threads: map[int]bool{}}
	var err error
	if v == 1 {
		c.be, err = newV1(cfg)
	} else {
		c.be, err = newV2(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("power: cgroup v%d: %w", v, err)
	}
	return c, nil
}

// Capability reports that this Capper can enforce a cap, and how.
func (c *Capper) Capability() (bool, string) { return true, c.reason }

// Version is the cgroup version in use (1 or 2).
func (c *Capper) Version() int { return c.version }

// Path is the group's directory (for v1, in the cpu hierarchy).
func (c *Capper) Path() string { return c.be.path() }

// AddThreads moves threads of this process into the group.
func (c *Capper) AddThreads(tids ...int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("power: capper closed")
	}
	for _, tid := range tids {
		if c.threads[tid] {
			continue
		}
		if err := c.be.add(tid); err != nil {
			return fmt.Errorf("power: cap thread %d: %w", tid, err)
		}
		c.threads[tid] = true
	}
	return nil
}

// RemoveThreads moves threads back to the cgroup they came from. Do it
// before the thread's goroutine unlocks it from its OS thread. Threads that
// have exited are ignored.
func (c *Capper) RemoveThreads(tids ...int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, tid := range tids {
		if err := c.be.remove(tid); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("power: uncap thread %d: %w", tid, err))
			continue
		}
		delete(c.threads, tid)
	}
	return errors.Join(errs...)
}

// Threads returns the capped thread IDs, sorted.
func (c *Capper) Threads() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.threads))
	for t := range c.threads {
		out = append(out, t)
	}
	sort.Ints(out)
	return out
}

// NumThreads is the number of capped threads.
func (c *Capper) NumThreads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.threads)
}

// SetQuota limits the group to cores CPUs worth of time (0.3 = 30% of one
// core); cores <= 0 removes the limit.
func (c *Capper) SetQuota(cores float64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("power: capper closed")
	}
	q, p := quotaFor(cores, c.cfg.PeriodUs, c.cfg.MaxPeriodUs)
	if err := c.be.setMax(q, p); err != nil {
		return fmt.Errorf("power: set cpu quota: %w", err)
	}
	if q < 0 {
		c.cores = 0
	} else {
		c.cores = float64(q) / float64(p)
	}
	return nil
}

// Quota is the quota in force in cores (0: unlimited).
func (c *Capper) Quota() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cores
}

// Usage is the group's cumulative CPU time (cpuacct.usage or cpu.stat).
func (c *Capper) Usage() (time.Duration, error) { return c.be.usage() }

// quotaFor converts cores into a CFS quota and period in µs. The kernel
// wants quota >= 1000 µs: for small quotas the period is stretched up to
// maxPeriod and the quota floored at 1000 µs.
func quotaFor(cores float64, period, maxPeriod uint64) (int64, uint64) {
	if cores <= 0 || math.IsNaN(cores) || math.IsInf(cores, 1) {
		return -1, period
	}
	q := cores * float64(period)
	if q < 1000 {
		p := math.Ceil(1000 / cores)
		if p > float64(maxPeriod) {
			p = float64(maxPeriod)
		}
		period = uint64(p)
		q = math.Max(1000, cores*float64(period))
	}
	return int64(math.Round(q)), period
}

// Close moves every thread in the group back to its original cgroup, then
// deletes the group (a cgroup with tasks cannot be removed).
func (c *Capper) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for attempt := 0; attempt < 5; attempt++ {
		ts, err := c.be.tasks()
		if err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
			break
		}
		for t := range c.threads {
			ts = append(ts, t)
		}
		if len(ts) == 0 {
			break
		}
		for _, t := range dedup(ts) {
			if err := c.be.remove(t); err != nil && !errors.Is(err, syscall.ESRCH) && attempt == 4 {
				errs = append(errs, fmt.Errorf("power: uncap thread %d: %w", t, err))
			}
			delete(c.threads, t)
		}
	}
	if err := c.be.destroy(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ---- cgroup v1 ----

var v1Controllers = []cgroup1.Name{cgroup1.Cpu, cgroup1.Cpuacct}

type v1Backend struct {
	root     string
	group    string
	procRoot string
	cg       cgroup1.Cgroup
	created  []string                        // directories we made, deepest last
	orig     map[int]map[cgroup1.Name]string // thread -> controller -> original group
}

func newV1(cfg CapperConfig) (*v1Backend, error) {
	group := cfg.group(1)
	if !strings.HasPrefix(group, "/") || filepath.Clean(group) != group || group == "/" {
		return nil, fmt.Errorf("v1 group must be a clean absolute path below /, got %q", group)
	}
	b := &v1Backend{root: cfg.Root, group: group, procRoot: cfg.procRoot, orig: map[int]map[cgroup1.Name]string{}}
	// Remember which directories we create so Close removes them all.
	for _, n := range v1Controllers {
		var dirs []string
		for p := group; p != "/"; p = filepath.Dir(p) {
			d := filepath.Join(cfg.Root, string(n), p)
			if !exists(d) {
				dirs = append([]string{d}, dirs...)
			}
		}
		b.created = append(b.created, dirs...)
	}
	// Only cpu and cpuacct: the default hierarchy would create the group in
	// every controller and move the threads out of the memory cgroup the
	// host keeps us in.
	hier := func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{cgroup1.NewCpu(cfg.Root), cgroup1.NewCpuacct(cfg.Root)}, nil
	}
	period, unlimited := cfg.PeriodUs, int64(-1)
	cg, err := cgroup1.New(cgroup1.StaticPath(group),
		&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: &period, Quota: &unlimited}},
		cgroup1.WithHierarchy(hier))
	if err != nil {
		b.removeCreated()
		return nil, err
	}
	b.cg = cg
	return b, nil
}

func (b *v1Backend) path() string { return filepath.Join(b.root, string(cgroup1.Cpu), b.group) }

func (b *v1Backend) add(tid int) error {
	orig, err := threadV1Groups(b.procRoot, tid)
	if err != nil {
		return err
	}
	if err := b.cg.AddTask(cgroup1.Process{Pid: tid}, v1Controllers...); err != nil {
		return err
	}
	b.orig[tid] = orig
	return nil
}

// threadV1Groups reads a thread's cpu and cpuacct groups from
// /proc/self/task/TID/cgroup ("4:cpu,cpuacct:/path").
func threadV1Groups(procRoot string, tid int) (map[cgroup1.Name]string, error) {
	data, err := os.ReadFile(filepath.Join(procRoot, "self/task", strconv.Itoa(tid), "cgroup"))
	if err != nil {
		return nil, err
	}
	out := map[cgroup1.Name]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			for _, n := range v1Controllers {
				if ctl == string(n) {
					out[n] = f[2]
				}
			}
		}
	}
	return out, nil
}

func (b *v1Backend) remove(tid int) error {
	orig := b.orig[tid]
	var errs []error
	for _, n := range v1Controllers {
		g := "/"
		if o, ok := orig[n]; ok && o != b.group {
			g = o
		}
		err := writeTask(filepath.Join(b.root, string(n), g, "tasks"), tid)
		if errors.Is(err, syscall.ESRCH) {
			delete(b.orig, tid)
			return err
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		delete(b.orig, tid)
	}
	return errors.Join(errs...)
}

// writeTask writes a thread ID to a cgroup tasks/cgroup.threads file.
func writeTask(path string, tid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := 0; ; i++ {
		_, err = f.WriteString(strconv.Itoa(tid))
		if !errors.Is(err, syscall.EINVAL) || i == 4 { // EINVAL: task not fully set up yet
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *v1Backend) setMax(quotaUs int64, periodUs uint64) error {
	return b.cg.Update(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: &periodUs, Quota: &quotaUs}})
}

func (b *v1Backend) tasks() ([]int, error) {
	var out []int
	for _, n := range v1Controllers {
		ts, err := b.cg.Tasks(n, true)
		if err != nil {
			return out, err
		}
		for _, t := range ts {
			out = append(out, t.Pid)
		}
	}
	return dedup(out), nil
}

func (b *v1Backend) destroy() error {
	err := b.cg.Delete()
	b.removeCreated()
	return err
}

func (b *v1Backend) removeCreated() {
	for i := len(b.created) - 1; i >= 0; i-- {
		_ = os.Remove(b.created[i]) // rmdir; fails harmlessly when not empty
	}
}

func (b *v1Backend) usage() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(b.root, string(cgroup1.Cpuacct), b.group, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	return time.Duration(ns), err
}

// ---- cgroup v2 ----

// v2Backend puts the threads in a threaded child of the process's own
// cgroup: the process's group becomes "domain threaded", the child
// "threaded" with cpu.max. It needs the cpu controller delegated to the
// process's group (systemd Delegate=yes).
type v2Backend struct {
	mount      string
	own        string // the process's group, e.g. /system.slice/llm-engine.service
	group      string // own/child
	m          *cgroup2.Manager
	parent     *cgroup2.Manager
	enabledCPU bool // we enabled +cpu in own's subtree_control
}

func newV2(cfg CapperConfig) (*v2Backend, error) {
	name := cfg.group(2)
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return nil, fmt.Errorf("v2 group must be a single directory name, got %q", name)
	}
	mount := v2Mount(cfg)
	own, err := ownV2Group(cfg.procRoot)
	if err != nil {
		return nil, err
	}
	b := &v2Backend{mount: mount, own: own, group: filepath.Join(own, name)}
	sub, err := os.ReadFile(filepath.Join(mount, own, "cgroup.subtree_control"))
	if err != nil {
		return nil, err
	}
	b.enabledCPU = !hasWord(string(sub), "cpu")
	period := cfg.PeriodUs
	// NewManager enables +cpu in the ancestors' subtree_control (the cpu
	// controller is threaded, so our group may have processes) and writes
	// cpu.max; the child then becomes threaded.
	m, err := cgroup2.NewManager(mount, b.group, &cgroup2.Resources{CPU: &cgroup2.CPU{Max: cgroup2.NewCPUMax(nil, &period)}})
	if err != nil {
		return nil, err
	}
	if err := m.SetType(cgroup2.Threaded); err != nil {
		_ = m.Delete()
		b.restoreSubtree()
		return nil, fmt.Errorf("make %s threaded: %w", b.group, err)
	}
	b.m = m
	b.parent, err = cgroup2.Load(own, cgroup2.WithMountpoint(mount))
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (b *v2Backend) path() string { return filepath.Join(b.mount, b.group) }

func (b *v2Backend) add(tid int) error { return b.m.AddThread(uint64(tid)) }

func (b *v2Backend) remove(tid int) error {
	return writeTask(filepath.Join(b.mount, b.own, "cgroup.threads"), tid)
}

func (b *v2Backend) setMax(quotaUs int64, periodUs uint64) error {
	var q *int64
	if quotaUs >= 0 {
		q = &quotaUs
	}
	return b.m.Update(&cgroup2.Resources{CPU: &cgroup2.CPU{Max: cgroup2.NewCPUMax(q, &periodUs)}})
}

func (b *v2Backend) tasks() ([]int, error) {
	ts, err := b.m.Threads(true)
	out := make([]int, 0, len(ts))
	for _, t := range ts {
		out = append(out, int(t))
	}
	return out, err
}

func (b *v2Backend) destroy() error {
	err := b.m.Delete()
	if err == nil {
		b.restoreSubtree()
	}
	return err
}

// restoreSubtree disables cpu in our group's subtree_control if we enabled it.
func (b *v2Backend) restoreSubtree() {
	if b.enabledCPU {
		_ = os.WriteFile(filepath.Join(b.mount, b.own, "cgroup.subtree_control"), []byte("-cpu"), 0)
	}
}

func (b *v2Backend) usage() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(b.mount, b.group, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, errors.New("no usage_usec in cpu.stat")
}
