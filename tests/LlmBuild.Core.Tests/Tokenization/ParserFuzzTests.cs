using System.Text.Json;
using System.Text.Json.Nodes;
using LlmBuild.Core.Tokenization;
using LlmBuild.Core.Tokenization.Templates;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>
/// Issue 19: fuzzing of every text parser user files reach — tokenizer.json, tokenizer_config.json (with its chat
/// template), vocab.json + merges.txt, and Jinja templates. Each test runs a few thousand deterministic mutations
/// of real or representative files and accepts only a success or a coded error, per case within a time and an
/// allocation bound (see <see cref="FuzzRun"/>). Each test stops at 20 s on a slow machine.
/// </summary>
[TestClass]
public sealed class ParserFuzzTests
{
    // LLMBUILD_FUZZ_CASES and LLMBUILD_FUZZ_SEED run a longer or different campaign locally (the time box grows with
    // the cases); CI runs the defaults.
    private static readonly int Cases = int.TryParse(Environment.GetEnvironmentVariable("LLMBUILD_FUZZ_CASES"), out int n) ? n : 3000;
    private static readonly int SeedOffset = int.TryParse(Environment.GetEnvironmentVariable("LLMBUILD_FUZZ_SEED"), out int s) ? s : 0;
    private static readonly TimeSpan TimeBox = TimeSpan.FromSeconds(20 * Math.Max(1, Cases / 3000));
    private const string SampleText = "hello abc <eos> héllo 12 😀\n\tend";

    private static readonly string[] JsonFragments =
        ["{", "}", "[", "]", ":", ",", "\"", "null", "true", "-1", "2000000000", "99999999999999", "1e999", "\"x\"", "[]", "{}",
         "\\u00", "\\", "[[[[[[[[", "\"type\": \"Sequence\"", "\"content\": 5", "\"id\": \"x\""];

    /// <summary>A SentencePiece-style tokenizer.json: byte fallback, unknown token, normalizer and decoder
    /// sequences, a template post-processor, added tokens.</summary>
    private const string SentencePieceStyle = """
        {"version": "1.0",
         "added_tokens": [{"id": 20, "content": "<eos>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
                          {"id": 21, "content": "<pad>", "special": true}],
         "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, {"type": "NFC"}]},
         "pre_tokenizer": null,
         "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
         "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
                                                      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
         "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
                   "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                   "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "▁": 4, "a": 5, "b": 6, "c": 7, "▁a": 8, "ab": 9, "abc": 10,
                             "h": 11, "e": 12, "l": 13, "o": 14, "he": 15, "ll": 16, "hell": 17, "hello": 18, "▁hello": 19},
                   "merges": ["▁ a", "a b", "ab c", "h e", "l l", "he ll", "hell o", "▁ hello"]}}
        """;

    /// <summary>A byte-level tokenizer.json: a Split regex and ByteLevel pre-tokenizer, a ByteLevel decoder; its
    /// vocabulary holds the 256 byte characters, so any text encodes.</summary>
    private static readonly string ByteLevelStyle = WithByteAlphabet("""
        {"version": "1.0",
         "added_tokens": [{"id": 30, "content": "<eos>", "special": true}],
         "normalizer": {"type": "NFC"},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             {"type": "Split", "pattern": {"Regex": "\\s+|\\w+|[^\\s\\w]+"}, "behavior": "Isolated", "invert": false},
             {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
             {"type": "Digits", "individual_digits": true}]},
         "post_processor": {"type": "Sequence", "processors": [{"type": "ByteLevel"}]},
         "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "unk_token": null, "byte_fallback": false,
                   "vocab": {"a": 0, "b": 1, "c": 2, "e": 3, "h": 4, "l": 5, "o": 6, "Ġ": 7, "ab": 8, "abc": 9, "he": 10, "ll": 11, "hell": 12, "hello": 13},
                   "merges": [["a", "b"], ["ab", "c"], ["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"]]}}
        """);

