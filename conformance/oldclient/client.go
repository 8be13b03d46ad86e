// Package oldclient is a KMS v1beta1 client built the way kube-apiserver 1.10–1.28 built its envelope
// service: google.golang.org/grpc pinned to v1.27 (the grpc-go of the Kubernetes 1.18 era), an insecure
// connection whose target is the bare socket path, a custom unix dialer, and wait-for-ready calls. Such a
// grpc-go derives `:authority` from the target verbatim, so it sends the raw path (e.g. /var/run/kms.sock),
// which a stock Node HTTP/2 server refuses (spec §8b).
//
// The three v1beta1 messages are hand-encoded (proto3: strings and bytes, fields 1–3) so that no
// generated code ties this module to a newer protobuf runtime.
package oldclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
)

const (
	methodVersion = "/v1beta1.KeyManagementService/Version"
	methodEncrypt = "/v1beta1.KeyManagementService/Encrypt"
	methodDecrypt = "/v1beta1.KeyManagementService/Decrypt"
	apiVersion    = "v1beta1"
)

// Client is a v1beta1 KMS client over one gRPC connection.
type Client struct {
	conn    *grpc.ClientConn
	timeout time.Duration
}

// Dial parses a unix:// endpoint and dials its path as the target, non-blocking, as the old API server did.
func Dial(endpoint string, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" {
		return nil, fmt.Errorf("invalid endpoint %q", endpoint)
	}
	addr := u.Path
	if strings.HasPrefix(addr, "/@") {
		addr = addr[1:]
	}
	conn, err := grpc.Dial(addr,
		grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
		grpc.WithDialer(func(string, time.Duration) (net.Conn, error) {
			return net.Dial("unix", addr)
		}))
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, timeout: timeout}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) call(method string, in, out *message) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.conn.Invoke(ctx, method, in, out)
}

// Version returns VersionResponse.version, runtime_name, runtime_version.
func (c *Client) Version() (string, string, string, error) {
	out := &message{}
	if err := c.call(methodVersion, &message{fields: map[int][]byte{1: []byte(apiVersion)}}, out); err != nil {
		return "", "", "", err
	}
	return string(out.fields[1]), string(out.fields[2]), string(out.fields[3]), nil
}

// Encrypt sends EncryptRequest{version, plain} and returns EncryptResponse.cipher.
func (c *Client) Encrypt(plain []byte) ([]byte, error) {
	out := &message{}
	err := c.call(methodEncrypt, &message{fields: map[int][]byte{1: []byte(apiVersion), 2: plain}}, out)
	return out.fields[1], err
}

// Decrypt sends DecryptRequest{version, cipher} and returns DecryptResponse.plain.
func (c *Client) Decrypt(cipher []byte) ([]byte, error) {
	out := &message{}
	err := c.call(methodDecrypt, &message{fields: map[int][]byte{1: []byte(apiVersion), 2: cipher}}, out)
	return out.fields[1], err
}

// message is any v1beta1 message: every field is a length-delimited string or bytes with a number 1–3.
// It satisfies golang/protobuf v1.3's proto.Message plus Marshaler/Unmarshaler, which grpc v1.27's
// codec uses as they are.
type message struct {
	fields map[int][]byte
}

func (m *message) Reset() { m.fields = nil }
func (m *message) String() string {
	return fmt.Sprintf("v1beta1 message with %d fields", len(m.fields))
}
func (m *message) ProtoMessage() {}

// Marshal writes fields in ascending order; proto3 omits empty ones.
func (m *message) Marshal() ([]byte, error) {
	var out []byte
	for n := 1; n <= 3; n++ {
		v := m.fields[n]
		if len(v) == 0 {
			continue
		}
		out = appendVarint(out, uint64(n)<<3|2)
		out = appendVarint(out, uint64(len(v)))
		out = append(out, v...)
	}
	return out, nil
}

// Unmarshal keeps length-delimited fields and skips anything else, as proto3 readers must.
func (m *message) Unmarshal(b []byte) error {
	m.fields = map[int][]byte{}
	for len(b) > 0 {
		key, n := readVarint(b)
		if n == 0 {
			return errors.New("bad field key")
		}
		b = b[n:]
		num, typ := int(key>>3), key&7
		var size uint64
		switch typ {
		case 0:
			if _, n = readVarint(b); n == 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
			continue
		case 1:
			size = 8
		case 5:
			size = 4
		case 2:
			if size, n = readVarint(b); n == 0 {
				return errors.New("bad length")
			}
			b = b[n:]
		default:
			return fmt.Errorf("unsupported wire type %d", typ)
		}
		if uint64(len(b)) < size {
			return errors.New("truncated field")
		}
		if typ == 2 {
			m.fields[num] = append([]byte{}, b[:size]...)
		}
		b = b[size:]
	}
	return nil
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func readVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}
