package telemetry

import "math"

// Accuracy is the share of labeled predictions that were right.
type Accuracy struct {
	Correct uint64 `json:"correct"`
	Labeled uint64 `json:"labeled"`
}

// Value is Correct/Labeled, or 0 without labels (check Labeled: JSON has no NaN, and these
// figures travel in API answers and webhook events).
func (a Accuracy) Value() float64 {
	if a.Labeled == 0 {
		return 0
	}
	return float64(a.Correct) / float64(a.Labeled)
}

// ConceptDrift is the verdict on a model whose accuracy was measured in an earlier and a recent
// period: accuracy that fell while the inputs still look like the reference means the relation
// between inputs and answers changed (concept drift), which retraining on new labels fixes and
// which input-drift scores cannot see.
type ConceptDrift struct {
	Before    float64 `json:"accuracy_before"`
	Recent    float64 `json:"accuracy_recent"`
	Drop      float64 `json:"drop"`
	Z         float64 `json:"z"`
	Fell      bool    `json:"accuracy_fell"`
	Concept   bool    `json:"concept_drift"`
	TooFew    bool    `json:"insufficient_labels,omitempty"`
	MinLabels uint64  `json:"min_labels"`
}

// Concept-drift test settings: at least MinConceptLabels labels on each side, a fall of at least
// MinAccuracyDrop (a statistically significant fall of 0.1 point on a million labels is not worth
// retraining for), and a one-sided two-proportion z-test at 1% (z >= 2.326).
const (
	MinConceptLabels = 100
	MinAccuracyDrop  = 0.02
	conceptZ         = 2.326
)

// DetectConceptDrift compares recent accuracy with earlier accuracy. inputsDrifted is the input
// drift verdict over the same recent period: a fall with drifted inputs is reported as a fall, not
// as concept drift, because the inputs explain it.
func DetectConceptDrift(before, recent Accuracy, inputsDrifted bool) ConceptDrift {
	c := ConceptDrift{Before: before.Value(), Recent: recent.Value(), MinLabels: MinConceptLabels}
	if before.Labeled < MinConceptLabels || recent.Labeled < MinConceptLabels {
		c.TooFew = true
		return c
	}
	c.Drop = c.Before - c.Recent
	n1, n2 := float64(before.Labeled), float64(recent.Labeled)
	p := float64(before.Correct+recent.Correct) / (n1 + n2)
	se := math.Sqrt(p * (1 - p) * (1/n1 + 1/n2))
	switch {
	case se > 0:
		c.Z = c.Drop / se
	case c.Drop > 0:
		c.Z = math.Inf(1)
	}
	c.Fell = c.Drop >= MinAccuracyDrop && c.Z >= conceptZ
	c.Concept = c.Fell && !inputsDrifted
	return c
}
