using System.Text.Json;
using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Tokenization.Unicode;

namespace LlmBuild.Core.Tokenization;

/// <summary>
/// Builds a <see cref="Tokenizer"/> from a model's config folder. tokenizer.json is read as declared (BPE model,
/// normalizer, pre-tokenizer, decoder, post-processor, added tokens). Without it, vocab.json + merges.txt are read
/// as transformers' slow GPT-2/Qwen2 tokenizers define them (byte-level BPE; Qwen2 adds NFC and its split pattern).
/// Without either, a SentencePiece BPE tokenizer.model is read (<see cref="SentencePieceModelFile"/>; ChatGLM3's with
/// its appended special tokens and [gMASK] sop prefix).
/// tokenizer_config.json and special_tokens_map.json supply the named special tokens and extra added tokens;
/// generation_config.json and config.json the end-of-sequence ids.
/// </summary>
public static class TokenizerLoader
{
    /// <summary>The largest token id a tokenizer file may use. Ids index a table, so an id such as 2000000000 in a
    /// damaged file would allocate gigabytes; the largest real vocabularies have about 260,000 ids.</summary>
    public const int MaxTokenId = (1 << 24) - 1;

    /// <summary>How to repair a tokenizer file, ending every message about one.</summary>
    internal const string TokenizerFix =
        "Repair the file, or save the tokenizer again with transformers (AutoTokenizer.from_pretrained(dir).save_pretrained(dir)).";

    internal static JsonField? ReadOptional(string path) => JsonInput.ReadOptional(path, ErrorCodes.BadTokenizerFile, TokenizerFix)?.RequireObject();

    internal static JsonField Read(string path) => JsonInput.Read(path, ErrorCodes.BadTokenizerFile, TokenizerFix).RequireObject();

