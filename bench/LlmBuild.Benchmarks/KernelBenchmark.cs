using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Benchmarks;

/// <summary>
/// The emulator's matmul kernels alone, on the Qwen2.5-0.5B shapes (gate/up 896→4864, down 4864→896, lm_head
/// 896→151936), at each vector width: GFLOP/s and GB/s of weights read, against the wall clock and against the CPU
/// time the process got (on a shared machine the second says what the code does with the cores it is given).
/// usage: kernels [samples (default 3, each ~100 ms)] [--one-core: every kernel on the calling thread, so the CPU-time
/// figures say what one core does on a machine others are using] [--decode: only the few-row (decode) shapes, 4- and
/// 8-bit and bf16 at m = 1 and 4] [--wide: only the widest vector width] [--ab-pairs: the A/B figure is one column at a
/// time against two (MatMulKernels.ColumnPairs) instead of against the previous kernels] [--ab-byte-pairs: the A/B figure
/// is 8-bit weights with several rows one column at a time against two (MatMulKernels.BytePairs)] [--rest: a decode
/// step's other kernels (attention, top-k, SiLU, greedy argmax) on the Qwen2.5-0.5B shapes at Batch 1 and 4, each but SiLU
/// against its previous path in alternate calls]
/// </summary>
public sealed unsafe class KernelBenchmark : IBenchmark
{
    public string Name => "kernels";
    public string Description => "emulator matmul kernels (prefill GEMM, decode dot) per vector width: GFLOP/s, GB/s";

    public int Run(string[] args)
    {
        WorkerPool.Serial = args.Contains("--one-core");
        bool decodeOnly = args.Contains("--decode"), wideOnly = args.Contains("--wide");
        if (args.Contains("--rest")) return Rest();
        _abPairs = args.Contains("--ab-pairs");
        _abBytePairs = args.Contains("--ab-byte-pairs");
        args = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        int reps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 3;
        Console.WriteLine($"{Environment.ProcessorCount} cores{(WorkerPool.Serial ? ", kernels on one thread" : "")}; best width {Simd.Best}; best of {reps} samples");
        foreach (SimdWidth width in new[] { SimdWidth.Vector512, SimdWidth.Vector256 }.Where(Simd.IsSupported).Take(wideOnly ? 1 : 2))
        {
            _peak = FmaPeak(width);
            Console.WriteLine($"{width} (one core's FMA peak, a loop of independent FMAs: {_peak / 1e9:F1} GFLOP per CPU-second)");
            if (decodeOnly)
            {
                foreach (int bits in new[] { 4, 8 })
                    foreach (int m in new[] { 1, 4 })
                    {
                        Quantized(width, m, 896, 4864, reps, bits);
                        Quantized(width, m, 4864, 896, reps, bits);
                    }
                Quantized(width, 1, 896, 151936, reps, 4); // a 4-bit lm_head: the weights stream from memory, not cache
                Quantized(width, 1, 896, 151936, reps, 8);
                Quantized(width, 4, 896, 151936, reps, 8);
                Bf16(width, 1, 896, 151936, reps);
                Bf16(width, 4, 896, 151936, reps);
                continue;
            }
            Quantized(width, 128, 896, 4864, reps);
            Quantized(width, 128, 4864, 896, reps);
            Bf16(width, 128, 896, 4864, reps);
            Quantized(width, 1, 896, 4864, reps);
            Quantized(width, 1, 4864, 896, reps);
            Quantized(width, 4, 4864, 896, reps);
            Bf16(width, 1, 896, 151936, reps);
            Bf16(width, 4, 896, 151936, reps);
        }
        return 0;
    }

