using System.Xml.Linq;
using LlmBuild.Cli.Commands;
using LlmBuild.Cli.Convert;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Tests;

/// <summary>The model.llmproj convert writes: every option, the SDK by absolute path, outputs in out_dir.</summary>
[TestClass]
public sealed class ProjectFileTests
{
    private static ConvertPlan Plan(string outDir, params string[] extra) => TestPaths.Plan(TestPaths.Example([.. extra, "-o", outDir]));

    [TestMethod]
    public void TheProjectSetsEveryOptionAndImportsTheSdk()
    {
        string outDir = TestPaths.NewTempDirectory("proj");
        var plan = Plan(outDir, "-g", "32", "--symmetric", "-c", "bm1688", "--num_core", "1", "-b", "2", "--do_sample", "--max_pixels", "672,896");
        string text = ProjectFile.Generate(plan, "/opt/sdk/Sdk");
        StringAssert.StartsWith(text, ProjectFile.Marker);

        var project = XDocument.Parse(text).Root!;
        var imports = project.Elements("Import").Select(i => (string)i.Attribute("Project")!).ToArray();
        CollectionAssert.AreEqual(new[] { "/opt/sdk/Sdk/Sdk.props", "/opt/sdk/Sdk/Sdk.targets" }, imports);
        var properties = project.Elements("PropertyGroup").SelectMany(g => g.Elements()).ToDictionary(e => e.Name.LocalName, e => e.Value);
        var expected = new Dictionary<string, string>
        {
            ["ImportDirectoryBuildProps"] = "false", ["ImportDirectoryBuildTargets"] = "false", ["ImportDirectoryPackagesProps"] = "false",
            ["ModelPath"] = TestPaths.ExampleCheckpoint, ["SeqLength"] = "64", ["Quantize"] = "w4bf16", ["QGroupSize"] = "32",
            ["Symmetric"] = "true", ["Chip"] = "bm1688", ["NumDevice"] = "1", ["DistributeStrategy"] = "tp", ["NumCore"] = "1",
            ["Batch"] = "2", ["MaxInputLength"] = "0", ["MaxPrefillKvLength"] = "0", ["UseHistoryKv"] = "false", ["ChunkLength"] = "0", ["AudioLength"] = "0",
            ["SharePrompt"] = "false", ["MaxPixels"] = "672,896", ["LoraMaxRank"] = "0", ["DoSample"] = "true",
            ["EmbeddingDisk"] = "false", ["Dynamic"] = "false", ["OnlyMlir"] = "false", ["Debug"] = "false",
            ["LlmModelName"] = "checkpoint_w4bf16_seq64_bm1688_1core_static", ["OutputPath"] = "$(MSBuildProjectDirectory)/",
        };
        CollectionAssert.AreEquivalent(expected.ToList(), properties.ToList());
        Assert.AreEqual(Path.Combine(outDir, "model.llmproj"), plan.ProjectPath);
    }

    [TestMethod]
    public void EveryBuildOptionHasAProperty()
    {
        // A new option in BuildOptions must reach the generated project (DryRun excepted: a dry run writes no project).
        var plan = Plan(TestPaths.NewTempDirectory("opts"));
        var names = XDocument.Parse(ProjectFile.Generate(plan, "/sdk")).Root!.Elements("PropertyGroup").SelectMany(g => g.Elements()).Select(e => e.Name.LocalName).ToHashSet();
        foreach (var p in typeof(Core.Plan.BuildOptions).GetProperties().Where(p => p.CanWrite && p.Name != "DryRun"))
            Assert.IsTrue(names.Contains(p.Name), p.Name);
    }

    [TestMethod]
    public void ValuesAreEscapedForMSBuildAndXml()
    {
        Assert.AreEqual("a%24(b)%40(c)%3Bd%25e%27f&amp;&lt;g&gt;", ProjectFile.Escape("a$(b)@(c);d%e'f&<g>"));
        Assert.AreEqual("/plain/path-1_2.x", ProjectFile.Escape("/plain/path-1_2.x"));
    }

    [TestMethod]
    public void TheProjectIsWrittenOnlyWhenItChangesAndNeverOverAUsersProject()
    {
        string outDir = TestPaths.NewTempDirectory("write");
        var plan = Plan(outDir);
        string text = ProjectFile.Generate(plan, "/sdk");
        ConvertCommand.WriteProject(plan, text);
        var written = File.GetLastWriteTimeUtc(plan.ProjectPath);
        File.SetLastWriteTimeUtc(plan.ProjectPath, written.AddHours(-1));
        ConvertCommand.WriteProject(plan, text);
        Assert.AreEqual(written.AddHours(-1), File.GetLastWriteTimeUtc(plan.ProjectPath), "same text: the file is left alone");
        ConvertCommand.WriteProject(plan, text.Replace("<SeqLength>64<", "<SeqLength>65<"));
        StringAssert.Contains(File.ReadAllText(plan.ProjectPath), "<SeqLength>65<");

        File.WriteAllText(plan.ProjectPath, "<Project Sdk=\"LlmBuild.Sdk\" />");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ConvertCommand.WriteProject(plan, text));
        Assert.AreEqual(ErrorCodes.BadOutputDirectory, e.Code);
        Assert.AreEqual("<Project Sdk=\"LlmBuild.Sdk\" />", File.ReadAllText(plan.ProjectPath));
    }

    [TestMethod]
    public void TheSdkIsFoundInTheToolPackageInTheRepositoryOrWhereTheVariableSays()
    {
        string tool = TestPaths.NewTempDirectory("tool");
        Assert.ThrowsExactly<LlmBuildException>(() => SdkLocator.Find(tool, null));
        var bad = Assert.ThrowsExactly<LlmBuildException>(() => SdkLocator.Find(tool, tool));
        Assert.AreEqual(ErrorCodes.SdkNotFound, bad.Code);

        string sdk = Path.Combine(tool, "sdk", "Sdk");
        Directory.CreateDirectory(sdk);
        File.WriteAllText(Path.Combine(sdk, "Sdk.props"), "<Project />");
        File.WriteAllText(Path.Combine(sdk, "Sdk.targets"), "<Project />");
        Assert.AreEqual(sdk, SdkLocator.Find(tool, null));
        Assert.AreEqual(sdk, SdkLocator.Find(TestPaths.NewTempDirectory("elsewhere"), sdk));

        // Running from a build inside the repository (as these tests do): the repository's SDK.
        Assert.AreEqual(Path.Combine(TestPaths.RepoRoot, "build", "LlmBuild.Sdk", "Sdk"), SdkLocator.Find(AppContext.BaseDirectory, null));
    }
}
