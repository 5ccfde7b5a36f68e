using System.Runtime.InteropServices;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// Compiles the emulator's kernels while a model loads: a background thread runs each matmul path (every weight format,
/// 1 to 4 rows and a GEMM, at the widest vector width) and the other per-step kernels once on a few bytes of scratch,
/// so a fresh process's first prefill does not wait for the JIT. Loading (reading, hashing and placing hundreds of MB of
/// coefficients) takes longer than this on the other core. Once per process; nothing the model computes depends on it.
/// </summary>
internal static unsafe class KernelWarmup
{
    private static int _started;

    /// <summary>Starts the warm-up unless it has run in this process (or is running).</summary>
    public static void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        new Thread(Run) { IsBackground = true, Name = "llmbuild-kernel-warmup", Priority = ThreadPriority.BelowNormal }.Start();
    }

    /// <summary>Every kernel path once on tiny operands (each call stays below the pool's threshold: this thread alone).</summary>
    internal static void Run()
    {
        const int k = 128, n = 16, group = 64, rows = MatMulKernels.FewRows + 1;
        float* x = Alloc<float>(rows * k), y = Alloc<float>(rows * n * 4), s = Alloc<float>(n * k / group);
        byte* q = Alloc<byte>(n * k * 4), z = Alloc<byte>(n * k / group);
        try
        {
            NativeMemory.Clear(q, n * k * 4);
            for (int i = 0; i < rows * k; i++) x[i] = 0.01f * (i % 7);
            for (int i = 0; i < n * k / group; i++) (s[i], z[i]) = (0.01f, 8);
            var formats = new[]
            {
                new Weights(WeightFormat.Int4, q, s, z, group), new Weights(WeightFormat.Int8, q, s, z, group),
                new Weights(WeightFormat.BFloat16, q), new Weights(WeightFormat.Float32, q),
            };
            foreach (Weights w in formats)
                for (int m = 1; m <= rows; m++)
                    MatMulKernels.MatMul(x, m, k, n, w, null, y, Simd.Best);
            Kernels.Convert((byte*)x, BModelDataType.Float32, q, BModelDataType.BFloat16, k);
            Kernels.Convert(q, BModelDataType.BFloat16, (byte*)y, BModelDataType.Float32, k);
            Kernels.RmsNorm(x, 1, k, new float[k], 1e-6f, y);
            Kernels.SiLU(x, y, k);
            Kernels.TopK(x, 1, k, 4, 4, y, (byte*)(y + 4), BModelDataType.Int32); // the sampling head and the greedy pick
            Kernels.ArgMax(new ReadOnlySpan<float>(x, k));
            Kernels.Attention(x, x + 32, x + 64, null, y, 1, 2, 1, 16, 1, 2, true, 0.3f);
            var history = new Kernels.SplitRows(q, BModelDataType.BFloat16, 1, x + 32, 1, 1, 16); // a decode step's keys and values
            Kernels.Attention(x, history, history, null, y, 1, 2, 1, 16, 1, 2, true, 0.3f);
        }
        finally
        {
            NativeMemory.AlignedFree(x); NativeMemory.AlignedFree(y); NativeMemory.AlignedFree(s);
            NativeMemory.AlignedFree(q); NativeMemory.AlignedFree(z);
        }
    }

    private static T* Alloc<T>(int count) where T : unmanaged => (T*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(T)), 64);
}
