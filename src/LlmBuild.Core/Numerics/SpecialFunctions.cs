namespace LlmBuild.Core.Numerics;

/// <summary>Special functions the kernels need that System.Math lacks.</summary>
public static class SpecialFunctions
{
    /// <summary>
    /// erf(x) from the Chebyshev-fitted erfc of Numerical Recipes (fractional error below 1.2e-7 everywhere), computed
    /// in double and rounded to float.
    /// </summary>
    public static float Erf(float x)
    {
        double z = Math.Abs((double)x);
        double t = 1.0 / (1.0 + 0.5 * z);
        double erfc = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
            + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return (float)(x >= 0 ? 1 - erfc : erfc - 1);
    }

    /// <summary>gelu with erf (PyTorch's default, approximate='none'): ½x(1 + erf(x/√2)).</summary>
    public static float GeluErf(float x) => 0.5f * x * (1f + Erf(x * 0.70710678118654752f));
}
