package deploy

import (
	"fmt"
	"testing"
	"time"
)

func TestDebug(t *testing.T) {
	s := newSim(1, 4, 2, 10)
	r := newRollout(t, s, testSpec())
	s.run(t, r, 10*time.Second, 3*time.Hour)
	for _, d := range r.Decisions {
		fmt.Printf("%v %d %s %s %v\n", d.At.Format("15:04:05"), d.Stage, d.Action, d.Reason, d.Inputs)
	}
}
