using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>Issue 19, cause 6: LlmModelName names bin/&lt;name&gt;.bmodel, so it must be a plain file name.</summary>
[TestClass]
public sealed class ModelNameTests
{
    private static Dictionary<string, string?> Props(string? name) => new()
    {
        ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "16", ["Quantize"] = "bf16", ["LlmModelName"] = name,
    };

    [TestMethod]
    [DataRow("")]
    [DataRow("   ")]
    [DataRow(".")]
    [DataRow("..")]
    [DataRow("../../x")]
    [DataRow("a/b")]
    [DataRow(" padded ")]
    [DataRow(".hidden")]
    [DataRow("trailing.")]
    public void InvalidNameIsRefusedAtResolve(string name)
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ResolveStage.Resolve(Props(name), new List<LlmBuildWarning>()));
        Assert.AreEqual(ErrorCodes.InvalidProperty, e.Code);
        StringAssert.Contains(e.Message, "LlmModelName");
    }

    [TestMethod]
    public void PlainNamesAndAnAbsentNameResolve()
    {
        Assert.AreEqual("qwen2.5-0.5b_w4", ResolveStage.Resolve(Props("qwen2.5-0.5b_w4"), new List<LlmBuildWarning>()).Name);
        var props = Props(null);
        props.Remove("LlmModelName");
        Assert.AreEqual("checkpoint", ResolveStage.Resolve(props, new List<LlmBuildWarning>()).Name, "callers that pass no name get the model folder's");
    }
}