    /// <summary>
    /// A decode step's kernels other than matmuls on the Qwen2.5-0.5B shapes (attention: 14 query heads over 2 KV heads of
    /// dim 64, 100 of a 512-row bf16 history visible plus the new row; top-k 1 of 151936; SiLU of 4864 a row), median µs
    /// a call over alternate calls with the new path and the previous one (Kernels.VectorAttention, Kernels.VectorTopK).
    /// </summary>
    private static int Rest()
    {
        const int qHeads = 14, kvHeads = 2, dim = 64, history = 512, visible = 100, vocab = 151936, inter = 4864;
        var rng = new Random(3);
        foreach (int batch in new[] { 1, 4 })
        {
            int mk = history + 1;
            float* q = Alloc<float>(batch * qHeads * dim), y = Alloc<float>(batch * qHeads * dim), fresh = Alloc<float>(batch * kvHeads * dim);
            float* mask = Alloc<float>(batch * mk), logits = Alloc<float>((long)batch * vocab), act = Alloc<float>(batch * inter), gated = Alloc<float>(batch * inter);
            ushort* kv = Alloc<ushort>((long)batch * history * kvHeads * dim);
            float* values = Alloc<float>(batch);
            int* ids = Alloc<int>(batch);
            for (int i = 0; i < batch * qHeads * dim; i++) q[i] = (float)rng.NextDouble() - 0.5f;
            for (int i = 0; i < batch * kvHeads * dim; i++) fresh[i] = (float)rng.NextDouble() - 0.5f;
            for (long i = 0; i < (long)batch * history * kvHeads * dim; i++) kv[i] = (ushort)(0x3C00 + rng.Next(0x200));
            for (int i = 0; i < batch * mk; i++) mask[i] = i % mk < visible || i % mk == history ? 0 : -10000f;
            for (long i = 0; i < (long)batch * vocab; i++) logits[i] = (float)rng.NextDouble() * 20 - 10;
            for (int i = 0; i < batch * inter; i++) act[i] = (float)rng.NextDouble() * 8 - 4;
            var rows = new Kernels.SplitRows((byte*)kv, BModelDataType.BFloat16, history, fresh, 1, kvHeads, dim);
            Console.WriteLine($"Batch={batch}:");
            RestTime("attention", () => Kernels.Attention(q, rows, rows, mask, y, batch, qHeads, kvHeads, dim, 1, mk, false, 0.125f));
            ColdAttention(() => Kernels.Attention(q, rows, rows, mask, y, batch, qHeads, kvHeads, dim, 1, mk, false, 0.125f));
            RestTime("top-k 1 of 151936 a row", () => Kernels.TopK(logits, batch, vocab, 1, 1, values, (byte*)ids, BModelDataType.Int32));
            RestTime("SiLU", () => Kernels.SiLU(act, gated, batch * inter), previous: false);
            RestTime("greedy argmax of each row", () =>
            {
                for (int b = 0; b < batch; b++) Kernels.ArgMax(new ReadOnlySpan<float>(logits + (long)b * vocab, vocab));
            });
            NativeMemory.Free(q); NativeMemory.Free(y); NativeMemory.Free(fresh); NativeMemory.Free(mask);
            NativeMemory.Free(logits); NativeMemory.Free(act); NativeMemory.Free(gated); NativeMemory.Free(kv); NativeMemory.Free(values); NativeMemory.Free(ids);
        }
        return 0;
    }

    /// <summary>
    /// Attention with the caches cold (48 MB read between calls, as a decode step's weights stream between two layers'
    /// attention): the vector path with and without its KV prefetch, and the previous path, in turn; median µs.
    /// </summary>
    private static void ColdAttention(Action run)
    {
        const long evict = 48L << 20;
        byte* other = Alloc<byte>(evict);
        NativeMemory.Fill(other, (nuint)evict, 1);
        long sink = 0;
        var times = new[] { new List<double>(), new List<double>(), new List<double>() };
        for (int i = 0; i < 600; i++)
        {
            for (long e = 0; e < evict; e += 64) sink += other[e];
            Kernels.PrefetchKv = i % 3 == 0;
            Kernels.VectorAttention = i % 3 != 2;
            long t0 = Stopwatch.GetTimestamp();
            run();
            times[i % 3].Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
        }
        Kernels.PrefetchKv = Kernels.VectorAttention = true;
        _sink += sink;
        NativeMemory.Free(other);
        double Median(List<double> t) => t.Order().ElementAt(t.Count / 2);
        Console.WriteLine($"  attention, caches cold       {Median(times[0]),8:F1} µs a call (without the KV prefetch {Median(times[1]):F1} µs, previous {Median(times[2]):F1} µs)");
    }

    /// <summary>On: the previous paths of the step's other kernels (attention's general path, top-k and argmax scanning one value at a time).</summary>
    private static void RestPrevious(bool on) => Kernels.VectorAttention = Kernels.VectorTopK = !on;

