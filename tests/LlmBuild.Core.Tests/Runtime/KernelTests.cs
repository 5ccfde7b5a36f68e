using LlmBuild.Core.BModel;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Runtime;
using System.Runtime.Intrinsics;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>
/// The vectorised kernels (including their tails) against scalar loops written from the format description, at every
/// vector width this CPU runs (each width forced): few rows take the fused dequantize-dot path, more than
/// <see cref="MatMulKernels.FewRows"/> the dequantize-then-tile GEMM.
/// </summary>
[TestClass]
public sealed unsafe class KernelTests
{
    [TestMethod]
    [DataRow(1, 50, 7)]
    [DataRow(3, 131, 300)]
    [DataRow(2, 64, 5)]
    [DataRow(4, 16, 9)]
    [DataRow(6, 160, 70)]
    [DataRow(9, 200, 37)]
    [DataRow(128, 96, 48)]
    [DataRow(3, 22000, 3)] // x rows beyond MatMulKernels.FewRowsXBytes: walked in K blocks
    public void Bf16MatMulMatchesScalar(int m, int k, int n)
    {
        foreach (SimdWidth width in Widths()) Bf16MatMulMatchesScalar(m, k, n, width);
    }

    private static IEnumerable<SimdWidth> Widths() => Enum.GetValues<SimdWidth>().Where(Simd.IsSupported);

