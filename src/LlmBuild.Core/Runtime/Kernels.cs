using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// The emulator's kernels, one per <see cref="EmuOp"/>, over raw device memory. Activations are f32; weights are read
/// in their stored dtype. Matmuls are split over output columns across threads; the quantized matmul dequantizes
/// inside the dot product (per group: s·(Σx·q − z·Σx)), never materialising a dequantized weight.
/// </summary>
internal static unsafe class Kernels
{

    /// <summary>
    /// Concatenates f32 inputs (addresses) along one axis: <paramref name="outer"/> rows, input k contributing sizes[k]·<paramref name="inner"/>
    /// elements to each. Large ones (a decode step's KV history and its new row) are copied on every core in chunks.
    /// </summary>
    public static void Concat(nint[] inputs, long[] sizes, long outer, long inner, float* y)
    {
        long total = 0;
        foreach (long size in sizes) total += size;
        long all = outer * total * inner;
        if (all < 2 * CopyChunk)
        {
            long at = 0;
            for (long r = 0; r < outer; r++)
                for (int k = 0; k < inputs.Length; k++)
                {
                    long len = sizes[k] * inner;
                    Buffer.MemoryCopy((float*)inputs[k] + r * len, y + at, len * 4, len * 4);
                    at += len;
                }
            return;
        }
        // The output is contiguous: chunk c covers y[c·CopyChunk, ...), gathered from whichever inputs it spans.
        nint yp = (nint)y;
        nint[] xs = inputs;
        WorkerPool.For((int)((all + CopyChunk - 1) / CopyChunk), c =>
        {
            long start = (long)c * CopyChunk, end = Math.Min(all, start + CopyChunk);
            long rowLen = total * inner;
            while (start < end)
            {
                long r = start / rowLen, inRow = start - r * rowLen, before = 0;
                int k = 0;
                while (inRow >= before + sizes[k] * inner) before += sizes[k++] * inner;
                long len = sizes[k] * inner, offset = inRow - before, take = Math.Min(len - offset, end - start);
                Buffer.MemoryCopy((float*)xs[k] + r * len + offset, (float*)yp + start, take * 4, take * 4);
                start += take;
            }
        });
    }

    public static float[] ToFloat(byte* p, BModelDataType t, long count)
    {
        // Every element is written: no zeroing first (a step's logits are 0.6–2.4 MB).
        var r = GC.AllocateUninitializedArray<float>(checked((int)count));
        fixed (float* d = r) Convert(p, t, (byte*)d, BModelDataType.Float32, count);
        return r;
    }

    /// <summary>Elements of a convert or copy one core takes at a time when it is split over the cores (a decode step's KV history).</summary>
    internal const int CopyChunk = 1 << 15;

    public static void Convert(byte* src, BModelDataType st, byte* dst, BModelDataType dt, long count)
    {
        if (count == 0) return;
        int n = checked((int)count);
        int ss = TensorRef.ElementSize(st), ds = TensorRef.ElementSize(dt);
        bool overlaps = dst < src + (long)ss * n && src < dst + (long)ds * n;
        if (n >= 2 * CopyChunk && !overlaps)
        {
            // Memory-bound: both cores stream, each a contiguous chunk.
            nint sp = (nint)src, dp = (nint)dst;
            WorkerPool.For((n + CopyChunk - 1) / CopyChunk, c =>
            {
                long at = (long)c * CopyChunk;
                ConvertSerial((byte*)sp + at * ss, st, (byte*)dp + at * ds, dt, (int)Math.Min(CopyChunk, n - at));
            });
            return;
        }
        ConvertSerial(src, st, dst, dt, n);
    }

    private static void ConvertSerial(byte* src, BModelDataType st, byte* dst, BModelDataType dt, int n)
    {
        if (st == dt)
        {
            long bytes = (long)n * TensorRef.ElementSize(st);
            Buffer.MemoryCopy(src, dst, bytes, bytes);
            return;
        }
        if (st == BModelDataType.Float32 && dt == BModelDataType.BFloat16 && (dst + 2L * n <= src || src + 4L * n <= dst))
        {
            FloatFormats.FloatToBFloat16(new ReadOnlySpan<float>(src, n), new Span<ushort>(dst, n));
            return;
        }
        float[]? rented = dt == BModelDataType.Float32 ? null : System.Buffers.ArrayPool<float>.Shared.Rent(n);
        try
        {
            ConvertVia(src, st, dst, dt, n, rented is null ? new Span<float>(dst, n) : rented.AsSpan(0, n));
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>src widened to f32 in <paramref name="f"/>, then narrowed to dst (f is dst itself when dt is f32).</summary>
    private static void ConvertVia(byte* src, BModelDataType st, byte* dst, BModelDataType dt, int n, Span<float> f)
    {
        switch (st)
        {
            case BModelDataType.Float32: new ReadOnlySpan<float>(src, n).CopyTo(f); break;
            case BModelDataType.BFloat16: FloatFormats.BFloat16ToFloat(new ReadOnlySpan<ushort>(src, n), f); break;
            case BModelDataType.Float16: TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, n), f); break;
            case BModelDataType.Int32: TensorPrimitives.ConvertTruncating<int, float>(new ReadOnlySpan<int>(src, n), f); break;
            case BModelDataType.UInt8: for (int i = 0; i < n; i++) f[i] = src[i]; break;
            default: throw Unsupported($"convert from {st}");
        }
        switch (dt)
        {
            case BModelDataType.Float32: break;
            case BModelDataType.BFloat16: FloatFormats.FloatToBFloat16(f, new Span<ushort>(dst, n)); break;
            case BModelDataType.Float16: TensorPrimitives.ConvertToHalf(f, new Span<Half>(dst, n)); break;
            case BModelDataType.Int32:
            {
                var d = new Span<int>(dst, n);
                for (int i = 0; i < n; i++) d[i] = (int)MathF.Round(f[i]);
                break;
            }
            default: throw Unsupported($"convert to {dt}");
        }
    }

