using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// Weight-only quantization of a linear weight W[N, K] (out, in) into the A16MatMul layout, per group of g
/// inputs along K (DESIGN §5). Per group, with b bits and qmax = 2^b − 1:
/// <list type="bullet">
/// <item>asymmetric: lo = min(min w, 0), hi = max(max w, 0); scale = (hi − lo)/qmax; zero = clamp(round(−lo/scale), 0, qmax);</item>
/// <item>symmetric: scale = 2·max|w|/qmax; zero = 2^(b−1);</item>
/// <item>q = clamp(round(w/scale) + zero, 0, qmax); a group of zeros gets scale 0 and q = zero.</item>
/// </list>
/// round is round-half-to-even (numpy/torch). The range is widened to include 0 so the zero point is always
/// representable and |dequant(q(w)) − w| ≤ scale/2 holds for every element. The vectorised path is bit-identical to
/// <see cref="QuantizeRowScalar"/>, the reference the tests compare it with.
/// </summary>
public static class LinearQuantizer
{
    /// <summary>Quantizes W[N, K] (row-major). Rows are processed in parallel.</summary>
    public static QuantizedLinear Quantize(ReadOnlySpan<float> w, int n, int k, QuantScheme scheme, string tensorName = "weight")
    {
        if (w.Length != (long)n * k) throw new ArgumentException($"Weight '{tensorName}' has {w.Length} elements, not {n}×{k}.");
        int g = EffectiveGroupSize(k, scheme.GroupSize, scheme.Bits, tensorName);
        int rowBytes = scheme.Bits == 4 ? k / 2 : k;
        var result = new QuantizedLinear(n, k, scheme.Bits, g, new byte[(long)n * rowBytes], new float[(long)n * (k / g)], new byte[(long)n * (k / g)]);
        QuantizeRows(w, n, k, scheme.Bits, g, scheme.Symmetric, result.QWeight, result.Scales, result.QZeros, tensorName);
        return result;
    }

    /// <summary>Dequantizes into W[N, K]: (q − zero) · scale.</summary>
    public static void Dequantize(QuantizedLinear q, Span<float> destination)
    {
        if (destination.Length < (long)q.N * q.K) throw new ArgumentException($"Destination holds {destination.Length} elements, not {q.N}×{q.K}.");
        int groups = q.GroupsPerRow;
        for (int r = 0; r < q.N; r++)
        {
            Span<float> row = destination.Slice(r * q.K, q.K);
            for (int j = 0; j < groups; j++)
            {
                float scale = q.Scales[r * groups + j];
                int zero = q.QZeros[r * groups + j];
                for (int c = j * q.GroupSize; c < (j + 1) * q.GroupSize; c++) row[c] = (q.Q(r, c) - zero) * scale;
            }
        }
    }

    /// <summary>
    /// The dequantized weight [N, K] with its inputs in the source's order: an act-order weight's stored columns are put
    /// back where <see cref="QuantizedLinear.InputPermutation"/> says they came from.
    /// </summary>
    public static float[] DequantizeInSourceOrder(QuantizedLinear q)
    {
        float[] w = new float[(long)q.N * q.K];
        Dequantize(q, w);
        if (q.InputPermutation is not { } perm) return w;
        float[] ordered = new float[w.Length];
        for (int r = 0; r < q.N; r++)
            for (int col = 0; col < q.K; col++) ordered[(long)r * q.K + perm[col]] = w[(long)r * q.K + col];
        return ordered;
    }

    /// <summary>The group size actually used (K for per-channel); the QGroupSize rule's coded error when K does not split into groups.</summary>
    public static int EffectiveGroupSize(int k, int groupSize, int bits, string tensorName) =>
        GroupSizeRule.Check(bits, groupSize, k, $"Weight '{tensorName}'");

    /// <summary>Quantizes a block of rows (parallel over rows) into the given row-major outputs.</summary>
    internal static unsafe void QuantizeRows(ReadOnlySpan<float> w, int rows, int k, int bits, int g, bool symmetric,
        Span<byte> qweight, Span<float> scales, Span<byte> zeros, string tensorName)
    {
        fixed (float* wp = w)
            QuantizeRowsCore((nint)wp, bf16: false, rows, k, bits, g, symmetric, qweight, scales, zeros, tensorName);
    }

