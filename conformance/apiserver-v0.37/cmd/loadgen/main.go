// Command loadgen drives a KMS v2 plugin with the API server's own v2 gRPC client
// (k8s.io/apiserver kmsv2.NewGRPCService) and prints one JSON line of results. It is the load generator
// of bench/conformance.bench.sh and treats every plugin alike.
//
// Each iteration is the pair of calls the API server makes per DEK: Encrypt(32 random bytes) then
// Decrypt of the answer; the latency of every single RPC is recorded. Closed loop (-rate 0): -concurrency
// workers call back to back. Open loop (-rate R): calls are scheduled R per second and latency counts
// from the scheduled start, so a stalled server is not hidden by the generator waiting for it.
// With -pid, the server's CPU time (utime+stime from /proc/PID/stat, all threads) is read before and after.
// -api v1 drives the KMS v1beta1 API with the API server's v1 client (envelope.NewGRPCService) instead:
// the per-write Encrypt of kms v1, where every Secret written costs an RPC.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	"k8s.io/klog/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

type result struct {
	Concurrency  int     `json:"concurrency"`
	Rate         int     `json:"rate"`
	RPCs         int     `json:"rpcs"`
	Errors       int64   `json:"errors"`
	Seconds      float64 `json:"seconds"`
	RPCPerSec    float64 `json:"rpc_per_sec"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	P999ms       float64 `json:"p999_ms"`
	CPUSeconds   float64 `json:"server_cpu_s"`
	CPUPer10kRPC float64 `json:"server_cpu_s_per_10k_rpc"`
	// Open loop only: how late the generator itself handed each slot to a worker (its own timer and
	// scheduling, before any RPC), so a tail both plugins share can be told from the servers'.
	DispatchP50ms float64 `json:"dispatch_p50_ms,omitempty"`
	DispatchP99ms float64 `json:"dispatch_p99_ms,omitempty"`
	// Open loop only, each call kind alone and without the generator lag: the Encrypt that arrives
	// after the idle gap between slots, and the Decrypt sent right after it answered.
	EncryptP50ms float64 `json:"encrypt_p50_ms,omitempty"`
	EncryptP99ms float64 `json:"encrypt_p99_ms,omitempty"`
	DecryptP50ms float64 `json:"decrypt_p50_ms,omitempty"`
	DecryptP99ms float64 `json:"decrypt_p99_ms,omitempty"`
}

func main() {
	endpoint := flag.String("endpoint", "", "unix:///path of the plugin socket")
	concurrency := flag.Int("concurrency", 1, "concurrent workers")
	duration := flag.Duration("duration", 5*time.Second, "measured duration")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up before the measurement")
	rate := flag.Int("rate", 0, "RPCs per second (0 = closed loop, as fast as the workers go)")
	pid := flag.Int("pid", 0, "server process whose CPU time is measured")
	api := flag.String("api", "v2", "KMS API: v2, or v1 (v1beta1, the API server's v1 client)")
	flag.Parse()
	klog.SetLogger(logr.Discard())
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -endpoint is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var svc kmsservice.Service
	var err error
	if *api == "v1" {
		var v1 envelope.Service
		v1, err = envelope.NewGRPCService(ctx, *endpoint, 3*time.Second)
		svc = v1Service{v1}
	} else {
		svc, err = kmsv2.NewGRPCService(ctx, *endpoint, "loadgen", 3*time.Second)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if *warmup > 0 {
		_, _, _, _, _ = run(svc, *concurrency, *rate, *warmup)
	}
	cpuBefore := cpuSeconds(*pid)
	lat, lags, split, errs, elapsed := run(svc, *concurrency, *rate, *duration)
	cpu := cpuSeconds(*pid) - cpuBefore

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := result{Concurrency: *concurrency, Rate: *rate, RPCs: len(lat), Errors: errs, Seconds: elapsed.Seconds()}
	if len(lat) > 0 {
		r.RPCPerSec = float64(len(lat)) / elapsed.Seconds()
		r.P50ms = ms(lat[len(lat)*50/100])
		r.P99ms = ms(lat[len(lat)*99/100])
		r.P999ms = ms(lat[len(lat)*999/1000])
		if *pid > 0 {
			r.CPUSeconds = cpu
			r.CPUPer10kRPC = cpu / float64(len(lat)) * 10000
		}
	}
	if len(lags) > 0 {
		r.DispatchP50ms, r.DispatchP99ms = p50p99(lags)
		r.EncryptP50ms, r.EncryptP99ms = p50p99(split.encrypt)
		r.DecryptP50ms, r.DecryptP99ms = p50p99(split.decrypt)
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if errs > 0 {
		os.Exit(1)
	}
}

// v1Service drives a v1beta1 client through the same loop: Encrypt and Decrypt, no key id.
type v1Service struct{ envelope.Service }

func (s v1Service) Encrypt(_ context.Context, _ string, plain []byte) (*kmsservice.EncryptResponse, error) {
	ct, err := s.Service.Encrypt(plain)
	return &kmsservice.EncryptResponse{Ciphertext: ct}, err
}

func (s v1Service) Decrypt(_ context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	return s.Service.Decrypt(req.Ciphertext)
}

func (s v1Service) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return nil, fmt.Errorf("v1 has no Status")
}

// slotLead is how early the open-loop generator hands a slot to a worker, which then waits for the
// slot's time with sleepUntil.
const slotLead = 2 * time.Millisecond

// sleepUntil blocks this goroutine's thread in clock_nanosleep until t: the kernel's timer precision
// (tens of microseconds), not the Go poller's millisecond. Only a few workers wait at a time (one
// slot every 2 ms at 1,000 RPC/s).
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		_ = syscall.Nanosleep(&ts, nil) // EINTR (a runtime signal): loop and wait the rest
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// p50p99 sorts d and returns its median and 99th percentile in milliseconds (0, 0 when empty).
func p50p99(d []time.Duration) (float64, float64) {
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return ms(d[len(d)*50/100]), ms(d[len(d)*99/100])
}

// byKind holds open-loop latencies per call kind, each measured from when its request was due to be
// sent by a worker already awake: the Encrypt from the end of the worker's wait for its slot (so
// without the generator lag), the Decrypt from the Encrypt's answer.
type byKind struct{ encrypt, decrypt []time.Duration }

// run returns every RPC's latency, every open-loop slot's dispatch lag, the open-loop latencies per
// call kind, the error count and the wall time.
func run(svc kmsservice.Service, concurrency, rate int, d time.Duration) ([]time.Duration, []time.Duration, byKind, int64, time.Duration) {
	var (
		mu    sync.Mutex
		all   []time.Duration
		lags  []time.Duration
		split byKind
		errs  atomic.Int64
		wg    sync.WaitGroup
	)
	start := time.Now()
	stop := start.Add(d)
	// Open loop: a slot per RPC pair at start + i/rate*2 (each slot is an Encrypt and a Decrypt).
	var slots chan time.Time
	if rate > 0 {
		slots = make(chan time.Time, 1<<16)
		go func() {
			defer close(slots)
			interval := time.Duration(float64(time.Second) * 2 / float64(rate))
			for i := 0; ; i++ {
				at := start.Add(time.Duration(i) * interval)
				if at.After(stop) {
					return
				}
				// Go's timers wake up to ~1 ms late when the process is idle (the poller waits in whole
				// milliseconds): hand the slot out early and let the worker wait the rest precisely.
				time.Sleep(time.Until(at.Add(-slotLead)))
				slots <- at
			}
		}()
	}
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			var localLags []time.Duration
			var localSplit byKind
			var woke time.Time
			plain := make([]byte, 32)
			for {
				var scheduled time.Time
				if slots != nil {
					at, ok := <-slots
					if !ok {
						break
					}
					scheduled = at
					sleepUntil(at)
					woke = time.Now()
					localLags = append(localLags, woke.Sub(at))
				} else {
					if time.Now().After(stop) {
						break
					}
					scheduled = time.Now()
				}
				_, _ = rand.Read(plain)
				ctx := context.Background()
				res, err := svc.Encrypt(ctx, "6f1d3c2b-0a9e-4f8d-b7c6-5e4d3c2b1a09", plain)
				encDone := time.Now()
				local = append(local, encDone.Sub(scheduled))
				if slots != nil {
					localSplit.encrypt = append(localSplit.encrypt, encDone.Sub(woke))
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				_, err = svc.Decrypt(ctx, "0a9e4f8d-b7c6-4e4d-9c2b-1a096f1d3c2b", &kmsservice.DecryptRequest{
					Ciphertext: res.Ciphertext, KeyID: res.KeyID, Annotations: res.Annotations,
				})
				// In open loop the Decrypt is due as soon as its Encrypt answered.
				decrypted := time.Since(encDone)
				local = append(local, decrypted)
				if slots != nil {
					localSplit.decrypt = append(localSplit.decrypt, decrypted)
				}
				if err != nil {
					errs.Add(1)
				}
			}
			mu.Lock()
			all = append(all, local...)
			lags = append(lags, localLags...)
			split.encrypt = append(split.encrypt, localSplit.encrypt...)
			split.decrypt = append(split.decrypt, localSplit.decrypt...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, lags, split, errs.Load(), time.Since(start)
}

// cpuSeconds reads utime+stime (fields 14 and 15, clock ticks of 1/100 s on Linux) of a process.
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: read server CPU:", err)
		os.Exit(1)
	}
	// The command name (field 2) may contain spaces; fields after it start past the last ')'.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}
