using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Runtime;

[TestClass]
public sealed class VerifyStageTests
{
    [TestMethod]
    [DataRow("bf16", 64)]
    [DataRow("w8bf16", 64)]
    [DataRow("w4bf16", 64)]
    public void ExampleBuildPassesVerify(string quantize, int group)
    {
        var built = ExampleBuild.Get(quantize, groupSize: group);
        string report = Path.Combine(built.Dir, "verify.json");
        var lines = new List<string>();
        VerifyReport r = VerifyStage.Run(built.Model, built.BModel, report, lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(r.Passed);
        Assert.IsTrue(File.Exists(report));
        Assert.AreEqual(1 + 1 + 2 * built.Model.Config.NumLayers + 1, r.Pieces.Count, "embedding, embedding_cache, block_i, block_cache_i, lm_head");
    }
}
