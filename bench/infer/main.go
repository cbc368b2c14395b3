// Command infer-bench measures, in one run and on the same real models, (a) the bare
// onnxruntime_go binding, (b) the agent's in-process call path (infer.Server.Infer), (c) its
// OIP HTTP API (JSON, and Triton binary for ocr_cls) and (d) local MQTT request/response, at
// several concurrencies; and, with -rss, the memory of a process serving a model through the
// agent's stack against a bare process that only loads ORT and the same model.
//
//	go run ./bench/infer -models "$(scripts/fetch-models.sh)"
//	go run ./bench/infer -models "$(scripts/fetch-models.sh)" -rss
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/agent/localmqtt"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

var (
	models   = flag.String("models", filepath.Join(os.Getenv("HOME"), ".cache/edgefleet/models"), "folder of scripts/fetch-models.sh")
	dur      = flag.Duration("d", 2*time.Second, "measuring time per cell")
	concs    = flag.String("c", "1,4,16", "concurrencies")
	rss      = flag.Bool("rss", false, "measure RSS (agent stack vs bare ORT) instead of latency")
	child    = flag.String("child", "", "internal: bare|agent RSS child")
	rssModel = flag.String("rss-model", "ocr_cls.onnx", "model for -rss")
	rounds   = flag.Int("rounds", 3, "interleaved rounds: every path and concurrency is measured for d/rounds per round, so that load from other work on the machine falls on all paths alike")
	cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the latency run to this file")
	only     = flag.String("only", "", "measure only models whose file name contains this")
	floor    = flag.Bool("floor", true, "also measure the HTTP floor: the same bodies posted to a handler that only reads them and answers {}")
)

