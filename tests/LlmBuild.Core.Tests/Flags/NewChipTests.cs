using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>bm1690 and bm1684x2: profiles from TPU-MLIR's backend headers, built and verified by the built-in backend.</summary>
[TestClass]
public sealed class NewChipTests
{
    [TestMethod]
    public void ProfilesCarryTheBackendHeadersFigures()
    {
        var bm1690 = ChipProfile.Get("bm1690");
        Assert.AreEqual((64, 64, 256 * 1024, 4096, 8, true), (bm1690.NpuNum, bm1690.EuBytes, bm1690.LocalMemPerLaneBytes, bm1690.Alignment, bm1690.MaxCores, bm1690.TaggedAddresses));
        var x2 = ChipProfile.Get("BM1684X2");
        Assert.AreEqual((16, 32, 256 * 1024, 4096, 4, true), (x2.NpuNum, x2.EuBytes, x2.LocalMemPerLaneBytes, x2.Alignment, x2.MaxCores, x2.TaggedAddresses));
        CollectionAssert.AreEqual(new[] { "bm1684x", "bm1688", "cv186x", "bm1690", "bm1684x2" }, OptionTable.Chip.Choices.ToArray(), "llm_convert.py's --chip choices");
        var o = new BuildOptions { ModelPath = "m", SeqLength = 64, Chip = "bm1690", NumCore = 8 };
        o.Validate();
        Assert.AreEqual(8, (o with { NumCore = 0 }).EffectiveNumCore);
        Assert.AreEqual(ErrorCodes.ConflictingProperties, Assert.ThrowsExactly<LlmBuildException>(() => (o with { NumCore = 9 }).Validate()).Code);
        Assert.AreEqual(ErrorCodes.ConflictingProperties, Assert.ThrowsExactly<LlmBuildException>(() => (o with { Chip = "bm1684x2", NumCore = 5 }).Validate()).Code);
    }

    /// <summary>The chip targets' LlmChipCores is each profile's core count.</summary>
    [TestMethod]
    public void ChipTargetsGiveEveryProfilesCores()
    {
        var targets = System.Xml.Linq.XDocument.Load(Path.Combine(ExampleBuild.RepoRoot, "targets", "LlmBuild.Chips.targets"));
        var cores = targets.Descendants("LlmChipCores").ToArray();
        foreach (var chip in ChipProfile.All)
        {
            var entry = cores.Single(e => ((string)e.Attribute("Condition")!).Contains($"'{chip.Name}'", StringComparison.Ordinal));
            Assert.AreEqual(chip.MaxCores.ToString(), entry.Value, chip.Name);
        }
    }

    [TestMethod]
    [DataRow("bm1690", "BM1690-EMU")]
    [DataRow("bm1684x2", "BM1684X2-EMU")]
    public void ExampleBuildsAndPassesVerify(string chip, string bmodelChip)
    {
        var built = ExampleBuild.Get("w8bf16", seqLength: 48, chip: chip);
        using (var container = BModelReader.Read(built.BModel)) Assert.AreEqual(bmodelChip, container.Model.Chip);
        var r = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, $"verify-{chip}.json"));
        Assert.IsTrue(r.Passed, string.Join("; ", r.Failures));
    }
}
