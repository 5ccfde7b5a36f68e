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
