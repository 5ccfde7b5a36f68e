using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Runtime;

/// <summary>How a matmul's right operand W [N, K] is stored.</summary>
internal enum WeightFormat
{
    Float32,
    BFloat16,
    /// <summary>u8 codes [N, K/2], element 2i in the low nibble; f32 scales and u8 zero points [N, K/group]; w = (q − z)·s.</summary>
    Int4,
    /// <summary>u8 codes [N, K]; f32 scales and u8 zero points [N, K/group].</summary>
    Int8,
}

/// <summary>W [N, K] for y = x·Wᵀ: codes (or plain values), and for the quantized formats their per-group scales and zeros.</summary>
internal readonly unsafe struct Weights(WeightFormat format, byte* data, float* scales = null, byte* zeros = null, int group = 0)
{
    public WeightFormat Format { get; } = format;
    public byte* Data { get; } = data;
    public float* Scales { get; } = scales;
    public byte* Zeros { get; } = zeros;
    public int Group { get; } = group;
}

/// <summary>
/// y[M,N] = x[M,K]·Wᵀ (+ bias) for every weight format, written once over <see cref="ISimdOps{TVec}"/>.
/// Few rows (decode, batch decode: M ≤ 4) are bandwidth-bound: each weight is read once and dequantized in registers
/// straight into the dot products of all rows (4 bits: one scale multiply per group and row, the zero point folded in as
/// s·z·Σx). Many rows (prefill) are compute-bound: each thread dequantizes a block of <see cref="GemmColumns"/> weight
/// rows to f32 once, then runs a 4×4 register tile (16 accumulators, 8 loads per 16 FMAs) over them for every 4 rows of x.
/// Columns are split over threads in both cases.
/// </summary>
internal static unsafe class MatMulKernels
{
    /// <summary>Weight rows a GEMM thread dequantizes at once (its f32 copy stays in L2 while all x rows pass over it).</summary>
    internal const int GemmColumns = 16;

    /// <summary>Most output columns per parallel work item on the few-rows path (large enough to amortise scheduling).</summary>
    private const int ColumnChunk = 64;

    /// <summary>
    /// Columns per work item for <paramref name="n"/> columns: <see cref="ColumnChunk"/>, or fewer (down to 8, even) so a
    /// small matmul (k_proj's 128 columns) still gives each thread several items: a core another process holds for a
    /// moment then delays the step by one small item, not by half the matmul.
    /// </summary>
    internal static int ChunkColumns(int n) => Math.Clamp(n / (8 * WorkerPool.Threads) & ~1, 8, ColumnChunk);

    /// <summary>Rows up to which the few-rows (bandwidth) path is used.</summary>
    internal const int FewRows = 4;

    public static void MatMul(float* x, int m, int k, int n, Weights w, float[]? bias, float* y, SimdWidth width)
    {
        switch (width)
        {
            case SimdWidth.Vector512: Run<Simd512, Vector512<float>>(x, m, k, n, w, bias, y); break;
            case SimdWidth.Vector256: Run<Simd256, Vector256<float>>(x, m, k, n, w, bias, y); break;
            default: Run<SimdScalar, float>(x, m, k, n, w, bias, y); break;
        }
    }

    /// <summary>A per-thread f32 scratch of at least <paramref name="floats"/> elements, 64-byte aligned (kept for the thread's life).</summary>
    private static float* Scratch(long floats)
    {
        if (_scratchFloats < floats)
        {
            if (_scratch != null) NativeMemory.AlignedFree(_scratch);
            _scratch = (float*)NativeMemory.AlignedAlloc((nuint)floats * sizeof(float), 64);
            _scratchFloats = floats;
        }
        return _scratch;
    }

    [ThreadStatic] private static float* _scratch;
    [ThreadStatic] private static long _scratchFloats;

