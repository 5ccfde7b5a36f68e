using LlmBuild.Core.Tokenization;

namespace LlmBuild.Integration.Tests;

/// <summary>A real `dotnet build` whose ModelPath names a .gguf file: it builds, writes config/ from the metadata, and the .gguf is an input.</summary>
[TestClass]
public sealed class GgufBuildTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    [TestMethod]
    public void GgufModelPathBuildsVerifiesAndListsTheFileAsInput()
    {
        string dir = BuildHarness.NewTempDirectory("gguf");
        string gguf = Path.Combine(dir, "model", "tiny-llama-q8_0.gguf");
        Directory.CreateDirectory(Path.GetDirectoryName(gguf)!);
        File.Copy(Path.Combine(BuildHarness.RepoRoot, "tests", "fixtures", "gguf", "tiny-llama-q8_0.gguf"), gguf);
        var props = BuildHarness.DefaultProperties();
        props["ModelPath"] = "model/tiny-llama-q8_0.gguf";
        props["Quantize"] = "auto";
        props["SeqLength"] = "48";
        BuildHarness.WriteProject(dir, props);

        var first = BuildHarness.Build(dir);
        first.AssertSucceeded();
        string config = Path.Combine(dir, "bin", "config");
        CollectionAssert.AreEquivalent(new[] { "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json" },
            Directory.GetFiles(config).Select(Path.GetFileName).ToArray());
        Assert.IsTrue(File.Exists(Path.Combine(dir, "bin", "tiny.bmodel")));
        StringAssert.Contains(File.ReadAllText(Path.Combine(dir, "obj", "Debug", "llm", "resolved.json")), "\"w8bf16\"");
        // The fixture's prompt, as transformers tokenized it (tests/fixtures/gguf/README.md).
        int[] golden = [1, 439, 906, 346, 895, 261, 277, 262, 389, 900, 282, 276, 323, 849, 277, 593, 275, 901, 281, 899, 288, 921, 353];
        CollectionAssert.AreEqual(golden, Tokenizer.Load(config).Encode("Once upon a time there was a little robot"));

        var second = BuildHarness.Build(dir);
        second.AssertSucceeded();
        Assert.AreEqual(0, second.RanTasks.Count, "a second build is a no-op:\n" + second.Output);

        File.SetLastWriteTimeUtc(gguf, DateTime.UtcNow);
        var touched = BuildHarness.Build(dir);
        touched.AssertSucceeded();
        foreach (string stage in new[] { Stages.Resolve, Stages.Quantize, Stages.Combine, Stages.Verify })
            Assert.IsTrue(touched.RanTasks.Contains(stage), $"{stage} ran after the .gguf changed:\n{touched.Output}");
    }
}
