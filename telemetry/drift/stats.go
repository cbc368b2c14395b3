package drift

import "gonum.org/v1/gonum/stat/distuv"

// The chi-square distribution comes from gonum rather than a hand-written incomplete gamma:
// a maintained, tested implementation of the one piece of special-function numerics we need.

func chiSquareSurvival(x float64, df int) float64 {
	return distuv.ChiSquared{K: float64(df)}.Survival(x)
}

func chiSquareQuantile(p float64, df int) float64 {
	return distuv.ChiSquared{K: float64(df)}.Quantile(p)
}
