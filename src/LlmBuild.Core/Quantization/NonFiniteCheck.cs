using System.Numerics;
using System.Runtime.InteropServices;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// Refuses NaN and infinity in every tensor the weights stage stores, not only in the quantized linears (whose group
/// scales <see cref="LinearQuantizer"/> checks): one NaN in an embedding row, a norm or a bias would otherwise pass every
/// stage and give a bmodel whose outputs are all NaN. The error names the tensor and the element's index.
/// </summary>
internal static class NonFiniteCheck
{
    /// <summary>Checks f32 values that are elements <paramref name="first"/>… of <paramref name="tensor"/>.</summary>
    public static void Float32(ReadOnlySpan<float> values, string tensor, long[] shape, long first, string? file)
    {
        ReadOnlySpan<uint> bits = MemoryMarshal.Cast<float, uint>(values);
        int at = IndexOfAllOnes(bits, 0x7F80_0000u);
        if (at >= 0) throw Error(tensor, shape, first + at, values[at], file);
    }

    /// <summary>Checks 16-bit values stored as <paramref name="dtype"/> (bf16 or f16) bit patterns.</summary>
    public static void Bits16(ReadOnlySpan<ushort> bits, TensorDType dtype, string tensor, long[] shape, long first, string? file)
    {
        ushort exponent = dtype switch
        {
            TensorDType.BF16 => 0x7F80,
            TensorDType.F16 => 0x7C00,
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "bf16 or f16"),
        };
        int at = IndexOfAllOnes(bits, exponent);
        if (at < 0) return;
        float value = dtype == TensorDType.BF16 ? BitConverter.UInt32BitsToSingle((uint)bits[at] << 16) : (float)BitConverter.UInt16BitsToHalf(bits[at]);
        throw Error(tensor, shape, first + at, value, file);
    }

    /// <summary>Raw little-endian bytes of a float tensor (a block of it, starting at element <paramref name="first"/>).</summary>
    public static void Raw(ReadOnlySpan<byte> bytes, TensorDType dtype, string tensor, long[] shape, long first, string? file)
    {
        switch (dtype)
        {
            case TensorDType.F32: Float32(MemoryMarshal.Cast<byte, float>(bytes), tensor, shape, first, file); break;
            case TensorDType.BF16 or TensorDType.F16: Bits16(MemoryMarshal.Cast<byte, ushort>(bytes), dtype, tensor, shape, first, file); break;
        }
    }

    /// <summary>The first element whose exponent field (<paramref name="exponent"/>) is all ones — infinity or NaN — or −1.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static int IndexOfAllOnes<T>(ReadOnlySpan<T> bits, T exponent) where T : unmanaged, IBinaryInteger<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && bits.Length >= Vector<T>.Count)
        {
            var mask = new Vector<T>(exponent);
            ReadOnlySpan<Vector<T>> vectors = MemoryMarshal.Cast<T, Vector<T>>(bits);
            for (int v = 0; v < vectors.Length; v++)
            {
                if (Vector.EqualsAny(vectors[v] & mask, mask))
                {
                    i = v * Vector<T>.Count;
                    break;
                }
                i = (v + 1) * Vector<T>.Count;
            }
        }
        for (; i < bits.Length; i++)
            if ((bits[i] & exponent) == exponent) return i;
        return -1;
    }

    private static LlmBuildException Error(string tensor, long[] shape, long index, float value, string? file)
    {
        var position = new long[shape.Length];
        long rest = index;
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            if (shape[d] <= 0) break;
            position[d] = rest % shape[d];
            rest /= shape[d];
        }
        string what = float.IsNaN(value) ? "NaN" : value > 0 ? "+infinity" : "-infinity";
        return new LlmBuildException(ErrorCodes.NonFiniteWeight,
            $"Tensor '{tensor}' holds {what} at element {index} (index [{string.Join(", ", position)}] of shape [{string.Join(", ", shape)}]), " +
            "so the built model would compute NaN. The checkpoint is corrupt or was saved mid-divergence (or, for f16, a value exceeds its range of ±65504): " +
            "fix or re-download the checkpoint, or build with a bf16 mode if the f16 range is the cause.", file);
    }
}
