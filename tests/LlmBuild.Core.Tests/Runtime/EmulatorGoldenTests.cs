using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Runtime;

[TestClass]
public sealed class EmulatorGoldenTests
{
    internal static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return dot / Math.Sqrt(na * nb);
    }

    [TestMethod]
    public void Bf16BuildReproducesHuggingFaceGoldens()
    {
        var built = ExampleBuild.Get("bf16");
        using var emu = LlmEmulator.Load(built.BModel);
        int vocab = emu.VocabSize;
        int[] prompt = Goldens.PromptIds;
        float[] logits = emu.Prefill(prompt, allPositions: true);
        double worst = 1;
        for (int t = 0; t < prompt.Length; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            var expected = Goldens.PromptLogits.AsSpan(t * vocab, vocab);
            worst = Math.Min(worst, Cosine(row, expected));
            Assert.AreEqual(LlmEmulator.ArgMax(expected), LlmEmulator.ArgMax(row), $"prompt position {t}");
        }
        float[] last = logits.AsSpan((prompt.Length - 1) * vocab, vocab).ToArray();
        for (int step = 0; step < Goldens.GeneratedIds.Length; step++)
        {
            worst = Math.Min(worst, Cosine(last, Goldens.GeneratedLogits.AsSpan(step * vocab, vocab)));
            int token = LlmEmulator.ArgMax(last);
            Assert.AreEqual(Goldens.GeneratedIds[step], token, $"greedy step {step}");
            last = emu.Decode(token);
        }
        Console.WriteLine($"worst cosine vs Hugging Face: {worst:F6}");
        Assert.IsTrue(worst >= 0.999, $"worst cosine {worst}");
    }
}
