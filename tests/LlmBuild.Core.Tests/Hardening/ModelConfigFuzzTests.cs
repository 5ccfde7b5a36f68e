using System.Diagnostics;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Fuzzes config.json reading (ModelConfig.FromJson) with a few thousand mutations of real configs: fields removed or
/// given values of every JSON type and boundary numbers, rope_scaling objects reshaped. Every case parses or raises a
/// coded LlmBuildException. (Keys are never duplicated: a JsonObject cannot hold that, and the text form is cause 4.)
/// </summary>
[TestClass]
public sealed class ModelConfigFuzzTests
{
    private const int Cases = 4000;

    private static readonly string[] Values =
    [
        "null", "true", "false", "0", "-1", "1", "-5", "0.5", "1e-300", "1e308", "-1e308", "2147483647", "2147483648", "9223372036854775807",
        "99999999999999999999", "\"\"", "\"qwen2\"", "\"llama\"", "\"bfloat16\"", "\"silu\"", "\"x\"", "[]", "[1,2]", "[\"a\"]", "{}",
        "{\"type\":\"linear\"}", "{\"type\":\"linear\",\"factor\":0}", "{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,\"high_freq_factor\":4}",
        "{\"rope_type\":\"llama3\",\"factor\":-2}", "{\"type\":5}", "{\"type\":\"yarn\",\"factor\":4}", "{\"rope_type\":[1]}",
    ];

    private static readonly string[] ExtraFields = ["rope_scaling", "head_dim", "torch_dtype", "dtype", "eos_token_id", "bos_token_id", "quantization_config", "tie_word_embeddings", "model_type"];

    private static IEnumerable<string> Sources() =>
        Directory.GetDirectories(TestResolver.Fixture("")).Select(d => Path.Combine(d, "config.json")).Where(File.Exists)
            .Append(Path.Combine(TestResolver.TinyModelDir, "config.json"));

    [TestMethod]
    public void MutatedConfigsParseOrGiveCodedErrors()
    {
        var originals = Sources().Select(p => (JsonObject)JsonNode.Parse(File.ReadAllText(p))!).ToArray();
        Assert.IsTrue(originals.Length >= 3);
        var rng = new Random(4);
        int parsed = 0;
        var codes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            var root = (JsonObject)originals[rng.Next(originals.Length)].DeepClone();
            var generation = rng.Next(4) == 0 ? new JsonObject { ["eos_token_id"] = JsonNode.Parse(Values[rng.Next(Values.Length)]) } : null;
            for (int m = 1 + rng.Next(3); m > 0; m--) Mutate(root, rng);
            string text = root.ToJsonString();
            try
            {
                _ = ModelConfig.FromJson(root, generation, "config.json");
                parsed++;
            }
            catch (LlmBuildException e)
            {
                codes[e.Code] = codes.GetValueOrDefault(e.Code) + 1;
            }
            catch (Exception e)
            {
                Assert.Fail($"case {i}: {e.GetType().Name} is not a coded error for {text}: {e}");
            }
        }
        Console.WriteLine($"{Cases} mutated configs in {watch.Elapsed.TotalSeconds:0.0} s: {parsed} parsed, " + string.Join(", ", codes.Select(c => $"{c.Key} ×{c.Value}")));
        Assert.IsTrue(parsed > 0 && codes.Count > 0);
    }

    private static void Mutate(JsonObject root, Random rng)
    {
        var keys = root.Select(kv => kv.Key).Concat(ExtraFields).Distinct().ToArray();
        string key = keys[rng.Next(keys.Length)];
        switch (rng.Next(3))
        {
            case 0: root.Remove(key); break;
            case 1: root[key] = JsonNode.Parse(Values[rng.Next(Values.Length)]); break;
            default: // a number nudged: zero, negative, or huge
                root[key] = root[key] is JsonValue v && v.TryGetValue(out double d) ? JsonValue.Create(rng.Next(3) switch { 0 => 0, 1 => -d, _ => d * 1e12 }) : JsonValue.Create(-1);
                break;
        }
    }
}
