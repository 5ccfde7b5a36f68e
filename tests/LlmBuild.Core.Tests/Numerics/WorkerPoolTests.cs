using System.Collections.Concurrent;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Tests.Numerics;

/// <summary>The kernels' persistent workers: every item runs exactly once, on more than one core, and a failure reaches the caller.</summary>
[TestClass]
[DoNotParallelize]
public sealed class WorkerPoolTests
{
    [TestMethod]
    public void EveryItemRunsOnceAndBothCoresWork()
    {
        var threads = new ConcurrentDictionary<int, int>();
        for (int round = 0; round < 200; round++)
        {
            var hits = new int[257];
            WorkerPool.For(hits.Length, i =>
            {
                Interlocked.Increment(ref hits[i]);
                threads.TryAdd(Environment.CurrentManagedThreadId, 0);
                Thread.SpinWait(2000); // long enough that a woken worker finds items left
            });
            CollectionAssert.AreEqual(Enumerable.Repeat(1, hits.Length).ToArray(), hits, $"round {round}");
        }
        if (Environment.ProcessorCount > 1) Assert.IsTrue(threads.Count > 1, "every item ran on the calling thread");
    }

    [TestMethod]
    public void NestedAndConcurrentLoopsComplete()
    {
        long total = 0;
        Parallel.For(0, 4, _ => WorkerPool.For(8, i => WorkerPool.For(16, j => Interlocked.Add(ref total, i * 16 + j))));
        Assert.AreEqual(4L * (127 * 128 / 2), total);
    }

    [TestMethod]
    public void TheFirstFailureIsRethrownAsItself()
    {
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => WorkerPool.For(64, i =>
        {
            if (i == 37) throw new InvalidOperationException("item 37");
        }));
        Assert.AreEqual("item 37", e.Message);
        int ran = 0;
        WorkerPool.For(10, _ => Interlocked.Increment(ref ran)); // the pool is usable afterwards
        Assert.AreEqual(10, ran);
    }
}
