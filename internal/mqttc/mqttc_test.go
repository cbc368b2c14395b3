package mqttc

import (
	"fmt"
	"slices"
	"testing"
)

func TestOrderedSpreadsClientsOverNodes(t *testing.T) {
	nodes := []string{"mqtt://n1:1883", "mqtt://n2:1883", "mqtt://n3:1883"}
	first := map[string]int{}
	for i := 1; i <= 3000; i++ {
		c := Config{URLs: nodes, ClientID: fmt.Sprintf("sim-%05d", i)}
		got := c.Ordered()
		if len(got) != len(nodes) {
			t.Fatalf("%s: %v lost a node", c.ClientID, got)
		}
		// A rotation: every node once, in the configured cyclic order.
		at := slices.Index(nodes, got[0])
		for j := range got {
			if got[j] != nodes[(at+j)%len(nodes)] {
				t.Fatalf("%s: %v is not a rotation of %v", c.ClientID, got, nodes)
			}
		}
		if again := c.Ordered(); !slices.Equal(again, got) {
			t.Fatalf("%s: %v then %v: a client must keep its preferred node", c.ClientID, got, again)
		}
		first[got[0]]++
	}
	for _, n := range nodes {
		if first[n] < 800 || first[n] > 1200 {
			t.Fatalf("first choices %v: want about 1000 per node", first)
		}
	}
	for _, c := range []Config{
		{URLs: nodes[:1], ClientID: "a"},
		{URLs: nodes},
	} {
		if got := c.Ordered(); !slices.Equal(got, c.URLs) {
			t.Fatalf("%+v: %v, want the configured order", c, got)
		}
	}
}
