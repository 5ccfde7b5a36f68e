using System.Numerics.Tensors;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// Activation-aware weight scaling (AWQ, Lin et al., 2023) for the linears that share one input x [K]: per input
/// channel s_j = max(mean|x_j|, 1e-4)^α, normalised by √(max s · min s), multiplies the weights' column j before
/// round-to-nearest and divides x_j (folded into whatever produces x). Candidates: α on the grid 0, 1/20, …, 19/20, both
/// for s = mean|x|^α and for AutoAWQ's "duo" form s = mean|x|^α / mean|ŵ|^(1−α) (ŵ: the weights over their group's
/// largest magnitude, averaged per input channel over the linears' rows); the chosen one gives the smallest output
/// error of the quantized linears on the calibration inputs,
/// Σ_rows (W_eff − W) H (W_eff − W)ᵀ with W_eff = RTN(W·diag s)·diag(1/s) and H = Σ x xᵀ; α = 0 is RTN itself, so the
/// chosen scales never do worse than RTN on the calibration data. The search measures evenly spaced rows of each
/// linear: <see cref="SearchRows"/>, fewer for long rows (a row costs K² multiply-adds), at least 16.
/// </summary>
public static class ActivationAwareScales
{
    public const int Grid = 20;
    public const int SearchRows = 128;

    /// <summary>The search's outcome: the scales [K], the chosen α, and the output errors at α and at α = 0 (RTN).</summary>
    public sealed record Result(float[] Scales, double Alpha, double Error, double RtnError)
    {
        /// <summary>Whether the scales weigh the activations against the weights' own magnitudes (AutoAWQ's duo scaling).</summary>
        public bool Duo { get; init; }
    }

    /// <param name="linears">Each linear's weight [N, K] (row-major) and N.</param>
    /// <param name="meanAbs">mean |x_j| over the calibration inputs, [K].</param>
    /// <param name="hessian">Σ x xᵀ over the same inputs, [K, K].</param>
    public static Result Search(IReadOnlyList<(float[] Weight, int N)> linears, int k, ReadOnlySpan<float> meanAbs, ReadOnlySpan<double> hessian, QuantScheme scheme)
    {
        float[] h = new float[(long)k * k];
        for (long i = 0; i < h.Length; i++) h[i] = (float)hessian[(int)i];
        float[] stats = meanAbs.ToArray();
        float[] weightMean = MeanNormalisedWeight(linears, k, scheme);
        // Candidates 0..Grid−1: activations only; Grid..2·Grid−1: activations against weights ("duo" scaling).
        var errors = new double[2 * Grid];
        var candidates = new float[2 * Grid][];
        Parallelism.For(2 * Grid, c =>
        {
            double alpha = c % Grid / (double)Grid;
            float[] s = c < Grid ? Scales(stats, alpha) : Scales(stats, alpha, weightMean);
            candidates[c] = s;
            double total = 0;
            foreach (var (w, n) in linears) total += OutputError(w, n, k, s, h, scheme);
            errors[c] = total;
        });
        int best = 0;
        for (int c = 1; c < errors.Length; c++) if (errors[c] < errors[best]) best = c;
        return new Result(candidates[best], best % Grid / (double)Grid, errors[best], errors[0]) { Duo = best >= Grid };
    }

    /// <summary>Per input channel, the mean over the linears' rows of |w| divided by its group's largest |w|.</summary>
    private static float[] MeanNormalisedWeight(IReadOnlyList<(float[] Weight, int N)> linears, int k, QuantScheme scheme)
    {
        int g = LinearQuantizer.EffectiveGroupSize(k, scheme.GroupSize, scheme.Bits, "weight");
        var sum = new double[k];
        long rows = 0;
        foreach (var (w, n) in linears)
        {
            for (int r = 0; r < n; r++)
                for (int j = 0; j < k; j += g)
                {
                    ReadOnlySpan<float> group = w.AsSpan(r * k + j, g);
                    float max = MathF.Abs(TensorPrimitives.MaxMagnitude(group));
                    if (max == 0) continue;
                    for (int i = 0; i < g; i++) sum[j + i] += Math.Abs(group[i]) / max;
                }
            rows += n;
        }
        return sum.Select(v => (float)(v / rows)).ToArray();
    }

    /// <summary>Duo scaling: s_j = mean|x_j|^α / max(mean|ŵ_j|, 1e-4)^(1−α), normalised by √(max s · min s).</summary>
    public static float[] Scales(ReadOnlySpan<float> meanAbs, double alpha, ReadOnlySpan<float> weightMean)
    {
        var s = new float[meanAbs.Length];
        for (int j = 0; j < s.Length; j++)
            s[j] = (float)Math.Max(Math.Pow(Math.Max(meanAbs[j], 1e-4f), alpha) / Math.Pow(Math.Max(weightMean[j], 1e-4f), 1 - alpha), 1e-4);
        float norm = MathF.Sqrt(TensorPrimitives.Max(s) * TensorPrimitives.Min(s));
        TensorPrimitives.Divide(s, norm, s);
        return s;
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
        int rows = Math.Min(n, (int)Math.Clamp((1L << 27) / ((long)k * k), 16, SearchRows)), groups = k / g;
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
