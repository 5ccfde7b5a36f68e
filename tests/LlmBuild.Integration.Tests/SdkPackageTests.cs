namespace LlmBuild.Integration.Tests;

/// <summary>The SDK as users get it: packed into a NuGet package and used as &lt;Project Sdk="LlmBuild.Sdk"&gt; outside the repository.</summary>
[TestClass]
public sealed class SdkPackageTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    [TestMethod]
    public void PackedSdkBuildsAProjectOutsideTheRepository()
    {
        string feed = BuildHarness.NewTempDirectory("feed");
        // A unique version so the machine's package cache never serves an older pack.
        string version = $"0.1.0-test{DateTime.UtcNow:yyyyMMddHHmmss}{Random.Shared.Next(1000):000}";
        string sdkProject = Path.Combine(BuildHarness.RepoRoot, "build", "LlmBuild.Sdk", "LlmBuild.Sdk.csproj");
        BuildHarness.Dotnet(BuildHarness.RepoRoot, ["pack", sdkProject, "-c", "Release", "-o", feed, $"-p:PackageVersion={version}"]).AssertSucceeded();
        Assert.IsTrue(File.Exists(Path.Combine(feed, $"LlmBuild.Sdk.{version}.nupkg")));
        // The package's task assembly is the ReadyToRun publish the repository's SDK loads.
        string unpacked = BuildHarness.NewTempDirectory("sdkpkg");
        System.IO.Compression.ZipFile.ExtractToDirectory(Path.Combine(feed, $"LlmBuild.Sdk.{version}.nupkg"), unpacked);
        foreach (string name in new[] { "LlmBuild.Tasks.dll", "LlmBuild.Core.dll" })
            Assert.IsTrue(TaskAssemblyBuildTests.IsReadyToRun(Path.Combine(unpacked, "tasks", "net10.0", name)), name + " is ReadyToRun in the package");

        string dir = BuildHarness.NewTempDirectory("sdkuser");
        File.WriteAllText(Path.Combine(dir, "global.json"), $$"""{ "msbuild-sdks": { "LlmBuild.Sdk": "{{version}}" } }""");
        File.WriteAllText(Path.Combine(dir, "NuGet.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="llmbuild-test-feed" value="{feed}" />
              </packageSources>
            </configuration>
            """);
        var props = BuildHarness.DefaultProperties();
        File.WriteAllText(Path.Combine(dir, "model.llmproj"), $"""
            <Project Sdk="LlmBuild.Sdk">
              <PropertyGroup>
            {string.Join("\n", props.Select(p => $"    <{p.Key}>{p.Value}</{p.Key}>"))}
              </PropertyGroup>
            </Project>
            """);
        // A private package folder: the machine's cache would keep every test version of the SDK forever.
        var packages = new Dictionary<string, string> { ["NUGET_PACKAGES"] = Path.Combine(dir, "packages") };
        var result = BuildHarness.Dotnet(dir, ["build", "model.llmproj"], environment: packages);
        result.AssertSucceeded();
        StringAssert.Contains(result.Output, "CombineLlmBModel: running");
        Assert.IsFalse(result.Output.Contains("building the task assembly from source"), "the package's task assembly is used");
        Assert.IsTrue(File.Exists(Path.Combine(dir, "bin", "tiny.bmodel")));

        var again = BuildHarness.Dotnet(dir, ["build", "model.llmproj"], environment: packages);
        again.AssertSucceeded();
        Assert.AreEqual(0, again.RanTasks.Count, "second build is a no-op:\n" + again.Output);
    }

    [TestMethod]
    public void TheReadmeExampleBuildsInPlace()
    {
        var result = BuildHarness.Dotnet(BuildHarness.RepoRoot, ["build", Path.Combine("examples", "tiny-qwen2", "model.llmproj")]);
        result.AssertSucceeded();
        string bin = Path.Combine(BuildHarness.RepoRoot, "examples", "tiny-qwen2", "bin");
        Assert.IsTrue(File.Exists(Path.Combine(bin, "tiny-qwen2.bmodel")));
        Assert.IsTrue(File.Exists(Path.Combine(bin, "config", "tokenizer_config.json")));
    }
}