    public static Tokenizer Load(string configDir)
    {
        if (!Directory.Exists(configDir))
            throw new LlmBuildException(ErrorCodes.TokenizerNotFound,
                $"Config folder '{Path.GetFullPath(configDir)}' does not exist. Pass the model's folder holding tokenizer.json or vocab.json + merges.txt.", configDir);
        var config = ReadOptional(Path.Combine(configDir, "tokenizer_config.json"));
        var specialMap = ReadOptional(Path.Combine(configDir, "special_tokens_map.json"));
        var special = new SpecialTokens(
            SpecialToken(config, specialMap, "bos_token"), SpecialToken(config, specialMap, "eos_token"),
            SpecialToken(config, specialMap, "unk_token"), SpecialToken(config, specialMap, "pad_token"));
        bool cleanUp = config?["clean_up_tokenization_spaces"].BoolOrNull() ?? false;

        string jsonPath = Path.Combine(configDir, "tokenizer.json");
        string vocabPath = Path.Combine(configDir, "vocab.json");
        string mergesPath = Path.Combine(configDir, "merges.txt");
        Parts parts;
        string source;
        if (File.Exists(jsonPath))
        {
            source = jsonPath;
            parts = FromTokenizerJson(jsonPath);
        }
        else if (File.Exists(vocabPath) && File.Exists(mergesPath))
        {
            source = vocabPath;
            parts = FromVocabAndMerges(vocabPath, mergesPath, config, special);
        }
        else if (File.Exists(Path.Combine(configDir, "tokenizer.model")) && config?["tokenizer_class"].StringOrNull() == "ChatGLM4Tokenizer")
            throw new LlmBuildException(ErrorCodes.ChatGlmTokenizerModel,
                $"'{Path.GetFullPath(configDir)}' has GLM-4's own tokenizer (ChatGLM4Tokenizer: tokenizer.model is a tiktoken rank file read by the " +
                "model's remote tokenization_chatglm.py) and no tokenizer.json, which is what LlmBuild reads; transformers cannot save this " +
                "tokenizer as one. Copy tokenizer.json and tokenizer_config.json (with its chat template) from the same model's " +
                "transformers-native '-hf' release (e.g. glm-4-9b-chat-hf) into this folder.", configDir);
        else if (File.Exists(Path.Combine(configDir, "tokenizer.model")))
        {
            source = Path.Combine(configDir, "tokenizer.model");
            bool chatGlm3 = config?["tokenizer_class"].StringOrNull() == "ChatGLMTokenizer";
            var sentencePiece = SentencePieceModelFile.Read(source);
            string json = SentencePieceModelFile.ToTokenizerJson(sentencePiece, chatGlm3 ? ChatGlm3SpecialTokens : [], source);
            parts = FromTokenizerJson(JsonInput.Parse(json, source, ErrorCodes.BadTokenizerFile, TokenizerFix), source);
            if (chatGlm3)
            {
                // ChatGLM3's tokenizer puts [gMASK] sop before every encoded sequence (its get_prefix_tokens).
                int first = sentencePiece.Pieces.Count;
                parts = parts with { Prefix = [first + 1, first + 3] };
            }
        }
        else
            throw new LlmBuildException(ErrorCodes.TokenizerNotFound,
                $"'{Path.GetFullPath(configDir)}' has neither tokenizer.json nor vocab.json + merges.txt.", configDir);

        // transformers adds tokenizer_config.json's added_tokens_decoder and added_tokens.json on top.
        var added = new Dictionary<int, AddedToken>();
        foreach (var t in parts.Added) added[t.Id] = t;
        if (config is { } cfg && !cfg["added_tokens_decoder"].IsMissingOrNull)
        {
            foreach (var (key, token) in cfg["added_tokens_decoder"].Members())
            {
                if (!int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id > MaxTokenId)
                    throw token.Error($"has the key '{key}', which is not a token id (an integer from 0 to {MaxTokenId})");
                if (!added.ContainsKey(id)) added[id] = ParseAddedToken(token, id);
            }
        }
        if (ReadOptional(Path.Combine(configDir, "added_tokens.json")) is { } addedJson)
        {
            var specialNames = new HashSet<string>(new[] { special.Bos, special.Eos, special.Unk, special.Pad }.OfType<string>()
                .Concat(AdditionalSpecial(config, specialMap)), StringComparer.Ordinal);
            foreach (var (content, idField) in addedJson.Members())
            {
                int id = TokenId(idField);
                if (!added.ContainsKey(id)) added[id] = new AddedToken(id, content, specialNames.Contains(content));
            }
        }

        int[] prefix = parts.Prefix, suffix = parts.Suffix;
        // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from add_bos_token/add_eos_token.
        string tokenizerClass = config?["tokenizer_class"].StringOrNull() ?? "";
        if (parts.FromTokenizerJson && config is { } conf && (tokenizerClass.Contains("Llama") || tokenizerClass.Contains("Gemma")))
        {
            bool addBos = conf["add_bos_token"].BoolOrNull() ?? true;
            bool addEos = conf["add_eos_token"].BoolOrNull() ?? false;
            prefix = addBos && special.Bos is { } bos ? [IdOf(bos, parts.Model, added, source)] : [];
            suffix = addEos && special.Eos is { } eos ? [IdOf(eos, parts.Model, added, source)] : [];
        }

        var eosIds = new SortedSet<int>();
        foreach (var (file, code) in new[] { ("generation_config.json", ErrorCodes.BadGenerationConfig), ("config.json", ErrorCodes.BadModelConfig) })
        {
            var doc = JsonInput.ReadOptional(Path.Combine(configDir, file), code, $"Fix eos_token_id in {file} (an id or a list of ids).");
            if (doc is not { } d) continue;
            var e = d.RequireObject()["eos_token_id"];
            if (e.IsArray) foreach (var x in e.Items()) eosIds.Add(TokenId(x));
            else if (!e.IsMissingOrNull) eosIds.Add(TokenId(e));
        }
        if (special.Eos is { } eosToken)
        {
            var match = added.Values.FirstOrDefault(t => t.Content == eosToken);
            if (match is not null) eosIds.Add(match.Id);
            else if (parts.Model.TryGetId(eosToken, out int eid)) eosIds.Add(eid);
        }

        try
        {
            return new Tokenizer(parts.Model, parts.Normalizer, parts.PreTokenizer, parts.Decoder, added.Values.ToArray(),
                prefix, suffix, cleanUp, special, eosIds, source);
        }
        catch (RegexMatchTimeoutException e)
        {
            throw TokenizerRegex.Timeout(e, source); // normalizing the added tokens runs the normalizer's patterns
        }
    }

