using LlmBuild.Core.Numerics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Quantization;

[TestClass]
public sealed class LinearQuantizerTests
{
    public static IEnumerable<object[]> Schemes =>
    [
        [4, 64, false], [4, 64, true], [8, 64, false], [8, 64, true], [4, 0, false], [8, 0, true], [4, 16, false], [8, 32, true], [4, 128, true], [4, 128, false], [4, 256, false], [8, 128, false],
    ];

    private static float[] Weights(int n, int k, int seed)
    {
        float[] w = TestFiles.RandomFloats(n * k, seed, 0.05f);
        // Include awkward groups: all zero, all positive, one outlier, exact ties.
        for (int c = 0; c < Math.Min(k, 16); c++) w[c] = 0;
        for (int c = 0; c < k; c++) w[k + c] = Math.Abs(w[k + c]) + 0.01f;
        w[2 * k + 3] = 3f;
        return w;
    }

    [TestMethod]
    [DynamicData(nameof(Schemes))]
    public void VectorisedQuantizationIsBitIdenticalToTheScalarReference(int bits, int group, bool symmetric)
    {
        int n = 37, k = 256;
        float[] w = Weights(n, k, bits * 1000 + group);
        var q = LinearQuantizer.Quantize(w, n, k, new QuantScheme(bits, group, symmetric));
        int g = group == 0 ? k : group, rowBytes = bits == 4 ? k / 2 : k;
        Assert.AreEqual(g, q.GroupSize);
        var qw = new byte[rowBytes];
        var s = new float[k / g];
        var z = new byte[k / g];
        for (int r = 0; r < n; r++)
        {
            LinearQuantizer.QuantizeRowScalar(w.AsSpan(r * k, k), bits, g, symmetric, qw, s, z);
            CollectionAssert.AreEqual(qw, q.QWeight.AsSpan(r * rowBytes, rowBytes).ToArray(), $"qweight row {r}");
            CollectionAssert.AreEqual(s, q.Scales.AsSpan(r * (k / g), k / g).ToArray(), $"scales row {r}");
            CollectionAssert.AreEqual(z, q.QZeros.AsSpan(r * (k / g), k / g).ToArray(), $"zeros row {r}");
        }
    }

