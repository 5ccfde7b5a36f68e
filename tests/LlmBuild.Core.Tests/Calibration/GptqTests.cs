using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Tests.Calibration;

/// <summary>
/// GPTQ against a textbook implementation written independently here: H⁻¹ by Gauss–Jordan elimination, its upper
/// Cholesky factor by the plain triple loop, then one column at a time with the whole remaining row updated right away
/// (no blocks, no lazy batches). The production code (blocked, lazy updates, triangular solves, parallel rows) must
/// give the same integers, scales and zero points.
/// </summary>
[TestClass]
public sealed class GptqTests
{
    private static (float[] W, double[] H) SmallLinear(int n, int k, int tokens, int seed)
    {
        var rng = new Random(seed);
        var w = new float[n * k];
        for (int i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() - 0.5) * 0.2);
        var x = new double[tokens * k];
        // Correlated, unevenly scaled inputs (as a layer's activations are).
        for (int t = 0; t < tokens; t++)
        {
            double common = rng.NextDouble() - 0.5;
            for (int i = 0; i < k; i++) x[t * k + i] = (rng.NextDouble() - 0.5 + 0.7 * common) * (1 + (i % 7));
        }
        var h = new double[k * k];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) h[i * k + j] += x[t * k + i] * x[t * k + j];
        return (w, h);
    }

    /// <summary>The column-by-column algorithm of the paper, straight from its definition.</summary>
    private static (int[] Levels, float[] Scales, int[] Zeros, int[] Perm) Textbook(float[] w0, double[] h0, int n, int k, int bits, int g, bool symmetric, bool actOrder)
    {
        int[] perm = Enumerable.Range(0, k).ToArray();
        if (actOrder) perm = perm.OrderByDescending(i => h0[i * k + i]).ThenBy(i => i).ToArray();
        var h = new double[k, k];
        var w = new double[n, k];
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) h[i, j] = h0[perm[i] * k + perm[j]];
        for (int r = 0; r < n; r++) for (int c = 0; c < k; c++) w[r, c] = w0[r * k + perm[c]];
        double damp = 0;
        for (int i = 0; i < k; i++) damp += h[i, i];
        damp = 0.01 * damp / k;
        for (int i = 0; i < k; i++) h[i, i] += damp;
        // Gauss–Jordan inverse.
        var a = (double[,])h.Clone();
        var inv = new double[k, k];
        for (int i = 0; i < k; i++) inv[i, i] = 1;
        for (int c = 0; c < k; c++)
        {
            double p = a[c, c];
            for (int j = 0; j < k; j++) { a[c, j] /= p; inv[c, j] /= p; }
            for (int r = 0; r < k; r++)
            {
                if (r == c) continue;
                double f = a[r, c];
                for (int j = 0; j < k; j++) { a[r, j] -= f * a[c, j]; inv[r, j] -= f * inv[c, j]; }
            }
        }
        // Upper Cholesky: inv = Uᵀ U.
        var u = new double[k, k];
        for (int i = 0; i < k; i++)
        {
            double s = inv[i, i];
            for (int m = 0; m < i; m++) s -= u[m, i] * u[m, i];
            u[i, i] = Math.Sqrt(s);
            for (int j = i + 1; j < k; j++)
            {
                double t = inv[i, j];
                for (int m = 0; m < i; m++) t -= u[m, i] * u[m, j];
                u[i, j] = t / u[i, i];
            }
        }
        int groups = k / g, qmax = (1 << bits) - 1;
        var levels = new int[n * k];
        var scales = new float[n * groups];
        var zeros = new int[n * groups];
        for (int r = 0; r < n; r++)
        {
            if (g == k) SetGroup(r, 0);
            for (int c = 0; c < k; c++)
            {
                if (g != k && c % g == 0) SetGroup(r, c);
                float scale = scales[r * groups + c / g];
                int zero = zeros[r * groups + c / g];
                int q = scale == 0 ? zero : (int)Math.Clamp(Math.Round(w[r, c] / scale, MidpointRounding.ToEven) + zero, 0, qmax);
                levels[r * k + c] = q;
                double err = (w[r, c] - (q - zero) * (double)scale) / u[c, c];
                for (int j = c + 1; j < k; j++) w[r, j] -= err * u[c, j];
            }
        }
        return (levels, scales, zeros, perm);

        void SetGroup(int r, int c)
        {
            // RTN's rule, written out: range widened to 0, scale and zero per group.
            float lo = 0, hi = 0, absMax = 0;
            for (int i = c; i < c + g; i++)
            {
                float v = (float)w[r, i];
                lo = Math.Min(lo, v); hi = Math.Max(hi, v); absMax = Math.Max(absMax, Math.Abs(v));
            }
            float scale = symmetric ? 2 * absMax / qmax : (hi - lo) / qmax;
            int zero = symmetric ? 1 << (bits - 1) : scale == 0 ? 0 : (int)Math.Clamp(Math.Round(-lo / scale, MidpointRounding.ToEven), 0, qmax);
            scales[r * groups + c / g] = scale;
            zeros[r * groups + c / g] = zero;
        }
    }

    [TestMethod]
    [DataRow(4, 32, false, false)]
    [DataRow(4, 64, true, false)]
    [DataRow(4, 32, false, true)]
    [DataRow(8, 0, false, false)]
    [DataRow(4, 192, true, true)]
    [DataRow(4, 0, false, true)]
    public void MatchesTheTextbookAlgorithm(int bits, int groupSize, bool symmetric, bool actOrder)
    {
        // K = 384 spans three 128-column blocks, so the lazy updates between blocks are exercised.
        const int n = 24, k = 384;
        var (w, h) = SmallLinear(n, k, 600, seed: bits * 1000 + groupSize + (symmetric ? 7 : 0) + (actOrder ? 13 : 0));
        QuantizedLinear q = Gptq.Quantize(w, n, k, h, new QuantScheme(bits, groupSize, symmetric), actOrder);
        int g = groupSize == 0 ? k : groupSize;
        var expected = Textbook(w, h, n, k, bits, g, symmetric, actOrder);
        int differ = 0;
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k; c++)
                if (q.Q(r, c) != expected.Levels[r * k + c]) differ++;
        Assert.AreEqual(0, differ, "quantized integers that differ from the textbook algorithm");
        CollectionAssert.AreEqual(expected.Zeros.Select(z => (byte)z).ToArray(), q.QZeros);
        for (int i = 0; i < q.Scales.Length; i++) Assert.AreEqual(expected.Scales[i], q.Scales[i], Math.Abs(expected.Scales[i]) * 1e-6, $"scale {i}");
        if (actOrder) CollectionAssert.AreEqual(expected.Perm, q.InputPermutation);
        else Assert.IsNull(q.InputPermutation);
    }

    [TestMethod]
    public void BeatsRoundToNearestOnTheCalibrationError()
    {
        const int n = 32, k = 256;
        var (w, h) = SmallLinear(n, k, 800, seed: 5);
        var scheme = new QuantScheme(4, 64, false);
        double gptq = OutputError(w, LinearQuantizer.DequantizeInSourceOrder(Gptq.Quantize(w, n, k, h, scheme, actOrder: false)), h, n, k);
        double rtn = OutputError(w, LinearQuantizer.DequantizeInSourceOrder(LinearQuantizer.Quantize(w, n, k, scheme)), h, n, k);
        Assert.IsTrue(gptq < 0.8 * rtn, $"GPTQ's error {gptq:G4} vs RTN's {rtn:G4}");
    }

    /// <summary>Σ over the calibration inputs of |(W' − W) x|² = Σ_rows Δᵀ H Δ.</summary>
    private static double OutputError(float[] w, float[] wq, double[] h, int n, int k)
    {
        double total = 0;
        for (int r = 0; r < n; r++)
            for (int i = 0; i < k; i++)
            {
                double di = wq[r * k + i] - w[r * k + i];
                for (int j = 0; j < k; j++) total += di * h[i * k + j] * (wq[r * k + j] - w[r * k + j]);
            }
        return total;
    }
}
