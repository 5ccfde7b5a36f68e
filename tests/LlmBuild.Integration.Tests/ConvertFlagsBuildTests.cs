namespace LlmBuild.Integration.Tests;

/// <summary>Today's flags through a real `dotnet build`: an April 2026 project's UseBlockWithKv, and the pipeline package's outputs.</summary>
[TestClass]
public sealed class ConvertFlagsBuildTests
{
    /// <summary>A project that still says UseBlockWithKv gets the history-KV nets, through Sdk.props' default for UseHistoryKv.</summary>
    [TestMethod]
    public void AnOldProjectsUseBlockWithKvStillBuildsHistoryNets()
    {
        string dir = BuildHarness.NewTempDirectory("oldkv");
        var properties = BuildHarness.DefaultProperties();
        properties["UseBlockWithKv"] = "true";
        properties["SeqLength"] = "64";
        BuildHarness.WriteProject(dir, properties);
        var result = BuildHarness.Build(dir, "-p:DryRun=true");
        result.AssertSucceeded();
        foreach (string expected in new[] { "UseHistoryKv           true", "ChunkLength            16", "Dynamic                true", "block_kv_0", "block_cache_0_16", "LLMB0020" })
            StringAssert.Contains(result.Output, expected);
    }

    /// <summary>A pp build writes bin/&lt;name&gt;_pp.tar and its manifest, and a second build is a no-op that keeps them.</summary>
    [TestMethod]
    public void APipelineBuildWritesItsPackage()
    {
        string dir = BuildHarness.NewTempDirectory("pp");
        var properties = BuildHarness.DefaultProperties();
        properties["NumDevice"] = "4";
        properties["DistributeStrategy"] = "pp";
        properties["SeqLength"] = "48";
        BuildHarness.WriteProject(dir, properties);
        BuildHarness.Build(dir).AssertSucceeded();
        string bin = Path.Combine(dir, "bin");
        string[] package = Directory.GetFiles(bin, "*_pp.*").Select(Path.GetFileName).Order().ToArray()!;
        Assert.AreEqual(2, package.Length, string.Join(", ", package));
        StringAssert.EndsWith(package[0], "_pp.json");
        StringAssert.EndsWith(package[1], "_pp.tar");
        var before = BuildHarness.TimeTree(bin);
        BuildHarness.Build(dir).AssertSucceeded();
        CollectionAssert.AreEqual(before, BuildHarness.TimeTree(bin), "no-op rebuild");
        BuildHarness.Dotnet(dir, ["clean", "model.llmproj"]).AssertSucceeded();
        Assert.AreEqual(0, Directory.Exists(bin) ? Directory.GetFiles(bin, "*_pp.*").Length : 0, "dotnet clean removes the package");
    }
}
