package controlplane_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/agent/sim"
	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/wire"
)

// overloadAccounting is a device's accounting with the gap counter, which shows that the control
// plane saw a hole in that device's sequence (a message the broker had acknowledged to the device
// and never delivered).
type overloadAccounting struct {
	Contiguous uint64 `json:"contiguous"`
	Pending    int    `json:"received_past_gap"`
	Gaps       uint64 `json:"gaps"`
	Duplicates uint64 `json:"duplicates"`
	Dropped    uint64 `json:"dropped"`
}

// TestStoreAndForwardBrokerOverload: a stock Mosquitto (its default limits: 20 messages in flight
// and 1,000 queued per session) between 20 simulated devices and a control plane process. The
// control plane is frozen (SIGSTOP) while a burst and the devices' own telemetry arrive, so its
// session's queue overflows and the broker drops messages it has already acknowledged to their
// publishers. The test first shows that the broker did drop (its log, and holes in devices'
// sequences at the control plane), then that nothing was lost end to end: once the control plane
// is back, every sequence number each device issued is committed.
func TestStoreAndForwardBrokerOverload(t *testing.T) {
	const n = 20
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{NoPersistence: true})
	cp := fleettest.StartControlPlaneProcess(t, m.URL())

	logf, err := os.Create(filepath.Join(t.TempDir(), "sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	simCmd := exec.Command(filepath.Join(fleettest.Binaries(t), "agent"), "simulate", "--count", fmt.Sprint(n),
		"--broker", m.URL(), "--data", t.TempDir(), "--telemetry-interval", "200ms", "--log-level", "warn")
	simCmd.Stdout, simCmd.Stderr = logf, logf
	if err := simCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		simCmd.Process.Signal(syscall.SIGTERM)
		simCmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("simulate log:\n%s", b)
		}
	})
	account := func(dev string) overloadAccounting {
		var body struct {
			Accounting overloadAccounting `json:"accounting"`
		}
		cp.Do("GET", "/api/v1/devices/"+dev+"/telemetry?limit=1", nil, &body)
		return body.Accounting
	}
	fleettest.Eventually(t, 30*time.Second, "telemetry flowing from every simulated device", func() bool {
		for i := 1; i <= n; i++ {
			if account(sim.ID(i)).Contiguous < 2 {
				return false
			}
		}
		return true
	})

	// The broker's count of messages it dropped, published every sys_interval (10 s by default).
	var dropped atomic.Int64
	sys := paho.NewClient(paho.NewClientOptions().AddBroker(m.URL()).SetClientID("overload-sys").SetCleanSession(true))
	if tok := sys.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("$SYS subscriber connect: %v", tok.Error())
	}
	defer sys.Disconnect(100)
	if tok := sys.Subscribe(sysDropped, 0, func(_ paho.Client, msg paho.Message) {
		v, _ := strconv.ParseInt(strings.TrimSpace(string(msg.Payload())), 10, 64)
		dropped.Store(v)
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", sysDropped, tok.Error())
	}

	// Freeze the control plane, then offer more than its session can queue: a burst of QoS 1
	// telemetry (of a device that is not part of the accounting below) that the broker
	// acknowledges, then a few seconds of the devices' own telemetry on top of the full queue.
	cp.Freeze()
	frozen := true
	defer func() {
		if frozen {
			cp.Thaw()
		}
	}()
	const burst, pause = 1500, 3 * time.Second
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(m.URL()).SetClientID("overload-burst").SetCleanSession(true))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("burst publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	topics := wire.NewTopics(wire.DefaultPrefix)
	var toks []paho.Token
	for seq := uint64(1); seq <= burst; seq++ {
		b, _ := json.Marshal(wire.Telemetry{Device: "overload-burst", Seq: seq, Kind: "health", At: time.Now().UTC(), Body: json.RawMessage(`{}`)})
		toks = append(toks, pub.Publish(topics.Telemetry("overload-burst", "health"), 1, false, b))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("the broker did not acknowledge the burst: %v", tok.Error())
		}
	}
	time.Sleep(pause) // the devices keep publishing into the overflowing queue
	cp.Thaw()
	frozen = false
	thawed := time.Now()

	// 1. The broker dropped messages it had acknowledged: the control plane sees holes in devices'
	// sequences, and the broker's own counter of dropped messages has moved.
	fleettest.Eventually(t, 15*time.Second, "the control plane sees holes in devices' sequences", func() bool {
		for i := 1; i <= n; i++ {
			if account(sim.ID(i)).Gaps > 0 {
				return true
			}
		}
		return false
	})
	fleettest.Eventually(t, 30*time.Second, "the broker's "+sysDropped+" counter above 0", func() bool { return dropped.Load() > 0 })

	// 2. Nothing was lost end to end: every sequence number a device had issued by a report made
	// after the thaw is committed (the holes were re-sent), and none was given up by a spool.
	var why string
	defer func() {
		if t.Failed() {
			t.Log("last unmet:", why)
		}
	}()
	var gapped, gaps, dupes, issued uint64
	fleettest.Eventually(t, 40*time.Second, "every device's sequence committed without holes after the overload", func() bool {
		devs := cp.Devices()
		gapped, gaps, dupes, issued = 0, 0, 0, 0
		for i := 1; i <= n; i++ {
			id := sim.ID(i)
			d := devs[id]
			if d.Reported == nil || d.Reported.Spool == nil || d.Reported.At.Before(thawed.Add(time.Second)) {
				why = id + ": no spool report since the thaw"
				return false
			}
			r := d.Reported.Spool
			acc := account(id)
			if acc.Contiguous+1 < r.NextSeq || r.Dropped != 0 || acc.Dropped != 0 {
				why = fmt.Sprintf("%s: issued up to %d, committed contiguously up to %d (%d past a gap), dropped device %d / control plane %d",
					id, r.NextSeq-1, acc.Contiguous, acc.Pending, r.Dropped, acc.Dropped)
				return false
			}
			if acc.Gaps > 0 {
				gapped++
			}
			gaps += acc.Gaps
			dupes += acc.Duplicates
			issued += r.NextSeq - 1
		}
		return true
	})
	t.Logf("%s with stock limits, control plane frozen %v under a %d-message burst: %d of %d devices had messages dropped by the broker (%d messages arrived past a hole); after recovery all %d sequence numbers they issued are committed (%d duplicates ignored)",
		m.Name(), pause, burst, gapped, n, gaps, issued, dupes)
	if gapped == 0 {
		t.Fatal("no simulated device lost a message at the broker: the overload only hit the burst")
	}
	// Mosquitto buffers its log on stdout; stopping it flushes the line it wrote when it started
	// dropping for the control plane's session.
	m.Stop()
	const line = "Outgoing messages are being dropped for client _edgefleet-controlplane"
	if !strings.Contains(m.Log(), line) {
		t.Fatalf("%q not in the broker's log", line)
	}
	t.Logf("broker counter %s: %d", sysDropped, dropped.Load())
}

// sysDropped is Mosquitto's counter of messages it dropped (queues full).
const sysDropped = "$SYS/broker/publish/messages/dropped"
