using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>
/// Deterministic mutations of parser inputs: text edits (deletions, insertions of structural fragments, duplicated
/// and moved spans, truncation) and, for JSON, edits of the document's tree (a value replaced by one of another
/// type or an extreme one, a member removed or renamed). The same seed gives the same cases on every machine.
/// </summary>
internal sealed class Mutator(int seed, IReadOnlyList<string> fragments)
{
    private readonly Random _random = new(seed);

    public int Next(int max) => _random.Next(max);

    /// <summary>Usually one, sometimes up to three, text edits of <paramref name="text"/> (one edit keeps most of a
    /// template valid, so the case reaches rendering).</summary>
    public string MutateText(string text)
    {
        var sb = new StringBuilder(text);
        int edits = 1 + (_random.Next(4) == 0 ? _random.Next(3) : 0);
        for (int e = 0; e < edits; e++)
        {
            int at = sb.Length == 0 ? 0 : _random.Next(sb.Length + 1);
            int span = Math.Min(sb.Length - at, 1 + _random.Next(16));
            switch (_random.Next(6))
            {
                case 0: sb.Remove(at, span); break;
                case 1: sb.Insert(at, fragments[_random.Next(fragments.Count)]); break;
                case 2: sb.Insert(at, (char)_random.Next(32, 127)); break;
                case 3: // duplicate a span (nests brackets and tags)
                    {
                        string piece = sb.ToString(at, span);
                        int times = 1 + _random.Next(_random.Next(8) == 0 ? 2000 : 3);
                        sb.Insert(at, string.Concat(Enumerable.Repeat(piece, times)));
                        break;
                    }
                case 4: // move a span elsewhere
                    {
                        string piece = sb.ToString(at, span);
                        sb.Remove(at, span);
                        sb.Insert(sb.Length == 0 ? 0 : _random.Next(sb.Length + 1), piece);
                        break;
                    }
                default:
                    if (sb.Length > 0) sb.Length = _random.Next(sb.Length);
                    break;
            }
        }
        return sb.ToString();
    }

    private static readonly Func<Random, JsonNode?>[] OddValues =
    [
        _ => null,
        _ => JsonValue.Create(true),
        _ => JsonValue.Create("x"),
        _ => JsonValue.Create(""),
        _ => JsonValue.Create(-1),
        _ => JsonValue.Create(0),
        _ => JsonValue.Create(2.5),
        _ => JsonValue.Create(2000000000),
        _ => JsonValue.Create(99999999999999L),
        _ => JsonValue.Create(16777215),
        _ => JsonValue.Create(1e308),
        _ => new JsonArray(),
        _ => new JsonArray(JsonValue.Create(1), JsonValue.Create(2)),
        _ => new JsonObject(),
        _ => new JsonObject { ["content"] = 5 },
        _ => new JsonObject { ["type"] = "Sequence" },
        _ => JsonValue.Create("[z-a]"),
        _ => JsonValue.Create("(a+)+$"),
        r => JsonValue.Create(new string('(', 1 + r.Next(300))),
    ];

    /// <summary>One to three edits of the JSON tree of <paramref name="json"/>, written back as text.</summary>
    public string MutateJson(string json)
    {
        var root = JsonNode.Parse(json)!;
        int edits = 1 + _random.Next(3);
        for (int e = 0; e < edits; e++)
        {
            var nodes = new List<JsonNode>();
            Collect(root, nodes);
            var target = nodes[_random.Next(nodes.Count)];
            if (target.Parent is not { } parent) continue;
            var replacement = OddValues[_random.Next(OddValues.Length)](_random);
            switch (parent)
            {
                case JsonObject o:
                    {
                        string name = target.GetPropertyName();
                        int action = _random.Next(4);
                        if (action == 0) o.Remove(name);
                        else if (action == 1) { o.Remove(name); o[name + "_"] = replacement; }
                        else o[name] = replacement;
                        break;
                    }
                case JsonArray a:
                    {
                        int index = target.GetElementIndex();
                        if (_random.Next(4) == 0) a.RemoveAt(index);
                        else a[index] = replacement;
                        break;
                    }
            }
        }
        return root.ToJsonString();
    }

    private static void Collect(JsonNode node, List<JsonNode> output)
    {
        output.Add(node);
        if (node is JsonObject o) foreach (var (_, v) in o) { if (v is not null) Collect(v, output); }
        else if (node is JsonArray a) foreach (var v in a) { if (v is not null) Collect(v, output); }
    }
}

/// <summary>
/// Runs fuzz cases: each may succeed or throw an <see cref="LlmBuildException"/> with a declared code; anything else,
/// a case slower than <see cref="MaxCaseTime"/> or allocating more than <see cref="MaxCaseBytes"/>, is a failure
/// reported with the case's number and input. Stops after <paramref name="cases"/> cases or <paramref name="timeBox"/>.
/// </summary>
internal sealed class FuzzRun(string name, int cases, TimeSpan timeBox)
{
    /// <summary>Generous: the test machine may be shared; a case the limits do not bound runs for minutes or forever.</summary>
    public static readonly TimeSpan MaxCaseTime = TimeSpan.FromSeconds(10);
    public const long MaxCaseBytes = 512L << 20;

    private static readonly HashSet<string> Declared = ErrorCodes.All.Select(c => c.Code).ToHashSet();

    public int Ran { get; private set; }
    public int Coded { get; private set; }
    public TimeSpan Slowest { get; private set; }

    public void Run(Func<int, string> makeInput, Action<string> parse)
    {
        var failures = new List<string>();
        var total = Stopwatch.StartNew();
        for (int i = 0; i < cases && total.Elapsed < timeBox && failures.Count < 5; i++)
        {
            string input = makeInput(i);
            long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
            var clock = Stopwatch.StartNew();
            try
            {
                parse(input);
            }
            catch (LlmBuildException e) when (Declared.Contains(e.Code))
            {
                Coded++;
            }
            catch (Exception e)
            {
                failures.Add($"case {i}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}\ninput: {Excerpt(input)}");
            }
            clock.Stop();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
            if (clock.Elapsed > Slowest) Slowest = clock.Elapsed;
            if (clock.Elapsed > MaxCaseTime) failures.Add($"case {i}: took {clock.Elapsed}\ninput: {Excerpt(input)}");
            if (allocated > MaxCaseBytes) failures.Add($"case {i}: allocated {allocated >> 20} MiB\ninput: {Excerpt(input)}");
            Ran++;
        }
        Console.WriteLine($"{name}: {Ran} cases in {total.Elapsed.TotalSeconds:0.0} s ({Coded} coded errors), slowest {Slowest.TotalMilliseconds:0} ms");
        Assert.AreEqual(0, failures.Count, string.Join("\n\n", failures));
        Assert.IsTrue(Ran >= Math.Min(cases, 200), $"only {Ran} cases ran in {timeBox}");
    }

    private static string Excerpt(string input) => input.Length <= 600 ? input : input[..300] + " … " + input[^300..];
}