    private static void Bf16MatMulMatchesScalar(int m, int k, int n, SimdWidth width)
    {
        var rng = new Random(3);
        float[] x = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        ushort[] w = Enumerable.Range(0, n * k).Select(_ => FloatFormats.FloatToBFloat16Scalar((float)rng.NextDouble() - 0.5f)).ToArray();
        float[] bias = Enumerable.Range(0, n).Select(i => i * 0.01f).ToArray();
        var y = new float[m * n];
        fixed (float* xp = x, yp = y)
        fixed (ushort* wp = w)
            Kernels.MatMul(xp, m, k, n, (byte*)wp, BModelDataType.BFloat16, true, bias, yp, width);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double want = bias[j];
                for (int t = 0; t < k; t++) want += x[i * k + t] * (double)FloatFormats.BFloat16ToFloatScalar(w[j * k + t]);
                Assert.AreEqual(want, y[i * n + j], 1e-4, $"{width} [{i},{j}]");
            }
    }

    [TestMethod]
    [DataRow(4, 2, 96, 32, 300)]
    [DataRow(4, 5, 80, 40, 33)]
    [DataRow(4, 3, 256, 128, 9)]
    [DataRow(4, 4, 64, 64, 7)]
    [DataRow(4, 1, 40, 40, 5)]
    [DataRow(8, 2, 96, 48, 17)]
    [DataRow(8, 1, 21, 21, 3)]
    [DataRow(4, 7, 96, 32, 21)]
    [DataRow(4, 16, 80, 40, 35)]
    [DataRow(4, 128, 128, 64, 40)]
    [DataRow(8, 6, 63, 21, 19)]
    [DataRow(8, 12, 96, 48, 33)]
    [DataRow(4, 4, 16640, 64, 3)] // x rows beyond MatMulKernels.FewRowsXBytes: walked in K blocks
    [DataRow(4, 2, 33000, 40, 3)]
    [DataRow(8, 3, 22050, 70, 3)]
    [DataRow(4, 1, 4864, 64, 13)] // Vector512: the table path (groups of a multiple of 64), one row of a long K in one pass
    [DataRow(4, 2, 896, 128, 70)]
    [DataRow(4, 4, 896, 64, 9)] // Vector512, several rows: the table path two columns at a time, an odd one left
    [DataRow(4, 3, 4864, 64, 5)] // ... a Batch=4 down projection whole
    [DataRow(4, 3, 21888, 64, 3)] // ... and in K blocks
    [DataRow(8, 4, 896, 64, 9)]
    [DataRow(4, 1, 896, 64, 9)] // one row: the table path two columns at a time, an odd one left
    [DataRow(8, 1, 896, 64, 9)] // one row, 8 bits: two columns at a time, an odd one left
    [DataRow(8, 1, 100, 20, 7)] // ... with groups shorter than two vectors and scalar tails
    [DataRow(8, 1, 4864, 64, 5)] // ... one row of a long K in one pass
    [DataRow(8, 4, 200, 100, 7)] // several rows, 8 bits (Vector512): two columns at a time, scalar tails in each group, an odd one left
    [DataRow(8, 3, 896, 64, 6)]
    [DataRow(8, 2, 4864, 64, 5)]
    [DataRow(8, 2, 32832, 64, 3)] // ... in K blocks
    public void QuantizedMatMulMatchesDequantizedScalar(int bits, int m, int k, int group, int n)
    {
        foreach (SimdWidth width in Widths()) QuantizedMatMulMatchesDequantizedScalar(bits, m, k, group, n, width);
    }

    private static void QuantizedMatMulMatchesDequantizedScalar(int bits, int m, int k, int group, int n, SimdWidth width)
    {
        var rng = new Random(5);
        int groups = k / group;
        float[] x = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var q = new int[n * k];
        for (int i = 0; i < q.Length; i++) q[i] = rng.Next(0, 1 << bits);
        byte[] packed = bits == 8 ? q.Select(v => (byte)v).ToArray() : new byte[n * k / 2];
        if (bits == 4)
            for (int j = 0; j < n; j++)
                for (int t = 0; t < k / 2; t++)
                    packed[j * k / 2 + t] = (byte)(q[j * k + 2 * t] | (q[j * k + 2 * t + 1] << 4)); // element 2i in the low nibble
        float[] scales = Enumerable.Range(0, n * groups).Select(_ => (float)rng.NextDouble() * 0.1f).ToArray();
        byte[] zeros = Enumerable.Range(0, n * groups).Select(_ => (byte)rng.Next(0, 1 << bits)).ToArray();
        var y = new float[m * n];
        fixed (float* xp = x, yp = y, sp = scales)
        fixed (byte* qp = packed, zp = zeros)
            Kernels.A16MatMul(xp, m, k, n, qp, sp, zp, bits, group, null, yp, width);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double want = 0;
                for (int t = 0; t < k; t++)
                {
                    int g = t / group;
                    want += x[i * k + t] * (q[j * k + t] - zeros[j * groups + g]) * (double)scales[j * groups + g];
                }
                Assert.AreEqual(want, y[i * n + j], 1e-3, $"{width} [{i},{j}]");
            }
    }

    /// <summary>The shapes the matmul tests mark "in K blocks" do pass the few-rows bound (else they would test the whole-row path twice).</summary>
    [TestMethod]
    [DataRow(3, 22000)]
    [DataRow(4, 16640)]
    [DataRow(2, 33000)]
    [DataRow(3, 22050)]
    [DataRow(3, 21888)]
    [DataRow(2, 32832)]
    public void KBlockShapesPassTheFewRowsBound(int m, int k)
    {
        Assert.IsTrue(m <= MatMulKernels.FewRows && m > 1);
        Assert.IsTrue((long)m * k * sizeof(float) > MatMulKernels.FewRowsXBytesDefault, $"{m} rows of {k}");
    }

    /// <summary>The table path's x order: in each block of 64, x'[16t + l] = x[4l + t], every row (vector permutes or scalar).</summary>
    [TestMethod]
    public void InterleaveNibbleBlocksFollowsItsDefinition()
    {
        const int m = 3, k = 192;
        float[] x = Enumerable.Range(0, m * k).Select(i => (float)i).ToArray();
        var prepared = new float[m * k];
        fixed (float* xp = x) MatMulKernels.InterleaveNibbleBlocks(xp, m, k, prepared);
        for (int b = 0; b < m * k; b += 64)
            for (int t = 0; t < 4; t++)
                for (int l = 0; l < 16; l++)
                    Assert.AreEqual(x[b + 4 * l + t], prepared[b + 16 * t + l], $"block {b}, nibble {t}, lane {l}");
    }

    /// <summary>f32 → bf16 goes straight into the destination unless the two overlap (an in-place convert), then through a buffer.</summary>
    [TestMethod]
    public void FloatToBFloat16ConvertMatchesScalarInPlaceToo()
    {
        var rng = new Random(11);
        float[] values = Enumerable.Range(0, 1000).Select(_ => (float)(rng.NextDouble() - 0.5) * 100).ToArray();
        ushort[] want = values.Select(FloatFormats.FloatToBFloat16Scalar).ToArray();
        var apart = new ushort[values.Length];
        float[] inPlace = (float[])values.Clone();
        fixed (float* src = values, same = inPlace)
        fixed (ushort* dst = apart)
        {
            Kernels.Convert((byte*)src, BModelDataType.Float32, (byte*)dst, BModelDataType.BFloat16, values.Length);
            Kernels.Convert((byte*)same, BModelDataType.Float32, (byte*)same, BModelDataType.BFloat16, values.Length);
            CollectionAssert.AreEqual(want, apart);
            CollectionAssert.AreEqual(want, new ReadOnlySpan<ushort>(same, values.Length).ToArray());
        }
    }

    /// <summary>The load-time warm-up runs every kernel path on its scratch operands without failing (at every width this CPU has, as the best).</summary>
    [TestMethod]
    public void KernelWarmupRunsEveryPath() => KernelWarmup.Run();

    /// <summary>A convert large enough to be split over the cores (bf16 → f32 and back) gives what the scalar conversions give.</summary>
    [TestMethod]
    [DataRow(3 * Kernels.CopyChunk + 17)]
    [DataRow(2 * Kernels.CopyChunk)]
    public void ChunkedConvertMatchesScalar(int count)
    {
        var rng = new Random(13);
        float[] values = Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() - 0.5) * 100).ToArray();
        ushort[] want = values.Select(FloatFormats.FloatToBFloat16Scalar).ToArray();
        var narrow = new ushort[count];
        var wide = new float[count];
        fixed (float* src = values, back = wide)
        fixed (ushort* dst = narrow)
        {
            Kernels.Convert((byte*)src, BModelDataType.Float32, (byte*)dst, BModelDataType.BFloat16, count);
            Kernels.Convert((byte*)dst, BModelDataType.BFloat16, (byte*)back, BModelDataType.Float32, count);
        }
        CollectionAssert.AreEqual(want, narrow);
        CollectionAssert.AreEqual(want.Select(FloatFormats.BFloat16ToFloatScalar).ToArray(), wide);
    }

    /// <summary>
    /// SiLU at every vector width against x / (1 + e^−x) in double; below Vector512 (and for the tail) exactly what
    /// TensorPrimitives' sigmoid then product give on the whole span, in pieces of its scratch's length too; in place the
    /// same as out of place (it used to write the sigmoid over x before multiplying by it: sigmoid(x)²); NaN stays NaN.
    /// </summary>
    [TestMethod]
    [DataRow(100)]
    [DataRow(4 * 4864)] // a Batch=4 decode step's MLP
    [DataRow(3 * Kernels.SiLUChunk + 17)]
    public void SiLUMatchesScalarAndOneCall(int count)
    {
        var rng = new Random(17);
        float[] x = Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() - 0.5) * 20).ToArray();
        x[0] = 100; x[1] = -100; x[2] = 0; x[3] = 88.5f; x[4] = -87.5f; x[5] = float.NaN; // e^−x overflowing, underflowing
        float[] whole = new float[count];
        System.Numerics.Tensors.TensorPrimitives.Sigmoid(x, whole);
        System.Numerics.Tensors.TensorPrimitives.Multiply(x, whole, whole);
        float[] y = new float[count], inPlace = (float[])x.Clone();
        fixed (float* xp = x, yp = y, ip = inPlace)
        {
            Kernels.SiLU(xp, yp, count);
            Kernels.SiLU(ip, ip, count);
        }
        CollectionAssert.AreEqual(y, inPlace, "in place");
        CollectionAssert.AreEqual(whole, y, "in pieces of the scratch");
        Assert.IsTrue(float.IsNaN(y[5]), "NaN");
        for (int i = 0; i < count; i++)
            if (i != 5) Assert.AreEqual(x[i] / (1 + Math.Exp(-x[i])), y[i], 1e-5 * (1 + Math.Abs(x[i])), $"[{i}]");
    }

    /// <summary>ArgMax at every vector width against the plain scan: the first of equal values, NaNs never chosen (unless first), −∞, tails.</summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(15)]
    [DataRow(151936)]
    [DataRow(1000)]
    public void ArgMaxMatchesScanAtEveryWidth(int n)
    {
        var rng = new Random(n);
        for (int trial = 0; trial < 20; trial++)
        {
            float[] x = Enumerable.Range(0, n).Select(i => rng.Next(6) switch
            {
                0 => float.NaN,
                1 => float.NegativeInfinity,
                2 => rng.Next(3), // ties
                _ => (float)rng.NextDouble() * 3 + i * (trial % 2) * 1e-3f, // rising: the best keeps changing
            }).ToArray();
            if (trial == 1) x[0] = float.NaN;
            if (trial == 2 && n > 1) x[^1] = 1e9f;
            int want = 0;
            for (int i = 1; i < n; i++) if (x[i] > x[want]) want = i;
            foreach (SimdWidth width in Widths())
                Assert.AreEqual(want, Kernels.ArgMax(x, width), $"{width} trial {trial}");
        }
    }

    /// <summary>Concat against a scalar loop: small (serial) and large (chunks over the cores that span inputs and rows).</summary>
    [TestMethod]
    [DataRow(1, 3, 5, 2)]
    [DataRow(1, 511, 1, 1024)] // a decode step's KV history and its new row
    [DataRow(4, 300, 2, 128)]
    [DataRow(3, 7, 0, 5000)] // an empty input
    public void ConcatMatchesScalar(int outer, int first, int second, int inner)
    {
        long[] sizes = [first, second, 3];
        float[][] parts = sizes.Select((size, k) => Enumerable.Range(0, (int)(outer * size * inner)).Select(i => k * 1e6f + i).ToArray()).ToArray();
        long total = sizes.Sum();
        var want = new List<float>();
        for (int r = 0; r < outer; r++)
            for (int k = 0; k < parts.Length; k++)
                want.AddRange(parts[k].Skip((int)(r * sizes[k] * inner)).Take((int)(sizes[k] * inner)));
        var y = new float[outer * total * inner];
        var handles = parts.Select(p => System.Runtime.InteropServices.GCHandle.Alloc(p, System.Runtime.InteropServices.GCHandleType.Pinned)).ToArray();
        try
        {
            fixed (float* yp = y)
                Kernels.Concat(handles.Select(h => h.AddrOfPinnedObject()).ToArray(), sizes, outer, inner, yp);
        }
        finally
        {
            foreach (var h in handles) h.Free();
        }
        CollectionAssert.AreEqual(want.ToArray(), y);
    }

    [TestMethod]
    [DataRow(1, 50, 7)]
    [DataRow(4, 33, 9)]
    [DataRow(10, 70, 13)]
    public void Float32MatMulMatchesScalar(int m, int k, int n)
    {
        var rng = new Random(7);
        float[] x = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        float[] w = Enumerable.Range(0, n * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        foreach (SimdWidth width in Widths())
        {
            var y = new float[m * n];
            fixed (float* xp = x, yp = y, wp = w)
                Kernels.MatMul(xp, m, k, n, (byte*)wp, BModelDataType.Float32, true, null, yp, width);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double want = 0;
                    for (int t = 0; t < k; t++) want += x[i * k + t] * (double)w[j * k + t];
                    Assert.AreEqual(want, y[i * n + j], 1e-4, $"{width} [{i},{j}]");
                }
        }
    }

    /// <summary>
    /// Attention against a softmax over every key (masked ones included, as the formula reads): the kernel leaves out
    /// keys whose mask is the −10000 fill, which must not change the numbers.
    /// </summary>
    [TestMethod]
    [DataRow(1, 1, 40, false)] // a decode step: 40 cache slots, the last ones unfilled
    [DataRow(2, 5, 12, false)]
    [DataRow(1, 6, 6, true)]
    [DataRow(1, 3, 9, true)]
    public void AttentionMatchesFullSoftmax(int batch, int mq, int mk, bool causal)
    {
        const int qHeads = 4, kvHeads = 2, dim = 8;
        const float scale = 0.35f;
        var rng = new Random(11);
        float[] q = Enumerable.Range(0, batch * mq * qHeads * dim).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        float[] k = Enumerable.Range(0, batch * mk * kvHeads * dim).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        float[] v = Enumerable.Range(0, batch * mk * kvHeads * dim).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        var mask = new float[batch * mq * mk];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < mq; i++)
                for (int j = 0; j < mk; j++)
                    mask[(b * mq + i) * mk + j] = j <= i + mk / 2 - mq + b ? 0f : -10000f; // filled slots, then unfilled ones
        var y = new float[batch * mq * qHeads * dim];
        fixed (float* qp = q, kp = k, vp = v, mp = mask, yp = y)
            Kernels.Attention(qp, kp, vp, causal ? null : mp, yp, batch, qHeads, kvHeads, dim, mq, mk, causal, scale);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < mq; i++)
                for (int h = 0; h < qHeads; h++)
                {
                    int kh = h / (qHeads / kvHeads);
                    var s = new double[mk];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < mk; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < dim; d++) dot += q[((b * mq + i) * qHeads + h) * dim + d] * (double)k[((b * mk + j) * kvHeads + kh) * dim + d];
                        s[j] = dot * scale + (causal ? (j <= i + mk - mq ? 0 : double.NegativeInfinity) : mask[(b * mq + i) * mk + j]);
                        max = Math.Max(max, s[j]);
                    }
                    double sum = s.Sum(x => Math.Exp(x - max));
                    for (int d = 0; d < dim; d++)
                    {
                        double want = 0;
                        for (int j = 0; j < mk; j++) want += Math.Exp(s[j] - max) / sum * v[((b * mk + j) * kvHeads + kh) * dim + d];
                        Assert.AreEqual(want, y[((b * mq + i) * qHeads + h) * dim + d], 1e-5, $"[{b},{i},{h},{d}]");
                    }
                }
    }

    /// <summary>
    /// Attention reading keys and values as history (bf16 or f32) + new rows gives bit for bit what it gives on the
    /// concatenated f32 tensors (which the oracle above checks): the same numbers in the same order.
    /// </summary>
    [TestMethod]
    [DataRow(1, 1, 11, 1, false, true)]
    [DataRow(2, 1, 7, 1, false, false)]
    [DataRow(2, 3, 9, 3, true, true)]
    public void SplitHistoryAttentionMatchesConcatenated(int batch, int mq, int historyRows, int freshRows, bool causal, bool bf16History)
    {
        const int qHeads = 4, kvHeads = 2, dim = 8;
        const float scale = 0.35f;
        int mk = historyRows + freshRows, row = kvHeads * dim;
        var rng = new Random(17);
        float[] Values(int count) => Enumerable.Range(0, count).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        float[] q = Values(batch * mq * qHeads * dim);
        // bf16 history: values a bf16 holds exactly, as the widened copy would hold them.
        float[] Rounded(float[] v) => bf16History ? v.Select(x => FloatFormats.BFloat16ToFloatScalar(FloatFormats.FloatToBFloat16Scalar(x))).ToArray() : v;
        float[] kh = Rounded(Values(batch * historyRows * row)), vh = Rounded(Values(batch * historyRows * row));
        float[] kf = Values(batch * freshRows * row), vf = Values(batch * freshRows * row);
        float[] Joined(float[] h, float[] f) => Enumerable.Range(0, batch).SelectMany(b =>
            h.Skip(b * historyRows * row).Take(historyRows * row).Concat(f.Skip(b * freshRows * row).Take(freshRows * row))).ToArray();
        float[] k = Joined(kh, kf), v = Joined(vh, vf);
        var mask = new float[batch * mq * mk];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < mq; i++)
                for (int j = 0; j < mk; j++)
                    mask[(b * mq + i) * mk + j] = j < historyRows / 2 + b || j >= historyRows ? 0f : -10000f; // some history filled, the new rows
        var want = new float[batch * mq * qHeads * dim];
        var got = new float[want.Length];
        ushort[] khb = kh.Select(FloatFormats.FloatToBFloat16Scalar).ToArray(), vhb = vh.Select(FloatFormats.FloatToBFloat16Scalar).ToArray();
        fixed (float* qp = q, kp = k, vp = v, mp = mask, wp = want, gp = got, khp = kh, vhp = vh, kfp = kf, vfp = vf)
        fixed (ushort* khbp = khb, vhbp = vhb)
        {
            Kernels.Attention(qp, kp, vp, causal ? null : mp, wp, batch, qHeads, kvHeads, dim, mq, mk, causal, scale);
            var type = bf16History ? BModelDataType.BFloat16 : BModelDataType.Float32;
            var keys = new Kernels.SplitRows(bf16History ? (byte*)khbp : (byte*)khp, type, historyRows, kfp, freshRows, kvHeads, dim);
            var values = new Kernels.SplitRows(bf16History ? (byte*)vhbp : (byte*)vhp, type, historyRows, vfp, freshRows, kvHeads, dim);
            Kernels.Attention(qp, keys, values, causal ? null : mp, gp, batch, qHeads, kvHeads, dim, mq, mk, causal, scale);
        }
        CollectionAssert.AreEqual(want, got);
    }

    /// <summary>
    /// Attention at every vector width (the vector loops where dim is a multiple of the width, the general path otherwise
    /// and at Scalar) against a plain scalar softmax(q·Kᵀ + mask)·V in double: a bf16 history plus new f32 rows, query
    /// heads sharing KV heads, masked history slots, dims that are and are not multiples of 16.
    /// </summary>
    [TestMethod]
    [DataRow(1, 1, 60, 1, 64, false)] // a Qwen2.5-0.5B decode step: dim 64, 7 query heads a KV head
    [DataRow(4, 1, 30, 1, 64, false)] // Batch=4
    [DataRow(2, 3, 9, 3, 16, true)]
    [DataRow(2, 1, 20, 1, 24, false)] // a multiple of 8, not of 16
    [DataRow(1, 2, 7, 2, 12, false)] // neither
    public void AttentionMatchesScalarOracleAtEveryWidth(int batch, int mq, int historyRows, int freshRows, int dim, bool causal)
    {
        const int qHeads = 14, kvHeads = 2, group = qHeads / kvHeads;
        float scale = 1 / MathF.Sqrt(dim);
        int mk = historyRows + freshRows, row = kvHeads * dim;
        var rng = new Random(23);
        float[] Values(int count) => Enumerable.Range(0, count).Select(_ => (float)rng.NextDouble() * 4 - 2).ToArray();
        float[] q = Values(batch * mq * qHeads * dim);
        ushort[] kh = Values(batch * historyRows * row).Select(FloatFormats.FloatToBFloat16Scalar).ToArray();
        ushort[] vh = Values(batch * historyRows * row).Select(FloatFormats.FloatToBFloat16Scalar).ToArray();
        float[] kf = Values(batch * freshRows * row), vf = Values(batch * freshRows * row);
        float Key(ushort[] h, float[] f, int b, int j, int head, int d) => j < historyRows
            ? FloatFormats.BFloat16ToFloatScalar(h[((b * historyRows + j) * kvHeads + head) * dim + d])
            : f[((b * freshRows + j - historyRows) * kvHeads + head) * dim + d];
        var mask = new float[batch * mq * mk];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < mq; i++)
                for (int j = 0; j < mk; j++)
                    mask[(b * mq + i) * mk + j] = j < historyRows * 2 / 3 + b || j >= historyRows ? (j % 5) * 0.25f : -10000f;
        foreach (SimdWidth width in Widths())
        {
            var y = new float[batch * mq * qHeads * dim];
            fixed (float* qp = q, mp = mask, yp = y, kfp = kf, vfp = vf)
            fixed (ushort* khp = kh, vhp = vh)
            {
                var keys = new Kernels.SplitRows((byte*)khp, BModelDataType.BFloat16, historyRows, kfp, freshRows, kvHeads, dim);
                var values = new Kernels.SplitRows((byte*)vhp, BModelDataType.BFloat16, historyRows, vfp, freshRows, kvHeads, dim);
                Kernels.Attention(qp, keys, values, causal ? null : mp, yp, batch, qHeads, kvHeads, dim, mq, mk, causal, scale, width);
            }
            for (int b = 0; b < batch; b++)
                for (int i = 0; i < mq; i++)
                    for (int h = 0; h < qHeads; h++)
                    {
                        int head = h / group;
                        var s = new double[mk];
                        for (int j = 0; j < mk; j++)
                        {
                            double dot = 0;
                            for (int d = 0; d < dim; d++) dot += q[((b * mq + i) * qHeads + h) * dim + d] * (double)Key(kh, kf, b, j, head, d);
                            s[j] = dot * scale + (causal ? (j <= i + mk - mq ? 0 : double.NegativeInfinity) : mask[(b * mq + i) * mk + j]);
                        }
                        double max = s.Max(), sum = s.Sum(x => Math.Exp(x - max));
                        for (int d = 0; d < dim; d++)
                        {
                            double want = 0;
                            for (int j = 0; j < mk; j++) want += Math.Exp(s[j] - max) / sum * Key(vh, vf, b, j, head, d);
                            Assert.AreEqual(want, y[((b * mq + i) * qHeads + h) * dim + d], 2e-5, $"{width} [{b},{i},{h},{d}]");
                        }
                    }
        }
    }

    /// <summary>
    /// TopK at every vector width (whole vectors skipped once k values are held) against a plain sort: largest first,
    /// ties to the lower index, NaNs left out, −∞ kept, k above the row's non-NaN values (−∞ and index 0 past them), a
    /// run-time k below K (−∞ values past it), several rows (split over the cores), f32 and i32 indices.
    /// </summary>
    [TestMethod]
    [DataRow(1, 151936, 1, 1)] // a greedy lm_head's row
    [DataRow(4, 5000, 1, 1)]
    [DataRow(3, 1000, 8, 8)]
    [DataRow(2, 777, 5, 3)] // run-time k below K
    [DataRow(2, 20, 40, 40)] // k above the row's length
    public void TopKMatchesSortAtEveryWidth(int rows, int n, int kMax, int kLimit)
    {
        var rng = new Random(n + kMax);
        var x = new float[rows * n];
        for (int i = 0; i < x.Length; i++)
            x[i] = rng.Next(10) switch
            {
                0 => float.NaN,
                1 => float.NegativeInfinity,
                2 or 3 => rng.Next(4) * 0.5f, // ties
                _ => (float)rng.NextDouble() * 4 - 2 + (i % n) * 1e-4f, // rising along the row: the k-th best keeps changing
            };
        x[n - 1] = float.NaN;
        if (n > 40) x[n / 2] = 1e6f; // one value far above the rest, then exact copies of it later: ties to the first
        if (n > 40) x[n - 2] = x[n - 3] = 1e6f;
        foreach (SimdWidth width in Widths())
            foreach (BModelDataType indexType in new[] { BModelDataType.Int32, BModelDataType.Float32 })
            {
                var values = new float[rows * kMax];
                var indices = new int[rows * kMax];
                fixed (float* xp = x, vp = values)
                fixed (int* ip = indices)
                    Kernels.TopK(xp, rows, n, kMax, kLimit, vp, (byte*)ip, indexType, width);
                for (int r = 0; r < rows; r++)
                {
                    var want = Enumerable.Range(0, n).Where(j => !float.IsNaN(x[r * n + j]))
                        .OrderByDescending(j => x[r * n + j]).ThenBy(j => j).Take(kMax).ToArray();
                    for (int t = 0; t < kMax; t++)
                    {
                        float value = t < want.Length && t < kLimit ? x[r * n + want[t]] : float.NegativeInfinity;
                        int id = t < want.Length ? want[t] : 0;
                        int got = indexType == BModelDataType.Int32 ? indices[r * kMax + t] : (int)BitConverter.Int32BitsToSingle(indices[r * kMax + t]);
                        Assert.AreEqual(value, values[r * kMax + t], $"{width} row {r} value {t}");
                        Assert.AreEqual(id, got, $"{width} {indexType} row {r} index {t}");
                    }
                }
            }
    }
}
