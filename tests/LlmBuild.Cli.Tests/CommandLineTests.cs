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
        Assert.AreEqual("error LLMB0001: -q/--quantize: Property Quantize='int3' is invalid: expected one of auto, bf16, f16, w8bf16, w8f16, w4bf16, w4f16, f32.", error.Trim());
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
    [DataRow(new[] { "frobnicate", "--x" }, "unknown command 'frobnicate'")]
    [DataRow(new string[0], "no command was given")]
    public void AnUnknownCommandIsNamed(string[] args, string named)
    {
        var (exit, _, error) = RunMain(args);
        Assert.AreEqual(1, exit);
        StringAssert.StartsWith(error, $"error {ErrorCodes.BadCommandLine}: {named}; the commands are codes, tokenize, ");
        foreach (string command in new[] { "convert", "run", "serve", "inspect" }) StringAssert.Contains(error, command);
        Assert.IsFalse(error.Contains("Required command was not provided", StringComparison.Ordinal), error);
    }

    [TestMethod]
    public void AMessagesOrInputFileThatIsAFolderIsACodedError()
    {
        string folder = TestPaths.NewTempDirectory("folder");
        var (exit, _, error) = RunMain("template", "--config", TestPaths.ExampleCheckpoint, "--messages", folder);
        Assert.AreEqual(1, exit);
        Assert.AreEqual($"error {ErrorCodes.ReadFailed}: --messages: '{folder}' is a folder; give the path of a file.", error.Trim());
        (exit, _, error) = RunMain("tokenize", "--config", TestPaths.ExampleCheckpoint, "--input", folder);
        Assert.AreEqual(1, exit);
        Assert.AreEqual($"error {ErrorCodes.ReadFailed}: --input: '{folder}' is a folder; give the path of a file.", error.Trim());
    }

    [TestMethod]
    [DataRow("-5")]
    [DataRow("0")]
    public void ANonPositiveMaxNewTokensIsACodedError(string value)
    {
        // Checked before the model is opened: the bmodel need not exist.
        var (exit, _, error) = RunMain("run", "missing.bmodel", "--max-new-tokens", value);
        Assert.AreEqual(1, exit);
        Assert.AreEqual($"error {ErrorCodes.InvalidOptionValue}: --max-new-tokens {value} is out of range: it must be at least 1.", error.Trim());
    }

    [TestMethod]
    [DataRow("""{"temperature": "hot"}""", "temperature must be a number of at least 0, found the string \"hot\"")]
    [DataRow("""{"top_k": -3}""", "top_k must be an integer from 0 to 2147483647, found the number -3")]
    public void ABadGenerationConfigIsACodedErrorEvenForAGreedyRun(string generationConfig, string fragment)
    {
        // Checked before the model is opened: the bmodel need not exist.
        string config = TestPaths.NewTempDirectory("genconfig");
        foreach (string name in new[] { "vocab.json", "merges.txt", "tokenizer_config.json" })
            File.Copy(Path.Combine(TestPaths.ExampleCheckpoint, name), Path.Combine(config, name));
        File.WriteAllText(Path.Combine(config, "generation_config.json"), generationConfig);
        var (exit, _, error) = RunMain("run", "missing.bmodel", "--config", config, "-p", "hi");
        Assert.AreEqual(1, exit);
        StringAssert.StartsWith(error, $"error {ErrorCodes.BadGenerationConfig}: {Path.Combine(config, "generation_config.json")}: {fragment}.");
    }

    [TestMethod]
    public void AClosedStandardOutputIsACodedError()
    {
        // `sh -c 'exec … >&-'` starts the tool with file descriptor 1 closed.
        string tool = Path.Combine(AppContext.BaseDirectory, "llmbuild.dll");
        var psi = new System.Diagnostics.ProcessStartInfo("sh") { RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { "-c", $"exec dotnet \"{tool}\" codes >&-" }) psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        string error = process.StandardError.ReadToEnd();
        Assert.IsTrue(process.WaitForExit(60_000));
        Assert.AreEqual(1, process.ExitCode, error);
        StringAssert.StartsWith(error, $"error {ErrorCodes.StandardOutputClosed}: Cannot write to standard output");
        Assert.IsFalse(error.Contains("Unhandled exception", StringComparison.Ordinal), error);
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
    public void ACrashedTasksStackTraceStaysInTheBuildLog()
    {
        // MSBuild prints a crashed task's exception one line per frame behind the error's prefix (MSB4018).
        var (exit, output, error, outDir) = Convert(FakeSdk("""
            <Error Code="MSB4018" Text="The &quot;QuantizeLlmWeights&quot; task failed unexpectedly.&#10;System.OverflowException: Arithmetic operation resulted in an overflow.&#10;   at LlmBuild.Core.Checkpoints.SafetensorsReader.Read(String path) in /src/SafetensorsReader.cs:line 42&#10;   at Microsoft.Build.BackEnd.TaskBuilder.ExecuteInstantiatedTask(TaskExecutionHost taskExecutionHost)&#10;--- End of stack trace from previous location ---" />
            """));
        Assert.AreEqual(1, exit);
        string shown = output + error;
        StringAssert.Contains(shown, "task failed unexpectedly");
        StringAssert.Contains(shown, "System.OverflowException: Arithmetic operation resulted in an overflow.");
        Assert.IsFalse(shown.Contains(" at LlmBuild.Core", StringComparison.Ordinal), shown);
        Assert.IsFalse(shown.Contains("--- End of stack trace", StringComparison.Ordinal), shown);
        string log = Path.Combine(outDir, "obj", "build.log");
        StringAssert.Contains(error, $"error {ErrorCodes.BuildFailed}: dotnet build of ");
        StringAssert.Contains(error, $"its whole output (with any stack traces) is in '{log}'");
        StringAssert.Contains(File.ReadAllText(log), "at LlmBuild.Core.Checkpoints.SafetensorsReader.Read(String path) in /src/SafetensorsReader.cs:line 42");
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
