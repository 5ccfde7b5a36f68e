namespace LlmBuild.Core.IO;

/// <summary>The per-piece up-to-date check the stage tasks make (MSBuild's own check is per target, not per piece).</summary>
public static class Freshness
{
    /// <summary>True when every output exists and none is older than the newest input. A missing input counts as changed.</summary>
    public static bool IsUpToDate(IEnumerable<string> outputs, IEnumerable<string> inputs)
    {
        DateTime oldestOutput = DateTime.MaxValue;
        foreach (string output in outputs)
        {
            if (!File.Exists(output)) return false;
            DateTime t = File.GetLastWriteTimeUtc(output);
            if (t < oldestOutput) oldestOutput = t;
        }
        foreach (string input in inputs)
        {
            if (!File.Exists(input) || File.GetLastWriteTimeUtc(input) > oldestOutput) return false;
        }
        return true;
    }
}
