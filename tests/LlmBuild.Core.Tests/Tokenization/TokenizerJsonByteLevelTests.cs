using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>
/// A byte-level tokenizer.json (as transformers writes Qwen2TokenizerFast: NFC, Split with the Qwen2 regex,
/// ByteLevel without its own regex, ByteLevel decoder) built from the Qwen2.5 vocab.json + merges.txt must encode
/// every golden exactly as Hugging Face did.
/// </summary>
[TestClass]
public sealed class TokenizerJsonByteLevelTests
{
    [TestMethod]
    public void QwenAsTokenizerJsonMatchesTheGoldens()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmb-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string fixture = TokenizerFixtures.Fixture("qwen2.5-7b-instruct");
            var vocab = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture, "vocab.json")))!;
            var merges = new JsonArray(File.ReadAllLines(Path.Combine(fixture, "merges.txt"))
                .Where(l => l.Length > 0 && !l.StartsWith("#version")).Select(l => (JsonNode)JsonValue.Create(l)!).ToArray());
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture, "tokenizer_config.json")))!;
            var added = new JsonArray();
            foreach (var (id, token) in config["added_tokens_decoder"]!.AsObject())
            {
                var t = token!.DeepClone().AsObject();
                t["id"] = int.Parse(id);
                added.Add(t);
            }
            var root = new JsonObject
            {
                ["version"] = "1.0",
                ["added_tokens"] = added,
                ["normalizer"] = new JsonObject { ["type"] = "NFC" },
                ["pre_tokenizer"] = new JsonObject
                {
                    ["type"] = "Sequence",
                    ["pretokenizers"] = new JsonArray(
                        new JsonObject
                        {
                            ["type"] = "Split",
                            ["pattern"] = new JsonObject { ["Regex"] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
                            ["behavior"] = "Isolated",
                            ["invert"] = false,
                        },
                        new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
                },
                ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
                ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
                ["model"] = new JsonObject
                {
                    ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                    ["vocab"] = vocab.DeepClone(), ["merges"] = merges,
                },
            };
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), root.ToJsonString());
            var tokenizer = Tokenizer.Load(dir);
            var goldens = TokenizerFixtures.Goldens("tokens-qwen2.5.json");
            foreach (var c in goldens.GetProperty("cases").EnumerateArray())
            {
                string text = c.GetProperty("text").GetString()!;
                CollectionAssert.AreEqual(TokenizerFixtures.Ints(c.GetProperty("ids")), tokenizer.Encode(text), text);
                Assert.AreEqual(text, tokenizer.Decode(tokenizer.Encode(text)));
            }
            // Decomposed input is composed first (the NFC normalizer).
            CollectionAssert.AreEqual(tokenizer.Encode("Köln"), tokenizer.Encode("Ko\u0308ln"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
