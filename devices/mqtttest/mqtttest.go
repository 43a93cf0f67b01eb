// Package mqtttest starts real MQTT peers for tests: a Mosquitto broker on a
// random loopback port and the mosquitto_pub / mosquitto_sub clients. It is
// used from the tests of any package. A missing binary fails the test (it is
// not skipped): scripts/test.sh installs mosquitto and mosquitto-clients.
package mqtttest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/freeport"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago
// (freeport.Port).
func FreePort(t testing.TB) int {
	t.Helper()
	return freeport.Port(t, "127.0.0.1")
}

// FreeAddr returns "127.0.0.1:PORT" with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeport.Addr(t)
}

// binary returns the path of a mosquitto program or fails the test.
func binary(t testing.TB, name string) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/" + name, "/usr/bin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (install the mosquitto and mosquitto-clients packages; scripts/test.sh does): %v", name, err)
	}
	return p
}

// Option changes the Mosquitto configuration.
type Option func(*mosqConfig)

type mosqConfig struct {
	lines []string
	users map[string]string
}

// WithConfig appends lines to mosquitto.conf.
func WithConfig(lines ...string) Option {
	return func(c *mosqConfig) { c.lines = append(c.lines, lines...) }
}

// WithUser adds a password user and turns anonymous access off.
func WithUser(username, password string) Option {
	return func(c *mosqConfig) {
		if c.users == nil {
			c.users = map[string]string{}
		}
		c.users[username] = password
	}
}

// Mosquitto is a Mosquitto broker run by a test; it keeps its port across
// Stop and Start so reconnects can be tested.
type Mosquitto struct {
	t       testing.TB
	dir     string
	conf    string
	logPath string
	port    int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMosquitto starts a Mosquitto broker on a random loopback port, stopped
// at the end of the test, and returns its URL (tcp://127.0.0.1:PORT).
func StartMosquitto(t testing.TB, opts ...Option) string {
	t.Helper()
	m := NewMosquitto(t, opts...)
	m.Start()
	return m.URL()
}

// NewMosquitto writes the configuration of a broker on a random loopback port
// without starting it. Start it with Start; it is stopped at the end of the test.
func NewMosquitto(t testing.TB, opts ...Option) *Mosquitto {
	t.Helper()
	var c mosqConfig
	for _, o := range opts {
		o(&c)
	}
	dir := t.TempDir()
	m := &Mosquitto{t: t, dir: dir, conf: filepath.Join(dir, "mosquitto.conf"), logPath: filepath.Join(dir, "mosquitto.log"), port: FreePort(t)}
	lines := []string{
		fmt.Sprintf("listener %d 127.0.0.1", m.port),
		"persistence false",
		"max_queued_messages 100000",
		"max_inflight_messages 0",
		"log_dest file " + m.logPath,
		"log_type error", "log_type warning", "log_type notice", "log_type information",
		"user root", // when run as root, do not drop to the mosquitto user (the temp dir is private)
	}
	if len(c.users) > 0 {
		pwFile := filepath.Join(dir, "passwd")
		var b strings.Builder
		for u, p := range c.users {
			fmt.Fprintf(&b, "%s:%s\n", u, p)
		}
		if err := os.WriteFile(pwFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		// Hash the plain-text file in place.
		if out, err := exec.Command(binary(t, "mosquitto_passwd"), "-U", pwFile).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd -U: %v: %s", err, out)
		}
		lines = append(lines, "allow_anonymous false", "password_file "+pwFile)
	} else {
		lines = append(lines, "allow_anonymous true")
	}
	lines = append(lines, c.lines...)
	if err := os.WriteFile(m.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// URL returns tcp://127.0.0.1:PORT.
func (m *Mosquitto) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.port) }

// Addr returns 127.0.0.1:PORT.
func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// PID returns the broker's process id while it runs (0 when stopped).
func (m *Mosquitto) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Log returns the broker's log so far.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(m.logPath)
	return string(b)
}

// Start runs the broker and waits until it accepts TCP connections; it fails
// the test with the broker's log when it does not within 10 s.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	var out bytes.Buffer
	cmd := exec.Command(binary(m.t, "mosquitto"), "-c", m.conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			m.t.Fatalf("mosquitto exited at start: %s\nlog:\n%s", out.String(), m.Log())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			m.t.Fatalf("mosquitto not accepting on %s after 10s: %s\nlog:\n%s", m.Addr(), out.String(), m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.cmd, m.done = cmd, done
}

// Stop terminates the broker (SIGTERM, then SIGKILL after 5 s) and waits for
// it to exit. It does nothing when the broker is not running.
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd, m.done = nil, nil
}

