// The 1.10–1.28-era v1beta1 client against the plugin under test (ATREST_CMD).
package oldclient

import (
	"bytes"
	"testing"
	"time"

	"atrest.dev/conformance/harness"
)

func TestOldClientSendsTheRawSocketPathAsAuthority(t *testing.T) {
	sock, got := harness.CaptureSocket(t)
	c, err := Dial("unix://"+sock, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _, _, _ = c.Version() }()
	select {
	case h, ok := <-got:
		if !ok {
			t.Fatal("no request captured")
		}
		t.Logf("grpc-go v1.27.1 client: :authority=%q :path=%q", h.Authority, h.Path)
		if h.Authority != sock {
			t.Errorf(":authority = %q, want the raw socket path %q", h.Authority, sock)
		}
		if h.Path != methodVersion {
			t.Errorf(":path = %q, want %q", h.Path, methodVersion)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("timed out waiting for the client's request")
	}
}

func TestOldClientVersionEncryptDecrypt(t *testing.T) {
	p := harness.New(t)
	p.Start()
	c, err := Dial(p.Endpoint(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("Version answers v1beta1", func(t *testing.T) {
		v, name, _, err := c.Version()
		if err != nil {
			t.Fatalf("Version: %v", err)
		}
		if v != "v1beta1" {
			t.Errorf("version = %q, want v1beta1", v)
		}
		if name == "" {
			t.Error("runtime_name is empty")
		}
	})

	dek := []byte("0123456789abcdef0123456789abcdef")
	var ct []byte
	t.Run("Encrypt then Decrypt round-trips a DEK and the ping probe", func(t *testing.T) {
		for _, plain := range [][]byte{dek, []byte("ping")} {
			out, err := c.Encrypt(plain)
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if len(out) == 0 || bytes.Contains(out, plain) {
				t.Fatal("ciphertext is empty or contains the plaintext")
			}
			got, err := c.Decrypt(out)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("Decrypt returned different bytes")
			}
			if ct == nil {
				ct = out
			}
		}
	})

	t.Run("Decrypt refuses a tampered ciphertext", func(t *testing.T) {
		if ct == nil {
			t.Fatal("no ciphertext from the previous step")
		}
		bad := append([]byte{}, ct...)
		bad[len(bad)-1] ^= 1
		if _, err := c.Decrypt(bad); err == nil {
			t.Fatal("Decrypt of a tampered ciphertext succeeded")
		}
	})

	t.Run("the same client recovers after a plugin restart", func(t *testing.T) {
		if err := p.Stop(); err != nil {
			t.Fatalf("plugin exit: %v", err)
		}
		p.Start()
		err := harness.Eventually(30*time.Second, func() error {
			out, err := c.Encrypt(dek)
			if err == nil {
				_, err = c.Decrypt(out)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
