using System.Collections.Concurrent;
using System.Text.Json;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>Paths to the repository's tokenizer fixtures, and tokenizers loaded once per test run.</summary>
internal static class TokenizerFixtures
{
    private static readonly ConcurrentDictionary<string, Lazy<Tokenizer>> Loaded = new();

    public static string RepoRoot { get; } = FindRoot();

    public static string Fixture(string name) => Path.Combine(RepoRoot, "tests", "fixtures", name);

    public static string ExampleConfig => Path.Combine(RepoRoot, "examples", "tiny-qwen2", "checkpoint");

    public static Tokenizer Get(string fixture) =>
        Loaded.GetOrAdd(fixture, f => new Lazy<Tokenizer>(() => Tokenizer.Load(Fixture(f)))).Value;

    public static JsonElement Goldens(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoRoot, "tests", "fixtures", "goldens", name)));
        return doc.RootElement.Clone();
    }

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "tests", "fixtures", "goldens"))) return dir.FullName;
        throw new InvalidOperationException("Cannot find the repository root (tests/fixtures/goldens) above " + AppContext.BaseDirectory);
    }
}
