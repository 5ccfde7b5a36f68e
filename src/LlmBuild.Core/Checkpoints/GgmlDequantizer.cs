using System.Buffers.Binary;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// Turns one row of ggml blocks into f32, with ggml's own arithmetic: every product and difference is one f32
/// operation in the order ggml's reference dequantizers use (f16 block scales widened exactly, sub-block scales
/// multiplied into the super-block scale first), so the values are bit-identical to ggml's and gguf-py's. No fused
/// multiply-add: .NET does not contract a·b + c, and gguf-py (which made the goldens) cannot.
/// Layouts (bytes per block, in order):
/// <list type="bullet">
/// <item>Q4_0: d f16, qs[16]; element j &lt; 16 is the low nibble of qs[j], element j + 16 its high nibble; value (q − 8)·d.</item>
/// <item>Q4_1: d f16, m f16, qs[16] (as Q4_0); value q·d + m.</item>
/// <item>Q5_0: d f16, qh u32, qs[16]; bit 4 of element j is bit j of qh; value (q − 16)·d.</item>
/// <item>Q5_1: d, m f16, qh u32, qs[16]; value q·d + m.</item>
/// <item>Q8_0: d f16, qs i8[32]; value q·d.</item>
/// <item>Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin f16; 16 sub-blocks of 16.</item>
/// <item>Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales, offset 32), d f16; 16 sub-blocks of 16.</item>
/// <item>Q4_K: d, dmin f16, scales[12] (eight 6-bit scale/min pairs), qs[128]; 8 sub-blocks of 32.</item>
/// <item>Q5_K: d, dmin f16, scales[12], qh[32], qs[128]; 8 sub-blocks of 32.</item>
/// <item>Q6_K: ql[128], qh[64], scales i8[16], d f16; 16 sub-blocks of 16.</item>
/// </list>
/// </summary>
public static class GgmlDequantizer
{
    /// <summary>Dequantizes <paramref name="source"/> (whole blocks of <paramref name="type"/>) into <paramref name="destination"/>.</summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        var (blockElements, blockBytes) = GgmlTypes.Layout(type) ?? throw new ArgumentException($"{GgmlTypes.Name(type)} has no known layout.", nameof(type));
        int blocks = source.Length / blockBytes;
        if (source.Length % blockBytes != 0 || destination.Length != blocks * blockElements)
            throw new ArgumentException($"{source.Length} bytes of {GgmlTypes.Name(type)} do not make {destination.Length} elements.");
        for (int b = 0; b < blocks; b++)
        {
            var block = source.Slice(b * blockBytes, blockBytes);
            var y = destination.Slice(b * blockElements, blockElements);
            switch (type)
            {
                case GgmlType.Q4_0: Q4_0(block, y); break;
                case GgmlType.Q4_1: Q4_1(block, y); break;
                case GgmlType.Q5_0: Q5_0(block, y); break;
                case GgmlType.Q5_1: Q5_1(block, y); break;
                case GgmlType.Q8_0: Q8_0(block, y); break;
                case GgmlType.Q2_K: Q2_K(block, y); break;
                case GgmlType.Q3_K: Q3_K(block, y); break;
                case GgmlType.Q4_K: Q4_K(block, y); break;
                case GgmlType.Q5_K: Q5_K(block, y); break;
                case GgmlType.Q6_K: Q6_K(block, y); break;
                default: throw new ArgumentException($"{GgmlTypes.Name(type)} is not block-quantized.", nameof(type));
            }
        }
    }

    /// <summary>An f16 field widened to f32 (exact).</summary>
    private static float Half(ReadOnlySpan<byte> b, int offset) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b[offset..]));

    private static void Q4_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        var qs = b.Slice(2, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0xF) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }

    private static void Q4_1(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), m = Half(b, 2);
        var qs = b.Slice(4, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (qs[j] & 0xF) * d + m;
            y[j + 16] = (qs[j] >> 4) * d + m;
        }
    }

    private static void Q5_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b[2..]);
        var qs = b.Slice(6, 16);
        for (int j = 0; j < 16; j++)
        {
            int high0 = (int)((qh >> j) & 1) << 4, high1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (((qs[j] & 0xF) | high0) - 16) * d;
            y[j + 16] = (((qs[j] >> 4) | high1) - 16) * d;
        }
    }

    private static void Q5_1(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), m = Half(b, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
        var qs = b.Slice(8, 16);
        for (int j = 0; j < 16; j++)
        {
            int high0 = (int)((qh >> j) & 1) << 4, high1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = ((qs[j] & 0xF) | high0) * d + m;
            y[j + 16] = ((qs[j] >> 4) | high1) * d + m;
        }
    }

    private static void Q8_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        for (int j = 0; j < 32; j++) y[j] = (sbyte)b[2 + j] * d;
    }

    private static void Q2_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var scales = b[..16];
        var qs = b.Slice(16, 64);
        float d = Half(b, 80), dmin = Half(b, 82);
        int scale = 0, o = 0;
        for (int half = 0; half < 2; half++)
        {
            var q = qs.Slice(half * 32, 32);
            for (int shift = 0; shift < 8; shift += 2)
            {
                for (int part = 0; part < 2; part++)
                {
                    byte sc = scales[scale++];
                    float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++) y[o++] = dl * ((q[part * 16 + l] >> shift) & 3) - ml;
                }
            }
        }
    }

    private static void Q3_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var hmask = b[..32];
        var qs = b.Slice(32, 64);
        Span<sbyte> scales = stackalloc sbyte[16];
        UnpackQ3Scales(b.Slice(96, 12), scales);
        float d = Half(b, 108);
        int scale = 0, o = 0, bit = 0;
        for (int half = 0; half < 2; half++)
        {
            var q = qs.Slice(half * 32, 32);
            for (int shift = 0; shift < 8; shift += 2, bit++)
            {
                for (int part = 0; part < 2; part++)
                {
                    float dl = d * (scales[scale++] - 32);
                    for (int l = 0; l < 16; l++)
                    {
                        int i = part * 16 + l;
                        // The high bit is stored inverted: a clear bit subtracts 4.
                        int value = ((q[i] >> shift) & 3) - ((hmask[i] >> bit & 1) != 0 ? 0 : 4);
                        y[o++] = dl * value;
                    }
                }
            }
        }
    }

    /// <summary>Q3_K's sixteen 6-bit scales: low 4 bits in bytes 0–7 (two per byte), high 2 bits in bytes 8–11.</summary>
    private static void UnpackQ3Scales(ReadOnlySpan<byte> packed, Span<sbyte> scales)
    {
        for (int i = 0; i < 16; i++)
        {
            int low = i < 8 ? packed[i] & 0xF : packed[i - 8] >> 4;
            int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
            scales[i] = (sbyte)(low | high << 4);
        }
    }

    /// <summary>Q4_K/Q5_K's j-th 6-bit scale and min from their 12 packed bytes.</summary>
    private static (int Scale, int Min) ScaleMin(ReadOnlySpan<byte> q, int j) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));

    private static void Q4_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), dmin = Half(b, 2);
        var scales = b.Slice(4, 12);
        var qs = b.Slice(16, 128);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            var (s1, m1) = ScaleMin(scales, 2 * chunk);
            var (s2, m2) = ScaleMin(scales, 2 * chunk + 1);
            float d1 = d * s1, min1 = dmin * m1, d2 = d * s2, min2 = dmin * m2;
            var q = qs.Slice(chunk * 32, 32);
            var o = y.Slice(chunk * 64, 64);
            for (int l = 0; l < 32; l++)
            {
                o[l] = d1 * (q[l] & 0xF) - min1;
                o[l + 32] = d2 * (q[l] >> 4) - min2;
            }
        }
    }

    private static void Q5_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), dmin = Half(b, 2);
        var scales = b.Slice(4, 12);
        var qh = b.Slice(16, 32);
        var qs = b.Slice(48, 128);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            var (s1, m1) = ScaleMin(scales, 2 * chunk);
            var (s2, m2) = ScaleMin(scales, 2 * chunk + 1);
            float d1 = d * s1, min1 = dmin * m1, d2 = d * s2, min2 = dmin * m2;
            int lowBit = 2 * chunk, highBit = 2 * chunk + 1;
            var q = qs.Slice(chunk * 32, 32);
            var o = y.Slice(chunk * 64, 64);
            for (int l = 0; l < 32; l++)
            {
                o[l] = d1 * ((q[l] & 0xF) + ((qh[l] >> lowBit & 1) << 4)) - min1;
                o[l + 32] = d2 * ((q[l] >> 4) + ((qh[l] >> highBit & 1) << 4)) - min2;
            }
        }
    }

    private static void Q6_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var ql = b[..128];
        var qh = b.Slice(128, 64);
        var scales = b.Slice(192, 16);
        float d = Half(b, 208);
        for (int half = 0; half < 2; half++)
        {
            var low = ql.Slice(half * 64, 64);
            var high = qh.Slice(half * 32, 32);
            var o = y.Slice(half * 128, 128);
            int s = half * 8;
            for (int l = 0; l < 32; l++)
            {
                int sub = l / 16;
                int q1 = ((low[l] & 0xF) | ((high[l] >> 0 & 3) << 4)) - 32;
                int q2 = ((low[l + 32] & 0xF) | ((high[l] >> 2 & 3) << 4)) - 32;
                int q3 = ((low[l] >> 4) | ((high[l] >> 4 & 3) << 4)) - 32;
                int q4 = ((low[l + 32] >> 4) | ((high[l] >> 6 & 3) << 4)) - 32;
                o[l] = d * (sbyte)scales[s + sub] * q1;
                o[l + 32] = d * (sbyte)scales[s + sub + 2] * q2;
                o[l + 64] = d * (sbyte)scales[s + sub + 4] * q3;
                o[l + 96] = d * (sbyte)scales[s + sub + 6] * q4;
            }
        }
    }
}
