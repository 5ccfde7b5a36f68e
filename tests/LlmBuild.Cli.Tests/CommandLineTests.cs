using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Tests;

/// <summary>The whole program: exit codes and coded error lines on the error stream.</summary>
[TestClass]
[DoNotParallelize]
public sealed class CommandLineTests
{
    private static (int Exit, string Out, string Error) RunMain(params string[] args)
    {
        var (oldOut, oldError) = (Console.Out, Console.Error);
        var output = new StringWriter();
        var error = new StringWriter();
        Console.SetOut(output);
        Console.SetError(error);
        try
        {
            return (Program.Main(args), output.ToString(), error.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
    }

    [TestMethod]
    public void ASyntaxErrorIsACodedErrorLine()
    {
        var (exit, _, error) = RunMain("convert", "-m", "x", "--bogus");
        Assert.AreEqual(1, exit);
        StringAssert.StartsWith(error, $"error {ErrorCodes.BadCommandLine}: ");
        StringAssert.Contains(error, "--bogus");
        StringAssert.Contains(error, "llmbuild convert --help");
    }

    [TestMethod]
    public void ABadValueIsTheBuildsCodedErrorLine()
    {
        var (exit, output, error) = RunMain("convert", "-m", TestPaths.ExampleCheckpoint, "-s", "64", "-q", "int3");
        Assert.AreEqual(1, exit);
        Assert.AreEqual("", output);
        Assert.AreEqual("error LLMB0001: -q/--quantize: Property Quantize='int3' is invalid: expected one of auto, bf16, f16, w8bf16, w8f16, w4bf16, w4f16.", error.Trim());
    }

    [TestMethod]
    public void HelpListsEveryFlag()
    {
        var (exit, output, _) = RunMain("convert", "--help");
        Assert.AreEqual(0, exit);
        foreach (var flag in Convert.ConvertFlags.Properties)
            foreach (string name in flag.Names)
                StringAssert.Contains(output, name);
    }

    [TestMethod]
    public void TheLlmConvertAliasIsConvert()
    {
        // This assembly is llmbuild, so arguments pass unchanged; the alias package's assembly is llm_convert.
        CollectionAssert.AreEqual(new[] { "-m", "x" }, Program.AliasArguments(["-m", "x"]));
    }
}

/// <summary>A failing build, through a stand-in SDK whose Build target fails at once (a real build is the end-to-end test's job).</summary>
[TestClass]
[DoNotParallelize]
public sealed class FailingBuildTests
{
    private static string FakeSdk(string errorElement)
    {
        string sdk = TestPaths.NewTempDirectory("fakesdk");
        File.WriteAllText(Path.Combine(sdk, "Sdk.props"), "<Project />");
        // The stage tasks report their start as an event in the file the tool names (LlmBuildProgressFile).
        File.WriteAllText(Path.Combine(sdk, "Sdk.targets"), $$"""
            <Project>
              <Target Name="Build">
                <WriteLinesToFile File="$(LlmBuildProgressFile)" Lines='{"kind":"StageStarted","stage":"ResolveLlmConfig"}' />
                {{errorElement}}
              </Target>
              <Target Name="Restore" />
            </Project>
            """);
        return sdk;
    }

    private static (int Exit, string Out, string Error, string OutDir) Convert(string sdk)
    {
        string outDir = Path.Combine(TestPaths.NewTempDirectory("fail"), "out");
        var (_, request) = TestPaths.Parse(TestPaths.Example("-o", outDir));
        var (oldOut, oldError) = (Console.Out, Console.Error);
        var output = new StringWriter();
        var error = new StringWriter();
        Console.SetOut(output);
        Console.SetError(error);
        try
        {
            int exit;
            try
            {
                exit = Commands.ConvertCommand.Run(request, output, sdk);
            }
            catch (LlmBuildException e)
            {
                error.WriteLine($"error {e.Code}: {e.Message}");
                exit = 1;
            }
            return (exit, output.ToString(), error.ToString(), outDir);
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
    }

    [TestMethod]
    public void TheBuildsCodedErrorsPassThroughAndNothingIsLogged()
    {
        var (exit, output, error, outDir) = Convert(FakeSdk("""<Error Code="LLMB0006" Text="block_0: tensor missing" />"""));
        Assert.AreEqual(1, exit, output + error);
        StringAssert.Contains(output, "[1/5] resolve");
        StringAssert.Contains(error, "error LLMB0006: block_0: tensor missing");
        Assert.IsFalse(error.Contains(ErrorCodes.BuildFailed, StringComparison.Ordinal), "the build's own code is enough");
        Assert.IsTrue(File.Exists(Path.Combine(outDir, "model.llmproj")));
        Assert.IsFalse(File.Exists(Path.Combine(outDir, "model.log")));
    }

    [TestMethod]
    public void AFailureWithoutACodeIsReportedAsABuildFailure()
    {
        var (exit, _, error, _) = Convert(FakeSdk("""<Error Text="something else broke" />"""));
        Assert.AreEqual(1, exit);
        StringAssert.Contains(error, "something else broke");
        StringAssert.Contains(error, $"error {ErrorCodes.BuildFailed}: dotnet build of ");
    }
}
