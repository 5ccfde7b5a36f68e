using System.CommandLine;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Commands;

/// <summary>
/// Runs the parsed command. Coded errors become one "error LLMB####: ..." line and exit code 1; so do command
/// line errors (unknown flag, missing value), as <see cref="ErrorCodes.BadCommandLine"/>.
/// </summary>
public static class CommandRunner
{
    public static int Invoke(RootCommand root, string[] args)
    {
        try
        {
            var result = root.Parse(args);
            if (result.Errors.Count > 0)
            {
                foreach (var error in result.Errors) Console.Error.WriteLine($"error {ErrorCodes.BadCommandLine}: {error.Message}");
                // The tool's own name: llmbuild, or llm_convert for the alias package (whose only command is convert).
                string tool = typeof(CommandRunner).Assembly.GetName().Name!;
                var path = CommandPath(result).ToList();
                if (tool == "llm_convert" && path.FirstOrDefault() == "convert") path.RemoveAt(0);
                Console.Error.WriteLine($"Run '{string.Join(' ', [tool, .. path])} --help' for the flags.");
                return 1;
            }
            // Our own handler below prints coded errors; System.CommandLine's would print "Unhandled exception".
            return result.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (LlmBuildException e)
        {
            Console.Error.WriteLine($"error {e.Code}: {e.Message}");
            return 1;
        }
    }

    private static IEnumerable<string> CommandPath(ParseResult result)
    {
        var names = new Stack<string>();
        for (var c = result.CommandResult; c.Parent is System.CommandLine.Parsing.CommandResult parent; c = parent) names.Push(c.Command.Name);
        return names;
    }
}
