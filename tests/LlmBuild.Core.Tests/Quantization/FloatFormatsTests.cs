using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Tests.Quantization;

[TestClass]
public sealed class FloatFormatsTests
{
    private static float[] Interesting()
    {
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, float.Epsilon, -float.Epsilon, float.MaxValue, float.MinValue, float.PositiveInfinity, float.NegativeInfinity,
            float.NaN, BitConverter.UInt32BitsToSingle(0x7F800001), BitConverter.UInt32BitsToSingle(0xFFC12345), 65504f, 65519.99f, 65520f, 65536f,
            6.1035156e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-10f,
            BitConverter.UInt32BitsToSingle(0x3F808000), BitConverter.UInt32BitsToSingle(0x3F818000), BitConverter.UInt32BitsToSingle(0x3F808001),
            BitConverter.UInt32BitsToSingle(0x7F7F8000), // rounds up to infinity in bf16
        };
        // Every half value, and the exact midpoints between neighbours (ties) plus one ulp either side.
        for (int h = 0; h < 0x7C00; h++)
        {
            float a = FloatFormats.HalfToFloatScalar((ushort)h), b = FloatFormats.HalfToFloatScalar((ushort)(h + 1));
            float mid = (float)(((double)a + b) / 2);
            values.AddRange([a, -a, mid, -mid, MathF.BitIncrement(mid), MathF.BitDecrement(mid)]);
        }
        var r = new Random(7);
        for (int i = 0; i < 200_000; i++) values.Add(BitConverter.UInt32BitsToSingle((uint)r.NextInt64(0, 1L << 32)));
        return values.ToArray();
    }

    [TestMethod]
    public void BFloat16VectorPathMatchesScalarReference()
    {
        float[] v = Interesting();
        ushort[] got = new ushort[v.Length];
        FloatFormats.FloatToBFloat16(v, got);
        for (int i = 0; i < v.Length; i++)
            Assert.AreEqual(FloatFormats.FloatToBFloat16Scalar(v[i]), got[i], $"value {v[i]:R} (0x{BitConverter.SingleToUInt32Bits(v[i]):X8})");
    }

    [TestMethod]
    public void BFloat16RoundsToNearestEvenAndKeepsNaN()
    {
        Assert.AreEqual((ushort)0x3F80, FloatFormats.FloatToBFloat16Scalar(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie, even stays
        Assert.AreEqual((ushort)0x3F82, FloatFormats.FloatToBFloat16Scalar(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie, odd rounds up
        Assert.AreEqual((ushort)0x3F81, FloatFormats.FloatToBFloat16Scalar(BitConverter.UInt32BitsToSingle(0x3F808001))); // above tie
        Assert.AreEqual((ushort)0x7F80, FloatFormats.FloatToBFloat16Scalar(BitConverter.UInt32BitsToSingle(0x7F7F8000))); // overflow → inf
        ushort nan = FloatFormats.FloatToBFloat16Scalar(BitConverter.UInt32BitsToSingle(0x7F800001)); // signalling NaN, payload in low bits only
        Assert.IsTrue(float.IsNaN(FloatFormats.BFloat16ToFloatScalar(nan)), "a NaN must not become infinity");
        Assert.AreEqual((ushort)0xFFC1, FloatFormats.FloatToBFloat16Scalar(BitConverter.UInt32BitsToSingle(0xFFC12345)));
    }

    [TestMethod]
    public void EveryBFloat16PatternWidensExactly()
    {
        ushort[] all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        float[] f = new float[all.Length];
        FloatFormats.BFloat16ToFloat(all, f);
        ushort[] back = new ushort[all.Length];
        FloatFormats.FloatToBFloat16(f, back);
        for (int i = 0; i < all.Length; i++)
        {
            Assert.AreEqual((uint)i << 16, BitConverter.SingleToUInt32Bits(f[i]));
            if (!float.IsNaN(f[i])) Assert.AreEqual(all[i], back[i]);
        }
    }

    [TestMethod]
    public void HalfMatchesScalarReferenceInBothDirections()
    {
        float[] v = Interesting();
        ushort[] got = new ushort[v.Length];
        FloatFormats.FloatToHalf(v, got);
        for (int i = 0; i < v.Length; i++)
        {
            ushort expected = FloatFormats.FloatToHalfScalar(v[i]);
            if (float.IsNaN(v[i])) Assert.IsTrue((got[i] & 0x7C00) == 0x7C00 && (got[i] & 0x3FF) != 0, "NaN stays NaN");
            else Assert.AreEqual(expected, got[i], $"value {v[i]:R} (0x{BitConverter.SingleToUInt32Bits(v[i]):X8})");
        }
        ushort[] all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        float[] f = new float[all.Length];
        FloatFormats.HalfToFloat(all, f);
        for (int i = 0; i < all.Length; i++)
        {
            float expected = FloatFormats.HalfToFloatScalar(all[i]);
            if (float.IsNaN(expected)) Assert.IsTrue(float.IsNaN(f[i]));
            else Assert.AreEqual(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(f[i]), $"half 0x{i:X4}");
        }
    }

    [TestMethod]
    public void HalfScalarReferenceKnownValues()
    {
        Assert.AreEqual((ushort)0x7BFF, FloatFormats.FloatToHalfScalar(65504f));
        Assert.AreEqual((ushort)0x7BFF, FloatFormats.FloatToHalfScalar(65519.99f));
        Assert.AreEqual((ushort)0x7C00, FloatFormats.FloatToHalfScalar(65520f));
        Assert.AreEqual((ushort)0x0001, FloatFormats.FloatToHalfScalar(5.9604645e-8f));
        Assert.AreEqual((ushort)0x0000, FloatFormats.FloatToHalfScalar(2.9802322e-8f)); // exactly half the smallest subnormal: tie to even (0)
        Assert.AreEqual((ushort)0x0001, FloatFormats.FloatToHalfScalar(2.9802326e-8f)); // just above the tie
        Assert.AreEqual((ushort)0x3C00, FloatFormats.FloatToHalfScalar(1f));
        Assert.AreEqual((ushort)0xC000, FloatFormats.FloatToHalfScalar(-2f));
        Assert.AreEqual(1f, FloatFormats.HalfToFloatScalar(0x3C00));
        Assert.AreEqual(5.9604645e-8f, FloatFormats.HalfToFloatScalar(0x0001));
    }

    [TestMethod]
    public void Float8E4M3DecodesTheFormatsAnchors()
    {
        Assert.AreEqual(448f, FloatFormats.Float8E4M3ToFloat(0x7E));
        Assert.AreEqual(-448f, FloatFormats.Float8E4M3ToFloat(0xFE));
        Assert.AreEqual(1f, FloatFormats.Float8E4M3ToFloat(0x38));
        Assert.AreEqual(0.001953125f, FloatFormats.Float8E4M3ToFloat(0x01)); // smallest subnormal 2^-9
        Assert.IsTrue(float.IsNaN(FloatFormats.Float8E4M3ToFloat(0x7F)));
        Assert.AreEqual(0f, FloatFormats.Float8E4M3ToFloat(0x00));
    }
}
