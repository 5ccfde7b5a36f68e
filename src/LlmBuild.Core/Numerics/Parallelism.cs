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
}