    private static LlmBuildException Unsupported(string what) =>
        new(ErrorCodes.NotEmulatorModel, $"The emulator has no kernel for {what}; the bmodel's program is damaged or newer than this LlmBuild.");

    public static int Index(byte* ids, BModelDataType t, long i) => t switch
    {
        BModelDataType.Int32 => ((int*)ids)[i],
        BModelDataType.Float32 => (int)((float*)ids)[i],
        _ => throw Unsupported($"indices of type {t}"),
    };

    /// <summary>
    /// y[o, i, :] = table[o, ids[i], :] for a table laid out [outer, extent, inner]: embedding rows (outer 1) or the
    /// columns of an activation (inner 1, an act-order input permutation).
    /// </summary>
    public static void Gather(byte* table, BModelDataType tt, long outer, long extent, long inner, byte* ids, BModelDataType it, long count, float* y, string where)
    {
        int es = TensorRef.ElementSize(tt);
        for (long i = 0; i < count; i++)
        {
            int id = Index(ids, it, i);
            if ((uint)id >= (ulong)extent)
                throw new LlmBuildException(ErrorCodes.RuntimeBadInput, $"{where}: index {id} is outside 0..{extent - 1}.");
            if (inner == 1 && tt == BModelDataType.Float32)
                for (long o = 0; o < outer; o++) y[o * count + i] = ((float*)table)[o * extent + id]; // a column: one element per row
            else
                for (long o = 0; o < outer; o++)
                    Convert(table + (o * extent + id) * inner * es, tt, (byte*)(y + (o * count + i) * inner), BModelDataType.Float32, inner);
        }
    }

    public static void RmsNorm(float* x, long rows, int h, float[] gamma, float eps, float* y)
    {
        for (long r = 0; r < rows; r++)
        {
            var xs = new ReadOnlySpan<float>(x + r * h, h);
            var ys = new Span<float>(y + r * h, h);
            float ms = TensorPrimitives.SumOfSquares(xs) / h;
            float inv = 1f / MathF.Sqrt(ms + eps);
            TensorPrimitives.Multiply(xs, inv, ys);
            TensorPrimitives.Multiply(ys, gamma, ys);
        }
    }