    private static void Run<TOps, TVec>(float* x, int m, int k, int n, Weights w, float[]? bias, float* y)
        where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        int groups = w.Format is WeightFormat.Int4 or WeightFormat.Int8 ? k / w.Group : 0;
        bool table = NibbleTable && typeof(TOps) == typeof(Simd512) && w.Format == WeightFormat.Int4 && m <= FewRows && w.Group % NibbleBlock == 0 && k % w.Group == 0;
        // 4 bits: byte i holds elements 2i and 2i+1, so x is read as its even elements then its odd ones (per row), or
        // for the table path in the order its 16-bit lanes unpack (see DotNibbleRowsTable).
        float[]? prepared = w.Format == WeightFormat.Int4 ? ArrayPool<float>.Shared.Rent(m * k) : null;
        float[]? groupSums = groups > 0 && m <= FewRows && !table ? ArrayPool<float>.Shared.Rent(m * groups) : null;
        try
        {
            if (prepared is not null && table) InterleaveNibbleBlocks(x, m, k, prepared);
            else if (prepared is not null) SplitEvenOdd(x, m, k, prepared);
            if (groupSums is not null)
                for (int r = 0; r < m; r++)
                    for (int g = 0; g < groups; g++)
                        groupSums[r * groups + g] = System.Numerics.Tensors.TensorPrimitives.Sum(new ReadOnlySpan<float>(x + (long)r * k + g * w.Group, w.Group));
            fixed (float* prep = prepared)
            fixed (float* sums = groupSums)
            {
                float* xs = prep is null ? x : prep;
                if (m <= FewRows) FewRowsMatMul<TOps, TVec>(xs, m, k, n, w, sums, table, bias, y);
                else Gemm<TOps, TVec>(xs, m, k, n, w, bias, y);
            }
        }
        finally
        {
            if (prepared is not null) ArrayPool<float>.Shared.Return(prepared);
            if (groupSums is not null) ArrayPool<float>.Shared.Return(groupSums);
        }
    }

    private static void SplitEvenOdd(float* x, int m, int k, float[] prepared)
    {
        int half = k / 2;
        for (int r = 0; r < m; r++)
        {
            float* src = x + (long)r * k;
            var dst = prepared.AsSpan(r * k, k);
            for (int i = 0; i < half; i++)
            {
                dst[i] = src[2 * i];
                dst[half + i] = src[2 * i + 1];
            }
        }
    }

    /// <summary>Off: 4-bit weights take the generic path at every width (the kernel benchmark's A/B switch).</summary>
    internal static bool NibbleTable { get; set; } = true;

    /// <summary>0..255 as f32: a zero point's value is a load, not a conversion.</summary>
    private static readonly float[] ByteValues = Enumerable.Range(0, 256).Select(v => (float)v).ToArray();

    /// <summary>Elements of a 4-bit row the table path unpacks from one 256-bit load (16 lanes of 16 bits, 4 nibbles each).</summary>
    internal const int NibbleBlock = 64;

    /// <summary>
    /// x for <see cref="DotNibbleRowsTable{TRows}"/>: in each block of 64, x'[16t + l] = x[4l + t] (t &lt; 4, l &lt; 16), the
    /// order in which the nibbles of the block's 16-bit lanes come out when lane l is shifted right by 4t.
    /// </summary>
    internal static void InterleaveNibbleBlocks(float* x, int m, int k, float[] prepared)
    {
        fixed (float* p = prepared)
        {
            if (Avx512F.IsSupported)
            {
                // It runs before every 4-bit decode matmul on the calling thread alone: per block, each of the four
                // outputs gathers stride-4 elements from two pairs of input vectors (two-source permutes), then joins
                // the halves.
                Vector512<int> lo = Vector512.Create(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
                Vector512<int> join = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
                for (long b = 0; b < (long)m * k; b += NibbleBlock)
                {
                    float* src = x + b, dst = p + b;
                    Vector512<float> v0 = Vector512.Load(src), v1 = Vector512.Load(src + 16), v2 = Vector512.Load(src + 32), v3 = Vector512.Load(src + 48);
                    for (int t = 0; t < 4; t++)
                    {
                        Vector512<int> idx = lo + Vector512.Create(t);
                        Vector512<float> first = Avx512F.PermuteVar16x32x2(v0, idx, v1), second = Avx512F.PermuteVar16x32x2(v2, idx, v3);
                        Avx512F.PermuteVar16x32x2(first, join, second).Store(dst + 16 * t);
                    }
                }
                return;
            }
            for (long b = 0; b < (long)m * k; b += NibbleBlock)
                for (int t = 0; t < 4; t++)
                    for (int l = 0; l < 16; l++)
                        p[b + 16 * t + l] = x[b + 4 * l + t];
        }
    }

    /// <summary>
    /// <see cref="DotNibbleRows{TOps, TVec, TRows}"/> for 512-bit vectors and groups of a multiple of 64, with x prepared by
    /// <see cref="InterleaveNibbleBlocks"/>: per group a 16-entry table of its dequantized values (q − z)·s, then per 64
    /// elements one load widened to 16 lanes of 16 bits and four lookups (vpermps reads the low 4 bits of each lane, so a
    /// shift by 0, 4, 8, 12 selects the nibble) feeding the FMAs of every row. Each weight is the same f32 as
    /// <see cref="DequantizeRow{TOps, TVec}"/> gives, so no zero-point term or per-group reduction is left.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotNibbleRowsTable<TRows>(byte* q, float* scales, byte* zeros, float* x, long stride, int count, int group, float* results)
        where TRows : struct, IRowCount
    {
        int rows = TRows.Value, groups = count / group, blocks = group / NibbleBlock;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        Vector512<float> codes = Vector512<float>.Indices;
        Vector512<float> a0 = default, b0 = default, c0 = default, d0 = default, a1 = default, b1 = default;
        Vector512<float> a2 = default, b2 = default, a3 = default, b3 = default;
        long at = 0;
        for (int g = 0; g < groups; g++)
        {
            Vector512<float> table = (codes - Vector512.Create(ByteValues[zeros[g]])) * Vector512.Create(scales[g]);
            for (int b = 0; b < blocks; b++, at += NibbleBlock, q += NibbleBlock / 2)
            {
                Vector512<int> lanes = Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)q));
                Vector512<float> w0 = Avx512F.PermuteVar16x32(table, lanes);
                Vector512<float> w1 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(lanes, 4));
                Vector512<float> w2 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(lanes, 8));
                Vector512<float> w3 = Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(lanes, 12));
                float* xa = x + at;
                a0 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(xa), a0);
                b0 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(xa + 16), b0);
                c0 = Avx512F.FusedMultiplyAdd(w2, Vector512.Load(xa + 32), c0);
                d0 = Avx512F.FusedMultiplyAdd(w3, Vector512.Load(xa + 48), d0);
                if (rows > 1)
                {
                    xa = x1 + at;
                    a1 = Avx512F.FusedMultiplyAdd(w2, Vector512.Load(xa + 32), Avx512F.FusedMultiplyAdd(w0, Vector512.Load(xa), a1));
                    b1 = Avx512F.FusedMultiplyAdd(w3, Vector512.Load(xa + 48), Avx512F.FusedMultiplyAdd(w1, Vector512.Load(xa + 16), b1));
                }
                if (rows > 2)
                {
                    xa = x2 + at;
                    a2 = Avx512F.FusedMultiplyAdd(w2, Vector512.Load(xa + 32), Avx512F.FusedMultiplyAdd(w0, Vector512.Load(xa), a2));
                    b2 = Avx512F.FusedMultiplyAdd(w3, Vector512.Load(xa + 48), Avx512F.FusedMultiplyAdd(w1, Vector512.Load(xa + 16), b2));
                }
                if (rows > 3)
                {
                    xa = x3 + at;
                    a3 = Avx512F.FusedMultiplyAdd(w2, Vector512.Load(xa + 32), Avx512F.FusedMultiplyAdd(w0, Vector512.Load(xa), a3));
                    b3 = Avx512F.FusedMultiplyAdd(w3, Vector512.Load(xa + 48), Avx512F.FusedMultiplyAdd(w1, Vector512.Load(xa + 16), b3));
                }
            }
        }
        results[0] = Simd512.Sum((a0 + b0) + (c0 + d0));
        if (rows > 1) results[1] = Simd512.Sum(a1 + b1);
        if (rows > 2) results[2] = Simd512.Sum(a2 + b2);
        if (rows > 3) results[3] = Simd512.Sum(a3 + b3);
    }

    // ------------------------------------------------------------------ few rows: fused dequantize-dot

    /// <summary>
    /// Bytes of x rows up to which a few-rows pass reads every weight row whole; beyond it K is walked in blocks (whole
    /// groups) and the blocks' sums added. One row is never split (it is read in order beside the weights). The rows
    /// are read from L2 beside the weights, so the bound is a share of L2, not L1: a block split reads each weight row in
    /// pieces, one pass over the columns per block, and with the weights streaming from memory those strided pieces cost
    /// more than x's L2 reads (Batch=4's down projection, 4 rows of 4864: 0.35 ms a call split at 16 KB, 0.25 ms whole).
    /// </summary>
    internal const int FewRowsXBytesDefault = 256 << 10;

    /// <summary><see cref="FewRowsXBytesDefault"/>, or another bound for the runtime benchmark's A/B switch.</summary>
    internal static int FewRowsXBytes { get; set; } = FewRowsXBytesDefault;

    private static void FewRowsMatMul<TOps, TVec>(float* x, int m, int k, int n, Weights w, float* groupSums, bool table, float[]? bias, float* y)
        where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        int unit = w.Group > 0 ? w.Group : 2 * TOps.Count;
        int kBlock = m == 1 || m * (long)k * sizeof(float) <= FewRowsXBytes ? k : Math.Max(unit, FewRowsXBytes / (sizeof(float) * m) / unit * unit);
        int chunk = ChunkColumns(n), chunks = (n + chunk - 1) / chunk;
        nint xp = (nint)x, yp = (nint)y, gp = (nint)groupSums;
        WorkerPool.For((long)m * n * k, chunks, c =>
        {
            float* results = stackalloc float[2 * FewRows];
            float* ys = (float*)yp;
            int end = Math.Min(n, (c + 1) * chunk);
            for (int k0 = 0; k0 < k; k0 += kBlock)
            {
                int kb = Math.Min(kBlock, k - k0);
                int j = c * chunk;
                // Two rows or more (or the 4-bit table path, or bf16 weights): two columns at once, so each x vector loaded
                // feeds both columns' FMAs, and the pair prefetches the rows ahead (bf16: two pairs ahead into L2, which
                // also took one row of the 272 MB bf16 lm_head from 11.4–11.8 ms to 6.8–8.8 ms).
                if ((m > 1 || table || w.Format == WeightFormat.BFloat16) && ColumnPairs)
                    for (; j + 1 < end; j += 2)
                    {
                        switch (m)
                        {
                            case 1: ColumnPair<TOps, TVec, Rows1>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                            case 2: ColumnPair<TOps, TVec, Rows2>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                            case 3: ColumnPair<TOps, TVec, Rows3>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                            default: ColumnPair<TOps, TVec, Rows4>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                        }
                        Store(ys, m, n, j, k0, bias, results);
                        Store(ys, m, n, j + 1, k0, bias, results + FewRows);
                    }
                for (; j < end; j++)
                {
                    switch (m)
                    {
                        case 1: Column<TOps, TVec, Rows1>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                        case 2: Column<TOps, TVec, Rows2>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                        case 3: Column<TOps, TVec, Rows3>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                        default: Column<TOps, TVec, Rows4>((float*)xp, k, k0, kb, w, j, (float*)gp, table, results); break;
                    }
                    Store(ys, m, n, j, k0, bias, results);
                }
            }
        });
    }

    /// <summary>Off: few-rows matmuls take one column at a time (the kernel benchmark's A/B switch).</summary>
    internal static bool ColumnPairs { get; set; } = true;

    /// <summary>Column <paramref name="j"/>'s results for every row: the first K block sets them (with the bias), later ones add.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* ys, int m, int n, int j, int k0, float[]? bias, float* results)
    {
        if (k0 == 0)
        {
            float b = bias is null ? 0f : bias[j];
            for (int r = 0; r < m; r++) ys[(long)r * n + j] = results[r] + b;
        }
        else
            for (int r = 0; r < m; r++) ys[(long)r * n + j] += results[r];
    }

    /// <summary>Columns <paramref name="j"/> and j + 1 at once: results[r] for the first, results[FewRows + r] for the second.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ColumnPair<TOps, TVec, TRows>(float* x, int k, int k0, int kb, Weights w, int j, float* groupSums, bool table, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        switch (w.Format)
        {
            case WeightFormat.BFloat16: DotBFloat16RowsPair<TOps, TVec, TRows>((ushort*)w.Data + (long)j * k + k0, k, x + k0, k, kb, results); break;
            case WeightFormat.Int4 when table:
            {
                int groups = k / w.Group;
                long at = (long)j * groups + k0 / w.Group;
                DotNibbleRowsTablePair<TRows>(w.Data + (long)j * (k / 2) + k0 / 2, k / 2, w.Scales + at, w.Zeros + at, groups, x + k0, k, kb, w.Group, results);
                break;
            }
            case WeightFormat.Int8 when BytePairs && typeof(TOps) == typeof(Simd512) && TRows.Value > 1:
            {
                int groups = k / w.Group;
                long at = (long)j * groups + k0 / w.Group;
                DotByteRowsPair<TOps, TVec, TRows>(w.Data + (long)j * k + k0, k, w.Scales + at, w.Zeros + at, groups, x + k0, k, kb, w.Group, groupSums + k0 / w.Group, groups, results);
                break;
            }
            default: // 8 bits with one row or narrower vectors (measured: a pair is no faster, its 16 accumulators crowd the 16 registers), f32, 4 bits without the table
                Column<TOps, TVec, TRows>(x, k, k0, kb, w, j, groupSums, table, results);
                Column<TOps, TVec, TRows>(x, k, k0, kb, w, j + 1, groupSums, table, results + FewRows);
                break;
        }
    }

    /// <summary>Column <paramref name="j"/>'s dot products with every row over elements [k0, k0 + kb).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Column<TOps, TVec, TRows>(float* x, int k, int k0, int kb, Weights w, int j, float* groupSums, bool table, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        switch (w.Format)
        {
            case WeightFormat.BFloat16: DotBFloat16Rows<TOps, TVec, TRows>((ushort*)w.Data + (long)j * k + k0, x + k0, k, kb, results); break;
            case WeightFormat.Float32: DotFloatRows<TOps, TVec, TRows>((float*)w.Data + (long)j * k + k0, x + k0, k, kb, results); break;
            case WeightFormat.Int4 when table:
            {
                long at = (long)j * (k / w.Group) + k0 / w.Group;
                DotNibbleRowsTable<TRows>(w.Data + (long)j * (k / 2) + k0 / 2, w.Scales + at, w.Zeros + at, x + k0, k, kb, w.Group, results);
                break;
            }
            case WeightFormat.Int4:
            {
                int groups = k / w.Group;
                long at = (long)j * groups + k0 / w.Group;
                DotNibbleRows<TOps, TVec, TRows>(w.Data + (long)j * (k / 2) + k0 / 2, w.Scales + at, w.Zeros + at, x + k0 / 2, k, kb, k / 2, w.Group,
                    groupSums + k0 / w.Group, groups, results);
                break;
            }
            default:
            {
                int groups = k / w.Group;
                long at = (long)j * groups + k0 / w.Group;
                DotByteRows<TOps, TVec, TRows>(w.Data + (long)j * k + k0, w.Scales + at, w.Zeros + at, x + k0, k, kb, w.Group, groupSums + k0 / w.Group, groups, results);
                break;
            }
        }
    }

    /// <summary>results[r] = Σ bf16(w[i])·x[r·stride + i] for r &lt; TRows: the weight widened once for every row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotBFloat16Rows<TOps, TVec, TRows>(ushort* w, float* x, long stride, int count, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        int rows = TRows.Value, step = TOps.Count;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        TVec a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
        TVec b0 = TOps.Zero, b1 = TOps.Zero, b2 = TOps.Zero, b3 = TOps.Zero;
        int i = 0;
        for (; i <= count - 2 * step; i += 2 * step)
        {
            // Two weight vectors per pass into separate accumulators: no row waits on its own previous FMA within a pass.
            TVec w0 = TOps.LoadBFloat16(w + i), w1 = TOps.LoadBFloat16(w + i + step);
            a0 = TOps.MultiplyAdd(w0, TOps.Load(x + i), a0);
            b0 = TOps.MultiplyAdd(w1, TOps.Load(x + i + step), b0);
            if (rows > 1) { a1 = TOps.MultiplyAdd(w0, TOps.Load(x1 + i), a1); b1 = TOps.MultiplyAdd(w1, TOps.Load(x1 + i + step), b1); }
            if (rows > 2) { a2 = TOps.MultiplyAdd(w0, TOps.Load(x2 + i), a2); b2 = TOps.MultiplyAdd(w1, TOps.Load(x2 + i + step), b2); }
            if (rows > 3) { a3 = TOps.MultiplyAdd(w0, TOps.Load(x3 + i), a3); b3 = TOps.MultiplyAdd(w1, TOps.Load(x3 + i + step), b3); }
        }
        for (; i <= count - step; i += step)
        {
            TVec w0 = TOps.LoadBFloat16(w + i);
            a0 = TOps.MultiplyAdd(w0, TOps.Load(x + i), a0);
            if (rows > 1) a1 = TOps.MultiplyAdd(w0, TOps.Load(x1 + i), a1);
            if (rows > 2) a2 = TOps.MultiplyAdd(w0, TOps.Load(x2 + i), a2);
            if (rows > 3) a3 = TOps.MultiplyAdd(w0, TOps.Load(x3 + i), a3);
        }
        results[0] = TOps.Sum(TOps.Add(a0, b0));
        if (rows > 1) results[1] = TOps.Sum(TOps.Add(a1, b1));
        if (rows > 2) results[2] = TOps.Sum(TOps.Add(a2, b2));
        if (rows > 3) results[3] = TOps.Sum(TOps.Add(a3, b3));
        for (; i < count; i++)
        {
            float wi = BitConverter.UInt32BitsToSingle((uint)w[i] << 16);
            for (int r = 0; r < rows; r++) results[r] += wi * x[r * stride + i];
        }
    }

    /// <summary>results[r] = Σ w[i]·x[r·stride + i] for f32 weights.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotFloatRows<TOps, TVec, TRows>(float* w, float* x, long stride, int count, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        int rows = TRows.Value, step = TOps.Count;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        TVec a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
        int i = 0;
        for (; i <= count - step; i += step)
        {
            TVec w0 = TOps.Load(w + i);
            a0 = TOps.MultiplyAdd(w0, TOps.Load(x + i), a0);
            if (rows > 1) a1 = TOps.MultiplyAdd(w0, TOps.Load(x1 + i), a1);
            if (rows > 2) a2 = TOps.MultiplyAdd(w0, TOps.Load(x2 + i), a2);
            if (rows > 3) a3 = TOps.MultiplyAdd(w0, TOps.Load(x3 + i), a3);
        }
        results[0] = TOps.Sum(a0);
        if (rows > 1) results[1] = TOps.Sum(a1);
        if (rows > 2) results[2] = TOps.Sum(a2);
        if (rows > 3) results[3] = TOps.Sum(a3);
        for (; i < count; i++)
            for (int r = 0; r < rows; r++) results[r] += w[i] * x[r * stride + i];
    }

    /// <summary>
    /// results[r] = Σ_g s_g·(Σ_i q_i·x_ri − z_g·Σ_i x_ri) over <paramref name="count"/> elements of a 4-bit weight row, x
    /// prepared as even elements, then the odd ones <paramref name="half"/> further (rows <paramref name="stride"/> apart).
    /// The per-group dot stays a vector until it is scaled into the row's accumulator, so the only horizontal sums are at
    /// the end; the zero points come in through the precomputed group sums (row r's at groupSums + r·groupStride).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotNibbleRows<TOps, TVec, TRows>(byte* q, float* scales, byte* zeros, float* x, long stride, int count, int half, int group,
        float* groupSums, int groupStride, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        int rows = TRows.Value, step = TOps.Count, groups = count / group, hg = group / 2, gs = groupStride;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        TVec a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0; // scalar tails and zero-point terms
        for (int g = 0; g < groups; g++)
        {
            int at = g * hg;
            byte* qg = q + at, qEnd = qg + hg - step;
            float* xe = x + at, xo = x + half + at; // pointers, not indices: the loop carries no index arithmetic
            long r1 = stride, r2 = 2 * stride, r3 = 3 * stride;
            TVec l0 = TOps.Zero, l1 = TOps.Zero, l2 = TOps.Zero, l3 = TOps.Zero;
            TVec h0 = TOps.Zero, h1 = TOps.Zero, h2 = TOps.Zero, h3 = TOps.Zero;
            for (; qg <= qEnd; qg += step, xe += step, xo += step)
            {
                TOps.LoadNibbles(qg, out TVec lo, out TVec hi);
                l0 = TOps.MultiplyAdd(lo, TOps.Load(xe), l0);
                h0 = TOps.MultiplyAdd(hi, TOps.Load(xo), h0);
                if (rows > 1) { l1 = TOps.MultiplyAdd(lo, TOps.Load(xe + r1), l1); h1 = TOps.MultiplyAdd(hi, TOps.Load(xo + r1), h1); }
                if (rows > 2) { l2 = TOps.MultiplyAdd(lo, TOps.Load(xe + r2), l2); h2 = TOps.MultiplyAdd(hi, TOps.Load(xo + r2), h2); }
                if (rows > 3) { l3 = TOps.MultiplyAdd(lo, TOps.Load(xe + r3), l3); h3 = TOps.MultiplyAdd(hi, TOps.Load(xo + r3), h3); }
            }
            float s = scales[g];
            TVec sv = TOps.Broadcast(s);
            float sz = s * zeros[g];
            a0 = TOps.MultiplyAdd(TOps.Add(l0, h0), sv, a0);
            t0 -= sz * groupSums[g];
            if (rows > 1) { a1 = TOps.MultiplyAdd(TOps.Add(l1, h1), sv, a1); t1 -= sz * groupSums[gs + g]; }
            if (rows > 2) { a2 = TOps.MultiplyAdd(TOps.Add(l2, h2), sv, a2); t2 -= sz * groupSums[2 * gs + g]; }
            if (rows > 3) { a3 = TOps.MultiplyAdd(TOps.Add(l3, h3), sv, a3); t3 -= sz * groupSums[3 * gs + g]; }
            for (int i = (int)(qg - (q + at)); i < hg; i++)
            {
                float lo = q[at + i] & 15, hi = q[at + i] >> 4;
                int e = at + i, o = at + half + i;
                t0 += s * (lo * x[e] + hi * x[o]);
                if (rows > 1) t1 += s * (lo * x1[e] + hi * x1[o]);
                if (rows > 2) t2 += s * (lo * x2[e] + hi * x2[o]);
                if (rows > 3) t3 += s * (lo * x3[e] + hi * x3[o]);
            }
        }
        results[0] = TOps.Sum(a0) + t0;
        if (rows > 1) results[1] = TOps.Sum(a1) + t1;
        if (rows > 2) results[2] = TOps.Sum(a2) + t2;
        if (rows > 3) results[3] = TOps.Sum(a3) + t3;
    }

    /// <summary>How far ahead (bytes) an 8-bit weight row is prefetched: about a column (a hidden size's worth) ahead.</summary>
    private const int ByteAhead = 1024;

    /// <summary><see cref="DotNibbleRows{TOps, TVec, TRows}"/> for 8-bit codes (x in its natural order).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotByteRows<TOps, TVec, TRows>(byte* q, float* scales, byte* zeros, float* x, long stride, int count, int group,
        float* groupSums, int groupStride, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        int rows = TRows.Value, step = TOps.Count, groups = count / group, gs = groupStride;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        TVec a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (int g = 0; g < groups; g++)
        {
            int at = g * group;
            // One read stream per core is too few requests in flight to fill the memory bandwidth: ask ahead.
            if (Sse.IsSupported) Sse.Prefetch0(q + at + ByteAhead);
            TVec d0 = TOps.Zero, d1 = TOps.Zero, d2 = TOps.Zero, d3 = TOps.Zero;
            int i = 0;
            for (; i <= group - step; i += step)
            {
                TVec wq = TOps.LoadBytes(q + at + i);
                d0 = TOps.MultiplyAdd(wq, TOps.Load(x + at + i), d0);
                if (rows > 1) d1 = TOps.MultiplyAdd(wq, TOps.Load(x1 + at + i), d1);
                if (rows > 2) d2 = TOps.MultiplyAdd(wq, TOps.Load(x2 + at + i), d2);
                if (rows > 3) d3 = TOps.MultiplyAdd(wq, TOps.Load(x3 + at + i), d3);
            }
            float s = scales[g];
            TVec sv = TOps.Broadcast(s);
            float sz = s * zeros[g];
            a0 = TOps.MultiplyAdd(d0, sv, a0);
            t0 -= sz * groupSums[g];
            if (rows > 1) { a1 = TOps.MultiplyAdd(d1, sv, a1); t1 -= sz * groupSums[gs + g]; }
            if (rows > 2) { a2 = TOps.MultiplyAdd(d2, sv, a2); t2 -= sz * groupSums[2 * gs + g]; }
            if (rows > 3) { a3 = TOps.MultiplyAdd(d3, sv, a3); t3 -= sz * groupSums[3 * gs + g]; }
            for (; i < group; i++)
            {
                float wq = q[at + i];
                t0 += s * wq * x[at + i];
                if (rows > 1) t1 += s * wq * x1[at + i];
                if (rows > 2) t2 += s * wq * x2[at + i];
                if (rows > 3) t3 += s * wq * x3[at + i];
            }
        }
        results[0] = TOps.Sum(a0) + t0;
        if (rows > 1) results[1] = TOps.Sum(a1) + t1;
        if (rows > 2) results[2] = TOps.Sum(a2) + t2;
        if (rows > 3) results[3] = TOps.Sum(a3) + t3;
    }

    /// <summary>Off: 8-bit weights take one column at a time for every row count (the kernel benchmark's A/B switch).</summary>
    internal static bool BytePairs { get; set; } = true;

    /// <summary>
    /// <see cref="DotByteRows{TOps, TVec, TRows}"/> for two weight rows (<paramref name="qStride"/> bytes and
    /// <paramref name="scaleStride"/> groups apart) at once: every x vector is loaded once for both, so with several rows
    /// the loop issues half the loads per FMA (with 32 vector registers the 16 sums fit). results as
    /// <see cref="DotNibbleRowsTablePair{TRows}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotByteRowsPair<TOps, TVec, TRows>(byte* q, long qStride, float* scales, byte* zeros, long scaleStride, float* x, long stride,
        int count, int group, float* groupSums, int groupStride, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        int rows = TRows.Value, step = TOps.Count, groups = count / group, gs = groupStride;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        byte* p = q + qStride;
        TVec a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero; // first weight row
        TVec b0 = TOps.Zero, b1 = TOps.Zero, b2 = TOps.Zero, b3 = TOps.Zero; // second
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0, u0 = 0, u1 = 0, u2 = 0, u3 = 0;
        for (int g = 0; g < groups; g++)
        {
            int at = g * group;
            Prefetch(p + qStride + at, p + 2 * qStride + at);
            TVec d0 = TOps.Zero, d1 = TOps.Zero, d2 = TOps.Zero, d3 = TOps.Zero;
            TVec e0 = TOps.Zero, e1 = TOps.Zero, e2 = TOps.Zero, e3 = TOps.Zero;
            int i = 0;
            for (; i <= group - step; i += step)
            {
                TVec wq = TOps.LoadBytes(q + at + i), wr = TOps.LoadBytes(p + at + i);
                TVec xv = TOps.Load(x + at + i);
                d0 = TOps.MultiplyAdd(wq, xv, d0); e0 = TOps.MultiplyAdd(wr, xv, e0);
                if (rows > 1) { xv = TOps.Load(x1 + at + i); d1 = TOps.MultiplyAdd(wq, xv, d1); e1 = TOps.MultiplyAdd(wr, xv, e1); }
                if (rows > 2) { xv = TOps.Load(x2 + at + i); d2 = TOps.MultiplyAdd(wq, xv, d2); e2 = TOps.MultiplyAdd(wr, xv, e2); }
                if (rows > 3) { xv = TOps.Load(x3 + at + i); d3 = TOps.MultiplyAdd(wq, xv, d3); e3 = TOps.MultiplyAdd(wr, xv, e3); }
            }
            float s = scales[g], r = scales[scaleStride + g];
            TVec sv = TOps.Broadcast(s), rv = TOps.Broadcast(r);
            float sz = s * zeros[g], rz = r * zeros[scaleStride + g];
            a0 = TOps.MultiplyAdd(d0, sv, a0); b0 = TOps.MultiplyAdd(e0, rv, b0);
            t0 -= sz * groupSums[g]; u0 -= rz * groupSums[g];
            if (rows > 1) { a1 = TOps.MultiplyAdd(d1, sv, a1); b1 = TOps.MultiplyAdd(e1, rv, b1); t1 -= sz * groupSums[gs + g]; u1 -= rz * groupSums[gs + g]; }
            if (rows > 2) { a2 = TOps.MultiplyAdd(d2, sv, a2); b2 = TOps.MultiplyAdd(e2, rv, b2); t2 -= sz * groupSums[2 * gs + g]; u2 -= rz * groupSums[2 * gs + g]; }
            if (rows > 3) { a3 = TOps.MultiplyAdd(d3, sv, a3); b3 = TOps.MultiplyAdd(e3, rv, b3); t3 -= sz * groupSums[3 * gs + g]; u3 -= rz * groupSums[3 * gs + g]; }
            for (; i < group; i++)
            {
                float wq = q[at + i], wr = p[at + i];
                t0 += s * wq * x[at + i]; u0 += r * wr * x[at + i];
                if (rows > 1) { t1 += s * wq * x1[at + i]; u1 += r * wr * x1[at + i]; }
                if (rows > 2) { t2 += s * wq * x2[at + i]; u2 += r * wr * x2[at + i]; }
                if (rows > 3) { t3 += s * wq * x3[at + i]; u3 += r * wr * x3[at + i]; }
            }
        }
        results[0] = TOps.Sum(a0) + t0; results[FewRows] = TOps.Sum(b0) + u0;
        if (rows > 1) { results[1] = TOps.Sum(a1) + t1; results[FewRows + 1] = TOps.Sum(b1) + u1; }
        if (rows > 2) { results[2] = TOps.Sum(a2) + t2; results[FewRows + 2] = TOps.Sum(b2) + u2; }
        if (rows > 3) { results[3] = TOps.Sum(a3) + t3; results[FewRows + 3] = TOps.Sum(b3) + u3; }
    }

    /// <summary>
    /// Asks for the next column pair's bytes at the same offset. A pair reads two weight rows side by side, which the
    /// hardware prefetcher does not follow as it follows one column's plain sequential read; a pair lasts long enough
    /// (hundreds of ns) for these to arrive in time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(void* a, void* b)
    {
        if (!Sse.IsSupported) return;
        Sse.Prefetch0(a);
        Sse.Prefetch0(b);
    }

    /// <summary>As <see cref="Prefetch"/>, into L2 only (prefetcht1): further ahead without crowding L1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchToL2(void* a, void* b)
    {
        if (!Sse.IsSupported) return;
        Sse.Prefetch1(a);
        Sse.Prefetch1(b);
    }

    /// <summary>
    /// <see cref="DotNibbleRowsTable{TRows}"/> for two weight rows (<paramref name="qStride"/> bytes and
    /// <paramref name="groupStride"/> groups apart) at once: every x vector is loaded once for both, so with several rows
    /// the loop issues half the loads per FMA. results[r] is the first row's, results[FewRows + r] the second's.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotNibbleRowsTablePair<TRows>(byte* q, long qStride, float* scales, byte* zeros, long groupStride, float* x, long stride,
        int count, int group, float* results)
        where TRows : struct, IRowCount
    {
        int rows = TRows.Value, groups = count / group, blocks = group / NibbleBlock;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        byte* q1 = q + qStride;
        Vector512<float> codes = Vector512<float>.Indices;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default; // first weight row
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default; // second
        long at = 0, qa = 0;
        for (int g = 0; g < groups; g++)
        {
            Vector512<float> ta = (codes - Vector512.Create(ByteValues[zeros[g]])) * Vector512.Create(scales[g]);
            Vector512<float> tb = (codes - Vector512.Create(ByteValues[zeros[groupStride + g]])) * Vector512.Create(scales[groupStride + g]);
            for (int b = 0; b < blocks; b++, at += NibbleBlock, qa += NibbleBlock / 2)
            {
                Prefetch(q1 + qStride + qa, q1 + 2 * qStride + qa);
                Vector512<int> la = Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)(q + qa)));
                Vector512<int> lb = Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)(q1 + qa)));
                // Nibble t of every lane (shift by 4t) gives elements [16t, 16t + 16) of the block in x's prepared order.
                Vector512<float> wa, wb, xv;
                wa = Avx512F.PermuteVar16x32(ta, la);
                wb = Avx512F.PermuteVar16x32(tb, lb);
                xv = Vector512.Load(x + at);
                a0 = Avx512F.FusedMultiplyAdd(wa, xv, a0); b0 = Avx512F.FusedMultiplyAdd(wb, xv, b0);
                if (rows > 1) { xv = Vector512.Load(x1 + at); a1 = Avx512F.FusedMultiplyAdd(wa, xv, a1); b1 = Avx512F.FusedMultiplyAdd(wb, xv, b1); }
                if (rows > 2) { xv = Vector512.Load(x2 + at); a2 = Avx512F.FusedMultiplyAdd(wa, xv, a2); b2 = Avx512F.FusedMultiplyAdd(wb, xv, b2); }
                if (rows > 3) { xv = Vector512.Load(x3 + at); a3 = Avx512F.FusedMultiplyAdd(wa, xv, a3); b3 = Avx512F.FusedMultiplyAdd(wb, xv, b3); }
                wa = Avx512F.PermuteVar16x32(ta, Avx512F.ShiftRightLogical(la, 4));
                wb = Avx512F.PermuteVar16x32(tb, Avx512F.ShiftRightLogical(lb, 4));
                xv = Vector512.Load(x + at + 16);
                a0 = Avx512F.FusedMultiplyAdd(wa, xv, a0); b0 = Avx512F.FusedMultiplyAdd(wb, xv, b0);
                if (rows > 1) { xv = Vector512.Load(x1 + at + 16); a1 = Avx512F.FusedMultiplyAdd(wa, xv, a1); b1 = Avx512F.FusedMultiplyAdd(wb, xv, b1); }
                if (rows > 2) { xv = Vector512.Load(x2 + at + 16); a2 = Avx512F.FusedMultiplyAdd(wa, xv, a2); b2 = Avx512F.FusedMultiplyAdd(wb, xv, b2); }
                if (rows > 3) { xv = Vector512.Load(x3 + at + 16); a3 = Avx512F.FusedMultiplyAdd(wa, xv, a3); b3 = Avx512F.FusedMultiplyAdd(wb, xv, b3); }
                wa = Avx512F.PermuteVar16x32(ta, Avx512F.ShiftRightLogical(la, 8));
                wb = Avx512F.PermuteVar16x32(tb, Avx512F.ShiftRightLogical(lb, 8));
                xv = Vector512.Load(x + at + 32);
                a0 = Avx512F.FusedMultiplyAdd(wa, xv, a0); b0 = Avx512F.FusedMultiplyAdd(wb, xv, b0);
                if (rows > 1) { xv = Vector512.Load(x1 + at + 32); a1 = Avx512F.FusedMultiplyAdd(wa, xv, a1); b1 = Avx512F.FusedMultiplyAdd(wb, xv, b1); }
                if (rows > 2) { xv = Vector512.Load(x2 + at + 32); a2 = Avx512F.FusedMultiplyAdd(wa, xv, a2); b2 = Avx512F.FusedMultiplyAdd(wb, xv, b2); }
                if (rows > 3) { xv = Vector512.Load(x3 + at + 32); a3 = Avx512F.FusedMultiplyAdd(wa, xv, a3); b3 = Avx512F.FusedMultiplyAdd(wb, xv, b3); }
                wa = Avx512F.PermuteVar16x32(ta, Avx512F.ShiftRightLogical(la, 12));
                wb = Avx512F.PermuteVar16x32(tb, Avx512F.ShiftRightLogical(lb, 12));
                xv = Vector512.Load(x + at + 48);
                a0 = Avx512F.FusedMultiplyAdd(wa, xv, a0); b0 = Avx512F.FusedMultiplyAdd(wb, xv, b0);
                if (rows > 1) { xv = Vector512.Load(x1 + at + 48); a1 = Avx512F.FusedMultiplyAdd(wa, xv, a1); b1 = Avx512F.FusedMultiplyAdd(wb, xv, b1); }
                if (rows > 2) { xv = Vector512.Load(x2 + at + 48); a2 = Avx512F.FusedMultiplyAdd(wa, xv, a2); b2 = Avx512F.FusedMultiplyAdd(wb, xv, b2); }
                if (rows > 3) { xv = Vector512.Load(x3 + at + 48); a3 = Avx512F.FusedMultiplyAdd(wa, xv, a3); b3 = Avx512F.FusedMultiplyAdd(wb, xv, b3); }
            }
        }
        results[0] = Simd512.Sum(a0);
        results[FewRows] = Simd512.Sum(b0);
        if (rows > 1) { results[1] = Simd512.Sum(a1); results[FewRows + 1] = Simd512.Sum(b1); }
        if (rows > 2) { results[2] = Simd512.Sum(a2); results[FewRows + 2] = Simd512.Sum(b2); }
        if (rows > 3) { results[3] = Simd512.Sum(a3); results[FewRows + 3] = Simd512.Sum(b3); }
    }

    /// <summary><see cref="DotBFloat16Rows{TOps, TVec, TRows}"/> for two weight rows <paramref name="wStride"/> apart (results as <see cref="DotNibbleRowsTablePair{TRows}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DotBFloat16RowsPair<TOps, TVec, TRows>(ushort* w, long wStride, float* x, long stride, int count, float* results)
        where TOps : struct, ISimdOps<TVec> where TVec : struct where TRows : struct, IRowCount
    {
        int rows = TRows.Value, step = TOps.Count;
        float* x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        ushort* v = w + wStride;
        TVec a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
        TVec b0 = TOps.Zero, b1 = TOps.Zero, b2 = TOps.Zero, b3 = TOps.Zero;
        int i = 0;
        for (; i <= count - step; i += step)
        {
            // Rows j + 4 and j + 5 (two pairs ahead) into L2: measured on the 272 MB bf16 lm_head with four rows, 15.4 ms
            // with the next pair into L1, 9.3–9.7 ms this way (21 ms with no prefetch); the other pair kernels gained nothing.
            PrefetchToL2(v + 3 * wStride + i, v + 4 * wStride + i);
            TVec wa = TOps.LoadBFloat16(w + i), wb = TOps.LoadBFloat16(v + i);
            TVec xv = TOps.Load(x + i);
            a0 = TOps.MultiplyAdd(wa, xv, a0);
            b0 = TOps.MultiplyAdd(wb, xv, b0);
            if (rows > 1) { xv = TOps.Load(x1 + i); a1 = TOps.MultiplyAdd(wa, xv, a1); b1 = TOps.MultiplyAdd(wb, xv, b1); }
            if (rows > 2) { xv = TOps.Load(x2 + i); a2 = TOps.MultiplyAdd(wa, xv, a2); b2 = TOps.MultiplyAdd(wb, xv, b2); }
            if (rows > 3) { xv = TOps.Load(x3 + i); a3 = TOps.MultiplyAdd(wa, xv, a3); b3 = TOps.MultiplyAdd(wb, xv, b3); }
        }
        results[0] = TOps.Sum(a0);
        results[FewRows] = TOps.Sum(b0);
        if (rows > 1) { results[1] = TOps.Sum(a1); results[FewRows + 1] = TOps.Sum(b1); }
        if (rows > 2) { results[2] = TOps.Sum(a2); results[FewRows + 2] = TOps.Sum(b2); }
        if (rows > 3) { results[3] = TOps.Sum(a3); results[FewRows + 3] = TOps.Sum(b3); }
        for (; i < count; i++)
        {
            float wi = BitConverter.UInt32BitsToSingle((uint)w[i] << 16), vi = BitConverter.UInt32BitsToSingle((uint)v[i] << 16);
            for (int r = 0; r < rows; r++)
            {
                results[r] += wi * x[r * stride + i];
                results[FewRows + r] += vi * x[r * stride + i];
            }
        }
    }

    // ------------------------------------------------------------------ many rows: dequantize a block, register-tiled GEMM

    private static void Gemm<TOps, TVec>(float* x, int m, int k, int n, Weights w, float[]? bias, float* y)
        where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        int blocks = (n + GemmColumns - 1) / GemmColumns;
        nint xp = (nint)x, yp = (nint)y;
        bool copy = w.Format != WeightFormat.Float32;
        WorkerPool.For((long)m * n * k, blocks, block =>
        {
            int j0 = block * GemmColumns, cols = Math.Min(GemmColumns, n - j0);
            float* wf;
            if (copy)
            {
                wf = Scratch((long)GemmColumns * k);
                for (int c = 0; c < cols; c++) DequantizeRow<TOps, TVec>(w, k, j0 + c, wf + (long)c * k);
            }
            else wf = (float*)w.Data + (long)j0 * k;
            float* xs = (float*)xp, ys = (float*)yp;
            for (int r0 = 0; r0 < m; r0 += 4)
                for (int c0 = 0; c0 < cols; c0 += 4)
                    Tile4x4<TOps, TVec>(xs + (long)r0 * k, wf + (long)c0 * k, k, Math.Min(4, m - r0), Math.Min(4, cols - c0),
                        ys + (long)r0 * n + j0 + c0, n, bias, j0 + c0);
        });
    }

    /// <summary>Weight row <paramref name="j"/> as f32 (4 bits: its even elements then its odd ones, as x is prepared).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DequantizeRow<TOps, TVec>(Weights w, int k, int j, float* dst)
        where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        int step = TOps.Count;
        switch (w.Format)
        {
            case WeightFormat.BFloat16:
            {
                ushort* src = (ushort*)w.Data + (long)j * k;
                int i = 0;
                for (; i <= k - step; i += step) TOps.Store(dst + i, TOps.LoadBFloat16(src + i));
                for (; i < k; i++) dst[i] = BitConverter.UInt32BitsToSingle((uint)src[i] << 16);
                break;
            }
            case WeightFormat.Float32:
                Buffer.MemoryCopy((float*)w.Data + (long)j * k, dst, (long)k * 4, (long)k * 4);
                break;
            case WeightFormat.Int4:
            {
                int groups = k / w.Group, hg = w.Group / 2, half = k / 2;
                byte* q = w.Data + (long)j * half;
                float* s = w.Scales + (long)j * groups;
                byte* z = w.Zeros + (long)j * groups;
                for (int g = 0; g < groups; g++)
                {
                    TVec sv = TOps.Broadcast(s[g]), zv = TOps.Broadcast(z[g]);
                    int at = g * hg, i = 0;
                    for (; i <= hg - step; i += step)
                    {
                        TOps.LoadNibbles(q + at + i, out TVec lo, out TVec hi);
                        TOps.Store(dst + at + i, TOps.Multiply(TOps.Subtract(lo, zv), sv));
                        TOps.Store(dst + half + at + i, TOps.Multiply(TOps.Subtract(hi, zv), sv));
                    }
                    for (; i < hg; i++)
                    {
                        dst[at + i] = ((q[at + i] & 15) - z[g]) * s[g];
                        dst[half + at + i] = ((q[at + i] >> 4) - z[g]) * s[g];
                    }
                }
                break;
            }
            default:
            {
                int groups = k / w.Group;
                byte* q = w.Data + (long)j * k;
                float* s = w.Scales + (long)j * groups;
                byte* z = w.Zeros + (long)j * groups;
                for (int g = 0; g < groups; g++)
                {
                    TVec sv = TOps.Broadcast(s[g]), zv = TOps.Broadcast(z[g]);
                    int at = g * w.Group, i = 0;
                    for (; i <= w.Group - step; i += step)
                        TOps.Store(dst + at + i, TOps.Multiply(TOps.Subtract(TOps.LoadBytes(q + at + i), zv), sv));
                    for (; i < w.Group; i++) dst[at + i] = (q[at + i] - z[g]) * s[g];
                }
                break;
            }
        }
    }

    /// <summary>
    /// y[r, c] = Σ_i x[r, i]·w[c, i] (+ bias) for a tile of up to 4 rows of x (k apart) by up to 4 rows of w (k apart):
    /// 16 vector accumulators, each loaded x and w vector used 4 times. Missing rows or columns repeat the first one and
    /// are not stored.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Tile4x4<TOps, TVec>(float* x, float* w, int k, int rows, int cols, float* y, int ldy, float[]? bias, int biasAt)
        where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        int step = TOps.Count;
        float* x0 = x, x1 = rows > 1 ? x + k : x, x2 = rows > 2 ? x + 2L * k : x, x3 = rows > 3 ? x + 3L * k : x;
        float* w0 = w, w1 = cols > 1 ? w + k : w, w2 = cols > 2 ? w + 2L * k : w, w3 = cols > 3 ? w + 3L * k : w;
        TVec c00 = TOps.Zero, c01 = TOps.Zero, c02 = TOps.Zero, c03 = TOps.Zero;
        TVec c10 = TOps.Zero, c11 = TOps.Zero, c12 = TOps.Zero, c13 = TOps.Zero;
        TVec c20 = TOps.Zero, c21 = TOps.Zero, c22 = TOps.Zero, c23 = TOps.Zero;
        TVec c30 = TOps.Zero, c31 = TOps.Zero, c32 = TOps.Zero, c33 = TOps.Zero;
        int i = 0;
        for (; i <= k - step; i += step)
        {
            TVec v0 = TOps.Load(w0 + i), v1 = TOps.Load(w1 + i), v2 = TOps.Load(w2 + i), v3 = TOps.Load(w3 + i);
            TVec u = TOps.Load(x0 + i);
            c00 = TOps.MultiplyAdd(u, v0, c00); c01 = TOps.MultiplyAdd(u, v1, c01); c02 = TOps.MultiplyAdd(u, v2, c02); c03 = TOps.MultiplyAdd(u, v3, c03);
            u = TOps.Load(x1 + i);
            c10 = TOps.MultiplyAdd(u, v0, c10); c11 = TOps.MultiplyAdd(u, v1, c11); c12 = TOps.MultiplyAdd(u, v2, c12); c13 = TOps.MultiplyAdd(u, v3, c13);
            u = TOps.Load(x2 + i);
            c20 = TOps.MultiplyAdd(u, v0, c20); c21 = TOps.MultiplyAdd(u, v1, c21); c22 = TOps.MultiplyAdd(u, v2, c22); c23 = TOps.MultiplyAdd(u, v3, c23);
            u = TOps.Load(x3 + i);
            c30 = TOps.MultiplyAdd(u, v0, c30); c31 = TOps.MultiplyAdd(u, v1, c31); c32 = TOps.MultiplyAdd(u, v2, c32); c33 = TOps.MultiplyAdd(u, v3, c33);
        }
        float* sums = stackalloc float[16];
        sums[0] = TOps.Sum(c00); sums[1] = TOps.Sum(c01); sums[2] = TOps.Sum(c02); sums[3] = TOps.Sum(c03);
        sums[4] = TOps.Sum(c10); sums[5] = TOps.Sum(c11); sums[6] = TOps.Sum(c12); sums[7] = TOps.Sum(c13);
        sums[8] = TOps.Sum(c20); sums[9] = TOps.Sum(c21); sums[10] = TOps.Sum(c22); sums[11] = TOps.Sum(c23);
        sums[12] = TOps.Sum(c30); sums[13] = TOps.Sum(c31); sums[14] = TOps.Sum(c32); sums[15] = TOps.Sum(c33);
        for (; i < k; i++)
        {
            float xa = x0[i], xb = x1[i], xc = x2[i], xd = x3[i];
            float wa = w0[i], wb = w1[i], wc = w2[i], wd = w3[i];
            sums[0] += xa * wa; sums[1] += xa * wb; sums[2] += xa * wc; sums[3] += xa * wd;
            sums[4] += xb * wa; sums[5] += xb * wb; sums[6] += xb * wc; sums[7] += xb * wd;
            sums[8] += xc * wa; sums[9] += xc * wb; sums[10] += xc * wc; sums[11] += xc * wd;
            sums[12] += xd * wa; sums[13] += xd * wb; sums[14] += xd * wc; sums[15] += xd * wd;
        }
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                y[(long)r * ldy + c] = sums[r * 4 + c] + (bias is null ? 0f : bias[biasAt + c]);
    }
}
