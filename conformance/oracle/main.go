// atrest-oracle: loads an EncryptionConfiguration with kube-apiserver's own loader
// (k8s.io/apiserver/pkg/server/options/encryptionconfig) and transforms values to and from storage with
// the transformers it builds, so atrest's TypeScript implementation can be compared against the real one.
//
// Protocol: one JSON request per line on stdin, one JSON response per line on stdout.
//
//	{"op":"load","config":PATH,"reload":false,"keep":true}
//	    -> {"ok":true} | {"ok":false,"error":"..."}
//	    keep=false (verdict only) loads with an already cancelled context, so KMS plugins are not probed
//	    and a missing socket costs nothing; keep=true makes it the active configuration for transforms.
//	{"op":"toStorage","group":"","resource":"secrets","key":"/registry/secrets/ns/n","data":BASE64}
//	    -> {"ok":true,"data":BASE64}
//	{"op":"fromStorage",...same fields...}
//	    -> {"ok":true,"data":BASE64,"stale":bool}
//	{"op":"bench","direction":"toStorage"|"fromStorage","group":"","resource":"secrets","key":K,"size":1024,"n":N}
//	    -> {"ok":true,"n":N,"ns":TOTAL_NANOSECONDS}
//
// Flags: -kms-v1=true|false sets the KMSv1 feature gate (deprecated, off by default upstream since 1.29).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/klog/v2"
)

type request struct {
	Op        string `json:"op"`
	Config    string `json:"config"`
	Reload    bool   `json:"reload"`
	Keep      bool   `json:"keep"`
	Group     string `json:"group"`
	Resource  string `json:"resource"`
	Key       string `json:"key"`
	Data      string `json:"data"`
	Direction string `json:"direction"`
	Size      int    `json:"size"`
	N         int    `json:"n"`
}

type response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  string `json:"data,omitempty"`
	Stale bool   `json:"stale,omitempty"`
	N     int    `json:"n,omitempty"`
	NS    int64  `json:"ns,omitempty"`
}

type oracle struct {
	active encryptionconfig.StaticTransformers
	cancel context.CancelFunc
}

func main() {
	kmsV1 := flag.Bool("kms-v1", true, "enable the KMSv1 feature gate")
	flag.Parse()

	// klog would interleave with nothing on stdout, but keep stderr quiet for the caller's diagnostics.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)

	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(map[string]bool{"KMSv1": *kmsV1}); err != nil {
		fmt.Fprintf(os.Stderr, "atrest-oracle: setting KMSv1=%v: %v\n", *kmsV1, err)
		os.Exit(2)
	}

	o := &oracle{}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		var resp response
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			resp = response{Error: "bad request: " + err.Error()}
		} else {
			resp = o.handle(req)
		}
		_ = enc.Encode(resp)
		_ = out.Flush()
	}
	if o.cancel != nil {
		o.cancel()
	}
}

func fail(err error) response { return response{Error: err.Error()} }

func (o *oracle) handle(req request) response {
	switch req.Op {
	case "load":
		return o.load(req)
	case "toStorage", "fromStorage":
		return o.transform(req)
	case "bench":
		return o.bench(req)
	default:
		return response{Error: fmt.Sprintf("unknown op %q", req.Op)}
	}
}

func (o *oracle) load(req request) response {
	ctx, cancel := context.WithCancel(context.Background())
	if !req.Keep {
		cancel()
	}
	cfg, err := encryptionconfig.LoadEncryptionConfig(ctx, req.Config, req.Reload, "atrest-oracle")
	if err != nil {
		cancel()
		return fail(err)
	}
	if !req.Keep {
		return response{OK: true}
	}
	if o.cancel != nil {
		o.cancel()
	}
	o.active = encryptionconfig.StaticTransformers(cfg.Transformers)
	o.cancel = cancel
	return response{OK: true}
}

func (o *oracle) transformerFor(req request) (value.Transformer, error) {
	if o.active == nil {
		return nil, fmt.Errorf("no configuration loaded (send a load with keep=true first)")
	}
	return o.active.TransformerForResource(schema.GroupResource{Group: req.Group, Resource: req.Resource}), nil
}

func (o *oracle) transform(req request) response {
	t, err := o.transformerFor(req)
	if err != nil {
		return fail(err)
	}
	data, err := base64.StdEncoding.DecodeString(req.Data)
	if err != nil {
		return fail(fmt.Errorf("data is not base64: %w", err))
	}
	ctx := context.Background()
	dataCtx := value.DefaultContext(req.Key)
	if req.Op == "toStorage" {
		stored, err := t.TransformToStorage(ctx, data, dataCtx)
		if err != nil {
			return fail(err)
		}
		return response{OK: true, Data: base64.StdEncoding.EncodeToString(stored)}
	}
	plain, stale, err := t.TransformFromStorage(ctx, data, dataCtx)
	if err != nil {
		return fail(err)
	}
	return response{OK: true, Data: base64.StdEncoding.EncodeToString(plain), Stale: stale}
}

// bench runs n transforms of a random value of the given size in-process, so the caller measures the
// transformer and not this JSON pipe. fromStorage reads one value written just before the clock starts.
func (o *oracle) bench(req request) response {
	t, err := o.transformerFor(req)
	if err != nil {
		return fail(err)
	}
	if req.N <= 0 || req.Size < 0 {
		return fail(fmt.Errorf("bench needs n > 0 and size >= 0"))
	}
	plain := make([]byte, req.Size)
	_, _ = rand.Read(plain)
	ctx := context.Background()
	dataCtx := value.DefaultContext(req.Key)
	switch req.Direction {
	case "toStorage":
		start := time.Now()
		for i := 0; i < req.N; i++ {
			if _, err := t.TransformToStorage(ctx, plain, dataCtx); err != nil {
				return fail(err)
			}
		}
		return response{OK: true, N: req.N, NS: time.Since(start).Nanoseconds()}
	case "fromStorage":
		stored, err := t.TransformToStorage(ctx, plain, dataCtx)
		if err != nil {
			return fail(err)
		}
		start := time.Now()
		for i := 0; i < req.N; i++ {
			if _, _, err := t.TransformFromStorage(ctx, stored, dataCtx); err != nil {
				return fail(err)
			}
		}
		return response{OK: true, N: req.N, NS: time.Since(start).Nanoseconds()}
	default:
		return fail(fmt.Errorf("unknown direction %q", req.Direction))
	}
}
