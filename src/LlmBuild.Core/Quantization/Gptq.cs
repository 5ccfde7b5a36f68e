using System.Numerics.Tensors;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// GPTQ (Frantar et al., 2022) for one linear W[N, K]: quantizes the inputs one column at a time and spreads each
/// column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of the layer's
/// reconstruction error, H = Σ x xᵀ over the calibration inputs. Steps, in double precision:
/// <list type="number">
/// <item>dead inputs (H_ii = 0) get H_ii = 1 and zero weights;</item>
/// <item>act-order: inputs sorted by decreasing H_ii (ties by index); the stored columns keep that order and the
/// permutation is the weight's input_perm, so each group stays contiguous in the A16MatMul layout;</item>
/// <item>damping: H += 0.01 · mean(diag H) · I; U = the upper Cholesky factor of H⁻¹ (H⁻¹ = Uᵀ U, from one Cholesky of the
/// order-reversed H and a triangular inverse);</item>
/// <item>column c: q = RTN level of w_c with its group's scale and zero (chosen, as RTN chooses them, from the group's
/// current weights when the group's first column comes up; per channel from the original row), err = (w_c − deq(q)) / U_cc,
/// w_j −= err · U_cj for the later columns j.</item>
/// </list>
/// The updates are applied lazily: inside a block of <see cref="BlockSize"/> columns (a whole number of groups) at once,
/// to the columns after the block once per block. Rows are independent, so row chunks run in parallel. The result is
/// the same as the column-by-column textbook loop (a test compares the integers) in the same packed layout as RTN.
/// </summary>
public static class Gptq
{
    public const double PercentDamp = 0.01;
    public const int BlockSize = 128;

    /// <summary>The GPTQ quantization of W[N, K] given the Hessian [K, K] (any positive multiple of Σ x xᵀ).</summary>
    public static QuantizedLinear Quantize(ReadOnlySpan<float> w, int n, int k, ReadOnlySpan<double> hessian, QuantScheme scheme, bool actOrder, string tensorName = "weight")
    {
        if (w.Length != (long)n * k) throw new ArgumentException($"Weight '{tensorName}' has {w.Length} elements, not {n}×{k}.");
        if (hessian.Length != (long)k * k) throw new ArgumentException($"The Hessian of '{tensorName}' has {hessian.Length} elements, not {k}×{k}.");
        int bits = scheme.Bits, g = LinearQuantizer.EffectiveGroupSize(k, scheme.GroupSize, bits, tensorName);
        int[] perm = Enumerable.Range(0, k).ToArray();
        double[] h = hessian.ToArray();
        if (actOrder)
        {
            double[] diag = Enumerable.Range(0, k).Select(i => h[(long)i * k + i]).ToArray();
            perm = perm.OrderByDescending(i => diag[i]).ThenBy(i => i).ToArray();
        }
        // H and W in the stored (permuted) order; dead inputs become harmless.
        var hp = new double[(long)k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) hp[(long)i * k + j] = h[(long)perm[i] * k + perm[j]];
        var wp = new double[(long)n * k];
        var dead = new bool[k];
        for (int i = 0; i < k; i++)
            if (hp[(long)i * k + i] == 0) { dead[i] = true; hp[(long)i * k + i] = 1; }
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k; c++) wp[(long)r * k + c] = dead[c] ? 0 : w[r * k + perm[c]];
        double[] u = InverseCholeskyUpper(hp, k, tensorName);

