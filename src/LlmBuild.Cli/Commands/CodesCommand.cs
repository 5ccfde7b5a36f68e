using System.CommandLine;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Commands;

/// <summary><c>llmbuild codes</c>: every diagnostic code with its summary.</summary>
public static class CodesCommand
{
    public static Command Create()
    {
        var command = new Command("codes", "List every LLMB#### diagnostic code.");
        command.SetAction(_ =>
        {
            foreach (var (code, _, summary) in ErrorCodes.All) Console.WriteLine($"{code}  {summary}");
            return 0;
        });
        return command;
    }
}