    /// <summary>ChatGLM3's special tokens, appended after its SentencePiece vocabulary in this order (its SPTokenizer).</summary>
    internal static readonly string[] ChatGlm3SpecialTokens =
        ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"];

    private sealed record Parts(BpeModel Model, INormalizer? Normalizer, IPreTokenizer? PreTokenizer, ITokenDecoder? Decoder,
        IReadOnlyList<AddedToken> Added, int[] Prefix, int[] Suffix, bool FromTokenizerJson);

    private static int TokenId(JsonField f) => f.Int(0, MaxTokenId);

    private static int IdOf(string token, BpeModel model, Dictionary<int, AddedToken> added, string source)
    {
        var a = added.Values.FirstOrDefault(t => t.Content == token);
        if (a is not null) return a.Id;
        if (model.TryGetId(token, out int id)) return id;
        throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{source}: special token '{token}' is not in the vocabulary.", source);
    }

    /// <summary>A named special token: a string, or an AddedToken object's content; null when unset.</summary>
    private static string? SpecialToken(JsonField? config, JsonField? map, string name)
    {
        foreach (var doc in new[] { config, map })
        {
            if (doc is not { } d || d[name].IsMissingOrNull) continue;
            return TokenContent(d[name]);
        }
        return null;
    }

    /// <summary>A special token written as a string or as an AddedToken object with its content.</summary>
    internal static string TokenContent(JsonField v) => v.IsObject ? v["content"].String() : v.String();

    private static IEnumerable<string> AdditionalSpecial(JsonField? config, JsonField? map)
    {
        foreach (var doc in new[] { config, map })
        {
            if (doc is not { } d || d["additional_special_tokens"].IsMissingOrNull) continue;
            foreach (var v in d["additional_special_tokens"].Items()) yield return TokenContent(v);
        }
    }

    private static AddedToken ParseAddedToken(JsonField e, int id)
    {
        string content = e.RequireObject()["content"].String();
        bool special = e["special"].BoolOrNull() ?? false;
        return new AddedToken(id, content,
            Special: special,
            Normalized: e["normalized"].BoolOrNull() ?? !special,
            LStrip: e["lstrip"].BoolOrNull() ?? false,
            RStrip: e["rstrip"].BoolOrNull() ?? false,
            SingleWord: e["single_word"].BoolOrNull() ?? false);
    }

