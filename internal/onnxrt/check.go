package onnxrt

// CheckInputs validates inputs against s exactly as Session.Run does (names, datatypes, shapes,
// element counts) and returns them in the schema's order, without running anything. A caller
// that combines several requests into one run (dynamic batching) checks each request with it
// first, so one caller's bad input fails that caller alone instead of the whole batch.
func CheckInputs(s Schema, inputs []Tensor) ([]Tensor, error) {
	return orderInputs(s, inputs)
}
