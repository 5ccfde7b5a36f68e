using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LlmBuild.Core.Numerics;

/// <summary>
/// Conversions between f32 and the 16-bit float formats, span in, span out. bf16 and f16 values travel as their
/// raw 16-bit patterns (<see cref="ushort"/>). Narrowing rounds to nearest, ties to even; NaN stays NaN (quiet,
/// sign and top payload bits kept). The <c>*Scalar</c> methods are the bit-level reference paths the tests
/// compare the vectorised ones against.
/// </summary>
public static class FloatFormats
{
    /// <summary>f32 → bf16 bit patterns, round to nearest even.</summary>
    public static void FloatToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        CheckLengths(source.Length, destination.Length);
        ReadOnlySpan<uint> bits = MemoryMarshal.Cast<float, uint>(source);
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref uint src = ref MemoryMarshal.GetReference(bits);
            ref ushort dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= bits.Length - 32; i += 32)
            {
                var lo = BFloat16Bits(Vector512.LoadUnsafe(ref src, (nuint)i));
                var hi = BFloat16Bits(Vector512.LoadUnsafe(ref src, (nuint)(i + 16)));
                Vector512.Narrow(lo, hi).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            ref uint src = ref MemoryMarshal.GetReference(bits);
            ref ushort dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= bits.Length - 16; i += 16)
            {
                var lo = BFloat16Bits(Vector256.LoadUnsafe(ref src, (nuint)i));
                var hi = BFloat16Bits(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)));
                Vector256.Narrow(lo, hi).StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < bits.Length; i++) destination[i] = FloatToBFloat16Scalar(source[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> BFloat16Bits(Vector512<uint> u)
    {
        var isNaN = Vector512.GreaterThan(u & Vector512.Create(0x7FFFFFFFu), Vector512.Create(0x7F800000u));
        var rounded = (u + Vector512.Create(0x7FFFu) + ((u >> 16) & Vector512<uint>.One)) >> 16;
        var nan = (u >> 16) | Vector512.Create(0x40u);
        return Vector512.ConditionalSelect(isNaN, nan, rounded);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> BFloat16Bits(Vector256<uint> u)
    {
        var isNaN = Vector256.GreaterThan(u & Vector256.Create(0x7FFFFFFFu), Vector256.Create(0x7F800000u));
        var rounded = (u + Vector256.Create(0x7FFFu) + ((u >> 16) & Vector256<uint>.One)) >> 16;
        var nan = (u >> 16) | Vector256.Create(0x40u);
        return Vector256.ConditionalSelect(isNaN, nan, rounded);
    }

    /// <summary>bf16 bit patterns → f32 (exact).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void BFloat16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        CheckLengths(source.Length, destination.Length);
        Span<uint> dst = MemoryMarshal.Cast<float, uint>(destination);
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            ref ushort s = ref MemoryMarshal.GetReference(source);
            ref uint d = ref MemoryMarshal.GetReference(dst);
            for (; i <= source.Length - 32; i += 32)
            {
                var (lo, hi) = Vector512.Widen(Vector512.LoadUnsafe(ref s, (nuint)i));
                (lo << 16).StoreUnsafe(ref d, (nuint)i);
                (hi << 16).StoreUnsafe(ref d, (nuint)(i + 16));
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            ref ushort s = ref MemoryMarshal.GetReference(source);
            ref uint d = ref MemoryMarshal.GetReference(dst);
            for (; i <= source.Length - 16; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref s, (nuint)i));
                (lo << 16).StoreUnsafe(ref d, (nuint)i);
                (hi << 16).StoreUnsafe(ref d, (nuint)(i + 8));
            }
        }
        for (; i < source.Length; i++) dst[i] = (uint)source[i] << 16;
    }

    /// <summary>f32 → f16 bit patterns, round to nearest even (overflow → ±inf).</summary>
    public static void FloatToHalf(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        CheckLengths(source.Length, destination.Length);
        TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<ushort, Half>(destination));
    }

    /// <summary>f16 bit patterns → f32 (exact).</summary>
    public static void HalfToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        CheckLengths(source.Length, destination.Length);
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ushort, Half>(source), destination);
    }

    /// <summary>bf16 bits → f16 bits (through f32, so one rounding).</summary>
    public static void BFloat16ToHalf(ReadOnlySpan<ushort> source, Span<ushort> destination)
    {
        CheckLengths(source.Length, destination.Length);
        const int Chunk = 4096;
        Span<float> tmp = stackalloc float[Chunk];
        for (int i = 0; i < source.Length; i += Chunk)
        {
            int n = Math.Min(Chunk, source.Length - i);
            BFloat16ToFloat(source.Slice(i, n), tmp[..n]);
            FloatToHalf(tmp[..n], destination.Slice(i, n));
        }
    }

    /// <summary>f16 bits → bf16 bits (through f32, so one rounding).</summary>
    public static void HalfToBFloat16(ReadOnlySpan<ushort> source, Span<ushort> destination)
    {
        CheckLengths(source.Length, destination.Length);
        const int Chunk = 4096;
        Span<float> tmp = stackalloc float[Chunk];
        for (int i = 0; i < source.Length; i += Chunk)
        {
            int n = Math.Min(Chunk, source.Length - i);
            HalfToFloat(source.Slice(i, n), tmp[..n]);
            FloatToBFloat16(tmp[..n], destination.Slice(i, n));
        }
    }

    // ---- scalar reference paths, written from the IEEE 754 / bfloat16 format descriptions ----

    public static ushort FloatToBFloat16Scalar(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7FFFFFFF) > 0x7F800000) return (ushort)((u >> 16) | 0x40);
        return (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    }

    public static float BFloat16ToFloatScalar(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    public static ushort FloatToHalfScalar(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        uint sign = (u >> 16) & 0x8000;
        uint a = u & 0x7FFFFFFF;
        if (a > 0x7F800000) return (ushort)(sign | 0x7E00 | ((a >> 13) & 0x3FF));
        if (a >= 0x477FF000) return (ushort)(sign | 0x7C00); // ≥ 65520 rounds to infinity
        if (a < 0x38800000)
        {
            // Below the smallest normal half: a subnormal m · 2^-24, m = round(f · 2^24).
            int exp = (int)(a >> 23);
            uint mant = (a & 0x7FFFFF) | (exp == 0 ? 0u : 0x800000u);
            int shift = 126 - exp + (exp == 0 ? 1 : 0);
            if (shift >= 32) return (ushort)sign;
            uint m = mant >> shift;
            uint rem = mant & ((1u << shift) - 1);
            uint half = 1u << (shift - 1);
            if (rem > half || (rem == half && (m & 1) == 1)) m++;
            return (ushort)(sign | m);
        }
        uint biased = a - 0x38000000; // rebias exponent 127 → 15
        return (ushort)(sign | ((biased + 0xFFF + ((biased >> 13) & 1)) >> 13));
    }

    public static float HalfToFloatScalar(ushort bits)
    {
        uint sign = (uint)(bits & 0x8000) << 16;
        int exp = (bits >> 10) & 0x1F;
        uint mant = (uint)(bits & 0x3FF);
        if (exp == 0x1F) return BitConverter.UInt32BitsToSingle(sign | 0x7F800000 | (mant << 13));
        if (exp == 0)
        {
            float sub = mant * (1.0f / 16777216.0f); // m · 2^-24, exact in f32
            return sign != 0 ? -sub : sub;
        }
        return BitConverter.UInt32BitsToSingle(sign | ((uint)(exp - 15 + 127) << 23) | (mant << 13));
    }

    /// <summary>FP8 E4M3 (OCP "fn" variant: bias 7, no infinities, S.1111.111 = NaN) → f32.</summary>
    public static float Float8E4M3ToFloat(byte bits)
    {
        int sign = bits >> 7, exp = (bits >> 3) & 0xF, mant = bits & 7;
        float v;
        if (exp == 0xF && mant == 7) v = float.NaN;
        else if (exp == 0) v = mant / 8f * (1f / 64f);
        else v = (1 + mant / 8f) * MathF.Pow(2, exp - 7);
        return sign == 1 ? -v : v;
    }

    private static readonly float[] Float8E4M3Table = Enumerable.Range(0, 256).Select(b => Float8E4M3ToFloat((byte)b)).ToArray();

    public static void Float8E4M3ToFloat(ReadOnlySpan<byte> source, Span<float> destination)
    {
        CheckLengths(source.Length, destination.Length);
        float[] table = Float8E4M3Table;
        for (int i = 0; i < source.Length; i++) destination[i] = table[source[i]];
    }

    /// <summary>FP8 E5M2 → f32: E5M2 is the upper byte of an IEEE half (bias 15, with infinities and NaNs), so widening is exact.</summary>
    public static float Float8E5M2ToFloat(byte bits) => HalfToFloatScalar((ushort)(bits << 8));

    public static void Float8E5M2ToFloat(ReadOnlySpan<byte> source, Span<float> destination)
    {
        CheckLengths(source.Length, destination.Length);
        for (int i = 0; i < source.Length; i++) destination[i] = Float8E5M2ToFloat(source[i]);
    }

    private static void CheckLengths(int source, int destination)
    {
        if (destination < source)
            throw new ArgumentException($"Destination holds {destination} elements but the source has {source}.");
    }
}