        int groups = k / g, rowBytes = bits == 4 ? k / 2 : k;
        // Blocks hold whole groups, so every group is chosen from fully updated weights.
        int block = g >= BlockSize || g == k ? (g == k ? BlockSize : g) : BlockSize / g * g;
        var levels = new byte[(long)n * k];
        var scales = new float[(long)n * groups];
        var zeros = new byte[(long)n * groups];
        const int RowsPerTask = 16;
        Parallelism.For((n + RowsPerTask - 1) / RowsPerTask, t =>
        {
            int r0 = t * RowsPerTask, r1 = Math.Min(n, r0 + RowsPerTask);
            var err = new double[(r1 - r0) * block];
            var groupValues = new float[g];
            for (int r = r0; r < r1 && g == k; r++) ChooseGroup(wp, r, k, 0, g, bits, scheme.Symmetric, groupValues, scales, zeros, groups, tensorName);
            for (int i1 = 0; i1 < k; i1 += block)
            {
                int i2 = Math.Min(k, i1 + block);
                for (int r = r0; r < r1; r++)
                {
                    Span<double> row = wp.AsSpan((int)((long)r * k), k);
                    for (int c = i1; c < i2; c++)
                    {
                        if (g != k && c % g == 0) ChooseGroup(wp, r, k, c, g, bits, scheme.Symmetric, groupValues, scales, zeros, groups, tensorName);
                        float scale = scales[r * groups + c / g];
                        int zero = zeros[r * groups + c / g];
                        int q = LinearQuantizer.Level(row[c], scale, zero, bits);
                        levels[(long)r * k + c] = (byte)q;
                        double e = (row[c] - (q - zero) * (double)scale) / u[(long)c * k + c];
                        err[(r - r0) * block + (c - i1)] = e;
                        // The rest of the block now; the columns after it once per block, below.
                        TensorPrimitives.MultiplyAdd(u.AsSpan((int)((long)c * k + c + 1), i2 - c - 1), -e, row.Slice(c + 1, i2 - c - 1), row.Slice(c + 1, i2 - c - 1));
                    }
                }
                if (i2 == k) continue;
                for (int c = i1; c < i2; c++)
                {
                    ReadOnlySpan<double> ucRest = u.AsSpan((int)((long)c * k + i2), k - i2);
                    for (int r = r0; r < r1; r++)
                    {
                        Span<double> rest = wp.AsSpan((int)((long)r * k + i2), k - i2);
                        TensorPrimitives.MultiplyAdd(ucRest, -err[(r - r0) * block + (c - i1)], rest, rest);
                    }
                }
            }
        });
        var qweight = new byte[(long)n * rowBytes];
        for (int r = 0; r < n; r++)
        {
            var rowLevels = levels.AsSpan((int)((long)r * k), k);
            if (bits == 4) QuantizedLinear.PackNibbles(rowLevels, qweight.AsSpan(r * rowBytes, rowBytes));
            else rowLevels.CopyTo(qweight.AsSpan(r * rowBytes, rowBytes));
        }
        return new QuantizedLinear(n, k, bits, g, qweight, scales, zeros) { InputPermutation = actOrder ? perm : null };
    }

    /// <summary>RTN's scale and zero of row r's group starting at stored column c, from the row's current weights.</summary>
    private static void ChooseGroup(double[] wp, int r, int k, int c, int g, int bits, bool symmetric, float[] values, float[] scales, byte[] zeros, int groups, string tensorName)
    {
        for (int i = 0; i < g; i++) values[i] = (float)wp[(long)r * k + c + i];
        var (scale, zero) = LinearQuantizer.GroupScaleAndZero(values, bits, symmetric, tensorName, r, c / g);
        scales[r * groups + c / g] = scale;
        zeros[r * groups + c / g] = (byte)zero;
    }

    /// <summary>
    /// Damps H in place (H += 0.01 · mean(diag H) · I) and returns U, upper triangular row-major with H⁻¹ = Uᵀ U.
    /// With J the order reversal, J H J = L Lᵀ gives H⁻¹ = (L⁻¹ J)ᵀ (L⁻¹ J), so U = J L⁻¹ J (upper, positive diagonal,
    /// hence the Cholesky factor): one Cholesky and one triangular inverse (forward solves, columns in parallel).
    /// </summary>
    public static double[] InverseCholeskyUpper(double[] h, int k, string tensorName = "weight")
    {
        double mean = 0;
        for (int i = 0; i < k; i++) mean += h[(long)i * k + i];
        double damp = PercentDamp * mean / k;
        for (int i = 0; i < k; i++) h[(long)i * k + i] += damp;
        var reversed = new double[(long)k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) reversed[(long)i * k + j] = h[(long)(k - 1 - i) * k + (k - 1 - j)];
        double[] l = CholeskyLower(reversed, k, tensorName);
        var upper = new double[(long)k * k];
        Parallelism.For(k, col =>
        {
            // Column col of L⁻¹: L x = e_col (x is zero above col).
            var x = new double[k];
            for (int i = col; i < k; i++)
                x[i] = ((i == col ? 1 : 0) - TensorPrimitives.Dot<double>(l.AsSpan((int)((long)i * k + col), i - col), x.AsSpan(col, i - col))) / l[(long)i * k + i];
            for (int i = col; i < k; i++) upper[(long)(k - 1 - i) * k + (k - 1 - col)] = x[i];
        });
        return upper;
    }

    /// <summary>Lower Cholesky factor of a symmetric positive definite [k, k] matrix (row-major); LLMB0233 when it is not.</summary>
    public static double[] CholeskyLower(double[] a, int k, string tensorName = "weight")
    {
        var l = new double[(long)k * k];
        for (int j = 0; j < k; j++)
        {
            ReadOnlySpan<double> lj = l.AsSpan((int)((long)j * k), j);
            double d = a[(long)j * k + j] - TensorPrimitives.Dot(lj, lj);
            if (!(d > 0))
                throw new LlmBuildException(ErrorCodes.CalibrationHessianSingular,
                    $"The calibration Hessian of '{tensorName}' is not positive definite at input {j} even after damping; its calibration inputs are degenerate. " +
                    "Use more or other calibration text (LlmCalibrationText, CalibrationSamples) or QuantizeMethod=rtn.");
            double djj = Math.Sqrt(d);
            l[(long)j * k + j] = djj;
            int rows = k - j - 1;
            if (rows == 0) continue;
            void Row(int i)
            {
                l[(long)i * k + j] = (a[(long)i * k + j] - TensorPrimitives.Dot<double>(l.AsSpan((int)((long)i * k), j), l.AsSpan((int)((long)j * k), j))) / djj;
            }
            if ((long)rows * j < 1 << 16) for (int i = j + 1; i < k; i++) Row(i);
            else
            {
                const int Chunk = 64;
                Parallelism.For((rows + Chunk - 1) / Chunk, t =>
                {
                    for (int i = j + 1 + t * Chunk; i < Math.Min(k, j + 1 + (t + 1) * Chunk); i++) Row(i);
                });
            }
        }
        return l;
    }
}
