package localmqtt

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edgefleet/edgefleet/agent/infer"
	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/oip"
	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// serveHello starts a server with hello_deepa as "kws" and the MQTT front end on a mochi broker;
// it returns a connected client and a request body for the model.
func serveHello(t *testing.T) (paho.Client, *Service, []byte) {
	dir := fleettest.Models(t)
	man := &bundle.Manifest{Name: "kws", Version: "1.0.0", Files: []bundle.FileEntry{{Path: "hello_deepa.onnx", Role: bundle.RoleModel}}}
	m, err := infer.LoadWith(dir, "b1", man, onnxrt.Options{IntraOpThreads: 1}, infer.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := infer.NewServer("test")
	srv.Swap("kws", m)
	t.Cleanup(m.Close)

	broker := brokertest.StartMochi(t, brokertest.MochiOptions{})
	svc, err := New(srv, Config{Broker: broker.URL(), QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("plc-1"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })

	in, err := onnxrt.GenerateInputs(m.Schema(), 1, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"r1","inputs":[{"name":"onnx::Flatten_0","shape":[1,25,96],"datatype":"FP32","data":`)
	body = oip.AppendData(body, in[0][0])
	return c, svc, body
}

func TestRoundTrip(t *testing.T) {
	c, svc, body := serveHello(t)
	replies := make(chan []byte, 8)
	if tok := c.Subscribe("plc-1/replies", 1, func(_ paho.Client, m paho.Message) { replies <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	cases := []struct {
		name, topic, body string
		want              []string
	}{
		{"answer", "edgefleet/local/infer/kws", string(body) + `}],"reply_to":"plc-1/replies","correlation_id":"c-1"}`,
			[]string{`"model_name":"kws"`, `"id":"r1"`, `"correlation_id":"c-1"`, `"name":"39","datatype":"FP32","shape":[1,1],"data":[`}},
		{"unknown model", "edgefleet/local/infer/nope", string(body) + `}],"reply_to":"plc-1/replies","correlation_id":"c-2"}`,
			[]string{`"error":`, `nope is not served`, `"correlation_id":"c-2"`}},
		{"bad input", "edgefleet/local/infer/kws", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"reply_to":"plc-1/replies","correlation_id":"c-3"}`,
			[]string{`"error":"input \"x\": the model has no such input`, `"correlation_id":"c-3"`}},
		{"not JSON", "edgefleet/local/infer/kws", `{"reply_to":"plc-1/replies","correlation_id":"c-4","inputs":[`,
			[]string{`"error":`, `"correlation_id":"c-4"`}},
	}
	// The service subscribes once connected; retry the first request until it is there.
	deadline := time.Now().Add(10 * time.Second)
	for i, tc := range cases {
		var got []byte
		for got == nil {
			c.Publish(tc.topic, 1, false, []byte(tc.body)).Wait()
			select {
			case got = <-replies:
			case <-time.After(300 * time.Millisecond):
				if i > 0 || time.Now().After(deadline) {
					t.Fatalf("%s: no reply", tc.name)
				}
			}
		}
		if !json.Valid(got) {
			t.Errorf("%s: reply is not JSON: %s", tc.name, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(got), w) {
				t.Errorf("%s: reply lacks %s: %s", tc.name, w, got)
			}
		}
	}
	if svc.Subscription() != "edgefleet/local/infer/+" {
		t.Errorf("subscription %q", svc.Subscription())
	}
}

func TestTopicPattern(t *testing.T) {
	for _, c := range []struct {
		topic, sub string
		ok         bool
	}{
		{"", "edgefleet/local/infer/+", true},
		{"plant/{model}/req", "plant/+/req", true},
		{"plant/req", "", false},
		{"plant/{model}/{model}", "", false},
		{"plant/#/{model}", "", false},
	} {
		s, err := New(infer.NewServer("t"), Config{Topic: c.topic})
		if (err == nil) != c.ok || (err == nil && s.Subscription() != c.sub) {
			t.Errorf("topic %q: err %v", c.topic, err)
		}
	}
}
