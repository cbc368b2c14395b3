package quant

import (
	"fmt"
	"os"
	"sort"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxpb"
)

func TestZZDump(t *testing.T) {
	for _, f := range []string{"ocr_cls.onnx", "ocr_det.onnx"} {
		b := realModel(t, f)
		md, err := parseModel(b, "")
		if err != nil {
			t.Fatal(err)
		}
		cnt := map[string]int{}
		out, _ := os.Create("/tmp/qx/" + f + ".txt")
		fmt.Fprintf(out, "opset %v ir %d\n", md.m.GetOpsetImport(), md.m.GetIrVersion())
		for _, n := range md.main.g.GetNode() {
			cnt[n.GetOpType()]++
			var attrs []string
			for _, a := range n.GetAttribute() {
				attrs = append(attrs, a.GetName())
			}
			ins := []string{}
			for _, in := range n.GetInput() {
				if w := md.weights[in]; w != nil && numElements(w.t) <= 4 {
					v, _ := floats(w.t)
					ins = append(ins, fmt.Sprintf("%s=%v", in, v))
				} else {
					ins = append(ins, in)
				}
			}
			if n.GetOpType() == "Constant" {
				continue
			}
			fmt.Fprintf(out, "%s %s %v -> %v %v\n", n.GetOpType(), n.GetName(), ins, n.GetOutput(), attrs)
		}
		var ks []string
		for k := range cnt {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			t.Logf("%s %s %d", f, k, cnt[k])
		}
		out.Close()
	}
	_ = onnxpb.Opset
}
