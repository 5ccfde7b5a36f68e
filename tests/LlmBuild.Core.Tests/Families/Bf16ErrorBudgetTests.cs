using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// Where a bf16 build's distance from Hugging Face's float32 logits comes from, per family fixture. The exported graphs
/// interpreted in f32 reproduce Hugging Face (cosine ≥ 0.99999): no op differs. A bf16 build rounds exactly two things
/// to bf16, both fixed by the net contract (DESIGN §7): the states passed between nets and the KV cache. The graphs with
/// those two roundings give the emulator's cosine to 5e-6 (summation order), so the emulator adds nothing.
/// Rounding every op's output to bf16 as well — a stand-in for Hugging Face's own bf16 inference, which keeps every intermediate in bf16 — loses
/// several times more on every fixture (phi3 0.99794, chatglm 0.99881, llama 0.99947): the build sits well inside
/// the bf16 noise floor. phi3's and chatglm's builds (0.99985, 0.99970) are below the 0.9999 only through the bf16
/// KV cache: <see cref="Bf16DivergenceTests"/> measures each rounding alone, the prompt rows against the cached decode
/// rows, and the built model prefilling the whole sequence (phi3 0.999932, chatglm 0.999987).
/// </summary>
[TestClass]
public sealed class Bf16ErrorBudgetTests
{
    public static IEnumerable<object[]> Fixtures => FamilyGoldenTests.Fixtures;

    /// <summary>Worst cosine of the chained graphs against the golden over every prompt row and the 16 greedy steps (Hugging Face's ids).</summary>
    private static double Worst(FamilyGoldenTests.FamilyGolden golden, PieceChain chain)
    {
        chain.Prefill(golden.Prompt);
        double worst = 1;
        for (int t = 0; t < golden.Prompt.Length; t++)
            worst = Math.Min(worst, VerifyStage.Cosine(chain.PrefillRow(t), golden.PromptRow(t)));
        float[] logits = chain.PrefillRow(golden.Prompt.Length - 1);
        for (int step = 0; step < golden.Generated.Length; step++)
        {
            worst = Math.Min(worst, VerifyStage.Cosine(logits, golden.StepRow(step)));
            logits = chain.Decode(golden.Generated[step]);
        }
        return worst;
    }

    [TestMethod]
    [DynamicData(nameof(Fixtures))]
    public void TheBf16BuildLosesOnlyWhatTheNetContractsRoundingLoses(string family)
    {
        var golden = FamilyGoldenTests.FamilyGolden.Load(family);
        var props = new Dictionary<string, string?> { ["ModelPath"] = golden.Dir, ["SeqLength"] = "64", ["Quantize"] = "bf16", ["DoSample"] = "true" };
        ResolvedModel model = ExampleBuild.Resolve(props);
        using ICheckpoint checkpoint = QuantizeStage.OpenSource(model);
        PieceChain Chain(bool contract, bool everyOp = false) =>
            new(model, new TestWeightSource(model, checkpoint)) { Bf16KvCache = contract, Bf16States = contract, Bf16EveryOp = everyOp };

        double exact = Worst(golden, Chain(contract: false));
        double contract = Worst(golden, Chain(contract: true));
        double everyOp = Worst(golden, Chain(contract: true, everyOp: true));

        var built = ExampleBuild.Get("bf16", extra: [("ModelPath", golden.Dir), ("LlmModelName", family)]);
        using var emu = LlmEmulator.Load(built.BModel);
        double emulator = FamilyGoldenTests.Compare(golden, ids => emu.Prefill(ids, allPositions: true), id => emu.Decode(id), family,
            FamilyGoldenTests.NearTieLogitGaps.GetValueOrDefault(family));

        Console.WriteLine($"{family}: worst cosine vs Hugging Face — graphs in f32 {exact:F7}, with the contract's bf16 states and KV cache " +
            $"{contract:F7}, the bf16 build in the emulator {emulator:F7}, every op in bf16 {everyOp:F7}");
        Assert.IsTrue(exact >= 0.99999, $"{family}: the f32 graphs differ from Hugging Face ({exact})");
        Assert.AreEqual(contract, emulator, 5e-6, $"{family}: the emulator loses more than the net contract's rounding");
        Assert.IsTrue(1 - everyOp > 3 * (1 - emulator), $"{family}: a bf16-throughout forward ({everyOp}) should lose several times what the build loses ({emulator})");
    }
}
