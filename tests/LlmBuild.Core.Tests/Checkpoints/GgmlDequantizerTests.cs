using System.Buffers.Binary;
using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Core.Tests.Checkpoints;

/// <summary>
/// The types without a fixture (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K) against a second, element-wise reading of ggml's
/// block layouts: for element e, which byte and bits hold its quant, which (sub-)block scale and min apply. The same
/// f32 operations in the same order, so the comparison is exact. (Q4_0, Q8_0, Q4_K and Q6_K are proven by the fixtures'
/// Hugging Face logits.)
/// </summary>
[TestClass]
public sealed class GgmlDequantizerTests
{
    private static float Half(ReadOnlySpan<byte> b, int at) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b[at..]));

    /// <summary>Element e of a 32-element block with 16 bytes of nibbles: e &lt; 16 low nibble of byte e, else high nibble of byte e − 16.</summary>
    private static int Nibble(ReadOnlySpan<byte> qs, int e) => e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;

    private static float Element(GgmlType type, ReadOnlySpan<byte> b, int e) => type switch
    {
        GgmlType.Q4_1 => Nibble(b.Slice(4, 16), e) * Half(b, 0) + Half(b, 2),
        GgmlType.Q5_0 => ((Nibble(b.Slice(6, 16), e) | (int)((BinaryPrimitives.ReadUInt32LittleEndian(b[2..]) >> e) & 1) << 4) - 16) * Half(b, 0),
        GgmlType.Q5_1 => (Nibble(b.Slice(8, 16), e) | (int)((BinaryPrimitives.ReadUInt32LittleEndian(b[4..]) >> e) & 1) << 4) * Half(b, 0) + Half(b, 2),
        GgmlType.Q2_K => Q2K(b, e),
        GgmlType.Q3_K => Q3K(b, e),
        GgmlType.Q5_K => Q5K(b, e),
        _ => throw new ArgumentException(type.ToString()),
    };

    // Q2_K/Q3_K: element e lies in 128-element half e/128; within it, bit pair (e % 128) / 32 of byte e % 32 of that half's 32 quant bytes.
    private static int TwoBits(ReadOnlySpan<byte> qs, int e) => (qs[e / 128 * 32 + e % 32] >> (2 * (e % 128 / 32))) & 3;

    private static float Q2K(ReadOnlySpan<byte> b, int e)
    {
        byte scale = b[e / 16];
        return Half(b, 80) * (scale & 0xF) * TwoBits(b.Slice(16, 64), e) - Half(b, 82) * (scale >> 4);
    }

    private static float Q3K(ReadOnlySpan<byte> b, int e)
    {
        int sub = e / 16;
        int low = sub < 8 ? b[96 + sub] & 0xF : b[96 + sub - 8] >> 4;
        int high = (b[96 + 8 + sub % 4] >> (2 * (sub / 4))) & 3;
        int scale = (low | high << 4) - 32;
        // The mask bit of element e: byte e % 32 of hmask, bit (e / 32) — set means "no −4".
        int q = TwoBits(b.Slice(32, 64), e) - (((b[e % 32] >> (e / 32)) & 1) != 0 ? 0 : 4);
        return Half(b, 108) * scale * q;
    }

    private static float Q5K(ReadOnlySpan<byte> b, int e)
    {
        int sub = e / 32, l = e % 32;
        var scales = b.Slice(4, 12);
        int scale = sub < 4 ? scales[sub] & 63 : (scales[sub + 4] & 0xF) | (scales[sub - 4] >> 6) << 4;
        int min = sub < 4 ? scales[sub + 4] & 63 : (scales[sub + 4] >> 4) | (scales[sub] >> 6) << 4;
        byte packed = b[48 + sub / 2 * 32 + l];
        int q = (sub % 2 == 0 ? packed & 0xF : packed >> 4) + (((b[16 + l] >> sub) & 1) << 4);
        return Half(b, 0) * scale * q - Half(b, 2) * min;
    }

    [TestMethod]
    [DataRow(GgmlType.Q4_1)]
    [DataRow(GgmlType.Q5_0)]
    [DataRow(GgmlType.Q5_1)]
    [DataRow(GgmlType.Q2_K)]
    [DataRow(GgmlType.Q3_K)]
    [DataRow(GgmlType.Q5_K)]
    public void MatchesTheElementWiseLayout(GgmlType type)
    {
        var (elements, bytes) = GgmlTypes.Layout(type)!.Value;
        const int Blocks = 40;
        byte[] data = GgufTestFile.RandomBlocks(type, Blocks, (int)type);
        float[] actual = new float[Blocks * elements];
        GgmlDequantizer.Dequantize(type, data, actual);
        for (int block = 0; block < Blocks; block++)
            for (int e = 0; e < elements; e++)
                Assert.AreEqual(Element(type, data.AsSpan(block * bytes, bytes), e), actual[block * elements + e], $"{type} block {block} element {e}");
    }
}