    /// <summary>LayerNorm over rows of <paramref name="h"/>: (x − mean)/√(var + eps)·gamma (+ beta).</summary>
    public static void LayerNorm(float* x, long rows, int h, float[] gamma, float[]? beta, float eps, float* y)
    {
        Parallel.For(0, rows, r =>
        {
            var xs = new ReadOnlySpan<float>(x + r * h, h);
            var ys = new Span<float>(y + r * h, h);
            float mean = TensorPrimitives.Sum(xs) / h;
            TensorPrimitives.Subtract(xs, mean, ys);
            float inv = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(ys) / h + eps);
            TensorPrimitives.Multiply(ys, inv, ys);
            TensorPrimitives.Multiply(ys, gamma, ys);
            if (beta is not null) TensorPrimitives.Add(ys, beta, ys);
        });
    }

    /// <summary>gelu with erf (approximate='none').</summary>
    public static void GeluErf(float* x, float* y, long count)
    {
        float* xp = x, yp = y;
        Parallel.For(0, (count + 65535) / 65536, chunk =>
        {
            long end = Math.Min(count, (chunk + 1) * 65536);
            for (long i = chunk * 65536; i < end; i++) yp[i] = Numerics.SpecialFunctions.GeluErf(xp[i]);
        });
    }

    // ------------------------------------------------------------------ matmuls

    /// <summary>
    /// y[M,N] = x[M,K]·Wᵀ (W [N,K], rightTranspose) or x·W (W [K,N]), plus bias. <paramref name="width"/> picks the vector
    /// path (tests force each one); by default the widest this CPU has.
    /// </summary>
    public static void MatMul(float* x, int m, int k, int n, byte* w, BModelDataType wt, bool rightTranspose, float[]? bias, float* y, SimdWidth? width = null)
    {
        if (rightTranspose && wt is BModelDataType.BFloat16 or BModelDataType.Float32)
        {
            var format = wt == BModelDataType.BFloat16 ? WeightFormat.BFloat16 : WeightFormat.Float32;
            MatMulKernels.MatMul(x, m, k, n, new Weights(format, w), bias, y, width ?? Simd.Best);
            return;
        }
        int es = TensorRef.ElementSize(wt);
        if (!rightTranspose)
        {
            var row = new float[n];
            new Span<float>(y, m * n).Clear();
            for (int kk = 0; kk < k; kk++)
            {
                fixed (float* r = row) Convert(w + (long)kk * n * es, wt, (byte*)r, BModelDataType.Float32, n);
                for (int mm = 0; mm < m; mm++)
                {
                    var ys = new Span<float>(y + (long)mm * n, n);
                    TensorPrimitives.MultiplyAdd(row, x[(long)mm * k + kk], ys, ys);
                }
            }
            AddBias(y, m, n, bias);
            return;
        }
        // Other stored dtypes (f16): widen one weight row at a time.
        nint xp = (nint)x, wp = (nint)w, yp = (nint)y;
        Parallel.For(0, n, () => new float[k], (j, _, row) =>
        {
            fixed (float* r = row) Convert((byte*)wp + (long)j * k * es, wt, (byte*)r, BModelDataType.Float32, k);
            float b = bias is null ? 0f : bias[j];
            for (int mm = 0; mm < m; mm++)
                ((float*)yp)[(long)mm * n + j] = TensorPrimitives.Dot(row, new ReadOnlySpan<float>((float*)xp + (long)mm * k, k)) + b;
            return row;
        }, _ => { });
    }

    private static void AddBias(float* y, int m, int n, float[]? bias)
    {
        if (bias is null) return;
        for (int mm = 0; mm < m; mm++)
        {
            var ys = new Span<float>(y + (long)mm * n, n);
            TensorPrimitives.Add(ys, bias, ys);
        }
    }

    /// <summary>
    /// Weight-only quantized y = x·Wᵀ (+ bias), W given as the A16MatMul layout: qweight u8 [N, K·bits/8] (4 bits: element
    /// 2i in the low nibble), scales f32 [N, K/g], qzeros u8 [N, K/g]; w = (q − z)·s.
    /// </summary>
    public static void A16MatMul(float* x, int m, int k, int n, byte* qweight, float* scales, byte* zeros, int bits, int group, float[]? bias, float* y, SimdWidth? width = null)
    {
        if (bits is not (4 or 8)) throw Unsupported($"{bits}-bit weights");
        var w = new Weights(bits == 4 ? WeightFormat.Int4 : WeightFormat.Int8, qweight, scales, zeros, group);
        MatMulKernels.MatMul(x, m, k, n, w, bias, y, width ?? Simd.Best);
    }

    // ------------------------------------------------------------------ elementwise

    /// <summary>y = a ∘ b over <paramref name="shape"/>, a and b read through their strides (0 where broadcast); no allocation (a decode step runs hundreds).</summary>
    public static void Binary(BinaryMode mode, float* a, float* b, float* y, ReadOnlySpan<long> shape, ReadOnlySpan<long> sa, ReadOnlySpan<long> sb)
    {
        int rank = shape.Length;
        long inner = rank == 0 ? 1 : shape[rank - 1];
        long outer = 1;
        for (int d = 0; d < rank - 1; d++) outer *= shape[d];
        long ia = rank == 0 ? 0 : sa[rank - 1], ib = rank == 0 ? 0 : sb[rank - 1];
        Span<long> idx = stackalloc long[Math.Max(rank - 1, 0)];
        for (long o = 0; o < outer; o++)
        {
            long offA = 0, offB = 0;
            for (int d = 0; d < rank - 1; d++) { offA += idx[d] * sa[d]; offB += idx[d] * sb[d]; }
            Row(mode, a + offA, ia, b + offB, ib, y + o * inner, (int)inner);
            for (int d = rank - 2; d >= 0; d--)
            {
                if (++idx[d] < shape[d]) break;
                idx[d] = 0;
            }
        }
    }

    private static void Row(BinaryMode mode, float* a, long ia, float* b, long ib, float* y, int n)
    {
        var ys = new Span<float>(y, n);
        if (ia == 1 && ib == 1 && mode <= BinaryMode.Div)
        {
            var av = new ReadOnlySpan<float>(a, n);
            var bv = new ReadOnlySpan<float>(b, n);
            switch (mode)
            {
                case BinaryMode.Add: TensorPrimitives.Add(av, bv, ys); return;
                case BinaryMode.Sub: TensorPrimitives.Subtract(av, bv, ys); return;
                case BinaryMode.Mul: TensorPrimitives.Multiply(av, bv, ys); return;
                case BinaryMode.Div: TensorPrimitives.Divide(av, bv, ys); return;
            }
        }
        if (ia == 1 && ib == 0 && mode <= BinaryMode.Div)
        {
            var av = new ReadOnlySpan<float>(a, n);
            float bs = *b;
            switch (mode)
            {
                case BinaryMode.Add: TensorPrimitives.Add(av, bs, ys); return;
                case BinaryMode.Sub: TensorPrimitives.Subtract(av, bs, ys); return;
                case BinaryMode.Mul: TensorPrimitives.Multiply(av, bs, ys); return;
                case BinaryMode.Div: TensorPrimitives.Divide(av, bs, ys); return;
            }
        }
        for (int i = 0; i < n; i++) y[i] = Apply(mode, a[i * ia], b[i * ib]);
    }

    public static float Apply(BinaryMode mode, float a, float b) => mode switch
    {
        BinaryMode.Add => a + b,
        BinaryMode.Sub => a - b,
        BinaryMode.Mul => a * b,
        BinaryMode.Div => a / b,
        BinaryMode.Less => a < b ? 1 : 0,
        BinaryMode.Greater => a > b ? 1 : 0,
        BinaryMode.LessOrEqual => a <= b ? 1 : 0,
        BinaryMode.GreaterOrEqual => a >= b ? 1 : 0,
        BinaryMode.Equal => a == b ? 1 : 0,
        BinaryMode.NotEqual => a != b ? 1 : 0,
        _ => throw Unsupported($"binary mode {mode}"),
    };

    /// <summary>gelu, tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))), vectorised through TensorPrimitives.</summary>
    public static void GeluTanh(float* x, float* y, long count)
    {
        int n = checked((int)count);
        var xs = new ReadOnlySpan<float>(x, n);
        var ys = new Span<float>(y, n);
        TensorPrimitives.Multiply(xs, xs, ys);                       // x²
        TensorPrimitives.Multiply(ys, 0.044715f, ys);
        TensorPrimitives.Add(ys, 1f, ys);                             // 1 + 0.044715x²
        TensorPrimitives.Multiply(ys, xs, ys);                        // x + 0.044715x³
        TensorPrimitives.Multiply(ys, 0.7978845608028654f, ys);
        TensorPrimitives.Tanh(ys, ys);
        TensorPrimitives.Add(ys, 1f, ys);
        TensorPrimitives.Multiply(ys, 0.5f, ys);                      // ½(1 + tanh)
        TensorPrimitives.Multiply(ys, xs, ys);
    }

    public static void Tanh(float* x, float* y, long count)
    {
        int n = checked((int)count);
        TensorPrimitives.Tanh(new ReadOnlySpan<float>(x, n), new Span<float>(y, n));
    }

    /// <summary>Elements of a SiLU's sigmoid scratch (on the stack): longer inputs go in pieces.</summary>
    internal const int SiLUChunk = 1 << 12;

    /// <summary>
    /// y = x·sigmoid(x), element by element, on the calling thread (split over the cores, a Batch=4 step's 4 × 4864 took
    /// 13–41 µs against 13–14 µs on one core at load 7: under load the hand-over loses more than the second core saves).
    /// The sigmoid goes to a scratch, not to y: with y = x (in place) x is still needed for the product. (A one-pass
    /// Vector512 loop with its own f32 exp, within 2 ulp, saved ~0.2 ms a Batch=4 step but moved the quantized family
    /// tests' logits: the numbers stay TensorPrimitives'.)
    /// </summary>
    public static void SiLU(float* x, float* y, long count)
    {
        int n = checked((int)count);
        float* sigmoid = stackalloc float[SiLUChunk];
        for (int at = 0; at < n; at += SiLUChunk)
        {
            int len = Math.Min(SiLUChunk, n - at);
            var xs = new ReadOnlySpan<float>(x + at, len);
            var ss = new Span<float>(sigmoid, len);
            TensorPrimitives.Sigmoid(xs, ss);
            TensorPrimitives.Multiply(xs, ss, new Span<float>(y + at, len));
        }
    }

    public static void Slice(float* x, float* y, ReadOnlySpan<long> outShape, ReadOnlySpan<long> inStrides, long start)
    {
        int rank = outShape.Length;
        long inner = outShape[rank - 1], innerStride = inStrides[rank - 1];
        long outer = 1;
        for (int d = 0; d < rank - 1; d++) outer *= outShape[d];
        Span<long> idx = stackalloc long[rank - 1];
        for (long o = 0; o < outer; o++)
        {
            long off = start;
            for (int d = 0; d < rank - 1; d++) off += idx[d] * inStrides[d];
            float* dst = y + o * inner;
            if (innerStride == 1) Buffer.MemoryCopy(x + off, dst, inner * 4, inner * 4);
            else for (long i = 0; i < inner; i++) dst[i] = x[off + i * innerStride];
            for (int d = rank - 2; d >= 0; d--)
            {
                if (++idx[d] < outShape[d]) break;
                idx[d] = 0;
            }
        }
    }

    // ------------------------------------------------------------------ attention

    /// <summary>
    /// An additive mask at or below this leaves a key out. Masks fill hidden positions with −10000 (DESIGN §7); such a
    /// key's weight exp(score + mask − max) is exactly 0 in f32 (exp underflows below −104) and adding 0 changes no
    /// sum, so skipping it computes the same numbers — and a decode step attends over its filled positions only, not
    /// all SeqLength of them.
    /// </summary>
    internal const float MaskedKey = -5000f;

    /// <summary>
    /// Grouped-query attention: q [B,Mq,Hq,D], k/v [B,Mk,Hkv,D], additive mask [B,1,Mq,Mk] (or causal: key j visible to
    /// query i iff j ≤ i + Mk − Mq); softmax in f32; output [B,Mq,Hq·D].
    /// </summary>
    public static void Attention(float* q, float* k, float* v, float* mask, float* y, int batch, int qHeads, int kvHeads, int dim, int mq, int mk, bool causal, float scale, SimdWidth? width = null) =>
        Attention(q, new ContiguousRows(k, mk, kvHeads, dim), new ContiguousRows(v, mk, kvHeads, dim), mask, y, batch, qHeads, kvHeads, dim, mq, mk, causal, scale, width ?? Simd.Best);

    /// <summary>
    /// <see cref="Attention(float*, float*, float*, float*, float*, int, int, int, int, int, int, bool, float)"/> with keys
    /// and values given as their history rows followed by the new ones (see <see cref="KvHistoryFusion"/>): the same
    /// f32 numbers, only the rows the mask keeps are read (bf16 history rows widened as they are).
    /// </summary>
    public static void Attention(float* q, SplitRows k, SplitRows v, float* mask, float* y, int batch, int qHeads, int kvHeads, int dim, int mq, int mk, bool causal, float scale, SimdWidth? width = null) =>
        Attention<SplitRows, SplitRows>(q, k, v, mask, y, batch, qHeads, kvHeads, dim, mq, mk, causal, scale, width ?? Simd.Best);

    /// <summary>Rows of keys or values [batch, rows, kvHeads, dim] as f32, wherever they lie.</summary>
    internal interface IKvRows
    {
        /// <summary>Row <paramref name="j"/> of sequence <paramref name="b"/>, head <paramref name="kh"/>: in place, or widened into <paramref name="scratch"/> (dim floats).</summary>
        float* Row(int b, int j, int kh, float* scratch);

        /// <summary>Asks for the cache lines of that row ahead of <see cref="Row"/> (a decode step's KV history comes from memory).</summary>
        void Prefetch(int b, int j, int kh);
    }

    /// <summary>Prefetches <paramref name="bytes"/> from <paramref name="p"/> into every cache level, where the CPU has the instruction.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchBytes(byte* p, int bytes)
    {
        if (!Sse.IsSupported) return;
        for (int at = 0; at < bytes; at += 64) Sse.Prefetch0(p + at);
    }

    /// <summary>One f32 tensor [batch, mk, kvHeads, dim].</summary>
    internal readonly struct ContiguousRows(float* p, int mk, int kvHeads, int dim) : IKvRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* Row(int b, int j, int kh, float* scratch) => p + (((long)b * mk + j) * kvHeads + kh) * dim;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(int b, int j, int kh) => PrefetchBytes((byte*)Row(b, j, kh, null), dim * 4);
    }

    /// <summary>History [batch, historyRows, kvHeads, dim] (bf16 or f32) followed by new rows [batch, freshRows, kvHeads, dim] (f32).</summary>
    internal readonly struct SplitRows(byte* history, BModelDataType historyType, long historyRows, float* fresh, long freshRows, int kvHeads, int dim) : IKvRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* Row(int b, int j, int kh, float* scratch)
        {
            if (j >= historyRows) return fresh + (((long)b * freshRows + (j - historyRows)) * kvHeads + kh) * dim;
            long at = (((long)b * historyRows + j) * kvHeads + kh) * dim;
            if (historyType == BModelDataType.Float32) return (float*)history + at;
            FloatFormats.BFloat16ToFloat(new ReadOnlySpan<ushort>((ushort*)history + at, dim), new Span<float>(scratch, dim));
            return scratch;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(int b, int j, int kh)
        {
            if (j >= historyRows) return; // the new rows were just written: in cache
            long at = (((long)b * historyRows + j) * kvHeads + kh) * dim;
            if (historyType == BModelDataType.Float32) PrefetchBytes((byte*)((float*)history + at), dim * 4);
            else PrefetchBytes((byte*)((ushort*)history + at), dim * 2);
        }
    }

    /// <summary>
    /// Off: attention takes the general path at every dim (one TensorPrimitives call per key and query head, a scalar
    /// exp per score): the runtime benchmark's A/B switch for <see cref="AttendVectors"/>.
    /// </summary>
    internal static bool VectorAttention { get; set; } = true;

    /// <summary>Off: the vector path reads the kept key and value rows without prefetching them first (an A/B switch).</summary>
    internal static bool PrefetchKv { get; set; } = true;

    /// <summary>
    /// One work item per sequence and KV head: its keys and values are read (or widened) once for all the query heads that
    /// share them. Per query head the numbers are those of a plain softmax(q·Kᵀ)·V over the kept keys in f32. With a
    /// dim a multiple of the vector width (<paramref name="width"/>; Qwen's 64) the dot products and the weighted sum of
    /// values run as vector loops inline (<see cref="AttendVectors"/>: at decode the calls of the general path cost more
    /// than their 64 multiply-adds); other dims, and <see cref="SimdWidth.Scalar"/>, take the general path.
    /// </summary>
    private static void Attention<TK, TV>(float* q, TK keyRows, TV valueRows, float* mask, float* y, int batch, int qHeads, int kvHeads, int dim, int mq, int mk, bool causal, float scale, SimdWidth width)
        where TK : struct, IKvRows where TV : struct, IKvRows
    {
        int group = qHeads / kvHeads;
        nint qp = (nint)q, mp = (nint)mask, yp = (nint)y;
        int lanes = !VectorAttention ? 0 : width == SimdWidth.Vector512 && dim % 16 == 0 ? 16 : width >= SimdWidth.Vector256 && dim % 8 == 0 ? 8 : 0;
        WorkerPool.For((long)batch * qHeads * mq * mk * dim * 2, batch * kvHeads, bk =>
        {
            if (_scores is null || _scores.Length < group * mk) (_scores, _keys) = (new float[group * mk], new int[mk]);
            if (_keys!.Length < mk) _keys = new int[mk];
            if (_row is null || _row.Length < dim + 2 * group) _row = new float[dim + 2 * group];
            if (lanes != 0 && (_values is null || _values.Length < ValueBlock * dim)) _values = new float[ValueBlock * dim];
            float[] scores = _scores;
            int[] keys = _keys;
            int b = bk / kvHeads, kh = bk % kvHeads;
            float* qs = (float*)qp, ms = (float*)mp, ys = (float*)yp;
            fixed (float* scratch = _row, sp = scores, vp = _values)
            {
                float* max = scratch + dim, inv = max + group;
                for (int i = 0; i < mq; i++)
                {
                    int count = 0;
                    float* maskRow = causal ? null : ms + ((long)b * mq + i) * mk;
                    if (causal)
                        for (int end = Math.Min(mk, i + mk - mq + 1); count < end; count++) keys[count] = count;
                    else
                    {
                        for (int j = 0; j < mk; j++)
                            if (maskRow[j] > MaskedKey) keys[count++] = j;
                        if (count == 0) // every key masked: the weights are then all comparable, keep them all
                            for (int j = 0; j < mk; j++) keys[count++] = j;
                    }
                    float* q0 = qs + (((long)b * mq + i) * qHeads + kh * group) * dim, y0 = ys + (((long)b * mq + i) * qHeads + kh * group) * dim;
                    if (lanes == 16)
                    {
                        AttendVectors<TK, TV, Simd512, Vector512<float>>(q0, keyRows, valueRows, maskRow, y0, b, kh, group, dim, mk, keys, count, scale, scratch, sp, vp);
                        continue;
                    }
                    if (lanes == 8)
                    {
                        AttendVectors<TK, TV, Simd256, Vector256<float>>(q0, keyRows, valueRows, maskRow, y0, b, kh, group, dim, mk, keys, count, scale, scratch, sp, vp);
                        continue;
                    }
                    for (int g = 0; g < group; g++) max[g] = float.NegativeInfinity;
                    for (int t = 0; t < count; t++)
                    {
                        int j = keys[t];
                        var key = new ReadOnlySpan<float>(keyRows.Row(b, j, kh, scratch), dim);
                        for (int g = 0; g < group; g++)
                        {
                            float sc = TensorPrimitives.Dot(new ReadOnlySpan<float>(q0 + (long)g * dim, dim), key) * scale;
                            if (!causal) sc += maskRow[j];
                            scores[g * mk + t] = sc;
                            if (sc > max[g]) max[g] = sc;
                        }
                    }
                    for (int g = 0; g < group; g++)
                    {
                        float sum = 0;
                        for (int t = 0; t < count; t++)
                        {
                            float e = MathF.Exp(scores[g * mk + t] - max[g]);
                            scores[g * mk + t] = e;
                            sum += e;
                        }
                        inv[g] = 1f / sum;
                        new Span<float>(y0 + (long)g * dim, dim).Clear();
                    }
                    for (int t = 0; t < count; t++)
                    {
                        var value = new ReadOnlySpan<float>(valueRows.Row(b, keys[t], kh, scratch), dim);
                        for (int g = 0; g < group; g++)
                        {
                            var outRow = new Span<float>(y0 + (long)g * dim, dim);
                            TensorPrimitives.MultiplyAdd(value, scores[g * mk + t] * inv[g], outRow, outRow);
                        }
                    }
                }
            }
        });
    }

    /// <summary>
    /// One query row of one KV head's <paramref name="group"/> query heads over the kept keys (<paramref name="keys"/>,
    /// <paramref name="count"/> of them), dim a multiple of the vector width: each key row is read (or widened into
    /// <paramref name="scratch"/>) once and dotted with four query heads at a time; a head's scores are exponentiated as
    /// one span; the value rows are taken a block at a time (widened into <paramref name="values"/>) and added, weighted,
    /// into four heads' outputs held in registers. <paramref name="scores"/> holds group rows of mk.
    /// </summary>
    private static void AttendVectors<TK, TV, TOps, TVec>(float* q0, TK keyRows, TV valueRows, float* maskRow, float* y0, int b, int kh, int group, int dim, int mk, int[] keys, int count, float scale, float* scratch, float* scores, float* values)
        where TK : struct, IKvRows where TV : struct, IKvRows where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        if (PrefetchKv)
            for (int t = 0; t < count; t++)
            {
                keyRows.Prefetch(b, keys[t], kh);
                valueRows.Prefetch(b, keys[t], kh);
            }
        for (int t = 0; t < count; t++)
        {
            int j = keys[t];
            float* key = keyRows.Row(b, j, kh, scratch);
            float masked = maskRow is null ? 0 : maskRow[j];
            for (int g = 0; g < group; g += 4)
            {
                // Four query heads a pass over the key (a head past the group repeats the last one, its dot unused).
                int last = group - 1;
                float* qa = q0 + (long)g * dim, qb = q0 + (long)Math.Min(g + 1, last) * dim;
                float* qc = q0 + (long)Math.Min(g + 2, last) * dim, qd = q0 + (long)Math.Min(g + 3, last) * dim;
                TVec sa = TOps.Zero, sb = TOps.Zero, sc = TOps.Zero, sd = TOps.Zero;
                for (int d = 0; d < dim; d += TOps.Count)
                {
                    TVec k = TOps.Load(key + d);
                    sa = TOps.MultiplyAdd(TOps.Load(qa + d), k, sa);
                    sb = TOps.MultiplyAdd(TOps.Load(qb + d), k, sb);
                    sc = TOps.MultiplyAdd(TOps.Load(qc + d), k, sc);
                    sd = TOps.MultiplyAdd(TOps.Load(qd + d), k, sd);
                }
                Vector128<float> dots = TOps.Sum4(sa, sb, sc, sd);
                for (int h = 0; h < 4 && g + h < group; h++)
                {
                    float score = dots.GetElement(h) * scale;
                    if (maskRow is not null) score += masked;
                    scores[(long)(g + h) * mk + t] = score;
                }
            }
        }
        for (int g = 0; g < group; g++)
        {
            var s = new Span<float>(scores + (long)g * mk, count);
            TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
            TensorPrimitives.Exp(s, s);
            TensorPrimitives.Multiply(s, 1f / TensorPrimitives.Sum(s), s);
            new Span<float>(y0 + (long)g * dim, dim).Clear();
        }
        // y += w·v in key order, as a plain loop adds them, each output vector of four heads in registers over a block.
        float** rows = stackalloc float*[ValueBlock];
        for (int t0 = 0; t0 < count; t0 += ValueBlock)
        {
            int n = Math.Min(ValueBlock, count - t0);
            for (int t = 0; t < n; t++) rows[t] = valueRows.Row(b, keys[t0 + t], kh, values + (long)t * dim);
            for (int g = 0; g < group; g += 4)
            {
                int heads = Math.Min(4, group - g);
                float* wa = scores + (long)g * mk + t0, wb = wa + (heads > 1 ? mk : 0), wc = wa + (heads > 2 ? 2 * mk : 0), wd = wa + (heads > 3 ? 3 * mk : 0);
                for (int d = 0; d < dim; d += TOps.Count)
                {
                    float* y = y0 + (long)g * dim + d;
                    TVec ya = TOps.Load(y), yb = heads > 1 ? TOps.Load(y + dim) : TOps.Zero;
                    TVec yc = heads > 2 ? TOps.Load(y + 2 * dim) : TOps.Zero, yd = heads > 3 ? TOps.Load(y + 3 * dim) : TOps.Zero;
                    for (int t = 0; t < n; t++)
                    {
                        TVec v = TOps.Load(rows[t] + d);
                        ya = TOps.MultiplyAdd(v, TOps.Broadcast(wa[t]), ya);
                        yb = TOps.MultiplyAdd(v, TOps.Broadcast(wb[t]), yb);
                        yc = TOps.MultiplyAdd(v, TOps.Broadcast(wc[t]), yc);
                        yd = TOps.MultiplyAdd(v, TOps.Broadcast(wd[t]), yd);
                    }
                    TOps.Store(y, ya);
                    if (heads > 1) TOps.Store(y + dim, yb);
                    if (heads > 2) TOps.Store(y + 2 * dim, yc);
                    if (heads > 3) TOps.Store(y + 3 * dim, yd);
                }
            }
        }
    }

    /// <summary>Value rows <see cref="AttendVectors"/> gathers (and widens) at a time.</summary>
    internal const int ValueBlock = 64;

    [ThreadStatic] private static float[]? _row;
    [ThreadStatic] private static float[]? _values;
    [ThreadStatic] private static float[]? _scores;
    [ThreadStatic] private static int[]? _keys;

    // ------------------------------------------------------------------ heads

    /// <summary>Off: top-k scans every value one at a time, the rows one after another (the runtime benchmark's A/B switch).</summary>
    internal static bool VectorTopK { get; set; } = true;

    /// <summary>
    /// Top-k over the last axis, largest first, ties to the lower index, NaNs left out. With a run-time k below K, the
    /// values past k are −∞. Once k values are held, a vector of 16 (or 8) values none of which beats the k-th best is
    /// skipped whole (a NaN beats nothing, as in the scalar scan), so a row of 151936 logits costs about one compare per
    /// vector; several rows are split over the cores.
    /// </summary>
    public static void TopK(float* x, long rows, int n, int kMax, int kLimit, float* values, byte* indices, BModelDataType indexType, SimdWidth? width = null)
    {
        SimdWidth w = VectorTopK ? width ?? Simd.Best : SimdWidth.Scalar;
        nint xp = (nint)x, vp = (nint)values, ip = (nint)indices;
        WorkerPool.For(VectorTopK ? rows * n : 0, checked((int)rows), r =>
        {
            var bestV = new float[kMax];
            var bestI = new int[kMax];
            float* row = (float*)xp + (long)r * n;
            int count = TopKRow(row, n, kMax, bestV, bestI, w);
            for (int t = 0; t < kMax; t++)
            {
                bool valid = t < count && t < kLimit;
                ((float*)vp)[(long)r * kMax + t] = valid ? bestV[t] : float.NegativeInfinity;
                int id = t < count ? bestI[t] : 0;
                if (indexType == BModelDataType.Int32) ((int*)ip)[(long)r * kMax + t] = id;
                else ((float*)ip)[(long)r * kMax + t] = id;
            }
        });
    }

    /// <summary>The k best of one row into bestV/bestI (largest first, ties to the lower index); returns how many it holds.</summary>
    private static int TopKRow(float* row, int n, int kMax, float[] bestV, int[] bestI, SimdWidth width)
    {
        int count = 0, j = 0, lanes = SkipLanes(width);
        while (j < n)
        {
            if (lanes != 0 && count == kMax && j + lanes <= n)
            {
                // Skip whole vectors none of which beats the k-th best, then scan the one that does.
                j = SkipNotAbove(row, j, n, bestV[kMax - 1], lanes);
                for (int end = Math.Min(n, j + lanes); j < end; j++) Offer(row[j], j, kMax, bestV, bestI, ref count);
                continue;
            }
            Offer(row[j], j, kMax, bestV, bestI, ref count);
            j++;
        }
        return count;
    }

    /// <summary>Lanes <see cref="SkipNotAbove"/> steps by at <paramref name="width"/> (0: no skipping).</summary>
    private static int SkipLanes(SimdWidth width) => width == SimdWidth.Vector512 ? 16 : width == SimdWidth.Vector256 ? 8 : 0;

    /// <summary>
    /// From <paramref name="j"/> on, the start of the first whole vector of <paramref name="lanes"/> (16 or 8) values with
    /// one above <paramref name="threshold"/>, or of the tail shorter than a vector (a NaN is above nothing).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SkipNotAbove(float* p, int j, int n, float threshold, int lanes)
    {
        if (lanes == 16)
        {
            var t = Vector512.Create(threshold);
            while (j + 16 <= n && !Vector512.GreaterThanAny(Vector512.Load(p + j), t)) j += 16;
        }
        else
        {
            var t = Vector256.Create(threshold);
            while (j + 8 <= n && !Vector256.GreaterThanAny(Vector256.Load(p + j), t)) j += 8;
        }
        return j;
    }

    /// <summary>One value into the k best so far (kept sorted, largest first; an equal later value goes after).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Offer(float val, int j, int kMax, float[] bestV, int[] bestI, ref int count)
    {
        if (float.IsNaN(val)) return;
        if (count == kMax && !(val > bestV[kMax - 1])) return;
        int pos = count < kMax ? count++ : kMax - 1;
        while (pos > 0 && val > bestV[pos - 1])
        {
            bestV[pos] = bestV[pos - 1];
            bestI[pos] = bestI[pos - 1];
            pos--;
        }
        bestV[pos] = val;
        bestI[pos] = j;
    }

    /// <summary>
    /// The index of the largest value, the first of equal ones; a NaN never wins (a NaN first stays: nothing beats it),
    /// as the plain scan <c>if (x[i] &gt; x[best]) best = i</c>. A vector none of whose values beats the best so far is
    /// skipped whole.
    /// </summary>
    public static int ArgMax(ReadOnlySpan<float> x, SimdWidth? width = null)
    {
        int n = x.Length, best = 0, i = 1;
        if (n == 0) return 0;
        SimdWidth w = VectorTopK ? width ?? Simd.Best : SimdWidth.Scalar;
        fixed (float* p = x)
        {
            float top = p[0];
            int lanes = SkipLanes(w);
            while (lanes != 0 && i + lanes <= n)
            {
                i = SkipNotAbove(p, i, n, top, lanes);
                for (int end = Math.Min(n, i + lanes); i < end; i++)
                    if (p[i] > top) (top, best) = (p[i], i);
            }
            for (; i < n; i++)
                if (p[i] > top) (top, best) = (p[i], i);
        }
        return best;
    }

    public static void Softmax(float* x, float* y, long rows, int n)
    {
        for (long r = 0; r < rows; r++)
        {
            var xs = new ReadOnlySpan<float>(x + r * n, n);
            var ys = new Span<float>(y + r * n, n);
            float max = TensorPrimitives.Max(xs);
            TensorPrimitives.Subtract(xs, max, ys);
            TensorPrimitives.Exp(ys, ys);
            float sum = TensorPrimitives.Sum(ys);
            TensorPrimitives.Divide(ys, sum, ys);
        }
    }

    public static void CumSum(float* x, float* y, long rows, int n)
    {
        for (long r = 0; r < rows; r++)
        {
            float acc = 0;
            for (int j = 0; j < n; j++) y[r * n + j] = acc += x[r * n + j];
        }
    }
}
