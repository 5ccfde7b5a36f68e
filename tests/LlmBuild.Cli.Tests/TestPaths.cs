using System.CommandLine;
using LlmBuild.Cli.Commands;
using LlmBuild.Cli.Convert;

namespace LlmBuild.Cli.Tests;

[AttributeUsage(AttributeTargets.Assembly)]
public sealed class RepositoryRootAttribute(string path) : Attribute
{
    public string Path { get; } = path;
}

public static class TestPaths
{
    public static string RepoRoot { get; } = Path.GetFullPath(
        typeof(TestPaths).Assembly.GetCustomAttributes(typeof(RepositoryRootAttribute), false).Cast<RepositoryRootAttribute>().Single().Path);

    public static string ExampleCheckpoint => Path.Combine(RepoRoot, "examples", "tiny-qwen2", "checkpoint");

    public static string NewTempDirectory(string label)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-cli-tests", $"{label}-{Guid.NewGuid():N}"[..(label.Length + 9)]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Parses `llmbuild convert ARGS` and returns the parse result and what it asked for.</summary>
    public static (ParseResult Result, ConvertRequest Request) Parse(params string[] args)
    {
        var command = ConvertCommand.Create(out var options);
        var result = command.Parse(args);
        // A result with errors is never read (the command's action does not run).
        return (result, result.Errors.Count == 0 ? options.Read(result) : null!);
    }

    /// <summary>Parses and plans, with relative paths taken from <paramref name="cwd"/> (the repository root by default).</summary>
    public static ConvertPlan Plan(string[] args, string? cwd = null)
    {
        var (result, request) = Parse(args);
        Assert.AreEqual(0, result.Errors.Count, string.Join("; ", result.Errors.Select(e => e.Message)));
        return ConvertPlan.Create(request, cwd ?? RepoRoot);
    }

    /// <summary>The example model at w4bf16, seq 64, plus <paramref name="extra"/> flags.</summary>
    public static string[] Example(params string[] extra) => ["-m", ExampleCheckpoint, "-s", "64", "-q", "w4bf16", .. extra];

    /// <summary>A model folder holding only a config.json of the given model_type (enough for the checks that precede resolve).</summary>
    public static string ConfigOnlyModel(string modelType)
    {
        string dir = NewTempDirectory(modelType);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""{ "model_type": "{{modelType}}" }""");
        return dir;
    }
}
