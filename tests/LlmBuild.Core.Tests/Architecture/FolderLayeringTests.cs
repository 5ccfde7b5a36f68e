using System.Text.RegularExpressions;

namespace LlmBuild.Core.Tests.Architecture;

/// <summary>
/// DESIGN §1: Core's folders follow the data flow and an arrow never points in a circle. Reads every source file's
/// <c>using LlmBuild.Core.X</c> lines and fully qualified <c>LlmBuild.Core.X.</c> names, builds the folder graph and
/// fails on any cycle (naming it), so the layering stays true as the code grows.
/// </summary>
[TestClass]
public sealed class FolderLayeringTests
{
    private static readonly Regex Reference = new(@"\bLlmBuild\.Core\.([A-Z][A-Za-z0-9]*)", RegexOptions.Compiled);

    private static string CoreDirectory
    {
        get
        {
            string dir = AppContext.BaseDirectory;
            while (!File.Exists(Path.Combine(dir, "LlmBuild.sln"))) dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("repository root not found");
            return Path.Combine(dir, "src", "LlmBuild.Core");
        }
    }

    /// <summary>Folder → the folders its files refer to (comments excluded).</summary>
    public static Dictionary<string, SortedSet<string>> FolderGraph(string coreDir)
    {
        var graph = new Dictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        foreach (string file in Directory.EnumerateFiles(coreDir, "*.cs", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(coreDir, file);
            string[] parts = relative.Split(Path.DirectorySeparatorChar);
            if (parts.Length < 2 || parts[0] is "obj" or "bin") continue;
            string folder = parts[0];
            var edges = graph.TryGetValue(folder, out var e) ? e : graph[folder] = new SortedSet<string>(StringComparer.Ordinal);
            foreach (string line in File.ReadLines(file))
            {
                string code = line.Split("//", 2)[0];
                foreach (Match m in Reference.Matches(code))
                    if (m.Groups[1].Value != folder && m.Groups[1].Value != "Tests") edges.Add(m.Groups[1].Value);
            }
        }
        return graph;
    }

    /// <summary>One cycle of the graph as "A → B → A", or null.</summary>
    public static string? FindCycle(Dictionary<string, SortedSet<string>> graph)
    {
        var state = new Dictionary<string, int>(StringComparer.Ordinal); // 1 = on the path, 2 = done
        var path = new List<string>();
        string? Visit(string node)
        {
            state[node] = 1;
            path.Add(node);
            foreach (string next in graph.TryGetValue(node, out var e) ? e : [])
            {
                int s = state.GetValueOrDefault(next);
                if (s == 1) return string.Join(" → ", path.SkipWhile(p => p != next).Append(next));
                if (s == 0 && Visit(next) is { } cycle) return cycle;
            }
            path.RemoveAt(path.Count - 1);
            state[node] = 2;
            return null;
        }
        foreach (string node in graph.Keys.Order(StringComparer.Ordinal))
            if (state.GetValueOrDefault(node) == 0 && Visit(node) is { } cycle) return cycle;
        return null;
    }

    [TestMethod]
    public void CoreFoldersHaveNoCycle()
    {
        var graph = FolderGraph(CoreDirectory);
        Assert.IsTrue(graph.Count > 10, "the Core folders were found");
        string? cycle = FindCycle(graph);
        Assert.IsNull(cycle, $"Core's folders must not depend on each other in a circle (DESIGN §1); found {cycle}. " +
            "Move the shared type down to the folder both use.");
    }

    [TestMethod]
    public void StagesAreTheTopAndTheBottomUsesNoOne()
    {
        var graph = FolderGraph(CoreDirectory);
        foreach (var (folder, edges) in graph)
            if (folder != "Stages") Assert.IsFalse(edges.Contains("Stages"), $"{folder} refers to Stages: only Tasks and the CLI may call a stage");
        foreach (string bottom in new[] { "Diagnostics", "Numerics", "FlatBuffers" })
            if (graph.TryGetValue(bottom, out var edges))
                Assert.IsTrue(edges.All(e => e is "Diagnostics" or "IO"), $"{bottom} must use only Diagnostics/IO, uses {string.Join(", ", edges)}");
        Assert.IsFalse(graph["Runtime"].Contains("Graph") || graph["Runtime"].Contains("Codegen"),
            "the runtime reads the net contract (Models), never the graph builder or the codegen");
    }

    [TestMethod]
    public void TheCycleFinderFindsACycle()
    {
        var graph = new Dictionary<string, SortedSet<string>>
        {
            ["A"] = new() { "B" }, ["B"] = new() { "C" }, ["C"] = new() { "A" }, ["D"] = new() { "A" },
        };
        Assert.AreEqual("A → B → C → A", FindCycle(graph));
        graph["C"].Clear();
        Assert.IsNull(FindCycle(graph));
    }
}
