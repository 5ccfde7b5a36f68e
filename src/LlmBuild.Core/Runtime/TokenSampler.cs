using System.Globalization;
using System.Text.Json.Nodes;

namespace LlmBuild.Core.Runtime;

/// <summary>Sampling settings, as generation_config.json gives them (transformers' defaults where absent).</summary>
public sealed record SamplingOptions(double Temperature = 1.0, int TopK = 50, double TopP = 1.0, double RepetitionPenalty = 1.0, int PenaltyWindow = 64)
{
    /// <summary>Reads temperature, top_k, top_p and repetition_penalty from a config folder's generation_config.json.</summary>
    public static SamplingOptions FromGenerationConfig(string configDir)
    {
        string path = Path.Combine(configDir, "generation_config.json");
        if (!File.Exists(path)) return new SamplingOptions();
        var o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
        double D(string name, double fallback) => o?[name] is JsonValue v && v.TryGetValue(out double d) ? d : fallback;
        return new SamplingOptions(D("temperature", 1.0), (int)D("top_k", 50), D("top_p", 1.0), D("repetition_penalty", 1.0));
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
