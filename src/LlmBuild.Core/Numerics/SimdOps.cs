using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmBuild.Core.Numerics;

/// <summary>
/// A vector width as a type: a kernel written once over <c>TOps</c>/<c>TVec</c> is specialised by the JIT for each
/// width (struct type arguments get their own code, static calls inline), so the 512-bit, 256-bit and scalar paths
/// share one body. <see cref="Count"/> lanes of f32 per <c>TVec</c>.
/// </summary>
internal unsafe interface ISimdOps<TVec> where TVec : struct
{
    static abstract int Count { get; }
    static abstract TVec Zero { get; }
    static abstract TVec Load(float* p);
    static abstract void Store(float* p, TVec v);
    static abstract TVec Broadcast(float v);
    /// <summary>a·b + c.</summary>
    static abstract TVec MultiplyAdd(TVec a, TVec b, TVec c);
    static abstract TVec Add(TVec a, TVec b);
    static abstract TVec Multiply(TVec a, TVec b);
    static abstract TVec Subtract(TVec a, TVec b);
    static abstract float Sum(TVec v);
    /// <summary>[Σa, Σb, Σc, Σd]: four reductions sharing their last steps.</summary>
    static abstract Vector128<float> Sum4(TVec a, TVec b, TVec c, TVec d);
    /// <summary><see cref="Count"/> bf16 values widened to f32 (a bf16 is the high half of an f32: exact).</summary>
    static abstract TVec LoadBFloat16(ushort* p);
    /// <summary><see cref="Count"/> bytes as f32 (0..255).</summary>
    static abstract TVec LoadBytes(byte* p);
    /// <summary><see cref="Count"/> bytes split into their low and high nibbles as f32 (0..15).</summary>
    static abstract void LoadNibbles(byte* p, out TVec low, out TVec high);
}

/// <summary>Which <see cref="ISimdOps{TVec}"/> a kernel runs with; tests force each one.</summary>
internal enum SimdWidth
{
    Scalar,
    Vector256,
    Vector512,
}

internal static class Simd
{
    /// <summary>The widest width this CPU runs natively (the 256-bit path needs AVX2 and FMA for its loads and FMAs).</summary>
    public static readonly SimdWidth Best =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? SimdWidth.Vector512
        : Avx2.IsSupported && Fma.IsSupported ? SimdWidth.Vector256
        : SimdWidth.Scalar;

    /// <summary>True when <paramref name="width"/> can run here (tests skip what the CPU lacks).</summary>
    public static bool IsSupported(SimdWidth width) => width <= Best;
}

internal readonly unsafe struct Simd512 : ISimdOps<Vector512<float>>
{
    public static int Count => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Broadcast(float v) => Vector512.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => a - b;
    /// <summary>Halves added down to 128 bits before the last reduction: fewer shuffles than reducing each quarter alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v)
    {
        Vector256<float> h = v.GetLower() + v.GetUpper();
        return Vector128.Sum(h.GetLower() + h.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) =>
        Simd256.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadBFloat16(ushort* p) => Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadBytes(byte* p) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(p)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadNibbles(byte* p, out Vector512<float> low, out Vector512<float> high)
    {
        Vector512<int> v = Avx512F.ConvertToVector512Int32(Vector128.Load(p));
        low = Avx512F.ConvertToVector512Single(v & Vector512.Create(15));
        high = Avx512F.ConvertToVector512Single(Avx512F.ShiftRightLogical(v, 4));
    }
}

internal readonly unsafe struct Simd256 : ISimdOps<Vector256<float>>
{
    public static int Count => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Broadcast(float v) => Vector256.Create(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> v) => Vector128.Sum(v.GetLower() + v.GetUpper());

    /// <summary>Each halved to 128 bits, then three horizontal adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) =>
        Sse3.HorizontalAdd(Sse3.HorizontalAdd(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper()), Sse3.HorizontalAdd(c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadBFloat16(ushort* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadBytes(byte* p) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadNibbles(byte* p, out Vector256<float> low, out Vector256<float> high)
    {
        Vector256<int> v = Avx2.ConvertToVector256Int32(p);
        low = Avx.ConvertToVector256Single(v & Vector256.Create(15));
        high = Avx.ConvertToVector256Single(Avx2.ShiftRightLogical(v, 4));
    }
}

/// <summary>One lane: the portable path, and what the vector paths must agree with.</summary>
internal readonly unsafe struct SimdScalar : ISimdOps<float>
{
    public static int Count => 1;
    public static float Zero => 0f;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Load(float* p) => *p;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, float v) => *p = v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Broadcast(float v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float MultiplyAdd(float a, float b, float c) => a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Add(float a, float b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Multiply(float a, float b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Subtract(float a, float b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(float v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sum4(float a, float b, float c, float d) => Vector128.Create(a, b, c, d);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoadBFloat16(ushort* p) => BitConverter.UInt32BitsToSingle((uint)*p << 16);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoadBytes(byte* p) => *p;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadNibbles(byte* p, out float low, out float high)
    {
        low = *p & 15;
        high = *p >> 4;
    }
}

/// <summary>A small count as a type, so a kernel's per-row branches fold away in each specialisation.</summary>
internal interface IRowCount
{
    static abstract int Value { get; }
}

internal readonly struct Rows1 : IRowCount { public static int Value => 1; }
internal readonly struct Rows2 : IRowCount { public static int Value => 2; }
internal readonly struct Rows3 : IRowCount { public static int Value => 3; }
internal readonly struct Rows4 : IRowCount { public static int Value => 4; }
