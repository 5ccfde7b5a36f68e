using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// Moves GGUF Q8_0 and Q4_0 blocks into the A16MatMul layout without changing a value. Both are symmetric groups of
/// 32 inputs with one f16 scale d (widened exactly to the f32 scale):
/// <list type="bullet">
/// <item>Q8_0 stores int8 q, value q·d: u8 q + 128 with zero point 128 gives (u − 128)·d, the same product.</item>
/// <item>Q4_0 stores nibbles u, value (u − 8)·d: zero point 8. ggml puts element j in the low nibble of byte j and
/// element j + 16 in its high nibble; A16MatMul wants elements 2i and 2i + 1 in byte i (low, high), so the nibbles are
/// regrouped.</item>
/// </list>
/// Rows come from <see cref="GgufCheckpoint.ReadStoredRows"/>, already in Hugging Face order (Q/K un-permuted).
/// </summary>
public static class GgufBlockUnpacker
{
    private const int Group = 32;

    /// <summary>
    /// True when <paramref name="weightName"/> is stored in exactly the scheme's layout (Q8_0 for w8, Q4_0 for w4, both
    /// with symmetric groups of 32), so its blocks are kept instead of being quantized again.
    /// </summary>
    public static bool KeepsExactly(ICheckpoint checkpoint, string weightName, int bits, int groupSize, bool symmetric) =>
        checkpoint is GgufCheckpoint gguf && gguf.Contains(weightName) && groupSize == Group && symmetric
        && (gguf.StoredType(weightName), bits) is (GgmlType.Q8_0, 8) or (GgmlType.Q4_0, 4);

    public static QuantizedLinear Unpack(ICheckpoint checkpoint, string weightName)
    {
        if (checkpoint is not GgufCheckpoint gguf)
            throw new LlmBuildException(ErrorCodes.BadPreQuantizedTensor,
                $"'{weightName}' is declared GGUF-quantized (quant_method gguf) but the checkpoint in '{checkpoint.Directory}' is not a GGUF file.", checkpoint.Directory);
        var info = gguf.GetInfo(weightName);
        GgmlType type = gguf.StoredType(weightName);
        if (type is not (GgmlType.Q8_0 or GgmlType.Q4_0) || info.Shape.Length != 2)
            throw new LlmBuildException(ErrorCodes.BadPreQuantizedTensor,
                $"'{weightName}' in '{info.File}' is {GgmlTypes.Name(type)} {info.ShapeText}; only 2-D Q8_0 and Q4_0 weights are kept as they are.", info.File);
        int n = checked((int)info.Shape[0]), k = checked((int)info.Shape[1]);
        int bits = type == GgmlType.Q8_0 ? 8 : 4, blockBytes = type == GgmlType.Q8_0 ? 34 : 18;
        int groups = k / Group, rowBytes = groups * blockBytes, packedRow = bits == 8 ? k : k / 2;
        var result = new QuantizedLinear(n, k, bits, Group, new byte[(long)n * packedRow], new float[(long)n * groups], new byte[(long)n * groups]);
        byte zero = (byte)(bits == 8 ? 128 : 8);
        Parallelism.For(Math.Max(1, (n + 63) / 64), t =>
        {
            int first = t * 64, rows = Math.Min(n, first + 64) - first;
            byte[] raw = new byte[rows * rowBytes];
            gguf.ReadStoredRows(weightName, first, rows, raw);
            for (int r = 0; r < rows; r++)
            {
                int row = first + r;
                for (int j = 0; j < groups; j++)
                {
                    var block = raw.AsSpan(r * rowBytes + j * blockBytes, blockBytes);
                    result.Scales[(long)row * groups + j] = FloatFormats.HalfToFloatScalar((ushort)(block[0] | block[1] << 8));
                    result.QZeros[(long)row * groups + j] = zero;
                    var q = block[2..];
                    if (bits == 8)
                    {
                        var dst = result.QWeight.AsSpan(row * packedRow + j * Group, Group);
                        for (int i = 0; i < Group; i++) dst[i] = (byte)((sbyte)q[i] + 128);
                    }
                    else
                    {
                        var dst = result.QWeight.AsSpan(row * packedRow + j * Group / 2, Group / 2);
                        for (int i = 0; i < Group / 2; i++)
                        {
                            int even = 2 * i, odd = 2 * i + 1;
                            dst[i] = (byte)(Nibble(q, even) | Nibble(q, odd) << 4);
                        }
                    }
                }
            }
        });
        return result;
    }

    /// <summary>Element e (0–31) of a Q4_0 block's 16 bytes: low nibbles hold elements 0–15, high nibbles 16–31.</summary>
    private static int Nibble(ReadOnlySpan<byte> qs, int e) => e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
}
