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

    /// <summary>Runs a shell command line (for redirections such as <c>&lt;&amp;-</c>) and returns its exit code and
    /// error stream; a command still running after two minutes is killed and fails the test.</summary>
    private static (int Exit, string Error) Shell(string commandLine)
    {
        var psi = new ProcessStartInfo("sh") { RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(commandLine);
        using var process = Process.Start(psi)!;
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"'{commandLine}' still running after 2 minutes");
        }
        return (process.ExitCode, error.GetAwaiter().GetResult());
    }

    [TestMethod]
    public void InteractiveRunWithStandardInputClosedIsACodedErrorNotAHang()
    {
        string bmodel = BuiltExample();
        var (exit, error) = Shell($"exec dotnet \"{Cli}\" run \"{bmodel}\" <&-");
        Assert.AreEqual(1, exit, error);
        StringAssert.StartsWith(error, "error LLMB0711: Standard input is closed");
        // With one prompt there is nothing to read: a closed stdin does not matter.
        (exit, error) = Shell($"exec dotnet \"{Cli}\" run \"{bmodel}\" -p hi --max-new-tokens 2 <&- >/dev/null");
        Assert.AreEqual(0, exit, error);
    }

    [TestMethod]
    public void RunWithStandardOutputClosedIsACodedError()
    {
        string bmodel = BuiltExample();
        var (exit, error) = Shell($"exec dotnet \"{Cli}\" run \"{bmodel}\" -p hi --max-new-tokens 2 >&-");
        Assert.AreEqual(1, exit, error);
        StringAssert.StartsWith(error, "error LLMB0712: Cannot write to standard output");
        Assert.IsFalse(error.Contains("Unhandled exception", StringComparison.Ordinal), error);
    }
}
