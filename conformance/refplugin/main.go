// Command refplugin is the reference Go KMS plugin of the conformance harness: the shape of upstream
// plugins (k8s.io/kms/pkg/service GRPCService over a Service holding AES-256-GCM keys in memory).
//
// It mirrors the part of the atrest CLI contract the harness and the benchmark use, so the same Go tests
// can be pointed at either implementation:
//
//	refplugin keys init   --keyring FILE
//	refplugin keys rotate --keyring FILE
//	refplugin serve --listen unix:///PATH --keyring FILE [--health-listen off] [--log-level LEVEL]
//	                [--status-version v2beta1|v2]
//
// serve answers v2.KeyManagementService (through the upstream adapter) and v1beta1.KeyManagementService
// on one socket; SIGHUP reloads the keyring; SIGTERM stops, removes the socket and exits 0.
// The keyring file is this program's own JSON format; it is not atrest's.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	kmsv1beta1 "k8s.io/kms/apis/v1beta1"
	kmsv2api "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"
)

type keyringFile struct {
	Active string            `json:"active"`
	Keys   map[string]string `json:"keys"` // key id -> hex AES-256 key
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "refplugin:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) >= 2 && args[0] == "keys" {
		fs := flag.NewFlagSet("keys", flag.ContinueOnError)
		path := fs.String("keyring", "", "keyring file")
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		if *path == "" {
			return errors.New("--keyring is required")
		}
		switch args[1] {
		case "init":
			if _, err := os.Stat(*path); err == nil {
				return fmt.Errorf("%s already exists", *path)
			}
			return addKey(*path, &keyringFile{Keys: map[string]string{}})
		case "rotate":
			kr, err := readKeyring(*path)
			if err != nil {
				return err
			}
			return addKey(*path, kr)
		}
	}
	if len(args) >= 1 && args[0] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		listen := fs.String("listen", "", "unix:///path")
		path := fs.String("keyring", "", "keyring file (omit for one random in-memory key)")
		_ = fs.String("health-listen", "off", "accepted for CLI compatibility; ignored")
		_ = fs.String("log-level", "warn", "accepted for CLI compatibility; ignored")
		version := fs.String("status-version", "v2beta1", "version v2 Status answers (v2beta1 or v2)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *version != "v2beta1" && *version != "v2" {
			return fmt.Errorf("--status-version must be v2beta1 or v2, got %q", *version)
		}
		return serve(*listen, *path, *version)
	}
	return errors.New("usage: refplugin keys init|rotate --keyring FILE | serve --listen unix:///PATH [--keyring FILE]")
}

func addKey(path string, kr *keyringFile) error {
	key := make([]byte, 32)
	id := make([]byte, 8)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if _, err := rand.Read(id); err != nil {
		return err
	}
	kid := "ref-" + hex.EncodeToString(id)
	kr.Keys[kid] = hex.EncodeToString(key)
	kr.Active = kid
	data, err := json.Marshal(kr)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readKeyring(path string) (*keyringFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kr keyringFile
	if err := json.Unmarshal(data, &kr); err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return &kr, nil
}

// keys is an immutable snapshot; SIGHUP swaps the pointer.
type keys struct {
	active string
	aeads  map[string]cipher.AEAD
}

func loadKeys(path string) (*keys, error) {
	kr := &keyringFile{Keys: map[string]string{}}
	if path == "" {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		kr.Active = "ref-memory"
		kr.Keys[kr.Active] = hex.EncodeToString(raw)
	} else {
		var err error
		if kr, err = readKeyring(path); err != nil {
			return nil, err
		}
	}
	k := &keys{active: kr.Active, aeads: map[string]cipher.AEAD{}}
	for id, h := range kr.Keys {
		raw, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", id, err)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, err
		}
		if k.aeads[id], err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	if k.aeads[k.active] == nil {
		return nil, errors.New("keyring has no active key")
	}
	return k, nil
}

type plugin struct {
	keys          atomic.Pointer[keys]
	statusVersion string
}

// seal returns nonce || ciphertext || tag with the key id as AAD.
func (p *plugin) seal(plain []byte) (string, []byte, error) {
	k := p.keys.Load()
	aead := k.aeads[k.active]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, err
	}
	return k.active, aead.Seal(nonce, nonce, plain, []byte(k.active)), nil
}

