namespace LlmBuild.Core.Serving;

/// <summary>
/// Finds the request's stop sequences in streamed text. Text is released only once it cannot be the start of a stop
/// sequence, so a stream never shows part of one; the text before the first match is the answer, the match and
/// everything after it are dropped (OpenAI's behaviour).
/// </summary>
public sealed class StopSequences(IReadOnlyList<string> sequences)
{
    private string _held = "";

    /// <summary>Adds streamed text; returns what is final and whether a stop sequence has matched (then nothing more counts).</summary>
    public (string Text, bool Stopped) Push(string text)
    {
        string all = _held + text;
        int first = -1;
        foreach (string stop in sequences)
        {
            int at = all.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            _held = "";
            return (all[..first], true);
        }
        int keep = 0;
        foreach (string stop in sequences)
            for (int n = Math.Min(stop.Length - 1, all.Length); n > keep; n--)
                if (all.AsSpan(all.Length - n).SequenceEqual(stop.AsSpan(0, n))) { keep = n; break; }
        _held = all[(all.Length - keep)..];
        return (all[..(all.Length - keep)], false);
    }

    /// <summary>The text held back at the end of the generation (it never became a stop sequence).</summary>
    public string Flush()
    {
        string rest = _held;
        _held = "";
        return rest;
    }
}
