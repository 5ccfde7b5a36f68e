using System.Runtime.ExceptionServices;

namespace LlmBuild.Core.Numerics;

/// <summary>Parallel.For that rethrows the first failure itself (a coded error stays a coded error, not an AggregateException).</summary>
internal static class Parallelism
{
    public static void For(int count, Action<int> body)
    {
        if (count == 1)
        {
            body(0);
            return;
        }
        try
        {
            Parallel.For(0, count, body);
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
    }

    /// <summary>
    /// <see cref="For"/> handing out one index at a time, in order: with work items sorted largest first the cores
    /// finish together (Parallel.For hands out growing ranges, which can leave one core the two largest).
    /// </summary>
    public static void ForEachInOrder(int count, Action<int> body)
    {
        if (count <= 1)
        {
            if (count == 1) body(0);
            return;
        }
        try
        {
            Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(Enumerable.Range(0, count), System.Collections.Concurrent.EnumerablePartitionerOptions.NoBuffering),
                new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, body);
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
    }
}
