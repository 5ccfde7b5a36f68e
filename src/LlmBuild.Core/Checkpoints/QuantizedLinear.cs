using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// A weight-only quantized linear weight W[N, K] in the A16MatMul layout (DESIGN §5): groups of
/// <see cref="GroupSize"/> consecutive inputs along K (here always the effective size: K when per-channel).
/// <see cref="QWeight"/> is u8 [N, K/2] for 4 bits (element 2i in the low nibble, 2i+1 in the high nibble) or
/// [N, K] for 8 bits; <see cref="Scales"/> is f32 [N, K/g]; <see cref="QZeros"/> is u8 [N, K/g].
/// Dequantized value: (q − zero) · scale.
/// </summary>
public sealed record QuantizedLinear(int N, int K, int Bits, int GroupSize, byte[] QWeight, float[] Scales, byte[] QZeros)
{
    /// <summary>
    /// Null, or the input order of the stored columns: stored column c holds original input InputPermutation[c]. Set
    /// when a GPTQ act-order (desc_act) source's g_idx groups inputs out of order; the graph must gather the input
    /// activations by it (y = W[:, p] · x[p]) so each group stays contiguous and the result stays exact.
    /// </summary>
    public int[]? InputPermutation { get; init; }

    public int GroupsPerRow => K / GroupSize;
    public int PackedRowBytes => Bits == 4 ? K / 2 : K;

    /// <summary>The unpacked quantized value of element (row, col).</summary>
    public int Q(int row, int col)
    {
        if (Bits == 8) return QWeight[(long)row * K + col];
        byte b = QWeight[(long)row * (K / 2) + col / 2];
        return (col & 1) == 0 ? b & 0xF : b >> 4;
    }

    /// <summary>Packs 4-bit values: out[i] = q[2i] | q[2i+1] &lt;&lt; 4.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void PackNibbles(ReadOnlySpan<byte> q, Span<byte> packed)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ReadOnlySpan<ushort> pairs = MemoryMarshal.Cast<byte, ushort>(q);
            ref ushort src = ref MemoryMarshal.GetReference(pairs);
            ref byte dst = ref MemoryMarshal.GetReference(packed);
            var low = Vector512.Create((ushort)0x000F);
            var high = Vector512.Create((ushort)0x00F0);
            for (; i <= pairs.Length - 64; i += 64)
            {
                var a = Vector512.LoadUnsafe(ref src, (nuint)i);
                var b = Vector512.LoadUnsafe(ref src, (nuint)(i + 32));
                var pa = (a & low) | ((a >> 4) & high);
                var pb = (b & low) | ((b >> 4) & high);
                Vector512.Narrow(pa, pb).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < packed.Length && 2 * i + 1 < q.Length; i++) packed[i] = (byte)((q[2 * i] & 0xF) | (q[2 * i + 1] << 4));
    }
}
