// Conformance scenarios: the plugin under test (ATREST_CMD) driven by the KMS client code of one
// k8s.io/apiserver line. This file is shared verbatim by every apiserver-vX.Y module (the other modules
// hold a symlink to it); what differs per line lives in line_test.go.
//
// Nothing here re-implements the client side: the gRPC services are upstream's NewGRPCService
// constructors, the transformers, health probes and the KMS v2 state machine come from
// encryptionconfig.LoadEncryptionConfig reading a config file that points at the plugin's socket,
// exactly as kube-apiserver builds them.
package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"atrest.dev/conformance/harness"
	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/klog/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

const callTimeout = 3 * time.Second // the API server's default provider timeout

var (
	secrets    = schema.GroupResource{Resource: "secrets"}    // served by the KMS v2 provider
	configmaps = schema.GroupResource{Resource: "configmaps"} // served by the KMS v1 provider
)

func TestMain(m *testing.M) {
	// The upstream code logs through klog (expected failures in the bad-input tests included); keep the
	// test output readable unless CONFORMANCE_KLOG=1.
	if os.Getenv("CONFORMANCE_KLOG") != "1" {
		klog.SetLogger(logr.Discard())
	}
	// KMS v1 is behind a deprecated, default-off gate from 1.29 on; kube-apiserver needs
	// --feature-gates=KMSv1=true to load a v1 provider, and so does the config loader here.
	if err := utilfeature.DefaultMutableFeatureGate.Set(string(features.KMSv1) + "=true"); err != nil {
		fmt.Fprintln(os.Stderr, "enable KMSv1 feature gate:", err)
		os.Exit(1)
	}
	fmt.Printf("conformance: k8s.io/apiserver %s against %q\n", apiserverLine, os.Getenv("ATREST_CMD"))
	os.Exit(m.Run())
}

// apiServer is one "kube-apiserver instance": an EncryptionConfiguration loaded by upstream code.
type apiServer struct {
	cfg    *encryptionconfig.EncryptionConfiguration
	cancel context.CancelFunc
	v1Name string
	v2Name string
}

var nameRe = regexp.MustCompile(`[^a-z0-9]+`)

// loadAPIServer writes an EncryptionConfiguration (secrets -> kms v2, configmaps -> kms v1, both on the
// plugin's socket) and loads it with LoadEncryptionConfig, which also primes the v2 state (Status +
// Encrypt of a fresh seed) inline.
func loadAPIServer(t *testing.T, p *harness.Plugin, tag string) *apiServer {
	t.Helper()
	base := strings.Trim(nameRe.ReplaceAllString(strings.ToLower(t.Name()+"-"+tag), "-"), "-")
	s := &apiServer{v1Name: base + "-v1", v2Name: base + "-v2"}
	config := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: %q, endpoint: %q, timeout: 3s}
      - identity: {}
  - resources: [configmaps]
    providers:
      - kms: {apiVersion: v1, name: %q, endpoint: %q, cachesize: 100, timeout: 3s}
      - identity: {}
