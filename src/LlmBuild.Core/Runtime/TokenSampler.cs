using System.Globalization;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Runtime;

/// <summary>Sampling settings, as generation_config.json gives them (transformers' defaults where absent).</summary>
public sealed record SamplingOptions(double Temperature = 1.0, int TopK = 50, double TopP = 1.0, double RepetitionPenalty = 1.0, int PenaltyWindow = 64)
{
    /// <summary>Reads temperature, top_k, top_p and repetition_penalty from a config folder's generation_config.json;
    /// a field of the wrong type or out of range is <see cref="ErrorCodes.BadGenerationConfig"/>.</summary>
    public static SamplingOptions FromGenerationConfig(string configDir)
    {
        string path = Path.Combine(configDir, "generation_config.json");
        if (JsonInput.ReadOptional(path, ErrorCodes.BadGenerationConfig,
                "Fix the value, or remove the field to use transformers' default.") is not { } file) return new SamplingOptions();
        var o = file.RequireObject();
        var defaults = new SamplingOptions();
        var penalty = o["repetition_penalty"];
        double repetitionPenalty = penalty.DoubleOrNull(0) ?? defaults.RepetitionPenalty;
        if (repetitionPenalty == 0) throw penalty.Error("must be greater than 0 (1 means no penalty)");
        return new SamplingOptions(
            o["temperature"].DoubleOrNull(0) ?? defaults.Temperature,
            o["top_k"].IntOrNull(0) ?? defaults.TopK,
            o["top_p"].DoubleOrNull(0, 1) ?? defaults.TopP,
            repetitionPenalty);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"temperature {Temperature}, top_k {TopK}, top_p {TopP}, repetition_penalty {RepetitionPenalty}");
}

/// <summary>
/// Picks the next token from logits: greedy (argmax) or sampled with repetition penalty over the recent ids,
/// temperature, top-k and top-p (the order transformers applies them), from a seeded generator.
/// </summary>
public sealed class TokenSampler(SamplingOptions? sampling, int seed = 0)
{
    private readonly Random _random = new(seed);
    private readonly List<int> _recent = [];

    public bool Greedy => sampling is null;

    public void Reset() => _recent.Clear();

    public int Next(ReadOnlySpan<float> logits)
    {
        int id = sampling is null ? LlmEmulator.ArgMax(logits) : Sample(logits, sampling);
        _recent.Add(id);
        return id;
    }

    /// <summary>Remembers prompt ids too: the repetition penalty applies to them as in transformers.</summary>
    public void Observe(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids) _recent.Add(id);
    }

    private int Sample(ReadOnlySpan<float> logits, SamplingOptions s)
    {
        var scores = logits.ToArray();
        if (s.RepetitionPenalty != 1.0)
        {
            foreach (int id in _recent.Skip(Math.Max(0, _recent.Count - s.PenaltyWindow)).Distinct())
                scores[id] = scores[id] > 0 ? (float)(scores[id] / s.RepetitionPenalty) : (float)(scores[id] * s.RepetitionPenalty);
        }
        if (s.Temperature <= 0) return LlmEmulator.ArgMax(scores);
        int k = s.TopK > 0 ? Math.Min(s.TopK, scores.Length) : scores.Length;
        int[] order = Enumerable.Range(0, scores.Length).OrderByDescending(i => scores[i]).ThenBy(i => i).Take(k).ToArray();
        double max = scores[order[0]];
        var probs = order.Select(i => Math.Exp((scores[i] - max) / s.Temperature)).ToArray();
        double total = probs.Sum();
        for (int i = 0; i < probs.Length; i++) probs[i] /= total;
        // Top-p keeps the smallest prefix whose mass reaches p (always at least one token).
        int keep = probs.Length;
        if (s.TopP < 1.0)
        {
            double mass = 0;
            for (int i = 0; i < probs.Length; i++)
            {
                mass += probs[i];
                if (mass >= s.TopP) { keep = i + 1; break; }
            }
        }
        double kept = probs.Take(keep).Sum(), r = _random.NextDouble() * kept, acc = 0;
        for (int i = 0; i < keep; i++)
        {
            acc += probs[i];
            if (r < acc) return order[i];
        }
        return order[keep - 1];
    }
}
