package quant

import (
	"os"
	"strings"
)

func zzFloatConv(md *model, c *candidate) bool {
	mode := os.Getenv("ZZFLOAT")
	if c.n.GetOpType() != "Conv" || mode == "" {
		return false
	}
	dims := c.w.t.GetDims()
	g := attrInt(c.n, "group", 1)
	dw := g > 1 && dims[1] == 1
	stem := dims[1]*g <= 4
	if strings.Contains(mode, "dw") && dw {
		return true
	}
	if strings.Contains(mode, "stem") && stem {
		return true
	}
	return false
}
