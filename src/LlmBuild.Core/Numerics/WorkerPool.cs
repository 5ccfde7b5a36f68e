using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace LlmBuild.Core.Numerics;

/// <summary>
/// A parallel for-loop for the emulator's kernels, whose pieces last microseconds (a decode step runs hundreds of
/// matmuls of 0.05–0.5 ms): one persistent worker per extra core that spins briefly between jobs instead of going back
/// to the thread pool, so handing a job over costs about a microsecond rather than a thread wake-up. Each thread works
/// through its own contiguous range of items, then helps with the others' (see <see cref="Job"/>), so a core another
/// process is using simply takes fewer of them. A worker idle
/// for longer than <see cref="SpinTicks"/> blocks (a shared machine gets its core back between steps). When the pool is
/// busy (another thread's kernel, or a kernel started from inside a job) the loop runs on <see cref="Parallel.For(int, int, Action{int})"/>
/// instead, so callers never wait for each other. The first exception of an item is rethrown on the caller as it was thrown.
/// </summary>
internal static class WorkerPool
{
    /// <summary>How long an idle worker spins before blocking: longer than the gaps between a decode step's kernels.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 2000; // 0.5 ms

    /// <summary>Off: every loop goes to <see cref="Parallel.For(int, int, Action{int})"/> (the benchmark's A/B switch).</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>On: every loop runs on the calling thread (the kernel benchmark's one-core figures).</summary>
    internal static bool Serial { get; set; }

    /// <summary>
    /// A loop's items in one contiguous range per thread, each with its own claim counter on its own cache line: a
    /// thread works through its range in order (a decode matmul's weights then stream from memory as one sequential read
    /// per core, which the hardware prefetcher follows, instead of items alternating between cores), then takes what is
    /// left of the others' ranges, so a core another process holds for a while simply does fewer items.
    /// </summary>
    private sealed class Job
    {
        public readonly Action<int> Body;
        public readonly int Count;
        private readonly Slot[] _slots;
        public int Done;
        public Exception? Error;

        [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 128)]
        private struct Slot
        {
            [System.Runtime.InteropServices.FieldOffset(64)] public int Next;
            [System.Runtime.InteropServices.FieldOffset(68)] public int End;
        }

        public Job(Action<int> body, int count, int threads)
        {
            Body = body;
            Count = count;
            _slots = new Slot[threads];
            for (int t = 0; t < threads; t++)
            {
                _slots[t].Next = (int)((long)count * t / threads);
                _slots[t].End = (int)((long)count * (t + 1) / threads);
            }
        }

        /// <summary>Claims and runs items, its own range (<paramref name="self"/>) first, until none is left.</summary>
        public void Work(int self)
        {
            int done = 0;
            for (int s = 0; s < _slots.Length; s++)
            {
                ref Slot slot = ref _slots[(self + s) % _slots.Length];
                int i;
                while ((i = Interlocked.Increment(ref slot.Next) - 1) < slot.End)
                {
                    try
                    {
                        Body(i);
                    }
                    catch (Exception e)
                    {
                        Interlocked.CompareExchange(ref Error, e, null);
                    }
                    done++;
                }
            }
            if (done > 0) Interlocked.Add(ref Done, done);
        }
    }

    private static readonly object Gate = new();
    private static Job? _job;
    private static long _generation;
    private static int _sleepers;
    private static int _busy;
    private static int _started;

    /// <summary>Threads a loop runs on: the caller plus one worker per other core.</summary>
    public static int Threads => Environment.ProcessorCount;

    /// <summary>Below this many multiply-adds a loop runs on the calling thread: handing it over costs more.</summary>
    internal const long ParallelThreshold = 1L << 16;

    /// <summary>body(i) for i in [0, count): on the calling thread when <paramref name="work"/> (multiply-adds) is small, else on every core.</summary>
    public static void For(long work, int count, Action<int> body)
    {
        if (work < ParallelThreshold)
            for (int i = 0; i < count; i++) body(i);
        else For(count, body);
    }

    /// <summary>Runs <paramref name="body"/>(i) for i in [0, count) on every core, the caller included.</summary>
    public static void For(int count, Action<int> body)
    {
        if (count <= 0) return;
        if (count == 1 || Threads == 1 || Serial)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        if (!Enabled || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            Parallelism.For(count, body);
            return;
        }
        try
        {
            EnsureStarted();
            var job = new Job(body, count, Threads);
            Volatile.Write(ref _job, job);
            Interlocked.Increment(ref _generation);
            if (Volatile.Read(ref _sleepers) > 0)
                lock (Gate) Monitor.PulseAll(Gate);
            job.Work(0);
            var spin = new SpinWait();
            while (Volatile.Read(ref job.Done) < count) spin.SpinOnce(sleep1Threshold: -1);
            Volatile.Write(ref _job, null);
            if (job.Error is { } error) ExceptionDispatchInfo.Capture(error).Throw();
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private static void EnsureStarted()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        for (int t = 1; t < Threads; t++)
        {
            int slot = t;
            new Thread(() => WorkerLoop(slot)) { IsBackground = true, Name = $"llmbuild-kernel-{slot}" }.Start();
        }
    }

    private static void WorkerLoop(int self)
    {
        long seen = Interlocked.Read(ref _generation);
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            while (Interlocked.Read(ref _generation) == seen)
            {
                if (Stopwatch.GetTimestamp() - start > SpinTicks)
                {
                    lock (Gate)
                    {
                        Interlocked.Increment(ref _sleepers);
                        while (Interlocked.Read(ref _generation) == seen) Monitor.Wait(Gate);
                        Interlocked.Decrement(ref _sleepers);
                    }
                    break;
                }
                Thread.SpinWait(20);
            }
            seen = Interlocked.Read(ref _generation);
            Volatile.Read(ref _job)?.Work(self);
        }
    }
}
