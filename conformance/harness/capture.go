// Wire capture: a bare HTTP/2 listener on a UNIX socket that records the request pseudo-headers of the
// first request a gRPC client sends, so a test can state what a given client generation puts in
// `:authority` (the header Node's HTTP/2 server is strict about, spec §8b).
package harness

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Captured holds the pseudo-headers of one request.
type Captured struct {
	Authority string
	Path      string
}

// CaptureSocket listens on a fresh socket path and returns it with a channel that yields the headers of
// the first request received (or is closed without a value if none arrives within 20 s).
func CaptureSocket(t testing.TB) (string, <-chan Captured) {
	t.Helper()
	dir, err := os.MkdirTemp("", "atrest-cap-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "capture.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close(); _ = os.RemoveAll(dir) })
	out := make(chan Captured, 1)
	go func() {
		defer close(out)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		if c, err := readFirstRequest(conn); err == nil {
			out <- c
		}
	}()
	return sock, out
}

func readFirstRequest(conn net.Conn) (Captured, error) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(conn, preface); err != nil {
		return Captured{}, err
	}
	if string(preface) != http2.ClientPreface {
		return Captured{}, errors.New("not an HTTP/2 client preface")
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return Captured{}, err
	}
	var got Captured
	var block []byte
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		switch f.Name {
		case ":authority":
			got.Authority = f.Value
		case ":path":
			got.Path = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return Captured{}, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return Captured{}, err
				}
			}
		case *http2.HeadersFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				_, err := dec.Write(block)
				return got, err
			}
		case *http2.ContinuationFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				_, err := dec.Write(block)
				return got, err
			}
		}
	}
}
