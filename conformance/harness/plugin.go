// Package harness starts and controls the plugin under test (atrest, or the reference Go plugin) for the
// conformance modules. It holds no Kubernetes code: each module brings its own k8s.io/apiserver line.
//
// The plugin command comes from ATREST_CMD (whitespace-separated, e.g. "node dist/src/cli/main.js");
// it must understand `keys init|rotate --keyring FILE` and
// `serve --listen unix:///PATH --keyring FILE --health-listen off --log-level warn`.
package harness

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Command returns the plugin command line from ATREST_CMD, failing the test with a clear message if unset.
func Command(t testing.TB) []string {
	t.Helper()
	cmd := strings.Fields(os.Getenv("ATREST_CMD"))
	if len(cmd) == 0 {
		t.Fatal("ATREST_CMD is not set: point it at the plugin, e.g. ATREST_CMD='node /repo/dist/src/cli/main.js' (conformance/run.sh sets it)")
	}
	return cmd
}

// Plugin is one plugin installation: a keyring and a socket path in a private temp dir, and at most one
// running `serve` process.
type Plugin struct {
	t       testing.TB
	argv    []string
	Dir     string
	Keyring string
	Socket  string
	// ServeArgs are extra flags for the next Start's `serve` (e.g. --status-version v2).
	ServeArgs []string

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
	err  error
	logs *lockedBuffer
}

// New creates a keyring with `keys init` in a fresh temp dir. The dir is short because a UNIX socket path
// must fit in 108 bytes. Everything is removed and any running plugin is killed when the test ends.
func New(t testing.TB) *Plugin {
	t.Helper()
	dir, err := os.MkdirTemp("", "atrest-conf-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{
		t:       t,
		argv:    Command(t),
		Dir:     dir,
		Keyring: filepath.Join(dir, "keyring"),
		Socket:  filepath.Join(dir, "kms.sock"),
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("plugin output:\n%s", p.Logs())
		}
		_ = os.RemoveAll(dir)
	})
	p.run("keys", "init", "--keyring", p.Keyring)
	fi, err := os.Stat(p.Keyring)
	if err != nil {
		t.Fatalf("keys init did not create the keyring: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("keyring mode is %v, want no group/other access", fi.Mode().Perm())
	}
	return p
}

// Endpoint is the KMS endpoint as written in an EncryptionConfiguration.
func (p *Plugin) Endpoint() string {
	if strings.HasPrefix(p.Socket, "@") {
		return "unix:///" + p.Socket // unix:///@name: a Linux abstract socket, no file
	}
	return "unix://" + p.Socket
}

// UseAbstractSocket makes the next Start listen on a Linux abstract socket (@atrest-conf-<dir suffix>)
// instead of a socket file.
func (p *Plugin) UseAbstractSocket() {
	p.Socket = "@" + filepath.Base(p.Dir)
}

func (p *Plugin) run(args ...string) {
	p.t.Helper()
	cmd := exec.Command(p.argv[0], append(append([]string{}, p.argv[1:]...), args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("%s %s: %v\n%s", strings.Join(p.argv, " "), strings.Join(args, " "), err, out)
	}
}

// Rotate runs `keys rotate` on the keyring (the running plugin only notices after Reload).
func (p *Plugin) Rotate() { p.t.Helper(); p.run("keys", "rotate", "--keyring", p.Keyring) }

// Start runs `serve` and waits until the socket accepts connections.
func (p *Plugin) Start() {
	p.t.Helper()
	p.mu.Lock()
	if p.proc != nil {
		p.mu.Unlock()
		p.t.Fatal("plugin already running")
	}
	args := append(append([]string{}, p.argv[1:]...),
		"serve", "--listen", p.Endpoint(), "--keyring", p.Keyring, "--health-listen", "off", "--log-level", "warn")
	args = append(args, p.ServeArgs...)
	cmd := exec.Command(p.argv[0], args...)
	if p.logs == nil {
		p.logs = &lockedBuffer{}
	}
	cmd.Stdout = p.logs
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatalf("start plugin: %v", err)
	}
	done := make(chan struct{})
	p.proc, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			p.t.Fatalf("plugin exited during start (%v); output:\n%s", p.err, p.Logs())
		default:
		}
		if c, err := net.Dial("unix", p.Socket); err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("plugin did not listen on %s within 60s; output:\n%s", p.Socket, p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid of the running serve process.
func (p *Plugin) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.Process.Pid
}

// Reload sends SIGHUP.
func (p *Plugin) Reload() { p.t.Helper(); p.signal(syscall.SIGHUP) }

func (p *Plugin) signal(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc == nil {
		p.t.Fatal("plugin not running")
	}
	if err := proc.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Stop sends SIGTERM and returns the exit error (nil for exit 0) once the process has exited.
func (p *Plugin) Stop() error {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	return p.wait(30 * time.Second)
}

// Kill sends SIGKILL (no cleanup by the plugin: its socket file stays behind). Safe when not running.
func (p *Plugin) Kill() {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Process.Kill()
	_ = p.wait(10 * time.Second)
}

func (p *Plugin) wait(limit time.Duration) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(limit):
		return fmt.Errorf("plugin did not exit within %v", limit)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proc, p.done = nil, nil
	return p.err
}

// Logs returns what the plugin wrote to stdout/stderr so far.
func (p *Plugin) Logs() string {
	if p.logs == nil {
		return ""
	}
	return p.logs.String()
}

// SocketExists reports whether the socket file is present.
func (p *Plugin) SocketExists() bool {
	_, err := os.Lstat(p.Socket)
	return !errors.Is(err, os.ErrNotExist)
}

// Eventually retries f until it returns nil or the limit passes, returning the last error.
func Eventually(limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