func main() {
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := onnxrt.Init(""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var err error
	switch {
	case *child != "":
		err = rssChild(*child)
	case *rss:
		err = rssCompare()
	default:
		err = latency()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type bmodel struct {
	file, name string
	shape      map[string][]int64
	binary     bool
}

var bench = []bmodel{
	{"hello_deepa.onnx", "hello_deepa", nil, false},
	{"ocr_cls.onnx", "ocr_cls", map[string][]int64{"x": {1, 3, 48, 192}}, true},
}

type result struct {
	conc     int
	p50, p99 time.Duration
	rps      float64
	cpu      time.Duration // process CPU time (user + system, all threads) per request
}

// samples are the latencies, elapsed time and process CPU time of one cell, summed over rounds.
type samples struct {
	lat     []time.Duration
	el, cpu time.Duration
}

func (sm *samples) result(conc int) result {
	all := slices.Clone(sm.lat)
	slices.Sort(all)
	q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	return result{conc: conc, p50: q(0.5), p99: q(0.99), rps: float64(len(all)) / sm.el.Seconds(), cpu: sm.cpu / time.Duration(len(all))}
}

// cpuTime is the process's CPU time so far. Unlike latency, CPU time per request does not grow
// while other work on a shared machine holds the cores, so it compares paths more steadily.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure calls fn from conc goroutines for d and adds the latencies and elapsed time to sm.
func measure(conc int, d time.Duration, sm *samples, fn func() error) error {
	for range 50 { // warm up
		if err := fn(); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cpuTime()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := fn(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			sm.lat = append(sm.lat, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sm.el += time.Since(start)
	sm.cpu += cpuTime() - cpu0
	if e := firstErr.Load(); e != nil {
		return e.(error)
	}
	return nil
}

func latency() error {
	var cs []int
	for _, c := range strings.Split(*concs, ",") {
		n, err := strconv.Atoi(c)
		if err != nil {
			return err
		}
		cs = append(cs, n)
	}
	fmt.Printf("GOMAXPROCS %d, CPUs %d, ORT %s, intra-op threads 1, %s per cell in %d interleaved rounds\n\n", runtime.GOMAXPROCS(0), runtime.NumCPU(), onnxrt.Version(), *dur, *rounds)
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	broker, brokerURL, err := startBroker()
	if err != nil {
		return err
	}
	defer broker.Close()

	for _, bm := range bench {
		if !strings.Contains(bm.file, *only) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(*models, bm.file))
		if err != nil {
			return err
		}
		man := &bundle.Manifest{Name: bm.name, Version: "1.0.0", Files: []bundle.FileEntry{{Path: bm.file, Role: bundle.RoleModel}}}
		m, err := infer.New(data, "bench", man, onnxrt.Options{IntraOpThreads: 1}, infer.LoadOptions{})
		if err != nil {
			return err
		}
		srv := infer.NewServer("bench")
		srv.Swap(bm.name, m)
		sets, err := onnxrt.GenerateInputs(m.Schema(), 1, 1, bm.shape)
		if err != nil {
			return err
		}
		in := sets[0]
		raw, err := onnxrt.NewRawRunner(data, in, 1)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/", srv.Handler())
		mux.HandleFunc("POST /floor", func(w http.ResponseWriter, r *http.Request) {
			// What any HTTP handler pays for this body: read it, answer.
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
		})
		hs := &http.Server{Handler: mux}
		go hs.Serve(ln)
		addr := "http://" + ln.Addr().String()
		url := addr + "/v2/models/" + bm.name + "/infer"
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		jsonBody := jsonRequest(in)
		binBody, binHdr := binaryRequest(in)
		postTo := func(url string, body []byte, hdr map[string]string) func() error {
			return func() error {
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("HTTP %d", resp.StatusCode)
				}
				return err
			}
		}
		post := func(body []byte, hdr map[string]string) func() error { return postTo(url, body, hdr) }
		mq, err := newMQTTClient(srv, brokerURL, bm.name, jsonBody)
		if err != nil {
			return err
		}
		ctx := context.Background()
		paths := []struct {
			name string
			fn   func() error
		}{
			{"(a) raw onnxruntime_go", raw.Run},
			{"(b) Server.Infer", func() error { _, _, err := srv.Infer(ctx, bm.name, in); return err }},
			{"(c) HTTP JSON", post(jsonBody, nil)},
		}
		if *floor {
			paths = append(paths, struct {
				name string
				fn   func() error
			}{"(c0) HTTP floor, JSON body", postTo(addr+"/floor", jsonBody, nil)})
		}
		if bm.binary {
			paths = append(paths, struct {
				name string
				fn   func() error
			}{"(c) HTTP binary", post(binBody, binHdr)})
			if *floor {
				paths = append(paths, struct {
					name string
					fn   func() error
				}{"(c0) HTTP floor, binary body", postTo(addr+"/floor", binBody, binHdr)})
			}
		}
		paths = append(paths, struct {
			name string
			fn   func() error
		}{"(d) local MQTT", mq.call})

		fmt.Printf("### %s (input %s, %d bytes JSON)\n\n", bm.name, onnxrt.FormatShape(in[0].Shape), len(jsonBody))
		fmt.Println("| path | conc | p50 | p99 | req/s | p50 / (a) | p50 - (a) | req/s / (a) | CPU/req | CPU / (a) |")
		fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
		cells := make([][]samples, len(paths))
		for i := range cells {
			cells[i] = make([]samples, len(cs))
		}
		nr := max(*rounds, 1)
		for r := range nr {
			// Each round starts at another path, so that what runs first in a round (after the
			// previous round's heaviest cell, say) is not always (a).
			for k := range paths {
				i, p := (k+r)%len(paths), paths[(k+r)%len(paths)]
				for j, c := range cs {
					runtime.GC()
					if err := measure(c, *dur/time.Duration(nr), &cells[i][j], p.fn); err != nil {
						return fmt.Errorf("%s %s c=%d: %w", bm.name, p.name, c, err)
					}
				}
			}
		}
		base := map[int]result{}
		for i, p := range paths {
			for j, c := range cs {
				r := cells[i][j].result(c)
				if strings.HasPrefix(p.name, "(a)") {
					base[c] = r
				}
				b := base[c]
				fmt.Printf("| %s | %d | %s | %s | %.0f | %.2fx | %+.1f µs | %.2fx | %s | %.2fx |\n", p.name, c, us(r.p50), us(r.p99), r.rps,
					float64(r.p50)/float64(b.p50), float64(r.p50-b.p50)/1e3, r.rps/b.rps, us(r.cpu), float64(r.cpu)/float64(b.cpu))
			}
		}
		fmt.Println()
		mq.close()
		hs.Close()
		raw.Close()
		m.Close()
	}
	return nil
}

func us(d time.Duration) string {
	if d < 100*time.Microsecond {
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

func jsonRequest(in []onnxrt.Tensor) []byte {
	b := []byte(`{"inputs":[`)
	for i, t := range in {
		if i > 0 {
			b = append(b, ',')
		}
		sh, _ := json.Marshal(t.Shape)
		b = fmt.Appendf(b, `{"name":%q,"shape":%s,"datatype":%q,"data":`, t.Name, sh, t.DType)
		b = oip.AppendData(b, t)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func binaryRequest(in []onnxrt.Tensor) ([]byte, map[string]string) {
	var bin []byte
	var ins []any
	for _, t := range in {
		n := len(bin)
		bin, _ = binary.Append(bin, binary.LittleEndian, t.Data)
		ins = append(ins, map[string]any{"name": t.Name, "shape": t.Shape, "datatype": t.DType, "parameters": map[string]any{"binary_data_size": len(bin) - n}})
	}
	hdr, _ := json.Marshal(map[string]any{"inputs": ins, "parameters": map[string]any{"binary_data_output": true}})
	return append(hdr, bin...), map[string]string{oip.HeaderLengthKey: strconv.Itoa(len(hdr)), "Content-Type": "application/octet-stream"}
}

func startBroker() (*mqtt.Server, string, error) {
	srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		return nil, "", err
	}
	go srv.Serve()
	return srv, "tcp://" + addr, nil
}

// mqttClient sends requests with correlation ids and matches replies to callers.
type mqttClient struct {
	c       paho.Client
	cancel  context.CancelFunc
	done    chan struct{}
	topic   string
	prefix  []byte
	seq     atomic.Int64
	mu      sync.Mutex
	waiting map[string]chan struct{}
}

func newMQTTClient(srv *infer.Server, url, model string, body []byte) (*mqttClient, error) {
	svc, err := localmqtt.New(srv, localmqtt.Config{Broker: url, ClientID: "svc-" + model})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	mc := &mqttClient{cancel: cancel, done: make(chan struct{}), topic: "edgefleet/local/infer/" + model, waiting: map[string]chan struct{}{}}
	go func() { svc.Run(ctx); close(mc.done) }()
	mc.c = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("plc-" + model).SetOrderMatters(false))
	if tok := mc.c.Connect(); tok.Wait() && tok.Error() != nil {
		return nil, tok.Error()
	}
	reply := "plc/" + model + "/replies"
	if tok := mc.c.Subscribe(reply, 0, func(_ paho.Client, m paho.Message) {
		p := m.Payload()
		i := bytes.Index(p, []byte(`"correlation_id":"`))
		if i < 0 {
			return
		}
		p = p[i+18:]
		id := string(p[:bytes.IndexByte(p, '"')])
		mc.mu.Lock()
		ch := mc.waiting[id]
		delete(mc.waiting, id)
		mc.mu.Unlock()
		if ch != nil && !bytes.Contains(m.Payload(), []byte(`"error"`)) {
			close(ch)
		}
	}); tok.Wait() && tok.Error() != nil {
		return nil, tok.Error()
	}
	mc.prefix = append(body[:len(body)-1:len(body)-1], fmt.Sprintf(`,"reply_to":%q,"correlation_id":"`, reply)...)
	// Wait until the service has subscribed.
	for i := 0; ; i++ {
		if err := mc.callTimeout(200 * time.Millisecond); err == nil {
			return mc, nil
		} else if i > 50 {
			return nil, err
		}
	}
}

func (mc *mqttClient) call() error { return mc.callTimeout(10 * time.Second) }

func (mc *mqttClient) callTimeout(d time.Duration) error {
	id := strconv.FormatInt(mc.seq.Add(1), 10)
	ch := make(chan struct{})
	mc.mu.Lock()
	mc.waiting[id] = ch
	mc.mu.Unlock()
	msg := append(slices.Clip(mc.prefix), id+`"}`...)
	mc.c.Publish(mc.topic, 0, false, msg)
	select {
	case <-ch:
		return nil
	case <-time.After(d):
		mc.mu.Lock()
		delete(mc.waiting, id)
		mc.mu.Unlock()
		return fmt.Errorf("MQTT request %s: no reply in %s", id, d)
	}
}

func (mc *mqttClient) close() {
	mc.c.Disconnect(50)
	mc.cancel()
	<-mc.done
}

// rssCompare runs two children and reports their resident memory after serving.
func rssCompare() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	res := map[string]int64{}
	for _, mode := range []string{"bare", "agent"} {
		out, err := exec.Command(exe, "-child", mode, "-models", *models, "-rss-model", *rssModel).Output()
		if err != nil {
			return fmt.Errorf("%s child: %w", mode, err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			return fmt.Errorf("%s child said %q", mode, out)
		}
		res[mode] = v
	}
	fmt.Printf("| process | VmRSS | ratio |\n| --- | --- | --- |\n")
	fmt.Printf("| bare: ORT + one session of %s, 200 runs | %.1f MiB | 1.00x |\n", *rssModel, float64(res["bare"])/1024)
	fmt.Printf("| agent serving stack: infer.Server + OIP HTTP, 200 HTTP requests | %.1f MiB | %.2fx |\n",
		float64(res["agent"])/1024, float64(res["agent"])/float64(res["bare"]))
	return nil
}

func rssChild(mode string) error {
	data, err := os.ReadFile(filepath.Join(*models, *rssModel))
	if err != nil {
		return err
	}
	var bm bmodel
	for _, b := range bench {
		if b.file == *rssModel {
			bm = b
		}
	}
	schema, err := onnxrt.Inspect(data)
	if err != nil {
		return err
	}
	sets, err := onnxrt.GenerateInputs(schema, 1, 1, bm.shape)
	if err != nil {
		return err
	}
	switch mode {
	case "bare":
		r, err := onnxrt.NewRawRunner(data, sets[0], 1)
		if err != nil {
			return err
		}
		for range 200 {
			if err := r.Run(); err != nil {
				return err
			}
		}
	case "agent":
		man := &bundle.Manifest{Name: "m", Version: "1.0.0"}
		m, err := infer.New(data, "b", man, onnxrt.Options{IntraOpThreads: 1}, infer.LoadOptions{})
		if err != nil {
			return err
		}
		data = nil
		srv := infer.NewServer("bench")
		srv.Swap("m", m)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go http.Serve(ln, srv.Handler())
		body := jsonRequest(sets[0])
		for range 200 {
			resp, err := http.Post("http://"+ln.Addr().String()+"/v2/models/m/infer", "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fmt.Println(strings.Fields(line)[1])
			return nil
		}
	}
	return fmt.Errorf("no VmRSS")
}
