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
        ConsoleStreams.GuardOutput();
        try
        {
            var result = root.Parse(args);
            // The tool's own name: llmbuild, or llm_convert for the alias package (whose only command is convert).
            string tool = typeof(CommandRunner).Assembly.GetName().Name!;
            if (result.Errors.Count > 0 && result.CommandResult.Command == root)
            {
                // No command matched: name what was given instead of System.CommandLine's "Required command was not provided".
                string given = args.Length == 0 || args[0].StartsWith('-') ? "no command was given" : $"unknown command '{args[0]}'";
                ConsoleStreams.WriteError($"error {ErrorCodes.BadCommandLine}: {given}; the commands are {string.Join(", ", root.Subcommands.Select(c => c.Name))}.");
                ConsoleStreams.WriteError($"Run '{tool} --help' for what each does.");
                return 1;
            }
            if (result.Errors.Count > 0)
            {
                foreach (var error in result.Errors) ConsoleStreams.WriteError($"error {ErrorCodes.BadCommandLine}: {error.Message}");
                var path = CommandPath(result).ToList();
                if (tool == "llm_convert" && path.FirstOrDefault() == "convert") path.RemoveAt(0);
                ConsoleStreams.WriteError($"Run '{string.Join(' ', [tool, .. path])} --help' for the flags.");
                return 1;
            }
            // Our own handler below prints coded errors; System.CommandLine's would print "Unhandled exception".
            return result.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (LlmBuildException e)
        {
            ConsoleStreams.WriteError($"error {e.Code}: {e.Message}");
            return 1;
        }
    }

    /// <summary>An optional integer option's value, which must be at least <paramref name="min"/> when given.</summary>
    public static int? AtLeast(int? value, int min, string flag) =>
        value is not { } v || v >= min ? value
            : throw new LlmBuildException(ErrorCodes.InvalidOptionValue, $"{flag} {v} is out of range: it must be at least {min}.");

    private static IEnumerable<string> CommandPath(ParseResult result)
    {
        var names = new Stack<string>();
        for (var c = result.CommandResult; c.Parent is System.CommandLine.Parsing.CommandResult parent; c = parent) names.Push(c.Command.Name);
        return names;
    }
}
