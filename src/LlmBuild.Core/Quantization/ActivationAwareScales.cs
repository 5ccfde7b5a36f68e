using System.Numerics.Tensors;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// Activation-aware weight scaling (AWQ, Lin et al., 2023) for the linears that share one input x [K]: per input
/// channel s_j = max(mean|x_j|, 1e-4)^α, normalised by √(max s · min s), multiplies the weights' column j before
/// round-to-nearest and divides x_j (folded into whatever produces x). α is searched on the grid 0, 1/20, …, 19/20
/// for the smallest output error of the quantized linears on the calibration inputs,
/// Σ_rows (W_eff − W) H (W_eff − W)ᵀ with W_eff = RTN(W·diag s)·diag(1/s) and H = Σ x xᵀ; α = 0 is RTN itself, so the
/// chosen scales never do worse than RTN on the calibration data. The search measures at most
/// <see cref="SearchRows"/> evenly spaced rows of each linear.
/// </summary>
public static class ActivationAwareScales
{
    public const int Grid = 20;
    public const int SearchRows = 128;

    /// <summary>The search's outcome: the scales [K], the chosen α, and the output errors at α and at α = 0 (RTN).</summary>
    public sealed record Result(float[] Scales, double Alpha, double Error, double RtnError);

    /// <param name="linears">Each linear's weight [N, K] (row-major) and N.</param>
    /// <param name="meanAbs">mean |x_j| over the calibration inputs, [K].</param>
    /// <param name="hessian">Σ x xᵀ over the same inputs, [K, K].</param>
    public static Result Search(IReadOnlyList<(float[] Weight, int N)> linears, int k, ReadOnlySpan<float> meanAbs, ReadOnlySpan<double> hessian, QuantScheme scheme)
    {
        float[] h = new float[(long)k * k];
        for (long i = 0; i < h.Length; i++) h[i] = (float)hessian[(int)i];
        float[] stats = meanAbs.ToArray();
        var errors = new double[Grid];
        var candidates = new float[Grid][];
        Parallelism.For(Grid, step =>
        {
            float[] s = Scales(stats, step / (double)Grid);
            candidates[step] = s;
            double total = 0;
            foreach (var (w, n) in linears) total += OutputError(w, n, k, s, h, scheme);
            errors[step] = total;
        });
        int best = 0;
        for (int step = 1; step < Grid; step++) if (errors[step] < errors[best]) best = step;
        return new Result(candidates[best], best / (double)Grid, errors[best], errors[0]);
    }

    /// <summary>s_j = max(mean|x_j|, 1e-4)^α / √(max s · min s).</summary>
    public static float[] Scales(ReadOnlySpan<float> meanAbs, double alpha)
    {
        var s = new float[meanAbs.Length];
        for (int j = 0; j < s.Length; j++) s[j] = (float)Math.Pow(Math.Max(meanAbs[j], 1e-4f), alpha);
        float norm = MathF.Sqrt(TensorPrimitives.Max(s) * TensorPrimitives.Min(s));
        TensorPrimitives.Divide(s, norm, s);
        return s;
    }

    /// <summary>Σ over the measured rows of Δ H Δᵀ, Δ = RTN(w·s)/s − w.</summary>
    private static double OutputError(float[] w, int n, int k, float[] s, float[] h, QuantScheme scheme)
    {
        int g = LinearQuantizer.EffectiveGroupSize(k, scheme.GroupSize, scheme.Bits, "weight");
        int rows = Math.Min(n, SearchRows), groups = k / g;
        var scaled = new float[k];
        var packed = new byte[scheme.Bits == 4 ? k / 2 : k];
        var scales = new float[groups];
        var zeros = new byte[groups];
        var scratch = new byte[k];
        var delta = new float[k];
        var hDelta = new float[k];
        double total = 0;
        for (int i = 0; i < rows; i++)
        {
            int r = (int)((long)i * n / rows);
            ReadOnlySpan<float> row = w.AsSpan(r * k, k);
            TensorPrimitives.Multiply(row, s, scaled);
            LinearQuantizer.QuantizeRow(scaled, scheme.Bits, g, scheme.Symmetric, packed, scales, zeros, scratch);
            for (int c = 0; c < k; c++) delta[c] = (Level(packed, scheme.Bits, c) - zeros[c / g]) * scales[c / g] / s[c] - row[c];
            for (int c = 0; c < k; c++) hDelta[c] = TensorPrimitives.Dot(h.AsSpan(c * k, k), delta);
            total += TensorPrimitives.Dot(hDelta, delta);
        }
        return total;
    }

    private static int Level(ReadOnlySpan<byte> packed, int bits, int c) =>
        bits == 8 ? packed[c] : (c & 1) == 0 ? packed[c / 2] & 0xF : packed[c / 2] >> 4;
}