// clientArgs returns -h -p (and -u -P from the URL's user info) for the
// mosquitto clients. Query parameters add TLS files and the protocol
// version: cafile, cert and key (--cafile, --cert, --key) and id (-i);
// version=5 speaks MQTT 5 (default 3.1.1), as in
// mqtts://d1@127.0.0.1:8883?cafile=ca.pem&cert=d1.pem&key=d1-key.pem&version=5.
func clientArgs(t testing.TB, rawURL string) []string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		t.Fatalf("mqtttest: bad broker url %q", rawURL)
	}
	q := u.Query()
	version := "mqttv311"
	if q.Get("version") == "5" {
		version = "mqttv5"
	}
	args := []string{"-h", u.Hostname(), "-p", u.Port(), "-V", version}
	for _, f := range []struct{ key, flag string }{{"cafile", "--cafile"}, {"cert", "--cert"}, {"key", "--key"}, {"id", "-i"}} {
		if v := q.Get(f.key); v != "" {
			args = append(args, f.flag, v)
		}
	}
	if u.User != nil {
		args = append(args, "-u", u.User.Username())
		if p, ok := u.User.Password(); ok {
			args = append(args, "-P", p)
		}
	}
	return args
}

// Pub publishes one message with mosquitto_pub and fails the test on error.
// User and password may be given in the URL (tcp://user:pass@host:port).
func Pub(t testing.TB, url, topic, payload string, qos int) {
	t.Helper()
	if err := PubErr(t, url, topic, payload, qos); err != nil {
		t.Fatal(err)
	}
}

// PubErr publishes one message with mosquitto_pub and returns its error
// (with the program's output), e.g. to check that a broker refuses it.
func PubErr(t testing.TB, url, topic, payload string, qos int) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append(clientArgs(t, url), "-t", topic, "-m", payload, "-q", strconv.Itoa(qos))
	out, err := exec.CommandContext(ctx, binary(t, "mosquitto_pub"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mosquitto_pub %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Subscriber is a running mosquitto_sub.
type Subscriber struct {
	t     testing.TB
	lines chan string
	done  chan struct{}
	cmd   *exec.Cmd

	mu     sync.Mutex
	output []string // everything the program printed, for failure messages
}

// Sub runs mosquitto_sub -v on topic (a filter) until it has received n
// messages (n <= 0: until the test ends), and returns once the broker has
// acknowledged the subscription. Messages are lines "TOPIC PAYLOAD".
func Sub(t testing.TB, url, topic string, n int) *Subscriber {
	t.Helper()
	args := append(clientArgs(t, url), "-t", topic, "-v", "-d")
	if n > 0 {
		args = append(args, "-C", strconv.Itoa(n))
	}
	// mosquitto_sub writes through stdio: line-buffer it so lines (and the
	// SUBACK trace that tells the subscription is active) arrive at once.
	cmd := exec.Command(binary(t, "mosquitto_sub"), args...)
	if sb, err := exec.LookPath("stdbuf"); err == nil {
		cmd = exec.Command(sb, append([]string{"-oL", "-eL", binary(t, "mosquitto_sub")}, args...)...)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	s := &Subscriber{t: t, lines: make(chan string, 1<<16), done: make(chan struct{}), cmd: cmd}
	subscribed := make(chan struct{})
	go func() {
		defer close(s.done)
		defer close(s.lines)
		once := sync.Once{}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.output = append(s.output, line)
			s.mu.Unlock()
			switch {
			case strings.HasPrefix(line, "Subscribed (mid"):
				once.Do(func() { close(subscribed) })
			case strings.HasPrefix(line, "Client ") && (strings.Contains(line, " sending ") || strings.Contains(line, " received ")):
				// -d protocol trace
			default:
				s.lines <- line
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
	})
	select {
	case <-subscribed:
	case <-s.done:
		t.Fatalf("mosquitto_sub exited before subscribing:\n%s", s.Output())
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto_sub not subscribed after 10s:\n%s", s.Output())
	}
	return s
}

// Output returns everything mosquitto_sub printed so far.
func (s *Subscriber) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.output, "\n")
}

// Lines returns the received messages ("TOPIC PAYLOAD"); closed when the
// program exits.
func (s *Subscriber) Lines() <-chan string { return s.lines }

// Wait waits for n messages and returns them, failing the test after timeout.
func (s *Subscriber) Wait(n int, timeout time.Duration) []string {
	s.t.Helper()
	var got []string
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("mosquitto_sub exited after %d of %d messages:\n%s", len(got), n, s.Output())
			}
			got = append(got, l)
		case <-deadline:
			s.t.Fatalf("received %d of %d messages in %s: %q\n%s", len(got), n, timeout, got, s.Output())
		}
	}
	return got
}
