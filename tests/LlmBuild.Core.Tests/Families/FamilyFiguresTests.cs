using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// One row per family fixture for the README and the issue's closing note: the bf16 and w4bf16 (g32) builds against
/// Hugging Face's goldens (worst logits cosine over the 12 prompt rows and 16 greedy steps, Hugging Face's ids fed back;
/// how many of the 16 greedy ids the build picks too) and both builds' verify figures. Asserts that bf16 verify passes.
/// </summary>
[TestClass]
public sealed class FamilyFiguresTests
{
    public static IEnumerable<object[]> Fixtures => FamilyGoldenTests.Fixtures;

    private static (double Cosine, int Ids) AgainstHuggingFace(FamilyGoldenTests.FamilyGolden golden, LlmEmulator emu)
    {
        int vocab = golden.Vocab;
        float[] rows = emu.Prefill(golden.Prompt, allPositions: true);
        double worst = 1;
        for (int t = 0; t < golden.Prompt.Length; t++) worst = Math.Min(worst, VerifyStage.Cosine(rows.AsSpan(t * vocab, vocab), golden.PromptRow(t)));
        float[] last = rows.AsSpan((golden.Prompt.Length - 1) * vocab, vocab).ToArray();
        int ids = 0;
        for (int step = 0; step < golden.Generated.Length; step++)
        {
            worst = Math.Min(worst, VerifyStage.Cosine(last, golden.StepRow(step)));
            if (LlmEmulator.ArgMax(last) == golden.Generated[step]) ids++;
            last = emu.Decode(golden.Generated[step]);
        }
        return (worst, ids);
    }

    [TestMethod]
    [DynamicData(nameof(Fixtures))]
    public void Figures(string family)
    {
        var golden = FamilyGoldenTests.FamilyGolden.Load(family);
        string row = $"| {family} |";
        foreach (var (quantize, group) in new[] { ("bf16", 64), ("w4bf16", 32) })
        {
            var built = ExampleBuild.Get(quantize, groupSize: group, extra: [("ModelPath", golden.Dir), ("LlmModelName", family)]);
            using (var emu = LlmEmulator.Load(built.BModel))
            {
                var (cosine, ids) = AgainstHuggingFace(golden, emu);
                row += $" {cosine:F5}, {ids}/{golden.Generated.Length} |";
            }
            VerifyReport r = VerifyStage.Measure(built.Model, built.BModel, VerifyStage.FixedPrompt(built.Model), VerifyStage.DefaultDecodeSteps,
                VerifyThresholds.For(built.Model.Weights));
            row += $" {r.Pieces.Min(p => p.Cosine):F4} / {r.Logits.MinCosine:F4} / {r.Logits.Top1Agreement:P0}{(r.Logits.NearTieFlips > 0 ? $" ({r.Logits.NearTieFlips} near-tie)" : "")} {(r.Passed ? "pass" : "FAIL")}";
            if (r.Quantization is { } q) row += $"; build vs own weights {q.BuildMinCosine:F5} / {q.BuildTop1BeyondNearTies:P0}";
            row += " |";
            if (quantize == "bf16") Assert.IsTrue(r.Passed, $"{family}: bf16 verify: {string.Join("; ", r.Failures)}");
        }
        Console.WriteLine(row);
    }
}