    private static Dictionary<string, int> ReadVocab(JsonField vocabField)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in vocabField.Members()) vocab[token] = TokenId(id);
        return vocab;
    }

    // ---- vocab.json + merges.txt (transformers' slow GPT2Tokenizer / Qwen2Tokenizer) ----

    private static Parts FromVocabAndMerges(string vocabPath, string mergesPath, JsonField? config, SpecialTokens special)
    {
        var vocab = ReadVocab(Read(vocabPath));
        var merges = new List<(string, string)>();
        int lineNo = 0;
        foreach (string line in JsonInput.ReadText(mergesPath, "merges.txt").Split('\n'))
        {
            lineNo++;
            string merge = line.TrimEnd('\r');
            if (merge.StartsWith("#version", StringComparison.Ordinal) || merge.Length == 0) continue;
            merges.Add(SplitMerge(merge, $"{mergesPath}:{lineNo}"));
        }
        string tokenizerClass = config?["tokenizer_class"].StringOrNull() ?? "";
        bool qwen2 = tokenizerClass.StartsWith("Qwen2", StringComparison.Ordinal);
        bool addPrefixSpace = config?["add_prefix_space"].BoolOrNull() ?? false;
        var model = new BpeModel(vocab, merges, SpecialTokenOrNull(special.Unk, vocab), false, false, false, vocabPath);
        IPreTokenizer pre = qwen2
            ? new SequencePreTokenizer([
                new SplitPreTokenizer(new RegexSplitter(RegexSplitter.Qwen2Pattern, SplitBehavior.Isolated, false, vocabPath)),
                new ByteLevelPreTokenizer(addPrefixSpace, false, vocabPath)])
            : new ByteLevelPreTokenizer(addPrefixSpace, true, vocabPath);
        INormalizer? normalizer = qwen2 ? new UnicodeNormalizer(UnicodeForm.NFC) : null;
        var prefix = new List<int>();
        var suffix = new List<int>();
        if (config is { } conf)
        {
            if ((conf["add_bos_token"].BoolOrNull() ?? false) && special.Bos is { } bos && vocab.TryGetValue(bos, out int b)) prefix.Add(b);
            if ((conf["add_eos_token"].BoolOrNull() ?? false) && special.Eos is { } eos && vocab.TryGetValue(eos, out int e)) suffix.Add(e);
        }
        return new Parts(model, normalizer, pre, new ByteLevelDecoder(), [], prefix.ToArray(), suffix.ToArray(), false);
    }

    private static string? SpecialTokenOrNull(string? token, Dictionary<string, int> vocab) =>
        token is not null && vocab.ContainsKey(token) ? token : null;

    private static (string, string) SplitMerge(string line, string where)
    {
        int space = line.IndexOf(' ');
        if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
            throw new LlmBuildException(ErrorCodes.BadTokenizerFile,
                $"{where}: merge '{line}' is not two tokens separated by one space. {TokenizerFix}", where);
        return (line[..space], line[(space + 1)..]);
    }

    // ---- tokenizer.json ----

    private static Parts FromTokenizerJson(string path) => FromTokenizerJson(Read(path), path);

    private static Parts FromTokenizerJson(JsonField root, string path)
    {
        var model = root["model"].RequireObject();
        string type = model["type"].StringOrNull() ?? "BPE";
        if (type != "BPE")
            throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature,
                $"{path}: model type '{type}' is not supported; LlmBuild implements BPE (byte-level and SentencePiece-style).", path);
        foreach (var name in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model[name].StringOrNull() is { Length: > 0 })
                throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature, $"{path}: BPE {name} is not supported.", path);
        if (model["dropout"].DoubleOrNull() > 0)
            throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature, $"{path}: BPE dropout is not supported (it makes encoding random).", path);

        var vocab = ReadVocab(model["vocab"]);
        var merges = new List<(string, string)>();
        if (!model["merges"].IsMissingOrNull)
        {
            foreach (var m in model["merges"].Items())
            {
                if (m.IsString) merges.Add(SplitMerge(m.String(), $"{path}: {m.Path}"));
                else if (m.IsArray && m.Count == 2) merges.Add((m[0].String(), m[1].String()));
                else throw m.Error($"must be a merge, \"a b\" or [\"a\", \"b\"], found {m.Describe()}");
            }
        }
        var bpe = new BpeModel(vocab, merges, model["unk_token"].StringOrNull(), model["byte_fallback"].BoolOrNull() ?? false,
            model["fuse_unk"].BoolOrNull() ?? false, model["ignore_merges"].BoolOrNull() ?? false, path);

        var added = new List<AddedToken>();
        if (!root["added_tokens"].IsMissingOrNull)
            foreach (var a in root["added_tokens"].Items()) added.Add(ParseAddedToken(a, TokenId(a.RequireObject()["id"])));

        var normalizer = ParseNormalizer(root["normalizer"]);
        var pre = ParsePreTokenizer(root["pre_tokenizer"]);
        var decoder = ParseDecoder(root["decoder"]);
        var prefix = new List<int>();
        var suffix = new List<int>();
        ParsePostProcessor(root["post_processor"], prefix, suffix);
        return new Parts(bpe, normalizer, pre, decoder, added, prefix.ToArray(), suffix.ToArray(), true);
    }

    private static string TypeOf(JsonField e) => e.RequireObject()["type"].String();

    private static LlmBuildException Unsupported(JsonField e, string type) =>
        new(ErrorCodes.UnsupportedTokenizerFeature, $"{e.File}: {e.Path} '{type}' is not supported.", e.File);

    private static INormalizer? ParseNormalizer(JsonField e)
    {
        if (e.IsMissingOrNull) return null;
        string type = TypeOf(e);
        return type switch
        {
            "Sequence" => new SequenceNormalizer(e["normalizers"].Items().Select(ParseNormalizer).OfType<INormalizer>().ToArray()),
            "NFC" => new UnicodeNormalizer(UnicodeForm.NFC),
            "NFD" => new UnicodeNormalizer(UnicodeForm.NFD),
            "NFKC" => new UnicodeNormalizer(UnicodeForm.NFKC),
            "NFKD" => new UnicodeNormalizer(UnicodeForm.NFKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Prepend" => new PrependNormalizer(e["prepend"].String()),
            "Strip" => new StripNormalizer(e["strip_left"].BoolOrNull() ?? true, e["strip_right"].BoolOrNull() ?? true),
            "Replace" => ParseReplaceNormalizer(e),
            _ => throw Unsupported(e, type),
        };
    }

    private static INormalizer ParseReplaceNormalizer(JsonField e)
    {
        var (literal, regex) = ParsePattern(e["pattern"]);
        string content = e["content"].String();
        return new ReplaceNormalizer(regex is null ? null : TokenizerRegex.Compile(regex, e["pattern"]), literal, content);
    }

    private static (string? Literal, string? Regex) ParsePattern(JsonField pattern)
    {
        pattern.RequireObject();
        if (pattern["String"].Exists) return (pattern["String"].String(), null);
        if (pattern["Regex"].Exists) return (null, pattern["Regex"].String());
        throw pattern.Error("must be {\"String\": ...} or {\"Regex\": ...}");
    }

    private static IPreTokenizer? ParsePreTokenizer(JsonField e)
    {
        if (e.IsMissingOrNull) return null;
        string type = TypeOf(e);
        switch (type)
        {
            case "Sequence":
                return new SequencePreTokenizer(e["pretokenizers"].Items().Select(ParsePreTokenizer).OfType<IPreTokenizer>().ToArray());
            case "ByteLevel":
                return new ByteLevelPreTokenizer(e["add_prefix_space"].BoolOrNull() ?? true, e["use_regex"].BoolOrNull() ?? true, e.File);
            case "Split":
                {
                    var (literal, regex) = ParsePattern(e["pattern"]);
                    string behaviorName = e["behavior"].StringOrNull() ?? "Isolated";
                    SplitBehavior behavior = behaviorName switch
                    {
                        "Isolated" => SplitBehavior.Isolated,
                        "Removed" => SplitBehavior.Removed,
                        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
                        "MergedWithNext" => SplitBehavior.MergedWithNext,
                        "Contiguous" => SplitBehavior.Contiguous,
                        _ => throw Unsupported(e["behavior"], behaviorName),
                    };
                    var splitter = new RegexSplitter(TokenizerRegex.Compile(regex ?? Regex.Escape(literal!), e["pattern"]), behavior,
                        e["invert"].BoolOrNull() ?? false);
                    return new SplitPreTokenizer(splitter);
                }
            case "Metaspace":
                {
                    var (replacement, scheme) = ParseMetaspace(e);
                    return new MetaspacePreTokenizer(replacement, scheme, e["split"].BoolOrNull() ?? true);
                }
            case "Digits":
                return new DigitsPreTokenizer(e["individual_digits"].BoolOrNull() ?? false, e.File);
            case "WhitespaceSplit":
                return new SplitPreTokenizer(new RegexSplitter(@"\s+", SplitBehavior.Removed, false, e.File));
            case "Whitespace":
                return new SplitPreTokenizer(new RegexSplitter(@"\w+|[^\w\s]+", SplitBehavior.Removed, true, e.File));
            default:
                throw Unsupported(e, type);
        }
    }

    /// <summary>A Metaspace pre-tokenizer's or decoder's replacement character and prepend scheme.</summary>
    private static (char Replacement, string Scheme) ParseMetaspace(JsonField e)
    {
        char replacement = e["replacement"].IsMissingOrNull ? '\u2581' : e["replacement"].Char();
        string scheme = e["prepend_scheme"].StringOrNull() ?? ((e["add_prefix_space"].BoolOrNull() ?? true) ? "always" : "never");
        if (scheme is not ("always" or "first" or "never")) throw Unsupported(e["prepend_scheme"], scheme);
        return (replacement, scheme);
    }

    private static ITokenDecoder? ParseDecoder(JsonField e)
    {
        if (e.IsMissingOrNull) return null;
        string type = TypeOf(e);
        switch (type)
        {
            case "Sequence":
                return new SequenceDecoder(e["decoders"].Items().Select(ParseDecoder).OfType<ITokenDecoder>().ToArray());
            case "ByteLevel": return new ByteLevelDecoder();
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "Strip":
                return new StripDecoder(e["content"].Char(), e["start"].Int(0), e["stop"].Int(0));
            case "Replace":
                {
                    var (literal, regex) = ParsePattern(e["pattern"]);
                    if (literal is null) throw Unsupported(e["pattern"], regex!);
                    return new ReplaceDecoder(literal, e["content"].String());
                }
            case "Metaspace":
                {
                    var (replacement, scheme) = ParseMetaspace(e);
                    return new MetaspaceDecoder(replacement, scheme != "never");
                }
            default:
                throw Unsupported(e, type);
        }
    }

    private static void ParsePostProcessor(JsonField e, List<int> prefix, List<int> suffix)
    {
        if (e.IsMissingOrNull) return;
        string type = TypeOf(e);
        switch (type)
        {
            case "Sequence":
                foreach (var p in e["processors"].Items()) ParsePostProcessor(p, prefix, suffix);
                return;
            case "ByteLevel":
                return; // only adjusts offsets
            case "TemplateProcessing":
                {
                    var specials = e["special_tokens"].RequireObject();
                    bool seenSequence = false;
                    foreach (var item in e["single"].Items())
                    {
                        if (item.RequireObject()["Sequence"].Exists) { seenSequence = true; continue; }
                        if (!item["SpecialToken"].Exists) throw item.Error("must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
                        string name = item["SpecialToken"].RequireObject()["id"].String();
                        var spec = specials[name];
                        if (!spec.Exists) throw item.Error($"uses the special token '{name}', which special_tokens does not define");
                        foreach (var id in spec.RequireObject()["ids"].Items()) (seenSequence ? suffix : prefix).Add(TokenId(id));
                    }
                    return;
                }
            case "RobertaProcessing":
            case "BertProcessing":
                prefix.Add(TokenId(e["cls"][1]));
                suffix.Add(TokenId(e["sep"][1]));
                return;
            default:
                throw Unsupported(e, type);
        }
    }
}

/// <summary>
/// Compiles the regular expressions tokenizer files declare. A pattern is data from a file, so a pattern .NET cannot
/// compile is a coded error, and matching runs under a timeout: a pattern that backtracks catastrophically on some
/// input fails that encode with a coded error instead of hanging a server thread.
/// </summary>
internal static class TokenizerRegex
{
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    public static Regex Compile(string pattern, JsonField where) => Compile(pattern, $"{where.File}: {where.Path}", where.File);

    // Compiling a pattern to IL takes milliseconds, and every load of a byte-level tokenizer needs the same few
    // (GPT-2's and Qwen2's split patterns). A Regex is thread-safe, so compiled ones are shared; the cache is small
    // and stops growing when full, so files with ever-new patterns cannot grow it without bound.
    private const int CacheLimit = 32;
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Regex> Compiled = new(StringComparer.Ordinal);

    public static Regex Compile(string pattern, string where, string file)
    {
        if (Compiled.TryGetValue(pattern, out var cached)) return cached;
        try
        {
            var regex = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled, MatchTimeout);
            if (Compiled.Count < CacheLimit) Compiled.TryAdd(pattern, regex);
            return regex;
        }
        catch (ArgumentException e)
        {
            throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature,
                $"{where}: the pattern '{pattern}' is not a .NET regular expression ({e.Message.TrimEnd('.')}). {TokenizerLoader.TokenizerFix}", file, e);
        }
    }

    /// <summary>The coded error for a match that ran past <see cref="MatchTimeout"/>.</summary>
    public static LlmBuildException Timeout(RegexMatchTimeoutException e, string source) =>
        new(ErrorCodes.BadTokenizerFile,
            $"{source}: the pattern '{e.Pattern}' took longer than {MatchTimeout.TotalSeconds:0} s on this text (it backtracks catastrophically). " +
            "Fix the pattern in the tokenizer file.", source, e);
}
