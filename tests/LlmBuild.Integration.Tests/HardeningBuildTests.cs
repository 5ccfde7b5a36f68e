using LlmBuild.Tests;

namespace LlmBuild.Integration.Tests;

/// <summary>Issue 19 on real `dotnet build` runs: concurrent builds of one project (cause 8), project names (6), read-only obj/ (7).</summary>
[TestClass]
public sealed class HardeningBuildTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    [TestMethod]
    public void TwoSimultaneousBuildsOfOneProjectBothSucceed()
    {
        string dir = BuildHarness.NewTempDirectory("concurrent");
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        // The task assembly is shared by every build in the repository: build it first, so the two builds race only on the project.
        BuildHarness.Build(dir, "-p:DryRun=true").AssertSucceeded();
        // The builds must overlap however late the second process starts (a build of the tiny model takes ~2 s, a loaded
        // test machine can start a process later than that): the first build past resolve holds the build lock and pauses
        // there, so the other finds the lock taken when its first stage with work (quantize) asks for it.
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties(), """
              <Target Name="LlmBuildAfterResolve" Condition="!Exists('$(MSBuildProjectDirectory)/paused')">
                <Touch Files="$(MSBuildProjectDirectory)/paused" AlwaysCreate="true" />
                <Exec Command="sleep 8" />
              </Target>
            """);

        var first = Task.Run(() => BuildHarness.Build(dir));
        var second = Task.Run(() => BuildHarness.Build(dir));
        BuildResult[] results = Task.WhenAll(first, second).GetAwaiter().GetResult();

        foreach (BuildResult r in results) r.AssertSucceeded();
        Assert.AreEqual(1, results.Count(r => r.Output.Contains("waiting for another build of this project", StringComparison.Ordinal)),
            "one build waited for the other:\n" + string.Join("\n-----\n", results.Select(r => r.Output)));
        Assert.IsTrue(File.Exists(Path.Combine(dir, "bin", "tiny.bmodel")));
        Assert.IsFalse(File.Exists(Path.Combine(dir, "obj", "llmbuild.lock")), "the lock is released");
        Assert.AreEqual(0, Directory.GetFiles(dir, ".*.tmp", SearchOption.AllDirectories).Length, "no temporaries left");
        // The shared storage stayed consistent: every piece bmodel's coefficient references match the weight file it reads.
        foreach (string piece in Directory.GetFiles(Path.Combine(dir, "obj", "Debug", "llm", "bm1684x"), "*.bmodel"))
        {
            var references = LlmBuild.Core.Codegen.PieceCoeffReferences.TryRead(piece);
            Assert.IsNotNull(references, piece);
            references.Validate(piece);
        }
    }

    [TestMethod]
    public void AnEmptyModelNameIsRefused()
    {
        string dir = BuildHarness.NewTempDirectory("noname");
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        var result = BuildHarness.Build(dir, "-p:LlmModelName=");
        Assert.AreNotEqual(0, result.ExitCode);
        StringAssert.Contains(result.Output, "error LLMB0001");
        StringAssert.Contains(result.Output, "LlmModelName");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "bin", ".bmodel")));
    }

    [TestMethod]
    public void AReadOnlyIntermediateFolderIsACodedError()
    {
        string dir = BuildHarness.NewTempDirectory("readonly");
        BuildHarness.WriteProject(dir, BuildHarness.DefaultProperties());
        string llm = Path.Combine(dir, "obj", "Debug", "llm");
        using (new ReadOnlyFolder(llm))
        {
            var result = BuildHarness.Build(dir);
            Assert.AreNotEqual(0, result.ExitCode);
            StringAssert.Contains(result.Output, "error LLMB0901");
            StringAssert.Contains(result.Output, Path.Combine(llm, "options.stamp"));
            Assert.IsFalse(result.Output.Contains("MSB3491", StringComparison.Ordinal), result.Output);
        }
        Assert.IsFalse(File.Exists(Path.Combine(dir, "obj", "llmbuild.lock")), "a failed build releases the lock");
    }
}