    /// <summary>Median µs a call; with <paramref name="previous"/>, alternate calls take the previous paths (<see cref="RestPrevious"/>).</summary>
    private static void RestTime(string label, Action run, bool previous = true)
    {
        var times = new[] { new List<double>(), new List<double>() };
        for (int i = 0; i < 4000; i++)
        {
            int which = i % 2;
            if (i == 2000) times = [[], []]; // the first half warms up (tiered compilation)
            RestPrevious(previous && which == 1);
            long t0 = Stopwatch.GetTimestamp();
            run();
            times[which].Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
        }
        RestPrevious(false);
        double now = times[0].Order().ElementAt(times[0].Count / 2), before = times[1].Order().ElementAt(times[1].Count / 2);
        Console.WriteLine(previous ? $"  {label,-26} {now,8:F1} µs a call (previous {before,8:F1} µs -> {before / now:F2}x)" : $"  {label,-26} {now,8:F1} µs a call");
    }

    private static void Quantized(SimdWidth width, int m, int k, int n, int reps, int bits = 4)
    {
        const int group = 64;
        var rng = new Random(1);
        float* x = Alloc<float>((long)m * k), y = Alloc<float>((long)m * n), s = Alloc<float>((long)n * k / group);
        long codes = (long)n * k * bits / 8;
        byte* q = Alloc<byte>(codes), z = Alloc<byte>((long)n * k / group);
        for (long i = 0; i < (long)m * k; i++) x[i] = (float)rng.NextDouble() - 0.5f;
        for (long i = 0; i < codes; i++) q[i] = (byte)rng.Next(256);
        for (long i = 0; i < (long)n * k / group; i++) { s[i] = 0.01f; z[i] = (byte)(1 << (bits - 1)); }
        long bytes = codes + (long)n * k / group * 5;
        Time($"w{bits} g64  m={m,-3} k={k,-4} n={n,-6}", m, k, n, bytes, reps, () => Kernels.A16MatMul(x, m, k, n, q, s, z, bits, group, null, y, width));
        NativeMemory.Free(x); NativeMemory.Free(y); NativeMemory.Free(s); NativeMemory.Free(q); NativeMemory.Free(z);
    }

    private static void Bf16(SimdWidth width, int m, int k, int n, int reps)
    {
        var rng = new Random(2);
        float* x = Alloc<float>((long)m * k), y = Alloc<float>((long)m * n);
        ushort* w = Alloc<ushort>((long)n * k);
        for (long i = 0; i < (long)m * k; i++) x[i] = (float)rng.NextDouble() - 0.5f;
        for (long i = 0; i < (long)n * k; i++) w[i] = (ushort)(0x3C00 + rng.Next(0x200));
        Time($"bf16    m={m,-3} k={k,-4} n={n,-6}", m, k, n, (long)n * k * 2, reps, () => Kernels.MatMul(x, m, k, n, (byte*)w, BModelDataType.BFloat16, true, null, y, width));
        NativeMemory.Free(x); NativeMemory.Free(y); NativeMemory.Free(w);
    }

    private static bool _abPairs, _abBytePairs;

    /// <summary>Sets the A/B switch: on = the current kernels, off = the previous ones (or single columns with --ab-pairs).</summary>
    private static void Current(bool on)
    {
        if (_abPairs) MatMulKernels.ColumnPairs = on;
        else if (_abBytePairs) MatMulKernels.BytePairs = on;
        else WorkerPool.Enabled = MatMulKernels.NibbleTable = on;
    }

    /// <summary>This width's FMA peak on the calling thread: FLOP per CPU-second of 10 independent FMA chains, best of 5 samples.</summary>
    private static double FmaPeak(SimdWidth width)
    {
        var process = Process.GetCurrentProcess();
        double best = 0;
        for (int r = 0; r < 6; r++)
        {
            const long loops = 20_000_000;
            process.Refresh();
            TimeSpan cpu0 = process.TotalProcessorTime;
            int lanes = width == SimdWidth.Vector512 ? FmaLoop<Simd512, Vector512<float>>(loops) : FmaLoop<Simd256, Vector256<float>>(loops);
            process.Refresh();
            double cpu = (process.TotalProcessorTime - cpu0).TotalSeconds;
            if (r > 0) best = Math.Max(best, 2.0 * 10 * lanes * loops / Math.Max(cpu, 1e-6)); // the first sample compiles
        }
        return best;
    }

