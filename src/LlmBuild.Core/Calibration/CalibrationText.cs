using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Calibration;

/// <summary>
/// The token sequences calibration runs through the f32 reference: CalibrationSamples windows of CalibrationSeqLength
/// tokens. With LlmCalibrationText, the files (in path order, joined by blank lines) are tokenized once with the model's
/// tokenizer and the windows start at positions drawn with CalibrationSeed. Without text, the model writes its own:
/// each sequence starts from one of a few neutral words and continues by sampling the f32 reference's next-token
/// distribution (temperature 1) with a generator seeded by CalibrationSeed and the sequence's index — a data-free
/// technique (the model's own distribution stands in for its training data). Both are deterministic.
/// </summary>
public static class CalibrationText
{
    /// <summary>The neutral starts of self-generated text.</summary>
    public static IReadOnlyList<string> NeutralStarts { get; } = ["The", "In", "It", "When", "A", "I", "This", "There"];

    public static int[][] Sequences(CalibrationSettings settings, ReferenceModel reference, string modelDir)
    {
        Tokenizer tokenizer = TokenizerLoader.Load(modelDir);
        return settings.TextFiles.Count > 0
            ? FromFiles(settings, tokenizer)
            : SelfGenerated(settings, reference, NeutralStarts.Select(s => tokenizer.Encode(s, addSpecialTokens: false)).Where(t => t.Length > 0).ToArray());
    }

    public static int[][] FromFiles(CalibrationSettings settings, Tokenizer tokenizer)
    {
        string text = string.Join("\n\n", settings.TextFiles.Select(f =>
        {
            try
            {
                return File.ReadAllText(f);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new LlmBuildException(ErrorCodes.BadCalibrationText, $"Cannot read the calibration text '{f}': {e.Message}. Fix or remove the LlmCalibrationText item.", f, e);
            }
        }));
        int[] tokens = tokenizer.Encode(text, addSpecialTokens: false);
        if (tokens.Length < settings.SeqLength)
            throw new LlmBuildException(ErrorCodes.BadCalibrationText,
                $"The calibration text ({string.Join(", ", settings.TextFiles)}) is {tokens.Length} tokens long, shorter than CalibrationSeqLength={settings.SeqLength}. " +
                "Give more text or lower CalibrationSeqLength.", settings.TextFiles[0]);
        var rng = new Random(settings.Seed);
        return Enumerable.Range(0, settings.Samples).Select(_ =>
        {
            int start = rng.Next(tokens.Length - settings.SeqLength + 1);
            return tokens.AsSpan(start, settings.SeqLength).ToArray();
        }).ToArray();
    }

    /// <summary>Sequences sampled from the model itself, each from one of <paramref name="starts"/> (token ids).</summary>
    public static int[][] SelfGenerated(CalibrationSettings settings, ReferenceModel reference, IReadOnlyList<int[]> starts)
    {
        if (starts.Count == 0) throw new ArgumentException("No neutral start tokenizes to any token.", nameof(starts));
        int vocab = reference.Config.VocabSize;
        var sequences = new int[settings.Samples][];
        for (int s = 0; s < settings.Samples; s++)
        {
            var rng = new Random(unchecked(settings.Seed * 7919 + s * 104729) & int.MaxValue);
            var tokens = new List<int>(starts[s % starts.Count].Take(settings.SeqLength));
            reference.Reset();
            float[] logits = reference.Forward(tokens.ToArray());
            while (tokens.Count < settings.SeqLength)
            {
                int next = Sample(logits.AsSpan(logits.Length - vocab, vocab), rng);
                tokens.Add(next);
                if (tokens.Count < settings.SeqLength) logits = reference.Forward([next]);
            }
            sequences[s] = [.. tokens];
        }
        reference.Reset();
        return sequences;
    }

    /// <summary>A draw from softmax(logits) (temperature 1), in double precision.</summary>
    private static int Sample(ReadOnlySpan<float> logits, Random rng)
    {
        float max = float.NegativeInfinity;
        foreach (float l in logits) max = MathF.Max(max, l);
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp(l - max);
        double u = rng.NextDouble() * sum, acc = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            acc += Math.Exp(logits[i] - max);
            if (acc >= u) return i;
        }
        return logits.Length - 1;
    }
}