func (p *plugin) open(keyID string, ct []byte) ([]byte, error) {
	aead := p.keys.Load().aeads[keyID]
	if aead == nil {
		return nil, errors.New("unknown key id")
	}
	if len(ct) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	plain, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(keyID))
	if err != nil {
		return nil, errors.New("decryption failed")
	}
	return plain, nil
}

// v2: the service.Service the upstream GRPCService adapter calls.
type v2 struct{ p *plugin }

var _ service.Service = v2{}

func (s v2) Encrypt(_ context.Context, uid string, plain []byte) (*service.EncryptResponse, error) {
	kid, ct, err := s.p.seal(plain)
	if err != nil {
		return nil, err
	}
	return &service.EncryptResponse{Ciphertext: ct, KeyID: kid}, nil
}

func (s v2) Decrypt(_ context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	return s.p.open(req.KeyID, req.Ciphertext)
}

func (s v2) Status(_ context.Context) (*service.StatusResponse, error) {
	return &service.StatusResponse{Version: s.p.statusVersion, Healthz: "ok", KeyID: s.p.keys.Load().active}, nil
}

// v1beta1 has no key id field: ciphertext = [len(keyID) 1][keyID][nonce 12][ct][tag 16].
type v1 struct {
	kmsv1beta1.UnimplementedKeyManagementServiceServer
	p *plugin
}

func (s *v1) Version(_ context.Context, _ *kmsv1beta1.VersionRequest) (*kmsv1beta1.VersionResponse, error) {
	return &kmsv1beta1.VersionResponse{Version: "v1beta1", RuntimeName: "refplugin", RuntimeVersion: "0.1.0"}, nil
}

func (s *v1) Encrypt(_ context.Context, req *kmsv1beta1.EncryptRequest) (*kmsv1beta1.EncryptResponse, error) {
	kid, ct, err := s.p.seal(req.Plain)
	if err != nil {
		return nil, err
	}
	out := append([]byte{byte(len(kid))}, kid...)
	return &kmsv1beta1.EncryptResponse{Cipher: append(out, ct...)}, nil
}

func (s *v1) Decrypt(_ context.Context, req *kmsv1beta1.DecryptRequest) (*kmsv1beta1.DecryptResponse, error) {
	c := req.Cipher
	if len(c) < 1 || len(c) < 1+int(c[0]) {
		return nil, errors.New("ciphertext too short")
	}
	plain, err := s.p.open(string(c[1:1+int(c[0])]), c[1+int(c[0]):])
	if err != nil {
		return nil, err
	}
	return &kmsv1beta1.DecryptResponse{Plain: plain}, nil
}

func serve(listen, keyringPath, statusVersion string) error {
	u, err := url.Parse(listen)
	if err != nil || u.Scheme != "unix" || u.Path == "" {
		return fmt.Errorf("--listen must be unix:///path, got %q", listen)
	}
	addr := u.Path
	if strings.HasPrefix(addr, "/@") {
		addr = addr[1:]
	}
	p := &plugin{statusVersion: statusVersion}
	k, err := loadKeys(keyringPath)
	if err != nil {
		return err
	}
	p.keys.Store(k)

	// A socket file left by a killed plugin would make Listen fail with EADDRINUSE.
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(addr)
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return err
	}
	// Same server options as service.GRPCService.ListenAndServe, plus the v1beta1 service on the same server.
	gs := grpc.NewServer(grpc.ConnectionTimeout(10 * time.Second))
	kmsv2api.RegisterKeyManagementServiceServer(gs, service.NewGRPCService(addr, 10*time.Second, v2{p}))
	kmsv1beta1.RegisterKeyManagementServiceServer(gs, &v1{p: p})

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				if k, err := loadKeys(keyringPath); err != nil {
					fmt.Fprintln(os.Stderr, "refplugin: reload failed:", err)
				} else {
					p.keys.Store(k)
				}
				continue
			}
			gs.Stop()
			return
		}
	}()
	err = gs.Serve(ln)
	_ = os.Remove(addr)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}
