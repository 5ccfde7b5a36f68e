using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// Writes the Hugging Face files a GGUF model's config folder needs — config.json, generation_config.json,
/// tokenizer.json and tokenizer_config.json — from its metadata, so <c>llmbuild run</c> tokenizes and templates a
/// GGUF-built model as it does a folder-built one. Two tokenizer kinds, by <c>tokenizer.ggml.model</c>:
/// <list type="bullet">
/// <item><c>gpt2</c>: byte-level BPE; tokens and merges as stored, the pre-tokenizer chosen by
/// <c>tokenizer.ggml.pre</c> (qwen2, llama-bpe, gpt-2/default).</item>
/// <item><c>llama</c>: a SentencePiece vocabulary with scores, written the way transformers converts a SentencePiece
/// BPE model: merges are every split of a normal piece into two vocabulary pieces, ranked by the merged piece's score
/// (best first), with byte fallback to the &lt;0xAB&gt; pieces, "▁" for spaces and one prepended.</item>
/// </list>
/// Token types (<c>tokenizer.ggml.token_type</c>): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
/// Control and unknown tokens become special added tokens, user-defined ones plain added tokens; unused ones are left out.
/// </summary>
public static class GgufTokenizerFiles
{
    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5;

    /// <summary>The files <see cref="Write"/> writes, by name.</summary>
    public static IReadOnlyList<string> FileNames { get; } = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"];

    /// <summary>The llama-3 ("llama-bpe") split pattern: as Qwen2's, but digits in runs of up to three.</summary>
    private const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Writes the four files into <paramref name="outputDir"/> (atomically; always, so their times mark the combine that wrote them).</summary>
    public static void Write(string ggufPath, string outputDir)
    {
        var gguf = GgufFile.Read(ggufPath);
        var (config, generation) = GgufModelConfig.Synthesize(gguf);
        var (tokenizer, tokenizerConfig) = Tokenizer(gguf);
        Directory.CreateDirectory(outputDir);
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        AtomicFile.WriteAllText(Path.Combine(outputDir, "config.json"), config.ToJsonString(options) + "\n");
        AtomicFile.WriteAllText(Path.Combine(outputDir, "generation_config.json"), generation.ToJsonString(options) + "\n");
        AtomicFile.WriteAllText(Path.Combine(outputDir, "tokenizer_config.json"), tokenizerConfig.ToJsonString(options) + "\n");
        AtomicFile.WriteAllText(Path.Combine(outputDir, "tokenizer.json"), tokenizer.ToJsonString(options) + "\n");
    }

    /// <summary>tokenizer.json and tokenizer_config.json for the file's tokenizer metadata.</summary>
    public static (JsonObject Tokenizer, JsonObject Config) Tokenizer(GgufFile gguf)
    {
        string model = gguf.String("tokenizer.ggml.model") ?? throw Bad(gguf, "it has no tokenizer.ggml.model");
        string[] tokens = gguf.Strings("tokenizer.ggml.tokens") ?? throw Bad(gguf, "it has no tokenizer.ggml.tokens");
        long[] types = gguf.Integers("tokenizer.ggml.token_type") ?? Enumerable.Repeat((long)Normal, tokens.Length).ToArray();
        if (types.Length != tokens.Length) throw Bad(gguf, $"tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens");
        int? Id(string key)
        {
            long? id = gguf.Integer(key);
            if (id is null) return null;
            return id >= 0 && id < tokens.Length ? (int)id : throw Bad(gguf, $"{key} = {id} is outside the {tokens.Length} tokens");
        }
        int? bos = Id("tokenizer.ggml.bos_token_id"), eos = Id("tokenizer.ggml.eos_token_id");
        int? unk = Id("tokenizer.ggml.unknown_token_id") ?? IndexOf(types, Unknown);
        int? pad = Id("tokenizer.ggml.padding_token_id");

        var vocab = new JsonObject();
        var added = new JsonArray();
        for (int id = 0; id < tokens.Length; id++)
        {
            int type = (int)types[id];
            if (type == Unused) continue;
            if (!vocab.ContainsKey(tokens[id])) vocab[tokens[id]] = id;
            if (type is Control or Unknown or UserDefined)
                added.Add(new JsonObject
                {
                    ["id"] = id, ["content"] = tokens[id], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                    ["normalized"] = false, ["special"] = type != UserDefined,
                });
        }

        bool sentencePiece = model switch
        {
            "llama" => true,
            "gpt2" => false,
            _ => throw Bad(gguf, $"its tokenizer.ggml.model '{model}' is not supported (gpt2, llama)"),
        };
        bool addBos = gguf.Bool("tokenizer.ggml.add_bos_token") ?? sentencePiece;
        bool addEos = gguf.Bool("tokenizer.ggml.add_eos_token") ?? false;
        JsonArray merges = sentencePiece ? SentencePieceMerges(gguf, tokens, types) : new JsonArray((gguf.Strings("tokenizer.ggml.merges")
            ?? throw Bad(gguf, "its gpt2 tokenizer has no tokenizer.ggml.merges")).Select(m => (JsonNode?)m).ToArray());

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = sentencePiece
                ? new JsonObject
                {
                    ["type"] = "Sequence",
                    ["normalizers"] = new JsonArray(
                        new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" },
                        new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" }),
                }
                : gguf.String("tokenizer.ggml.pre") == "qwen2" ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = sentencePiece ? null : ByteLevelPreTokenizer(gguf),
            ["post_processor"] = PostProcessor(tokens, addBos ? bos : null, addEos ? eos : null),
            ["decoder"] = sentencePiece
                ? new JsonObject
                {
                    ["type"] = "Sequence",
                    ["decoders"] = new JsonArray(
                        new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "\u2581" }, ["content"] = " " },
                        new JsonObject { ["type"] = "ByteFallback" },
                        new JsonObject { ["type"] = "Fuse" },
                        new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
                }
                : new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = sentencePiece && unk is int u ? tokens[u] : null,
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = sentencePiece,
                ["byte_fallback"] = sentencePiece,
                ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };

        var config = new JsonObject
        {
            ["tokenizer_class"] = sentencePiece ? "LlamaTokenizer" : gguf.String("tokenizer.ggml.pre") == "qwen2" ? "Qwen2Tokenizer" : "PreTrainedTokenizerFast",
            ["add_bos_token"] = addBos,
            ["add_eos_token"] = addEos,
            ["clean_up_tokenization_spaces"] = false,
            ["bos_token"] = bos is int b ? tokens[b] : null,
            ["eos_token"] = eos is int e ? tokens[e] : null,
            ["unk_token"] = unk is int k ? tokens[k] : null,
            ["pad_token"] = pad is int p ? tokens[p] : null,
            ["model_max_length"] = gguf.Integer($"{gguf.String("general.architecture")}.context_length") ?? 2048,
        };
        if (sentencePiece) config["legacy"] = true;
        if (gguf.String("tokenizer.chat_template") is { } template) config["chat_template"] = template;
        return (root, config);
    }

    private static int? IndexOf(long[] types, int type)
    {
        int i = Array.IndexOf(types, (long)type);
        return i < 0 ? null : i;
    }

    private static JsonObject ByteLevelPreTokenizer(GgufFile gguf)
    {
        string pre = gguf.String("tokenizer.ggml.pre") ?? "default";
        JsonObject ByteLevel(bool useRegex) => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = useRegex };
        JsonObject Split(string pattern) => new()
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                ByteLevel(false)),
        };
        return pre switch
        {
            "qwen2" => Split(Qwen2Pattern),
            "llama-bpe" or "llama3" => Split(Llama3Pattern),
            "default" or "gpt-2" or "gpt2" => ByteLevel(true),
            _ => throw Bad(gguf, $"its pre-tokenizer tokenizer.ggml.pre = '{pre}' is not supported (qwen2, llama-bpe, gpt-2, default)"),
        };
    }

    private static JsonObject PostProcessor(string[] tokens, int? bos, int? eos)
    {
        var single = new JsonArray();
        var special = new JsonObject();
        void Special(int id)
        {
            single.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[id], ["type_id"] = 0 } });
            special[tokens[id]] = new JsonObject { ["id"] = tokens[id], ["ids"] = new JsonArray(id), ["tokens"] = new JsonArray(tokens[id]) };
        }
        if (bos is int b) Special(b);
        single.Add(new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } });
        if (eos is int e) Special(e);
        return new JsonObject { ["type"] = "TemplateProcessing", ["single"] = single, ["pair"] = single.DeepClone(), ["special_tokens"] = special };
    }

    /// <summary>
    /// SentencePiece BPE as merges: every way to split a normal piece into two vocabulary pieces is a merge, ranked
    /// by the merged piece's score, best first (SentencePiece merges the best-scoring pair), ties in vocabulary order.
    /// </summary>
    private static JsonArray SentencePieceMerges(GgufFile gguf, string[] tokens, long[] types)
    {
        double[] scores = gguf.Numbers("tokenizer.ggml.scores") ?? throw Bad(gguf, "its llama tokenizer has no tokenizer.ggml.scores");
        if (scores.Length != tokens.Length) throw Bad(gguf, $"tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens");
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
            if (types[i] is Normal or UserDefined) ids.TryAdd(tokens[i], i);
        var merges = new List<(double Score, int Merged, int Left, int Right)>();
        for (int id = 0; id < tokens.Length; id++)
        {
            if (types[id] != Normal) continue;
            string piece = tokens[id];
            for (int cut = 1; cut < piece.Length; cut++)
            {
                if (char.IsLowSurrogate(piece[cut])) continue;
                if (ids.TryGetValue(piece[..cut], out int left) && ids.TryGetValue(piece[cut..], out int right))
                    merges.Add((scores[id], id, left, right));
            }
        }
        var ordered = merges.OrderByDescending(m => m.Score).ThenBy(m => m.Merged).ThenBy(m => m.Left).ThenBy(m => m.Right);
        // As [left, right] pairs: a piece may itself hold a space.
        return new JsonArray(ordered.Select(m => (JsonNode?)new JsonArray(tokens[m.Left], tokens[m.Right])).ToArray());
    }

    private static LlmBuildException Bad(GgufFile gguf, string what) =>
        new(ErrorCodes.BadGgufTokenizer, $"'{gguf.Path}': no tokenizer files can be written: {what}.", gguf.Path);
}
