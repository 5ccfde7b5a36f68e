using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>A dry run before the download: config.json and the tokenizer are enough to print the plan and its memory.</summary>
[TestClass]
public sealed class DryRunTests
{
    private static readonly string Qwen7b = TestResolver.Fixture("qwen2.5-7b-instruct");

    private static Dictionary<string, string?> Values(params (string, string)[] extra)
    {
        var values = new Dictionary<string, string?> { ["ModelPath"] = Qwen7b, ["SeqLength"] = "2048", ["Quantize"] = "w4bf16", ["QGroupSize"] = "128", ["DryRun"] = "true" };
        foreach (var (k, v) in extra) values[k] = v;
        return values;
    }

    [TestMethod]
    public void ConfigOnlyFolderPrintsThePlanAndTheMemoryEstimate()
    {
        var warnings = new List<LlmBuildWarning>();
        ResolvedModel model = ResolveStage.Resolve(Values(), warnings);
        Assert.IsTrue(model.WeightsAbsent);
        Assert.AreEqual(0, model.WeightFiles.Count);
        Assert.AreEqual(28 * 2 + 3, model.Pieces.Count);
        // Qwen2's q/k/v biases are required roles, so they are planned from config.json too.
        Assert.IsTrue(model.Owner("block_0").Entries.Any(e => e.Role == Models.WeightRole.QBias));
        string text = ResolveStage.Describe(model);
        Console.WriteLine(text);
        StringAssert.Contains(text, "weights absent");
        StringAssert.Contains(text, "family                 qwen2");
        StringAssert.Contains(text, "device memory");
        // 7.6 B parameters: embedding and lm_head 2 × 1.09 GB in bf16, 6.5 B block weights at 4 bits + g128 scales/zeros ≈ 3.5 GB, 28 layers × 2048 × 4 kv heads × 128 × 2 × 2 bytes of KV.
        var budget = LlmBuild.Core.Codegen.DeviceMemoryBudget.Estimate(model, Chips.ChipProfile.BM1684X);
        Assert.AreEqual(28L * 2048 * 4 * 128 * 2 * 2, budget.KvCacheBytes);
        Assert.IsTrue(budget.WeightBytes is > 5_400_000_000 and < 6_000_000_000, $"weights {budget.WeightBytes}");
    }

    [TestMethod]
    public void WithoutDryRunMissingWeightsStayAnError()
    {
        var values = Values();
        values["DryRun"] = "false";
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ResolveStage.Resolve(values, new List<LlmBuildWarning>()));
        Assert.AreEqual(ErrorCodes.NoWeightFiles, e.Code);
    }

    [TestMethod]
    public void ADryRunThatDoesNotFitSaysSoAsAWarning()
    {
        var warnings = new List<LlmBuildWarning>();
        ResolvedModel model = ResolveStage.Resolve(Values(("DeviceMemoryMiB", "1024")), warnings);
        Assert.IsTrue(warnings.Any(w => w.Code == ErrorCodes.DeviceMemoryOverflow), string.Join("; ", warnings));
        StringAssert.Contains(ResolveStage.Describe(model), "DOES NOT FIT");
    }
}