    private static string WithByteAlphabet(string tokenizerJson)
    {
        var root = JsonNode.Parse(tokenizerJson)!;
        var vocab = root["model"]!["vocab"]!.AsObject();
        for (int b = 0; b < 256; b++)
        {
            string token = ByteLevelAlphabet.ByteToChar[b].ToString();
            if (!vocab.ContainsKey(token)) vocab[token] = 100 + b;
        }
        return root.ToJsonString();
    }

    private static string NewFolder(string label)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"llmb-fuzz-{label}-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>A JSON file mutated as text (one case in three: mostly invalid JSON) or as a tree (valid JSON with
    /// values of the wrong type or range, members missing).</summary>
    private static string MutateJsonFile(Mutator mutator, string json) =>
        mutator.Next(3) == 0 ? mutator.MutateText(json) : mutator.MutateJson(json);

    private static void UseTokenizer(string dir)
    {
        var tokenizer = Tokenizer.Load(dir);
        int[] ids = tokenizer.Encode(SampleText);
        tokenizer.Decode(ids);
        tokenizer.Decode([0, 1, 2, 3, 5, 30, 99, -1]);
    }

    [TestMethod]
    public void TokenizerJson()
    {
        string dir = NewFolder("tokjson");
        string[] seeds = [SentencePieceStyle, ByteLevelStyle];
        foreach (string seed in seeds)
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), seed);
            UseTokenizer(dir); // the seeds themselves load
        }
        var mutator = new Mutator(1901 + SeedOffset, JsonFragments);
        new FuzzRun("tokenizer.json", Cases, TimeBox).Run(
            i => MutateJsonFile(mutator, seeds[i % seeds.Length]),
            input =>
            {
                File.WriteAllText(Path.Combine(dir, "tokenizer.json"), input);
                UseTokenizer(dir);
            });
    }

    /// <summary>A small byte-level vocab.json (the 256 byte characters and a few merges) and its merges.txt.</summary>
    private static (string Vocab, string Merges) ByteLevelVocabAndMerges()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ByteToChar[b].ToString()] = b;
        string[] merges = ["h e", "l l", "he ll", "hell o"];
        vocab["he"] = 256;
        vocab["ll"] = 257;
        vocab["hell"] = 258;
        vocab["hello"] = 259;
        return (vocab.ToJsonString(), "#version: 0.2\n" + string.Join("\n", merges) + "\n");
    }

    [TestMethod]
    public void VocabAndMerges()
    {
        string dir = NewFolder("vocab");
        var (vocab, merges) = ByteLevelVocabAndMerges();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"tokenizer_class": "Qwen2Tokenizer", "eos_token": "hello"}""");
        File.WriteAllText(Path.Combine(dir, "vocab.json"), vocab);
        File.WriteAllText(Path.Combine(dir, "merges.txt"), merges);
        UseTokenizer(dir);
        var mutator = new Mutator(1902 + SeedOffset, [.. JsonFragments, "\n", " ", "#version", "Ġ", "\r\n"]);
        new FuzzRun("vocab.json + merges.txt", Cases, TimeBox).Run(
            i => i % 2 == 0
                ? "vocab.json\u0000" + MutateJsonFile(mutator, vocab)
                : "merges.txt\u0000" + mutator.MutateText(merges),
            input =>
            {
                string[] parts = input.Split('\u0000', 2);
                File.WriteAllText(Path.Combine(dir, "vocab.json"), parts[0] == "vocab.json" ? parts[1] : vocab);
                File.WriteAllText(Path.Combine(dir, "merges.txt"), parts[0] == "merges.txt" ? parts[1] : merges);
                UseTokenizer(dir);
            });
    }

    private static readonly List<ChatMessage> Conversation =
    [
        new("system", "You are helpful."),
        new("user", "Hi there"),
        new("assistant", "Hello!"),
        new("user", "Tell me 2 things"),
    ];

    [TestMethod]
    public void TokenizerConfig()
    {
        string dir = NewFolder("tokconfig");
        string[] seeds =
        [
            File.ReadAllText(Path.Combine(TokenizerFixtures.Fixture("qwen2.5-7b-instruct"), "tokenizer_config.json")),
            File.ReadAllText(Path.Combine(TokenizerFixtures.Fixture("llama3.2-3b-instruct"), "tokenizer_config.json")),
        ];
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), ByteLevelStyle);
        var limits = new JinjaLimits { MaxSteps = 200_000, MaxOutputLength = 1 << 16, MaxDepth = 64 };
        void Use()
        {
            UseTokenizer(dir);
            var template = ChatTemplate.Load(dir, limits);
            template.Clock = () => new DateTime(2026, 1, 2);
            template.Render(Conversation, addGenerationPrompt: true);
        }
        foreach (string seed in seeds)
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), seed);
            Use();
        }
        var mutator = new Mutator(1903 + SeedOffset, JsonFragments);
        new FuzzRun("tokenizer_config.json", Cases, TimeBox).Run(
            i => MutateJsonFile(mutator, seeds[i % seeds.Length]),
            input =>
            {
                File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), input);
                Use();
            });
    }

    private static readonly string[] JinjaFragments =
        ["{%", "%}", "{{", "}}", "{#", "#}", "{%-", "-%}", "(", ")", "[", "]", "|", "~", "*", "**", "//", "%", "-", "not ", " and ", " or ",
         " if ", " else ", " is ", " in ", ".", ",", ":", "'", "\"", "\\u", "\\x", "9223372036854775807", "99999999999999999999", "1e308",
         "0", "-1", "{% for x in range(100000) %}", "{% endfor %}", "{% if true %}", "{% endif %}", "{% else %}", "{% set x = ",
         "{% macro m(a) %}{{ m(a) }}{% endmacro %}{{ m(1) }}", "'x' * 99999999", "[1] * 99999999", "loop.", "messages", "message['content']",
         ".split(", ".replace(", "|tojson(indent=", "|indent(", "|center(", "|join(", "|sort", "|unique", "|int", "|abs", "|round(",
         "namespace(", "raise_exception(", "range(", "{% raw %}", "{% endraw %}", "{% break %}", "{% continue %}", "is defined", "none", "true"];

    private static IEnumerable<string> TemplateSeeds()
    {
        foreach (string fixture in new[] { "qwen2.5-7b-instruct", "llama3.2-3b-instruct", "mistral-7b-instruct", "minicpm3-4b", "qwen3-4b" })
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Fixture(fixture), "tokenizer_config.json")))!;
            if (config["chat_template"] is JsonValue v) yield return v.GetValue<string>();
        }
        var gemma = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Fixture("gemma3-4b-it"), "chat_template.json")))!;
        yield return gemma["chat_template"]!.GetValue<string>();
        using var cases = JsonDocument.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.RepoRoot, "tests", "LlmBuild.Core.Tests", "Tokenization", "jinja-cases.json")));
        foreach (var c in cases.RootElement.GetProperty("cases").EnumerateArray()) yield return c.GetProperty("template").GetString()!;
    }

    [TestMethod]
    public void JinjaTemplates()
    {
        string[] seeds = TemplateSeeds().ToArray();
        Assert.IsTrue(seeds.Length >= 30, "real chat templates and the jinja cases");
        var limits = new JinjaLimits { MaxSteps = 200_000, MaxOutputLength = 1 << 16, MaxDepth = 64 };
        var special = new Dictionary<string, object?> { ["bos_token"] = "<s>", ["eos_token"] = "</s>" };
        var mutator = new Mutator(1904 + SeedOffset, JinjaFragments);
        new FuzzRun("Jinja templates", Cases, TimeBox).Run(
            i => mutator.MutateText(seeds[i % seeds.Length]),
            input =>
            {
                var template = ChatTemplate.FromSource(input, special, "fuzz.jinja", limits);
                template.Clock = () => new DateTime(2026, 1, 2);
                template.Render(Conversation, addGenerationPrompt: AddGenerationPromptFor(input));
            });
    }

    private static readonly string[] Atoms =
        ["0", "1", "-1", "3", "9223372036854775807", "2.5", "-0.0", "1e308", "'a'", "''", "'x y\\n'", "'<think>'", "none", "true", "false",
         "[1, 'a']", "[]", "[[1, 2], [3]]", "{'a': 1, 'b': [2]}", "{}", "nothing", "messages", "messages[0]", "message", "range(3)",
         "namespace(a=1)", "(1, 2)", "loop", "raise_exception", "bos_token"];

    private static readonly string[] Filters =
        ["trim", "tojson", "length", "count", "first", "last", "join", "upper", "lower", "title", "capitalize", "replace", "default", "d",
         "list", "string", "int", "float", "abs", "round", "items", "dictsort", "reverse", "sort", "unique", "min", "max", "sum", "map",
         "select", "reject", "selectattr", "rejectattr", "attr", "indent", "wordcount", "center", "escape", "safe", "batch", "wordwrap"];

    private static readonly string[] Methods =
        ["startswith", "endswith", "strip", "lstrip", "rstrip", "split", "splitlines", "replace", "find", "count", "join", "upper",
         "lower", "title", "capitalize", "isdigit", "isalpha", "isspace", "items", "keys", "values", "get", "format", "cycle", "index"];

    private static readonly string[] Tests =
        ["defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "mapping", "iterable", "sequence",
         "callable", "lower", "upper", "even", "odd", "divisibleby", "eq", "ne", "lt", "gt", "le", "ge", "in", "sameas", "true", "fancy"];

    private static readonly string[] Operators =
        ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">", "<=", ">=", "in", "not in", "and", "or"];

    /// <summary>A random expression over values of every type, operators, filters, methods, tests and subscripts:
    /// it reaches the builtins with argument types and ranges real templates never pass.</summary>
    private static string Expression(Mutator r, int depth)
    {
        string Pick(string[] options) => options[r.Next(options.Length)];
        string Args()
        {
            int n = r.Next(4);
            return string.Join(", ", Enumerable.Range(0, n).Select(_ => r.Next(5) == 0 ? $"{Pick(["attribute", "indent", "width", "reverse", "default"])}={Expression(r, 0)}" : Expression(r, depth - 1)));
        }
        if (depth <= 0) return Pick(Atoms);
        return r.Next(9) switch
        {
            0 => $"({Expression(r, depth - 1)} {Pick(Operators)} {Expression(r, depth - 1)})",
            1 => $"{Expression(r, depth - 1)}|{Pick(Filters)}({Args()})",
            2 => $"{Expression(r, depth - 1)}|{Pick(Filters)}",
            3 => $"{Expression(r, depth - 1)}.{Pick(Methods)}({Args()})",
            4 => $"({Expression(r, depth - 1)} is {Pick(Tests)} {Pick(Atoms)})",
            5 => $"{Expression(r, depth - 1)}[{Expression(r, depth - 1)}]",
            6 => $"{Expression(r, depth - 1)}[{Pick(Atoms)}:{Pick(Atoms)}:{Pick(Atoms)}]",
            7 => $"({Expression(r, depth - 1)} if {Expression(r, depth - 1)} else {Expression(r, depth - 1)})",
            _ => $"-{Expression(r, depth - 1)}",
        };
    }

    [TestMethod]
    public void JinjaExpressions()
    {
        var limits = new JinjaLimits { MaxSteps = 200_000, MaxOutputLength = 1 << 16, MaxDepth = 64 };
        var mutator = new Mutator(1905 + SeedOffset, JinjaFragments);
        new FuzzRun("Jinja expressions", Cases, TimeBox).Run(
            i =>
            {
                string e = Expression(mutator, 1 + mutator.Next(3));
                return mutator.Next(3) switch
                {
                    0 => $"{{% for message in messages %}}{{{{ {e} }}}}{{% endfor %}}",
                    1 => $"{{% set y = {e} %}}{{% for x in y %}}{{{{ x }}}}{{% else %}}{{{{ y }}}}{{% endfor %}}",
                    _ => $"{{{{ {e} }}}}",
                };
            },
            input =>
            {
                var template = ChatTemplate.FromSource(input, new Dictionary<string, object?> { ["bos_token"] = "<s>" }, "fuzz.jinja", limits);
                template.Render(Conversation, addGenerationPrompt: true);
            });
    }

    // Half the cases render with the generation prompt, chosen from the input so a case replays identically.
    private static bool AddGenerationPromptFor(string input) => input.Length % 2 == 0;
}
