using System.CommandLine;
using LlmBuild.Cli.Commands;

namespace LlmBuild.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("LlmBuild: turn a Hugging Face LLM checkpoint into a bmodel for Sophgo chips, and run it.");
        // One line per command; each command lives in Commands/<Name>Command.cs.
        root.Subcommands.Add(CodesCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(LogitsCommand.Create());
        root.Subcommands.Add(ReferenceLogitsCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(TemplateCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(ConvertCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        return CommandRunner.Invoke(root, AliasArguments(args));
    }

    /// <summary>The same program installed as the <c>llm_convert</c> command is <c>llmbuild convert</c>.</summary>
    public static string[] AliasArguments(string[] args) =>
        typeof(Program).Assembly.GetName().Name == "llm_convert" ? ["convert", .. args] : args;
}