    /// <summary>10 independent chains of <paramref name="loops"/> FMAs each; returns the lanes of a vector.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining | System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static int FmaLoop<TOps, TVec>(long loops) where TOps : struct, ISimdOps<TVec> where TVec : struct
    {
        TVec m = TOps.Broadcast(0.999f), a = TOps.Broadcast(1e-3f);
        TVec c0 = TOps.Zero, c1 = TOps.Zero, c2 = TOps.Zero, c3 = TOps.Zero, c4 = TOps.Zero, c5 = TOps.Zero, c6 = TOps.Zero, c7 = TOps.Zero, c8 = TOps.Zero, c9 = TOps.Zero;
        for (long i = 0; i < loops; i++)
        {
            c0 = TOps.MultiplyAdd(c0, m, a); c1 = TOps.MultiplyAdd(c1, m, a); c2 = TOps.MultiplyAdd(c2, m, a); c3 = TOps.MultiplyAdd(c3, m, a);
            c4 = TOps.MultiplyAdd(c4, m, a); c5 = TOps.MultiplyAdd(c5, m, a); c6 = TOps.MultiplyAdd(c6, m, a); c7 = TOps.MultiplyAdd(c7, m, a);
            c8 = TOps.MultiplyAdd(c8, m, a); c9 = TOps.MultiplyAdd(c9, m, a);
        }
        _sink = TOps.Sum(TOps.Add(TOps.Add(TOps.Add(c0, c1), TOps.Add(c2, c3)), TOps.Add(TOps.Add(TOps.Add(c4, c5), TOps.Add(c6, c7)), TOps.Add(c8, c9))));
        return TOps.Count;
    }

    private static float _sink;
    private static double _peak;

    private static T* Alloc<T>(long count) where T : unmanaged => (T*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(T)), 64);

    /// <summary>
    /// Best of <paramref name="reps"/> samples. Few-row (decode) shapes are timed A/B in the same samples against the
    /// previous kernels (Parallel.For instead of the persistent workers, the generic 4-bit path instead of the table
    /// one), alternating, so a noisy machine moves both figures alike.
    /// </summary>
    private static void Time(string label, int m, int k, int n, long weightBytes, int reps, Action run)
    {
        bool ab = m <= MatMulKernels.FewRows;
        var (wall, cpu, wallOff) = Sample(run, reps, ab);
        double flops = 2.0 * m * k * n;
        Console.WriteLine($"  {label}: {wall * 1e3,8:F2} ms  {flops / wall / 1e9,6:F1} GFLOP/s  {weightBytes / wall / 1e9,5:F1} GB/s   per CPU-second: {flops / cpu / 1e9,6:F1} GFLOP ({100 * flops / cpu / _peak,3:F0} % of peak), {weightBytes / cpu / 1e9,5:F1} GB"
            + (ab ? $"   previous {wallOff * 1e3:F2} ms -> {wallOff / wall:F2}x" : ""));
    }

    private static (double Wall, double Cpu, double WallOff) Sample(Action run, int reps, bool ab)
    {
        run(); // JIT and first touch
        var once = Stopwatch.StartNew();
        run();
        // Each sample runs long enough (~100 ms) for the process CPU clock's resolution.
        int inner = Math.Max(1, (int)(0.1 / Math.Max(once.Elapsed.TotalSeconds, 1e-6)));
        double bestWall = double.MaxValue, bestCpu = double.MaxValue, bestOff = double.MaxValue;
        var process = Process.GetCurrentProcess();
        for (int r = 0; r < reps; r++)
        {
            if (ab)
            {
                Current(false);
                var off = Stopwatch.StartNew();
                for (int i = 0; i < inner; i++) run();
                bestOff = Math.Min(bestOff, off.Elapsed.TotalSeconds / inner);
                Current(true);
            }
            process.Refresh();
            TimeSpan cpu0 = process.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < inner; i++) run();
            double wall = sw.Elapsed.TotalSeconds / inner;
            process.Refresh();
            double cpu = (process.TotalProcessorTime - cpu0).TotalSeconds / inner;
            bestWall = Math.Min(bestWall, wall);
            bestCpu = Math.Min(bestCpu, Math.Max(cpu, 1e-6));
        }
        return (bestWall, bestCpu, bestOff);
    }
}