    /// <summary>
    /// Quantizes a block of rows given as bf16 bit patterns (the checkpoint's own bytes): each row is widened to f32
    /// (exactly: bf16 is the top half of an f32) inside the parallel loop, into a row-sized buffer that stays in cache,
    /// so the block is read once and never stored as f32. Bit-identical to <see cref="QuantizeRows"/> on the widened values.
    /// </summary>
    internal static unsafe void QuantizeRowsBFloat16(ReadOnlySpan<ushort> w, int rows, int k, int bits, int g, bool symmetric,
        Span<byte> qweight, Span<float> scales, Span<byte> zeros, string tensorName)
    {
        if (w.Length < (long)rows * k) throw new ArgumentException($"Weight '{tensorName}': {w.Length} bf16 values for {rows}×{k}.");
        fixed (ushort* wp = w)
            QuantizeRowsCore((nint)wp, bf16: true, rows, k, bits, g, symmetric, qweight, scales, zeros, tensorName);
    }

    private static unsafe void QuantizeRowsCore(nint wAddr, bool bf16, int rows, int k, int bits, int g, bool symmetric,
        Span<byte> qweight, Span<float> scales, Span<byte> zeros, string tensorName)
    {
        int rowBytes = bits == 4 ? k / 2 : k, groups = k / g;
        if (qweight.Length < (long)rows * rowBytes || scales.Length < (long)rows * groups || zeros.Length < (long)rows * groups)
            throw new ArgumentException($"Weight '{tensorName}': output spans too short for {rows}×{k}.");
        fixed (byte* qp = qweight)
        fixed (float* sp = scales)
        fixed (byte* zp = zeros)
        {
            nint qAddr = (nint)qp, sAddr = (nint)sp, zAddr = (nint)zp;
            // About 64 KiB of f32 per task: enough work to amortise the scheduling, small enough to balance two cores.
            int rowsPerTask = Math.Max(1, (1 << 14) / Math.Max(1, k));
            int tasks = (rows + rowsPerTask - 1) / rowsPerTask;
            Parallelism.For(tasks, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (t) =>
            {
                byte[] scratch = ArrayPool<byte>.Shared.Rent(k);
                float[]? widened = bf16 ? ArrayPool<float>.Shared.Rent(k) : null;
                try
                {
                    for (int r = t * rowsPerTask; r < Math.Min(rows, (t + 1) * rowsPerTask); r++)
                    {
                        ReadOnlySpan<float> row;
                        if (widened is not null)
                        {
                            FloatFormats.BFloat16ToFloat(new ReadOnlySpan<ushort>((ushort*)wAddr + (long)r * k, k), widened.AsSpan(0, k));
                            row = widened.AsSpan(0, k);
                        }
                        else row = new ReadOnlySpan<float>((float*)wAddr + (long)r * k, k);
                        QuantizeRow(row, bits, g, symmetric,
                            new Span<byte>((byte*)qAddr + (long)r * rowBytes, rowBytes),
                            new Span<float>((float*)sAddr + (long)r * groups, groups),
                            new Span<byte>((byte*)zAddr + (long)r * groups, groups), scratch, tensorName, r);
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(scratch);
                    if (widened is not null) ArrayPool<float>.Shared.Return(widened);
                }
            });
        }
    }

    /// <summary>The widest vector path this machine runs (the kernels below have a Vector512, a Vector256 and a scalar path).</summary>
    internal static KernelWidth Widest { get; } =
        Vector512.IsHardwareAccelerated ? KernelWidth.V512 : Vector256.IsHardwareAccelerated ? KernelWidth.V256 : KernelWidth.Scalar;

    /// <summary>Quantizes one row of K values (vectorised); <paramref name="scratch"/> holds at least K bytes.</summary>
    // The hot loops are compiled optimised at once: a build's process is too short-lived for tiering to reach them.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeRow(ReadOnlySpan<float> row, int bits, int g, bool symmetric,
        Span<byte> qweightRow, Span<float> scalesRow, Span<byte> zerosRow, Span<byte> scratch, string tensorName = "weight", int rowIndex = 0) =>
        QuantizeRow(row, bits, g, symmetric, qweightRow, scalesRow, zerosRow, scratch, tensorName, rowIndex, Widest);