`, s.v2Name, p.Endpoint(), s.v1Name, p.Endpoint())
	path := filepath.Join(p.Dir, "encryption-config-"+tag+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	t.Cleanup(cancel)
	cfg, err := loadEncryptionConfig(ctx, path, "conformance-"+tag)
	if err != nil {
		t.Fatalf("LoadEncryptionConfig: %v", err)
	}
	s.cfg = cfg
	return s
}

// healthChecks runs every KMS health check the API server would register (kms-provider-0 is the v2
// provider: Status; kms-provider-1 is the v1 provider: Encrypt("ping") then Decrypt).
func (s *apiServer) healthChecks() error {
	var errs []string
	for _, c := range s.cfg.HealthChecks {
		if err := c.Check(httptest.NewRequest("GET", "/healthz/"+c.Name(), nil)); err != nil {
			errs = append(errs, c.Name()+": "+err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (s *apiServer) write(t *testing.T, gr schema.GroupResource, key string, plain []byte) []byte {
	t.Helper()
	out, err := s.cfg.Transformers[gr].TransformToStorage(context.Background(), plain, value.DefaultContext(key))
	if err != nil {
		t.Fatalf("TransformToStorage(%s %s): %v", gr, key, err)
	}
	return out
}

func (s *apiServer) read(gr schema.GroupResource, key string, stored []byte) ([]byte, bool, error) {
	return s.cfg.Transformers[gr].TransformFromStorage(context.Background(), stored, value.DefaultContext(key))
}

func (s *apiServer) v2Prefix() string { return "k8s:enc:kms:v2:" + s.v2Name + ":" }
func (s *apiServer) v1Prefix() string { return "k8s:enc:kms:v1:" + s.v1Name + ":" }

// storedKeyID decodes the EncryptedObject of a stored v2 value.
func (s *apiServer) storedObject(t *testing.T, stored []byte) encryptedObject {
	t.Helper()
	if !bytes.HasPrefix(stored, []byte(s.v2Prefix())) {
		t.Fatalf("stored value does not start with %q", s.v2Prefix())
	}
	o, err := decodeEncryptedObject(stored[len(s.v2Prefix()):])
	if err != nil {
		t.Fatalf("decode EncryptedObject: %v", err)
	}
	return o
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newV1Service(t *testing.T, p *harness.Plugin) envelope.Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := envelope.NewGRPCService(ctx, p.Endpoint(), callTimeout)
	if err != nil {
		t.Fatalf("envelope.NewGRPCService: %v", err)
	}
	return svc
}

func newV2Service(t *testing.T, p *harness.Plugin) kmsservice.Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := kmsv2.NewGRPCService(ctx, p.Endpoint(), "conformance", callTimeout)
	if err != nil {
		t.Fatalf("kmsv2.NewGRPCService: %v", err)
	}
	return svc
}

func status(t *testing.T, svc kmsservice.Service) *kmsservice.StatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatalf("v2 Status: %v", err)
	}
	return st
}

func TestV1EnvelopeService(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	svc := newV1Service(t, p)

	t.Run("passes the version check and round-trips a 32-byte DEK", func(t *testing.T) {
		dek := randomBytes(t, 32)
		ct, err := svc.Encrypt(dek)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		if len(ct) == 0 || bytes.Contains(ct, dek) {
			t.Fatalf("ciphertext is empty or contains the plaintext")
		}
		got, err := svc.Decrypt(ct)
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if !bytes.Equal(got, dek) {
			t.Fatal("Decrypt returned different bytes")
		}
	})

	t.Run("gives distinct ciphertexts for the same plaintext", func(t *testing.T) {
		a, errA := svc.Encrypt([]byte("ping"))
		b, errB := svc.Encrypt([]byte("ping"))
		if errA != nil || errB != nil {
			t.Fatalf("Encrypt: %v %v", errA, errB)
		}
		if bytes.Equal(a, b) {
			t.Fatal("two encryptions of the same plaintext are identical")
		}
	})
}

func TestV2Service(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	svc := newV2Service(t, p)

	st := status(t, svc)
	t.Run("reports a healthy Status the API server accepts", func(t *testing.T) {
		if st.Healthz != "ok" {
			t.Errorf("healthz = %q, want ok", st.Healthz)
		}
		if !statusVersionAccepted(st.Version) {
			t.Errorf("version = %q, want one of %q (what this line's health probe accepts)", st.Version, acceptedStatusVersions)
		}
		if _, err := kmsv2.ValidateKeyID(st.KeyID); err != nil {
			t.Errorf("key_id rejected: %v", err)
		}
	})

	t.Run("encrypts a seed under the Status key id and decrypts it", func(t *testing.T) {
		seed := randomBytes(t, 32)
		ctx := context.Background()
		res, err := svc.Encrypt(ctx, "5f0cc4a6-6a0e-4c3d-9a63-2f2a3c0e8d11", seed)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		if res.KeyID != st.KeyID {
			t.Errorf("Encrypt key_id differs from Status key_id")
		}
		// The API server validates every Encrypt response with this function before using it.
		if err := kmsv2.ValidateEncryptedObject(encryptedObjectForValidation(res)); err != nil {
			t.Fatalf("EncryptResponse rejected by the API server's validation: %v", err)
		}
		got, err := svc.Decrypt(ctx, "0b9fc1c5-1f43-4e9b-8d0c-6d3f0b3f2a77", &kmsservice.DecryptRequest{
			Ciphertext: res.Ciphertext, KeyID: res.KeyID, Annotations: res.Annotations,
		})
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if !bytes.Equal(got, seed) {
			t.Fatal("Decrypt returned different bytes")
		}
	})
}

func statusVersionAccepted(v string) bool {
	for _, a := range acceptedStatusVersions {
		if v == a {
			return true
		}
	}
	return false
}

// TestStatusVersionFlag starts the plugin with each --status-version and runs this line's KMS health
// probes on it: a version the line accepts passes, any other fails on the version check (1.27/1.28
// accept only "v2beta1", the plugin's default; 1.29+ accept both).
func TestStatusVersionFlag(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"v2beta1", "v2"} {
		version := version
		t.Run("--status-version "+version, func(t *testing.T) {
			t.Parallel()
			p := harness.New(t)
			p.ServeArgs = []string{"--status-version", version}
			p.Start()
			if got := status(t, newV2Service(t, p)).Version; got != version {
				t.Fatalf("Status version = %q, want %q", got, version)
			}
			api := loadAPIServer(t, p, "a")
			err := api.healthChecks()
			switch {
			case statusVersionAccepted(version) && err != nil:
				t.Fatalf("k8s.io/apiserver %s refuses Status version %q: %v", apiserverLine, version, err)
			case !statusVersionAccepted(version) && (err == nil || !strings.Contains(err.Error(), "expected KMSv2 API version")):
				t.Fatalf("k8s.io/apiserver %s health probe with Status version %q: got %v, want it refused on the version", apiserverLine, version, err)
			case err != nil:
				t.Logf("refused as expected: %v", err)
			}
		})
	}
}

func TestEncryptionConfigTransformers(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	api := loadAPIServer(t, p, "a")
	st := status(t, newV2Service(t, p))

	t.Run("passes the API server's KMS health probes (v2 Status, v1 ping)", func(t *testing.T) {
		if len(api.cfg.HealthChecks) != 2 {
			t.Fatalf("got %d health checks, want kms-provider-0 and kms-provider-1", len(api.cfg.HealthChecks))
		}
		if err := api.healthChecks(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("writes and reads secrets through the KMS v2 transformer", func(t *testing.T) {
		plain := []byte("k8s\x00secret payload")
		stored := api.write(t, secrets, "/registry/secrets/default/s1", plain)
		if obj := api.storedObject(t, stored); obj.KeyID != st.KeyID {
			t.Errorf("stored keyID differs from the plugin's Status key_id")
		}
		got, stale, err := api.read(secrets, "/registry/secrets/default/s1", stored)
		if err != nil || stale || !bytes.Equal(got, plain) {
			t.Fatalf("read back: equal=%v stale=%v err=%v", bytes.Equal(got, plain), stale, err)
		}
	})

	t.Run("writes and reads configmaps through the KMS v1 transformer", func(t *testing.T) {
		plain := []byte("k8s\x00configmap payload")
		stored := api.write(t, configmaps, "/registry/configmaps/default/c1", plain)
		if !bytes.HasPrefix(stored, []byte(api.v1Prefix())) {
			t.Fatalf("stored value does not start with %q", api.v1Prefix())
		}
		got, stale, err := api.read(configmaps, "/registry/configmaps/default/c1", stored)
		if err != nil || stale || !bytes.Equal(got, plain) {
			t.Fatalf("read back: equal=%v stale=%v err=%v", bytes.Equal(got, plain), stale, err)
		}
	})

	t.Run("a second API server instance reads values the first one wrote", func(t *testing.T) {
		v2 := api.write(t, secrets, "/registry/secrets/default/s2", []byte("two"))
		v1 := api.write(t, configmaps, "/registry/configmaps/default/c2", []byte("one"))
		other := loadAPIServer(t, p, "b")
		if got, _, err := other.readAs(api, secrets, "/registry/secrets/default/s2", v2); err != nil || string(got) != "two" {
			t.Fatalf("v2 value: %q %v", got, err)
		}
		if got, _, err := other.readAs(api, configmaps, "/registry/configmaps/default/c2", v1); err != nil || string(got) != "one" {
			t.Fatalf("v1 value: %q %v", got, err)
		}
	})
}

// readAs reads a value written by another instance whose provider names differ: the stored prefix is
// rewritten to this instance's provider name (the bytes after the prefix are what matters).
func (s *apiServer) readAs(writer *apiServer, gr schema.GroupResource, key string, stored []byte) ([]byte, bool, error) {
	return s.read(gr, key, s.renamed(writer, stored))
}

func (s *apiServer) renamed(writer *apiServer, stored []byte) []byte {
	for _, pair := range [][2]string{{writer.v2Prefix(), s.v2Prefix()}, {writer.v1Prefix(), s.v1Prefix()}} {
		if bytes.HasPrefix(stored, []byte(pair[0])) {
			return append([]byte(pair[1]), stored[len(pair[0]):]...)
		}
	}
	return stored
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	svc2 := newV2Service(t, p)
	svc1 := newV1Service(t, p)
	api := loadAPIServer(t, p, "a")

	oldKeyID := status(t, svc2).KeyID
	oldSecret := api.write(t, secrets, "/registry/secrets/default/old", []byte("old secret"))
	oldConfigMap := api.write(t, configmaps, "/registry/configmaps/default/old", []byte("old configmap"))
	oldSeed := randomBytes(t, 32)
	oldEnc, err := svc2.Encrypt(context.Background(), "e3c5e1de-8e1c-4d1b-9b1e-0e5c1f7f2d01", oldSeed)
	if err != nil {
		t.Fatalf("Encrypt before rotation: %v", err)
	}
	oldV1, err := svc1.Encrypt([]byte("old v1 dek"))
	if err != nil {
		t.Fatalf("v1 Encrypt before rotation: %v", err)
	}
	rotatedAt := time.Now()

	p.Rotate()
	p.Reload()

	var newKeyID string
	t.Run("Status reports a new key id after keys rotate and SIGHUP", func(t *testing.T) {
		err := harness.Eventually(20*time.Second, func() error {
			newKeyID = status(t, svc2).KeyID
			if newKeyID == oldKeyID {
				return fmt.Errorf("Status key_id did not change within 20s of SIGHUP")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	if newKeyID == oldKeyID {
		t.FailNow()
	}

	t.Run("Encrypt answers under the new key id", func(t *testing.T) {
		res, err := svc2.Encrypt(context.Background(), "7d6c1a0e-2f2b-4a55-8c61-3b5f0e1d9a02", randomBytes(t, 32))
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		if res.KeyID != newKeyID {
			t.Error("Encrypt key_id is not the new Status key_id")
		}
	})

	t.Run("ciphertexts made before the rotation still decrypt", func(t *testing.T) {
		got, err := svc2.Decrypt(context.Background(), "2a0c8f1e-5b7d-4e3a-9c1f-8d2e6b4a7c03", &kmsservice.DecryptRequest{
			Ciphertext: oldEnc.Ciphertext, KeyID: oldEnc.KeyID, Annotations: oldEnc.Annotations,
		})
		if err != nil || !bytes.Equal(got, oldSeed) {
			t.Fatalf("v2 Decrypt of a pre-rotation ciphertext: equal=%v err=%v", bytes.Equal(got, oldSeed), err)
		}
		got, err = svc1.Decrypt(oldV1)
		if err != nil || string(got) != "old v1 dek" {
			t.Fatalf("v1 Decrypt of a pre-rotation ciphertext: %v", err)
		}
	})

	t.Run("the running API server rotates its seed on its next probe and marks old values stale", func(t *testing.T) {
		// The probe caches a healthy result for 20 s (kmsPluginHealthzPositiveTTL); the API server's own
		// 1-minute poll would pick the new key id up the same way.
		wait := time.Until(rotatedAt.Add(21 * time.Second))
		t.Logf("waiting %v for the API server's health probe cache to expire", wait.Round(time.Second))
		time.Sleep(wait)
		err := harness.Eventually(15*time.Second, func() error {
			if err := api.healthChecks(); err != nil {
				return err
			}
			obj := api.storedObject(t, api.write(t, secrets, "/registry/secrets/default/probe", []byte("x")))
			if obj.KeyID != newKeyID {
				return fmt.Errorf("new writes still carry the old key id")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		got, stale, err := api.read(secrets, "/registry/secrets/default/old", oldSecret)
		if err != nil || string(got) != "old secret" {
			t.Fatalf("read pre-rotation secret: %v", err)
		}
		if !stale {
			t.Error("pre-rotation secret is not reported stale")
		}
		fresh := api.write(t, secrets, "/registry/secrets/default/new", []byte("new secret"))
		if _, stale, err := api.read(secrets, "/registry/secrets/default/new", fresh); err != nil || stale {
			t.Errorf("post-rotation secret: stale=%v err=%v", stale, err)
		}
	})

	t.Run("a restarted API server decrypts pre-rotation values with the plugin's old key", func(t *testing.T) {
		fresh := loadAPIServer(t, p, "b") // empty DEK caches: every read is a Decrypt RPC
		got, stale, err := fresh.readAs(api, secrets, "/registry/secrets/default/old", oldSecret)
		if err != nil || string(got) != "old secret" {
			t.Fatalf("v2 value: %v", err)
		}
		if !stale {
			t.Error("pre-rotation secret is not reported stale by the new instance")
		}
		got, _, err = fresh.readAs(api, configmaps, "/registry/configmaps/default/old", oldConfigMap)
		if err != nil || string(got) != "old configmap" {
			t.Fatalf("v1 value: %v", err)
		}
	})
}

func TestPluginRestartWhileClientConnected(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	svc1 := newV1Service(t, p)
	svc2 := newV2Service(t, p)
	api := loadAPIServer(t, p, "a")
	before := api.write(t, configmaps, "/registry/configmaps/default/c", []byte("before restart"))
	if _, err := svc1.Encrypt([]byte("warm up")); err != nil {
		t.Fatalf("v1 Encrypt: %v", err)
	}
	status(t, svc2)

	t.Run("SIGTERM exits 0 and removes the socket", func(t *testing.T) {
		if err := p.Stop(); err != nil {
			t.Fatalf("plugin exit: %v", err)
		}
		if p.SocketExists() {
			t.Error("socket file still present after SIGTERM")
		}
	})

	p.Start()

	// Same client objects as before the restart: grpc-go reconnects on its own (wait-for-ready calls).
	t.Run("the same v1 client object recovers", func(t *testing.T) {
		err := harness.Eventually(30*time.Second, func() error {
			ct, err := svc1.Encrypt([]byte("after restart"))
			if err != nil {
				return err
			}
			got, err := svc1.Decrypt(ct)
			if err == nil && string(got) != "after restart" {
				err = fmt.Errorf("round trip mismatch")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the same v2 client object recovers", func(t *testing.T) {
		err := harness.Eventually(30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			_, err := svc2.Status(ctx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the same API server transformers keep writing and reading", func(t *testing.T) {
		err := harness.Eventually(30*time.Second, func() error {
			stored, err := api.cfg.Transformers[configmaps].TransformToStorage(context.Background(), []byte("after"), value.DefaultContext("/registry/configmaps/default/d"))
			if err != nil {
				return err
			}
			_, _, err = api.read(configmaps, "/registry/configmaps/default/d", stored)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err := api.read(configmaps, "/registry/configmaps/default/c", before); err != nil || string(got) != "before restart" {
			t.Fatalf("value written before the restart: %v", err)
		}
		secret := api.write(t, secrets, "/registry/secrets/default/s", []byte("v2 after restart"))
		if got, _, err := api.read(secrets, "/registry/secrets/default/s", secret); err != nil || string(got) != "v2 after restart" {
			t.Fatalf("v2 round trip after restart: %v", err)
		}
	})
}

func TestPluginStartingAfterTheAPIServer(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	// The API server loads its config while the plugin is not up yet (both are often static pods): the
	// inline v2 prime fails after the call timeout and a background probe retries every 10 s.
	api := loadAPIServer(t, p, "a")
	p.Start()

	t.Run("the v2 transformer becomes writable once the plugin is up", func(t *testing.T) {
		err := harness.Eventually(40*time.Second, func() error {
			stored, err := api.cfg.Transformers[secrets].TransformToStorage(context.Background(), []byte("late"), value.DefaultContext("/registry/secrets/default/late"))
			if err != nil {
				return err
			}
			got, _, err := api.read(secrets, "/registry/secrets/default/late", stored)
			if err == nil && string(got) != "late" {
				err = fmt.Errorf("round trip mismatch")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the v1 transformer and both health probes work", func(t *testing.T) {
		stored := api.write(t, configmaps, "/registry/configmaps/default/late", []byte("late v1"))
		if got, _, err := api.read(configmaps, "/registry/configmaps/default/late", stored); err != nil || string(got) != "late v1" {
			t.Fatalf("v1 round trip: %v", err)
		}
		if err := harness.Eventually(15*time.Second, api.healthChecks); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStaleSocketFromKilledPlugin(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	svc2 := newV2Service(t, p)
	keyID := status(t, svc2).KeyID
	p.Kill()
	if !p.SocketExists() {
		t.Fatal("precondition: the killed plugin should have left its socket file behind")
	}

	t.Run("a new plugin starts on the path of a stale socket and serves", func(t *testing.T) {
		p.Start()
		err := harness.Eventually(30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			st, err := svc2.Status(ctx)
			if err == nil && st.KeyID != keyID {
				err = fmt.Errorf("key id changed across a restart without rotation")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		svc1 := newV1Service(t, p)
		ct, err := svc1.Encrypt([]byte("after stale socket"))
		if err != nil {
			t.Fatalf("v1 Encrypt: %v", err)
		}
		if got, err := svc1.Decrypt(ct); err != nil || string(got) != "after stale socket" {
			t.Fatalf("v1 Decrypt: %v", err)
		}
	})
}

func TestBadInputIsRejected(t *testing.T) {
	t.Parallel()
	p := harness.New(t)
	p.Start()
	svc1 := newV1Service(t, p)
	svc2 := newV2Service(t, p)
	ctx := context.Background()

	v1ct, err := svc1.Encrypt(randomBytes(t, 32))
	if err != nil {
		t.Fatalf("v1 Encrypt: %v", err)
	}
	v2res, err := svc2.Encrypt(ctx, "c1d2e3f4-0000-4000-8000-000000000001", randomBytes(t, 32))
	if err != nil {
		t.Fatalf("v2 Encrypt: %v", err)
	}

	t.Run("v1 Decrypt refuses a tampered, a truncated and an empty ciphertext", func(t *testing.T) {
		for name, ct := range map[string][]byte{
			"last byte flipped":   flipped(v1ct, len(v1ct)-1),
			"middle byte flipped": flipped(v1ct, len(v1ct)/2),
			"truncated":           v1ct[:len(v1ct)/2],
			"random":              randomBytes(t, len(v1ct)),
			"empty":               {},
		} {
			if _, err := svc1.Decrypt(ct); err == nil {
				t.Errorf("%s: Decrypt succeeded", name)
			}
		}
	})

	t.Run("v2 Decrypt refuses an unknown key id and a tampered ciphertext", func(t *testing.T) {
		cases := map[string]*kmsservice.DecryptRequest{
			"unknown key id":     {Ciphertext: v2res.Ciphertext, KeyID: "no-such-key-id", Annotations: v2res.Annotations},
			"last byte flipped":  {Ciphertext: flipped(v2res.Ciphertext, len(v2res.Ciphertext)-1), KeyID: v2res.KeyID, Annotations: v2res.Annotations},
			"first byte flipped": {Ciphertext: flipped(v2res.Ciphertext, 0), KeyID: v2res.KeyID, Annotations: v2res.Annotations},
			"empty ciphertext":   {Ciphertext: []byte{}, KeyID: v2res.KeyID, Annotations: v2res.Annotations},
		}
		for name, req := range cases {
			if _, err := svc2.Decrypt(ctx, "c1d2e3f4-0000-4000-8000-000000000002", req); err == nil {
				t.Errorf("%s: Decrypt succeeded", name)
			}
		}
	})

	t.Run("the API server's transformers refuse stored values with a tampered DEK source or unknown key id", func(t *testing.T) {
		writer := loadAPIServer(t, p, "a")
		stored := writer.write(t, secrets, "/registry/secrets/default/s", []byte("secret"))
		storedV1 := writer.write(t, configmaps, "/registry/configmaps/default/c", []byte("configmap"))
		reader := loadAPIServer(t, p, "b") // cold caches, so every read reaches the plugin

		obj := writer.storedObject(t, stored)
		tamperedSource := obj
		tamperedSource.EncryptedDEKSource = flipped(obj.EncryptedDEKSource, len(obj.EncryptedDEKSource)-1)
		unknownKey := obj
		unknownKey.KeyID = "no-such-key-id"
		for name, o := range map[string]encryptedObject{"tampered DEK source": tamperedSource, "unknown key id": unknownKey} {
			raw, err := encodeEncryptedObject(o)
			if err != nil {
				t.Fatal(err)
			}
			value := append([]byte(reader.v2Prefix()), raw...)
			if _, _, err := reader.read(secrets, "/registry/secrets/default/s", value); err == nil {
				t.Errorf("v2 %s: read succeeded", name)
			}
		}

		// kms v1 value: [prefix][len(EDEK) 2][EDEK][AES-GCM payload]; flip the EDEK's last byte.
		body := append([]byte{}, storedV1[len(writer.v1Prefix()):]...)
		edekLen := int(body[0])<<8 | int(body[1])
		body[2+edekLen-1] ^= 0x01
		if _, _, err := reader.read(configmaps, "/registry/configmaps/default/c", append([]byte(reader.v1Prefix()), body...)); err == nil {
			t.Error("v1 tampered EDEK: read succeeded")
		}
	})
}

func flipped(b []byte, i int) []byte {
	out := append([]byte{}, b...)
	out[i] ^= 0x01
	return out
}

// TestClientAuthorityOnTheWire records what this line's clients put in :authority (the detail that makes
// API server generations differ on the wire; see spec §5.5 and §8b). The other tests prove the plugin
// answers them.
func TestClientAuthorityOnTheWire(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		api  string
		call func(endpoint string) error
		path string
	}{
		{"v1", func(endpoint string) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			svc, err := envelope.NewGRPCService(ctx, endpoint, callTimeout)
			if err == nil {
				_, err = svc.Encrypt([]byte("ping"))
			}
			return err
		}, "/v1beta1.KeyManagementService/Version"},
		{"v2", func(endpoint string) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			svc, err := kmsv2.NewGRPCService(ctx, endpoint, "capture", callTimeout)
			if err == nil {
				_, err = svc.Status(ctx)
			}
			return err
		}, "/v2.KeyManagementService/Status"},
	} {
		t.Run(tc.api+" client sends the expected :authority", func(t *testing.T) {
			sock, got := harness.CaptureSocket(t)
			go func() { _ = tc.call("unix://" + sock) }() // fails once the capture closes; only the headers matter
			select {
			case c, ok := <-got:
				if !ok {
					t.Fatal("no request captured")
				}
				want := expectedAuthority(tc.api, sock)
				t.Logf("k8s.io/apiserver %s %s client: :authority=%q :path=%q", apiserverLine, tc.api, c.Authority, c.Path)
				if c.Path != tc.path {
					t.Errorf(":path = %q, want %q", c.Path, tc.path)
				}
				if c.Authority != want {
					t.Errorf(":authority = %q, want %q", c.Authority, want)
				}
			case <-time.After(25 * time.Second):
				t.Fatal("timed out waiting for the client's request")
			}
		})
	}
}
