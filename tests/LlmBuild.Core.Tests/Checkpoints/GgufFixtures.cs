using System.Text.Json.Nodes;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Graph;
using LlmBuild.Core.Tests.Runtime;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Checkpoints;

/// <summary>
/// A quantized-checkpoint fixture with Hugging Face's own f32 goldens on its exactly dequantized weights
/// (tests/fixtures/gguf, tests/fixtures/fp8; their READMEs say how they were made).
/// </summary>
internal sealed record GoldenFixture(string Name, string ModelPath, int[] PromptIds, int[] GeneratedIds, float[] PromptLogits, float[] GeneratedLogits)
{
    public static GoldenFixture Gguf(string name) =>
        Load(name, TestResolver.Fixture(Path.Combine("gguf", name + ".gguf")), TestResolver.Fixture("gguf"));

    public static GoldenFixture Fp8() =>
        Load("tiny-qwen2-fp8", TestResolver.Fixture(Path.Combine("fp8", "tiny-qwen2-fp8")), TestResolver.Fixture("fp8"));

    private static GoldenFixture Load(string name, string modelPath, string dir)
    {
        var json = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, $"golden-{name}.json")))!;
        int[] Ids(string key) => ((JsonArray)json[key]!).Select(n => (int)n!).ToArray();
        return new GoldenFixture(name, modelPath, Ids("prompt_ids"), Ids("generated_ids"),
            Goldens.ReadNpyF32(Path.Combine(dir, $"golden-{name}.logits.npy")), Goldens.ReadNpyF32(Path.Combine(dir, $"golden-{name}.gen_logits.npy")));
    }

    /// <summary>
    /// Runs a model through the golden's prompt (every position's logits) and its 16 greedy steps, comparing each row
    /// with Hugging Face's; returns the worst cosine and the greedy ids chosen.
    /// </summary>
    public (double WorstCosine, int[] Greedy) Compare(int vocab, Func<int[], float[]> prefillAllPositions, Func<int, float[]> decode)
    {
        float[] logits = prefillAllPositions(PromptIds);
        double worst = 1;
        for (int t = 0; t < PromptIds.Length; t++)
            worst = Math.Min(worst, EmulatorGoldenTests.Cosine(logits.AsSpan(t * vocab, vocab), PromptLogits.AsSpan(t * vocab, vocab)));
        float[] last = logits.AsSpan((PromptIds.Length - 1) * vocab, vocab).ToArray();
        var greedy = new List<int>();
        for (int step = 0; step < GeneratedIds.Length; step++)
        {
            worst = Math.Min(worst, EmulatorGoldenTests.Cosine(last, GeneratedLogits.AsSpan(step * vocab, vocab)));
            int token = LlmEmulator.ArgMax(last);
            greedy.Add(token);
            // Teacher-forced on Hugging Face's ids, so one early tie cannot derail every later comparison.
            last = decode(GeneratedIds[step]);
        }
        return (worst, greedy.ToArray());
    }
}