    [TestMethod]
    [DynamicData(nameof(Schemes))]
    public void Bf16RowsAreQuantizedAsTheirExactF32Values(int bits, int group, bool symmetric)
    {
        // The build hands bf16 checkpoints' raw bits to the quantizer; the scalar reference sees the widened f32 values.
        int n = 41, k = 512;
        float[] w = Weights(n, k, 7 * bits + group);
        ushort[] bits16 = w.Select(FloatFormats.FloatToBFloat16Scalar).ToArray();
        float[] exact = bits16.Select(b => BitConverter.Int32BitsToSingle(b << 16)).ToArray();
        int g = group == 0 ? k : group, rowBytes = bits == 4 ? k / 2 : k, groups = k / g;
        byte[] qw = new byte[n * rowBytes], z = new byte[n * groups];
        float[] s = new float[n * groups];
        LinearQuantizer.QuantizeRowsBFloat16(bits16, n, k, bits, g, symmetric, qw, s, z, "w");
        var rqw = new byte[rowBytes];
        var rs = new float[groups];
        var rz = new byte[groups];
        for (int r = 0; r < n; r++)
        {
            LinearQuantizer.QuantizeRowScalar(exact.AsSpan(r * k, k), bits, g, symmetric, rqw, rs, rz);
            CollectionAssert.AreEqual(rqw, qw.AsSpan(r * rowBytes, rowBytes).ToArray(), $"qweight row {r}");
            CollectionAssert.AreEqual(rs, s.AsSpan(r * groups, groups).ToArray(), $"scales row {r}");
            CollectionAssert.AreEqual(rz, z.AsSpan(r * groups, groups).ToArray(), $"zeros row {r}");
        }
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void NaNInABf16RowIsACodedError(bool symmetric)
    {
        int k = 256;
        ushort[] w = new ushort[2 * k];
        w[k + 200] = 0x7FC0; // NaN
        var e = Assert.ThrowsExactly<LlmBuildException>(() =>
            LinearQuantizer.QuantizeRowsBFloat16(w, 2, k, 4, 128, symmetric, new byte[k], new float[4], new byte[4], "w"));
        Assert.AreEqual(ErrorCodes.NonFiniteWeight, e.Code);
        StringAssert.Contains(e.Message, "row 1, group 1");
    }

    [TestMethod]
    [DynamicData(nameof(Schemes))]
    public void DequantizationErrorIsAtMostHalfAScale(int bits, int group, bool symmetric)
    {
        int n = 29, k = 256;
        float[] w = Weights(n, k, 17 + bits + group);
        var q = LinearQuantizer.Quantize(w, n, k, new QuantScheme(bits, group, symmetric));
        float[] back = new float[w.Length];
        LinearQuantizer.Dequantize(q, back);
        int g = q.GroupSize;
        for (int i = 0; i < w.Length; i++)
        {
            float scale = q.Scales[i / k * (k / g) + i % k / g];
            // scale/2 plus the rounding of the f32 arithmetic itself (a few ulps of w).
            float bound = scale / 2 + Math.Abs(w[i]) * 1e-6f + 1e-12f;
            Assert.IsTrue(Math.Abs(back[i] - w[i]) <= bound, $"element {i}: {w[i]} → {back[i]}, scale {scale}");
        }
    }

    [TestMethod]
    public void FormulasOfDesignSection5OnAHandComputedGroup()
    {
        // One row, one group of 4, asymmetric 4 bit: lo = -1, hi = 2 → scale = 3/15 = 0.2, zero = round(5) = 5.
        float[] w = [-1f, 0f, 0.5f, 2f];
        var q = LinearQuantizer.Quantize(w, 1, 4, new QuantScheme(4, 4, false));
        Assert.AreEqual(0.2f, q.Scales[0]);
        Assert.AreEqual((byte)5, q.QZeros[0]);
        // q = round(w/0.2) + 5 = 0, 5, round(2.5)=2 (ties to even) + 5 = 7, 15 → bytes (0 | 5<<4), (7 | 15<<4)
        CollectionAssert.AreEqual(new byte[] { 0x50, 0xF7 }, q.QWeight);
        // Symmetric 8 bit: absmax 2 → scale = 4/255, zero = 128.
        var s = LinearQuantizer.Quantize(w, 1, 4, new QuantScheme(8, 0, true));
        Assert.AreEqual(4f / 255, s.Scales[0]);
        Assert.AreEqual((byte)128, s.QZeros[0]);
        Assert.AreEqual((byte)255, s.QWeight[3]); // 2 / (4/255) = 127.5 → 128 (ties to even) + 128, clamped to 255
        Assert.AreEqual((byte)(128 - 64), s.QWeight[0]); // -1 / (4/255) = -63.75 → -64
    }

    [TestMethod]
    public void AllZeroGroupDequantizesToZero()
    {
        float[] w = new float[128];
        var q = LinearQuantizer.Quantize(w, 2, 64, new QuantScheme(4, 32, false));
        float[] back = new float[128];
        LinearQuantizer.Dequantize(q, back);
        Assert.IsTrue(back.All(v => v == 0));
        Assert.IsTrue(q.Scales.All(v => v == 0));
    }

    [TestMethod]
    public void KNotDivisibleByGroupSizeIsACodedError()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => LinearQuantizer.Quantize(new float[2 * 96], 2, 96, new QuantScheme(4, 64, false), "model.layers.0.mlp.down_proj.weight"));
        Assert.AreEqual(ErrorCodes.BadGroupSize, e.Code);
        StringAssert.Contains(e.Message, "model.layers.0.mlp.down_proj.weight");
    }

    [TestMethod]
    public void NaNWeightIsACodedError()
    {
        float[] w = new float[64];
        w[5] = float.NaN;
        var e = Assert.ThrowsExactly<LlmBuildException>(() => LinearQuantizer.Quantize(w, 1, 64, new QuantScheme(4, 64, false), "x.weight"));
        Assert.AreEqual(ErrorCodes.NonFiniteWeight, e.Code);
    }

    /// <summary>The vector paths this machine can run (a narrower one than its widest runs too), and the scalar one.</summary>
    public static IEnumerable<object[]> WidthsAndSchemes =>
        from width in new[] { KernelWidth.Scalar, KernelWidth.V256, KernelWidth.V512 }
        where width == KernelWidth.Scalar || (width == KernelWidth.V256 ? System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated : System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
        from scheme in Schemes
        select new object[] { (int)width, scheme[0], scheme[1], scheme[2] };

    [TestMethod]
    [DynamicData(nameof(WidthsAndSchemes))]
    public void EveryVectorPathIsBitIdenticalToTheScalarReference(int path, int bits, int group, bool symmetric)
    {
        var width = (KernelWidth)path;
        int n = 23, k = 512;
        float[] w = Weights(n, k, 31 * bits + group + (int)width);
        // Groups whose extremes are signed zeros, or all −0, or hold ±infinity-free ties: the hardware min/max may pick
        // either zero; the scale and zero point must not care.
        for (int c = 16; c < 32; c++) w[c] = -0f;
        for (int c = 0; c < k; c++) w[3 * k + c] = c % 2 == 0 ? -0f : 0f;
        for (int c = 0; c < k; c++) w[4 * k + c] = -Math.Abs(w[4 * k + c]);
        w[4 * k + 7] = -0f;
        for (int c = 0; c < k; c++) w[5 * k + c] = (c % 5 - 2) * 0.25f;
        int g = group == 0 ? k : group, rowBytes = bits == 4 ? k / 2 : k, groups = k / g;
        var (qw, s, z) = (new byte[rowBytes], new float[groups], new byte[groups]);
        var (rqw, rs, rz) = (new byte[rowBytes], new float[groups], new byte[groups]);
        byte[] scratch = new byte[k];
        for (int r = 0; r < n; r++)
        {
            LinearQuantizer.QuantizeRow(w.AsSpan(r * k, k), bits, g, symmetric, qw, s, z, scratch, "w", r, width);
            LinearQuantizer.QuantizeRowScalar(w.AsSpan(r * k, k), bits, g, symmetric, rqw, rs, rz);
            CollectionAssert.AreEqual(rqw, qw, $"qweight row {r} ({width})");
            CollectionAssert.AreEqual(rs.Select(BitConverter.SingleToInt32Bits).ToArray(), s.Select(BitConverter.SingleToInt32Bits).ToArray(), $"scales row {r} ({width}), bit for bit");
            CollectionAssert.AreEqual(rz, z, $"zeros row {r} ({width})");
        }
    }

    [TestMethod]
    [DataRow((int)KernelWidth.Scalar)]
    [DataRow((int)KernelWidth.V256)]
    [DataRow((int)KernelWidth.V512)]
    public void EveryVectorPathFindsTheExtremesAndNaNInEveryLane(int path)
    {
        var width = (KernelWidth)path;
        foreach (int length in new[] { 3, 8, 15, 16, 17, 64, 128, 131 })
            for (int at = 0; at < length; at++)
            {
                float[] x = Enumerable.Range(0, length).Select(i => (i % 7 - 3) * 0.125f).ToArray();
                x[at] = -5f;
                Assert.AreEqual(-5f, LinearQuantizer.MinMax(x, width).Min, $"min at {at} of {length}");
                Assert.AreEqual(5f, LinearQuantizer.AbsMax(x, width), $"absmax at {at} of {length}");
                x[at] = 6f;
                Assert.AreEqual(6f, LinearQuantizer.MinMax(x, width).Max, $"max at {at} of {length}");
                x[at] = float.NaN;
                Assert.IsTrue(float.IsNaN(LinearQuantizer.MinMax(x, width).Min) && float.IsNaN(LinearQuantizer.MinMax(x, width).Max), $"NaN at {at} of {length}");
                Assert.IsTrue(float.IsNaN(LinearQuantizer.AbsMax(x, width)), $"NaN (absmax) at {at} of {length}");
            }
    }
}