    /// <summary>
    /// <see cref="QuantizeRow(ReadOnlySpan{float}, int, int, bool, Span{byte}, Span{float}, Span{byte}, Span{byte}, string, int)"/>
    /// on the given vector path (a narrower one than the machine's runs too: the tests compare each with the scalar reference).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeRow(ReadOnlySpan<float> row, int bits, int g, bool symmetric,
        Span<byte> qweightRow, Span<float> scalesRow, Span<byte> zerosRow, Span<byte> scratch, string tensorName, int rowIndex, KernelWidth width)
    {
        int k = row.Length, qmax = (1 << bits) - 1;
        // 4 bits: levels go straight into packed nibbles, 128 (Vector512) or 64 (Vector256) values at a time.
        int packedStep = bits != 4 ? 0 : width == KernelWidth.V512 && g % 128 == 0 ? 128 : width != KernelWidth.Scalar && g % 64 == 0 ? 64 : 0;
        if (packedStep > 0)
        {
            for (int j = 0; j < k / g; j++)
            {
                ReadOnlySpan<float> group = row.Slice(j * g, g);
                var (scale, zero) = GroupParameters(group, bits, symmetric, tensorName, rowIndex, j, width);
                scalesRow[j] = scale;
                zerosRow[j] = (byte)zero;
                if (packedStep == 128) QuantizeGroupPacked4(group, scale, zero, qweightRow.Slice(j * g / 2, g / 2));
                else QuantizeGroupPacked4V256(group, scale, zero, qweightRow.Slice(j * g / 2, g / 2));
            }
            return;
        }
        Span<byte> q = bits == 8 ? qweightRow[..k] : scratch[..k];
        for (int j = 0; j < k / g; j++)
        {
            ReadOnlySpan<float> group = row.Slice(j * g, g);
            var (scale, zero) = GroupParameters(group, bits, symmetric, tensorName, rowIndex, j, width);
            scalesRow[j] = scale;
            zerosRow[j] = (byte)zero;
            QuantizeGroup(group, scale, zero, qmax, q.Slice(j * g, g), width);
        }
        if (bits == 4) QuantizedLinear.PackNibbles(q, qweightRow);
    }

    /// <summary>4-bit levels of a group whose length is a multiple of 128, packed two per byte (element 2i in the low nibble).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeGroupPacked4(ReadOnlySpan<float> group, float scale, int zero, Span<byte> packed)
    {
        if (scale == 0)
        {
            packed.Fill((byte)(zero | (zero << 4)));
            return;
        }
        var vScale = Vector512.Create(scale);
        var vZero = Vector512.Create((float)zero);
        var vMax = Vector512.Create(15f);
        ref float src = ref MemoryMarshal.GetReference(group);
        ref byte dst = ref MemoryMarshal.GetReference(packed);
        for (int i = 0; i <= group.Length - 128; i += 128)
        {
            var lo = Levels64(ref src, i, vScale, vZero, vMax).AsUInt16();
            var hi = Levels64(ref src, i + 64, vScale, vZero, vMax).AsUInt16();
            // A ushort lane holds q[2m] | q[2m+1] << 8; its low byte after (u | u >> 4) is q[2m] | q[2m+1] << 4.
            Vector512.Narrow(lo | (lo >> 4), hi | (hi >> 4)).StoreUnsafe(ref dst, (nuint)(i / 2));
        }
    }

    /// <summary>The Vector256 form of <see cref="QuantizeGroupPacked4"/>: a group whose length is a multiple of 64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeGroupPacked4V256(ReadOnlySpan<float> group, float scale, int zero, Span<byte> packed)
    {
        if (scale == 0)
        {
            packed.Fill((byte)(zero | (zero << 4)));
            return;
        }
        var vScale = Vector256.Create(scale);
        var vZero = Vector256.Create((float)zero);
        var vMax = Vector256.Create(15f);
        ref float src = ref MemoryMarshal.GetReference(group);
        ref byte dst = ref MemoryMarshal.GetReference(packed);
        for (int i = 0; i <= group.Length - 64; i += 64)
        {
            var lo = Levels32(ref src, i, vScale, vZero, vMax).AsUInt16();
            var hi = Levels32(ref src, i + 32, vScale, vZero, vMax).AsUInt16();
            Vector256.Narrow(lo | (lo >> 4), hi | (hi >> 4)).StoreUnsafe(ref dst, (nuint)(i / 2));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> Levels64(ref float src, int i, Vector512<float> scale, Vector512<float> zero, Vector512<float> max)
    {
        var a = Level(Vector512.LoadUnsafe(ref src, (nuint)i), scale, zero, max);
        var b = Level(Vector512.LoadUnsafe(ref src, (nuint)(i + 16)), scale, zero, max);
        var c = Level(Vector512.LoadUnsafe(ref src, (nuint)(i + 32)), scale, zero, max);
        var d = Level(Vector512.LoadUnsafe(ref src, (nuint)(i + 48)), scale, zero, max);
        return Vector512.Narrow(Vector512.Narrow(a, b), Vector512.Narrow(c, d)).AsByte();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Levels32(ref float src, int i, Vector256<float> scale, Vector256<float> zero, Vector256<float> max)
    {
        var a = Level(Vector256.LoadUnsafe(ref src, (nuint)i), scale, zero, max);
        var b = Level(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)), scale, zero, max);
        var c = Level(Vector256.LoadUnsafe(ref src, (nuint)(i + 16)), scale, zero, max);
        var d = Level(Vector256.LoadUnsafe(ref src, (nuint)(i + 24)), scale, zero, max);
        return Vector256.Narrow(Vector256.Narrow(a, b), Vector256.Narrow(c, d)).AsByte();
    }

    /// <summary>One group's scale and zero point exactly as round-to-nearest chooses them (GPTQ and AWQ reuse the rule).</summary>
    public static (float Scale, int Zero) GroupScaleAndZero(ReadOnlySpan<float> group, int bits, bool symmetric, string tensorName = "weight", int row = 0, int groupIndex = 0) =>
        GroupParameters(group, bits, symmetric, tensorName, row, groupIndex, Widest);

    /// <summary>The level of one value: clamp(round-half-even(w / scale) + zero, 0, 2^b − 1); a zero scale gives the zero point.</summary>
    public static int Level(double w, float scale, int zero, int bits) =>
        scale == 0 ? zero : (int)Math.Clamp(Math.Round(w / scale, MidpointRounding.ToEven) + zero, 0, (1 << bits) - 1);

    /// <summary>
    /// The per-group scale and zero point (shared by the vector and scalar paths). The sign of a zero minimum or maximum
    /// never matters: the range is widened to include 0 (lo = min(min, 0) and hi = max(max, 0) give the same scale and
    /// zero point for −0 and +0), so the vector paths take the hardware's min/max and test for NaN separately.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static (float Scale, int Zero) GroupParameters(ReadOnlySpan<float> group, int bits, bool symmetric, string tensorName, int row, int groupIndex, KernelWidth width)
    {
        int qmax = (1 << bits) - 1;
        float scale;
        int zero;
        if (symmetric)
        {
            float absMax = AbsMax(group, width);
            scale = 2 * absMax / qmax;
            zero = 1 << (bits - 1);
        }
        else
        {
            var (min, max) = MinMax(group, width);
            float lo = MathF.Min(min, 0f), hi = MathF.Max(max, 0f);
            scale = (hi - lo) / qmax;
            zero = scale == 0 ? 0 : (int)Math.Clamp(MathF.Round(-lo / scale, MidpointRounding.ToEven), 0, qmax);
        }
        if (!float.IsFinite(scale))
            throw new LlmBuildException(ErrorCodes.NonFiniteWeight,
                $"Weight '{tensorName}' row {row}, group {groupIndex} holds NaN or infinity; it cannot be quantized. The checkpoint is corrupt or was saved mid-divergence.");
        return (scale, zero);
    }

    /// <summary>The largest magnitude; NaN when any value is NaN (so the caller rejects the group).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float AbsMax(ReadOnlySpan<float> x, KernelWidth width)
    {
        int i = 0;
        float max = 0;
        bool nan = false;
        ref float src = ref MemoryMarshal.GetReference(x);
        if (width == KernelWidth.V512 && x.Length >= 16)
        {
            var vMax = Vector512<float>.Zero;
            var vNaN = Vector512<float>.Zero;
            for (; i <= x.Length - 16; i += 16)
            {
                var v = Vector512.LoadUnsafe(ref src, (nuint)i);
                vMax = Vector512.MaxNative(vMax, Vector512.Abs(v));
                vNaN |= ~Vector512.Equals(v, v);
            }
            max = HorizontalMax(Vector256.MaxNative(vMax.GetLower(), vMax.GetUpper()));
            nan = vNaN != Vector512<float>.Zero;
        }
        else if (width != KernelWidth.Scalar && x.Length >= 8)
        {
            var vMax = Vector256<float>.Zero;
            var vNaN = Vector256<float>.Zero;
            for (; i <= x.Length - 8; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref src, (nuint)i);
                vMax = Vector256.MaxNative(vMax, Vector256.Abs(v));
                vNaN |= ~Vector256.Equals(v, v);
            }
            max = HorizontalMax(vMax);
            nan = vNaN != Vector256<float>.Zero;
        }
        for (; i < x.Length; i++)
        {
            nan |= float.IsNaN(x[i]);
            max = MathF.Max(max, MathF.Abs(x[i]));
        }
        return nan ? float.NaN : max;
    }

    /// <summary>Minimum and maximum in one pass; NaN anywhere makes both NaN (so the caller rejects the group).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static (float Min, float Max) MinMax(ReadOnlySpan<float> x, KernelWidth width)
    {
        int i = 0;
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        bool nan = false;
        ref float src = ref MemoryMarshal.GetReference(x);
        if (width == KernelWidth.V512 && x.Length >= 16)
        {
            var vMin = Vector512.Create(float.PositiveInfinity);
            var vMax = Vector512.Create(float.NegativeInfinity);
            var vNaN = Vector512<float>.Zero;
            for (; i <= x.Length - 16; i += 16)
            {
                var v = Vector512.LoadUnsafe(ref src, (nuint)i);
                // The hardware's min/max (no NaN or signed-zero fix-ups): NaN is caught by vNaN, and a zero's sign does not matter.
                vMin = Vector512.MinNative(vMin, v);
                vMax = Vector512.MaxNative(vMax, v);
                vNaN |= ~Vector512.Equals(v, v);
            }
            min = HorizontalMin(Vector256.MinNative(vMin.GetLower(), vMin.GetUpper()));
            max = HorizontalMax(Vector256.MaxNative(vMax.GetLower(), vMax.GetUpper()));
            nan = vNaN != Vector512<float>.Zero;
        }
        else if (width != KernelWidth.Scalar && x.Length >= 8)
        {
            var vMin = Vector256.Create(float.PositiveInfinity);
            var vMax = Vector256.Create(float.NegativeInfinity);
            var vNaN = Vector256<float>.Zero;
            for (; i <= x.Length - 8; i += 8)
            {
                var v = Vector256.LoadUnsafe(ref src, (nuint)i);
                vMin = Vector256.MinNative(vMin, v);
                vMax = Vector256.MaxNative(vMax, v);
                vNaN |= ~Vector256.Equals(v, v);
            }
            min = HorizontalMin(vMin);
            max = HorizontalMax(vMax);
            nan = vNaN != Vector256<float>.Zero;
        }
        for (; i < x.Length; i++)
        {
            float v = x[i];
            nan |= float.IsNaN(v);
            min = MathF.Min(min, v);
            max = MathF.Max(max, v);
        }
        return nan ? (float.NaN, float.NaN) : (min, max);
    }

    /// <summary>The smallest of 8 lanes (no NaN among them), by halving: 8 → 4 → 2 → 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMin(Vector256<float> v)
    {
        var m = Vector128.MinNative(v.GetLower(), v.GetUpper());
        m = Vector128.MinNative(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        return MathF.Min(m.ToScalar(), m.GetElement(1));
    }

    /// <summary>The largest of 8 lanes (no NaN among them), by halving: 8 → 4 → 2 → 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Vector128.MaxNative(v.GetLower(), v.GetUpper());
        m = Vector128.MaxNative(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(m.ToScalar(), m.GetElement(1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeGroup(ReadOnlySpan<float> group, float scale, int zero, int qmax, Span<byte> q, KernelWidth width)
    {
        if (scale == 0)
        {
            q.Fill((byte)zero);
            return;
        }
        int i = 0;
        if (width == KernelWidth.V512 && group.Length >= 64)
        {
            var vScale = Vector512.Create(scale);
            var vZero = Vector512.Create((float)zero);
            var vMax = Vector512.Create((float)qmax);
            ref float src = ref MemoryMarshal.GetReference(group);
            ref byte dst = ref MemoryMarshal.GetReference(q);
            for (; i <= group.Length - 64; i += 64)
            {
                var a = Level(Vector512.LoadUnsafe(ref src, (nuint)i), vScale, vZero, vMax);
                var b = Level(Vector512.LoadUnsafe(ref src, (nuint)(i + 16)), vScale, vZero, vMax);
                var c = Level(Vector512.LoadUnsafe(ref src, (nuint)(i + 32)), vScale, vZero, vMax);
                var d = Level(Vector512.LoadUnsafe(ref src, (nuint)(i + 48)), vScale, vZero, vMax);
                var shorts = Vector512.Narrow(Vector512.Narrow(a, b), Vector512.Narrow(c, d));
                shorts.AsByte().StoreUnsafe(ref dst, (nuint)i);
            }
        }
        else if (width != KernelWidth.Scalar && group.Length >= 32)
        {
            var vScale = Vector256.Create(scale);
            var vZero = Vector256.Create((float)zero);
            var vMax = Vector256.Create((float)qmax);
            ref float src = ref MemoryMarshal.GetReference(group);
            ref byte dst = ref MemoryMarshal.GetReference(q);
            for (; i <= group.Length - 32; i += 32)
            {
                var a = Level(Vector256.LoadUnsafe(ref src, (nuint)i), vScale, vZero, vMax);
                var b = Level(Vector256.LoadUnsafe(ref src, (nuint)(i + 8)), vScale, vZero, vMax);
                var c = Level(Vector256.LoadUnsafe(ref src, (nuint)(i + 16)), vScale, vZero, vMax);
                var d = Level(Vector256.LoadUnsafe(ref src, (nuint)(i + 24)), vScale, vZero, vMax);
                Vector256.Narrow(Vector256.Narrow(a, b), Vector256.Narrow(c, d)).AsByte().StoreUnsafe(ref dst, (nuint)i);
            }
        }
        for (; i < group.Length; i++) q[i] = LevelScalar(group[i], scale, zero, qmax);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Level(Vector512<float> w, Vector512<float> scale, Vector512<float> zero, Vector512<float> max) =>
        Vector512.ConvertToInt32(Vector512.Min(Vector512.Max(Vector512.Round(w / scale) + zero, Vector512<float>.Zero), max));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Level(Vector256<float> w, Vector256<float> scale, Vector256<float> zero, Vector256<float> max) =>
        Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(Vector256.Round(w / scale) + zero, Vector256<float>.Zero), max));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte LevelScalar(float w, float scale, int zero, int qmax) =>
        (byte)Math.Clamp(MathF.Round(w / scale, MidpointRounding.ToEven) + zero, 0f, qmax);

    /// <summary>The scalar reference: one row quantized element by element, straight from the formulas above.</summary>
    public static void QuantizeRowScalar(ReadOnlySpan<float> row, int bits, int g, bool symmetric, Span<byte> qweightRow, Span<float> scalesRow, Span<byte> zerosRow)
    {
        int k = row.Length, qmax = (1 << bits) - 1;
        for (int j = 0; j < k / g; j++)
        {
            float lo = 0, hi = 0, absMax = 0;
            for (int c = j * g; c < (j + 1) * g; c++)
            {
                lo = Math.Min(lo, row[c]);
                hi = Math.Max(hi, row[c]);
                absMax = Math.Max(absMax, Math.Abs(row[c]));
            }
            float scale;
            int zero;
            if (symmetric)
            {
                scale = 2 * absMax / qmax;
                zero = 1 << (bits - 1);
            }
            else
            {
                scale = (hi - lo) / qmax;
                zero = scale == 0 ? 0 : (int)Math.Clamp(Math.Round(-lo / scale, MidpointRounding.ToEven), 0, qmax);
            }
            scalesRow[j] = scale;
            zerosRow[j] = (byte)zero;
            for (int c = j * g; c < (j + 1) * g; c++)
            {
                int q = scale == 0 ? zero : (int)Math.Clamp(Math.Round(row[c] / scale, MidpointRounding.ToEven) + zero, 0, qmax);
                if (bits == 8) qweightRow[c] = (byte)q;
                else if ((c & 1) == 0) qweightRow[c / 2] = (byte)((qweightRow[c / 2] & 0xF0) | q);
                else qweightRow[c / 2] = (byte)((qweightRow[c / 2] & 0x0F) | (q << 4));
            }
        }
    }
}

/// <summary>Which vector path a quantization kernel takes (the machine's widest by default; tests run each).</summary>
internal enum KernelWidth
{
    Scalar,
    V256,
    V512,
}
