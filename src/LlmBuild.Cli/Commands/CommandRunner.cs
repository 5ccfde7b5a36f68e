using System.CommandLine;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Commands;

/// <summary>Runs the parsed command; coded errors become one "error LLMB####: ..." line and exit code 1.</summary>
public static class CommandRunner
{
    public static int Invoke(RootCommand root, string[] args)
    {
        try
        {
            // Coded errors are reported here, as one line, not as System.CommandLine's "Unhandled exception".
            return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (LlmBuildException e)
        {
            Console.Error.WriteLine($"error {e.Code}: {e.Message}");
            return 1;
        }
    }
}
