using System.Diagnostics;
using System.Text.RegularExpressions;

namespace LlmBuild.Integration.Tests;

/// <summary>`llmbuild run` on the built example, driven like a user at a terminal (a pseudo-terminal through script(1)).</summary>
[TestClass]
public sealed class RunCommandTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    private static string BuiltExample()
    {
        BuildHarness.Dotnet(BuildHarness.RepoRoot, ["build", Path.Combine("examples", "tiny-qwen2", "model.llmproj")]).AssertSucceeded();
        return Path.Combine(BuildHarness.RepoRoot, "examples", "tiny-qwen2", "bin", "tiny-qwen2.bmodel");
    }

    private static string Cli => Path.Combine(AppContext.BaseDirectory, "llmbuild.dll");

    [TestMethod]
    public void InteractiveChatThroughAPseudoTerminal()
    {
        string bmodel = BuiltExample();
        var psi = new ProcessStartInfo("script")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // script(1) gives the program a real terminal; -e returns its exit code, -q drops script's own banner.
        foreach (string a in new[] { "-qec", $"dotnet \"{Cli}\" run \"{bmodel}\" --max-new-tokens 24", "/dev/null" }) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        process.StandardInput.Write("Once upon a time\nclear\nTell me about the moon\nexit\n");
        process.StandardInput.Flush();
        Assert.IsTrue(process.WaitForExit(120_000), "run finished");
        string output = process.StandardOutput.ReadToEnd();
        Assert.AreEqual(0, process.ExitCode, output + process.StandardError.ReadToEnd());
        StringAssert.Contains(output, "Model: tiny-qwen2.bmodel (SeqLength 256, greedy)");
        Assert.AreEqual(4, Regex.Matches(output, "Question: ").Count, output);
        Assert.AreEqual(2, Regex.Matches(output, @"Answer: \S").Count, "two non-empty answers:\n" + output);
        Assert.AreEqual(2, Regex.Matches(output, @"FTL: \d+\.\d{3} s").Count, output);
        Assert.AreEqual(2, Regex.Matches(output, @"TPS: \d+\.\d\d token/s \(\d+ tokens, stop: (EndOfSequence|MaxNewTokens)\)").Count, output);
        StringAssert.Contains(output, "(history cleared)");
    }

    [TestMethod]
    public void OnePromptGreedyAnswerIsDeterministic()
    {
        string bmodel = BuiltExample();
        string Answer()
        {
            var r = BuildHarness.Dotnet(BuildHarness.RepoRoot, [Cli, "run", bmodel, "-p", "Once upon a time", "--max-new-tokens", "16"], buildFlags: false);
            r.AssertSucceeded();
            return Regex.Match(r.Output, "Answer: (.*)").Groups[1].Value;
        }
        string first = Answer();
        Assert.IsFalse(string.IsNullOrWhiteSpace(first));
        Assert.AreEqual(first, Answer());
    }
}
