using System.Text.Json;
using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization.Unicode;

namespace LlmBuild.Core.Tokenization;

/// <summary>
/// Builds a <see cref="Tokenizer"/> from a model's config folder. tokenizer.json is read as declared (BPE model,
/// normalizer, pre-tokenizer, decoder, post-processor, added tokens). Without it, vocab.json + merges.txt are read
/// as transformers' slow GPT-2/Qwen2 tokenizers define them (byte-level BPE; Qwen2 adds NFC and its split pattern).
/// tokenizer_config.json and special_tokens_map.json supply the named special tokens and extra added tokens;
/// generation_config.json and config.json the end-of-sequence ids.
/// </summary>
public static class TokenizerLoader
{
    public static Tokenizer Load(string configDir)
    {
        if (!Directory.Exists(configDir))
            throw new LlmBuildException(ErrorCodes.TokenizerNotFound,
                $"Config folder '{Path.GetFullPath(configDir)}' does not exist. Pass the model's folder holding tokenizer.json or vocab.json + merges.txt.", configDir);
        var config = Json.ReadOptional(Path.Combine(configDir, "tokenizer_config.json"));
        var specialMap = Json.ReadOptional(Path.Combine(configDir, "special_tokens_map.json"));
        var special = new SpecialTokens(
            SpecialToken(config, specialMap, "bos_token"), SpecialToken(config, specialMap, "eos_token"),
            SpecialToken(config, specialMap, "unk_token"), SpecialToken(config, specialMap, "pad_token"));
        bool cleanUp = config is { } c && c.TryGetProperty("clean_up_tokenization_spaces", out var cu) && cu.ValueKind == JsonValueKind.True;

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
        else if (File.Exists(Path.Combine(configDir, "tokenizer.model")))
            throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature,
                $"'{Path.GetFullPath(configDir)}' has only a SentencePiece tokenizer.model; LlmBuild reads tokenizer.json. " +
                "Save the tokenizer with transformers (AutoTokenizer.from_pretrained(dir).save_pretrained(dir)) to produce one.", configDir);
        else
            throw new LlmBuildException(ErrorCodes.TokenizerNotFound,
                $"'{Path.GetFullPath(configDir)}' has neither tokenizer.json nor vocab.json + merges.txt.", configDir);

        // transformers adds tokenizer_config.json's added_tokens_decoder and added_tokens.json on top.
        var added = new Dictionary<int, AddedToken>();
        foreach (var t in parts.Added) added[t.Id] = t;
        if (config is { } cfg && cfg.TryGetProperty("added_tokens_decoder", out var decoderTokens) && decoderTokens.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in decoderTokens.EnumerateObject())
            {
                if (!int.TryParse(p.Name, out int id))
                    throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"tokenizer_config.json: added_tokens_decoder key '{p.Name}' is not an id.", configDir);
                if (!added.ContainsKey(id)) added[id] = ParseAddedToken(p.Value, id, "tokenizer_config.json");
            }
        }
        var addedJson = Json.ReadOptional(Path.Combine(configDir, "added_tokens.json"));
        if (addedJson is { } aj)
        {
            var specialNames = new HashSet<string>(new[] { special.Bos, special.Eos, special.Unk, special.Pad }.OfType<string>()
                .Concat(AdditionalSpecial(config, specialMap)), StringComparer.Ordinal);
            foreach (var p in aj.EnumerateObject())
            {
                int id = p.Value.GetInt32();
                if (!added.ContainsKey(id)) added[id] = new AddedToken(id, p.Name, specialNames.Contains(p.Name));
            }
        }

        int[] prefix = parts.Prefix, suffix = parts.Suffix;
        // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from add_bos_token/add_eos_token.
        string tokenizerClass = config is { } k && k.TryGetProperty("tokenizer_class", out var tc) && tc.ValueKind == JsonValueKind.String ? tc.GetString()! : "";
        if (parts.FromTokenizerJson && config is { } conf && (tokenizerClass.Contains("Llama") || tokenizerClass.Contains("Gemma")))
        {
            bool addBos = Json.Bool(conf, "add_bos_token") ?? true;
            bool addEos = Json.Bool(conf, "add_eos_token") ?? false;
            prefix = addBos && special.Bos is { } bos ? [IdOf(bos, parts.Model, added, source)] : [];
            suffix = addEos && special.Eos is { } eos ? [IdOf(eos, parts.Model, added, source)] : [];
        }

        var eosIds = new SortedSet<int>();
        foreach (var file in new[] { "generation_config.json", "config.json" })
        {
            var doc = Json.ReadOptional(Path.Combine(configDir, file));
            if (doc is { } d && d.TryGetProperty("eos_token_id", out var e))
            {
                if (e.ValueKind == JsonValueKind.Number) eosIds.Add(e.GetInt32());
                else if (e.ValueKind == JsonValueKind.Array) foreach (var x in e.EnumerateArray()) eosIds.Add(x.GetInt32());
            }
        }
        if (special.Eos is { } eosToken)
        {
            var match = added.Values.FirstOrDefault(t => t.Content == eosToken);
            if (match is not null) eosIds.Add(match.Id);
            else if (parts.Model.TryGetId(eosToken, out int eid)) eosIds.Add(eid);
        }

        return new Tokenizer(parts.Model, parts.Normalizer, parts.PreTokenizer, parts.Decoder, added.Values.ToArray(),
            prefix, suffix, cleanUp, special, eosIds, source);
    }

    private sealed record Parts(BpeModel Model, INormalizer? Normalizer, IPreTokenizer? PreTokenizer, ITokenDecoder? Decoder,
        IReadOnlyList<AddedToken> Added, int[] Prefix, int[] Suffix, bool FromTokenizerJson);

    private static int IdOf(string token, BpeModel model, Dictionary<int, AddedToken> added, string source)
    {
        var a = added.Values.FirstOrDefault(t => t.Content == token);
        if (a is not null) return a.Id;
        if (model.TryGetId(token, out int id)) return id;
        throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{source}: special token '{token}' is not in the vocabulary.", source);
    }

    private static string? SpecialToken(JsonElement? config, JsonElement? map, string name)
    {
        foreach (var doc in new[] { config, map })
        {
            if (doc is not { } d || !d.TryGetProperty(name, out var v)) continue;
            if (v.ValueKind == JsonValueKind.String) return v.GetString();
            if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content)) return content.GetString();
        }
        return null;
    }

    private static IEnumerable<string> AdditionalSpecial(JsonElement? config, JsonElement? map)
    {
        foreach (var doc in new[] { config, map })
        {
            if (doc is not { } d || !d.TryGetProperty("additional_special_tokens", out var list) || list.ValueKind != JsonValueKind.Array) continue;
            foreach (var v in list.EnumerateArray())
            {
                if (v.ValueKind == JsonValueKind.String) yield return v.GetString()!;
                else if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c)) yield return c.GetString()!;
            }
        }
    }

    private static AddedToken ParseAddedToken(JsonElement e, int id, string source)
    {
        string content = e.TryGetProperty("content", out var c) ? c.GetString() ?? ""
            : throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{source}: added token {id} has no content.", source);
        return new AddedToken(id, content,
            Special: Json.Bool(e, "special") ?? false,
            Normalized: Json.Bool(e, "normalized") ?? !(Json.Bool(e, "special") ?? false),
            LStrip: Json.Bool(e, "lstrip") ?? false,
            RStrip: Json.Bool(e, "rstrip") ?? false,
            SingleWord: Json.Bool(e, "single_word") ?? false);
    }

    // ---- vocab.json + merges.txt (transformers' slow GPT2Tokenizer / Qwen2Tokenizer) ----

    private static Parts FromVocabAndMerges(string vocabPath, string mergesPath, JsonElement? config, SpecialTokens special)
    {
        var vocabDoc = Json.Read(vocabPath);
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabDoc.EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        var merges = new List<(string, string)>();
        int lineNo = 0;
        foreach (string line in ReadLines(mergesPath))
        {
            lineNo++;
            if (line.StartsWith("#version", StringComparison.Ordinal) || line.Length == 0) continue;
            merges.Add(SplitMerge(line, $"{mergesPath}:{lineNo}"));
        }
        string tokenizerClass = config is { } c && c.TryGetProperty("tokenizer_class", out var tc) ? tc.GetString() ?? "" : "";
        bool qwen2 = tokenizerClass.StartsWith("Qwen2", StringComparison.Ordinal);
        bool addPrefixSpace = config is { } cf && (Json.Bool(cf, "add_prefix_space") ?? false);
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
            if ((Json.Bool(conf, "add_bos_token") ?? false) && special.Bos is { } bos && vocab.TryGetValue(bos, out int b)) prefix.Add(b);
            if ((Json.Bool(conf, "add_eos_token") ?? false) && special.Eos is { } eos && vocab.TryGetValue(eos, out int e)) suffix.Add(e);
        }
        return new Parts(model, normalizer, pre, new ByteLevelDecoder(), [], prefix.ToArray(), suffix.ToArray(), false);
    }

    private static string? SpecialTokenOrNull(string? token, Dictionary<string, int> vocab) =>
        token is not null && vocab.ContainsKey(token) ? token : null;

    private static IEnumerable<string> ReadLines(string path)
    {
        try
        {
            return File.ReadAllLines(path);
        }
        catch (IOException e)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{path}': {e.Message}", path, e);
        }
    }

    private static (string, string) SplitMerge(string line, string where)
    {
        int space = line.IndexOf(' ');
        if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
            throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{where}: merge '{line}' is not two tokens separated by one space.", where);
        return (line[..space], line[(space + 1)..]);
    }

    // ---- tokenizer.json ----

    private static Parts FromTokenizerJson(string path)
    {
        var root = Json.Read(path);
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{path}: no \"model\" object.", path);
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
        if (type != "BPE")
            throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature,
                $"{path}: model type '{type}' is not supported; LlmBuild implements BPE (byte-level and SentencePiece-style).", path);
        foreach (var name in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() != "")
                throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature, $"{path}: BPE {name} is not supported.", path);
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature, $"{path}: BPE dropout is not supported (it makes encoding random).", path);

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in model.GetProperty("vocab").EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergeList))
        {
            int i = 0;
            foreach (var m in mergeList.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String) merges.Add(SplitMerge(m.GetString()!, $"{path}: merges[{i}]"));
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2) merges.Add((m[0].GetString()!, m[1].GetString()!));
                else throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{path}: merges[{i}] is neither \"a b\" nor [a, b].", path);
                i++;
            }
        }
        string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        var bpe = new BpeModel(vocab, merges, unk, Json.Bool(model, "byte_fallback") ?? false, Json.Bool(model, "fuse_unk") ?? false,
            Json.Bool(model, "ignore_merges") ?? false, path);

        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var addedList) && addedList.ValueKind == JsonValueKind.Array)
            foreach (var a in addedList.EnumerateArray()) added.Add(ParseAddedToken(a, a.GetProperty("id").GetInt32(), path));

        var normalizer = root.TryGetProperty("normalizer", out var n) ? ParseNormalizer(n, path) : null;
        var pre = root.TryGetProperty("pre_tokenizer", out var pt) ? ParsePreTokenizer(pt, path) : null;
        var decoder = root.TryGetProperty("decoder", out var d) ? ParseDecoder(d, path) : null;
        var prefix = new List<int>();
        var suffix = new List<int>();
        if (root.TryGetProperty("post_processor", out var post)) ParsePostProcessor(post, prefix, suffix, path);
        return new Parts(bpe, normalizer, pre, decoder, added, prefix.ToArray(), suffix.ToArray(), true);
    }

    private static string TypeOf(JsonElement e, string path, string what) =>
        e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()!
            : throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{path}: a {what} has no \"type\".", path);

    private static Exception Unsupported(string path, string what, string type) =>
        new LlmBuildException(ErrorCodes.UnsupportedTokenizerFeature, $"{path}: {what} '{type}' is not supported.", path);

    private static INormalizer? ParseNormalizer(JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(e, path, "normalizer");
        return type switch
        {
            "Sequence" => new SequenceNormalizer(e.GetProperty("normalizers").EnumerateArray()
                .Select(x => ParseNormalizer(x, path)).OfType<INormalizer>().ToArray()),
            "NFC" => new UnicodeNormalizer(UnicodeForm.NFC),
            "NFD" => new UnicodeNormalizer(UnicodeForm.NFD),
            "NFKC" => new UnicodeNormalizer(UnicodeForm.NFKC),
            "NFKD" => new UnicodeNormalizer(UnicodeForm.NFKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Prepend" => new PrependNormalizer(e.GetProperty("prepend").GetString()!),
            "Strip" => new StripNormalizer(Json.Bool(e, "strip_left") ?? true, Json.Bool(e, "strip_right") ?? true),
            "Replace" => ParseReplaceNormalizer(e, path),
            _ => throw Unsupported(path, "normalizer", type),
        };
    }

    private static INormalizer ParseReplaceNormalizer(JsonElement e, string path)
    {
        var (literal, regex) = ParsePattern(e.GetProperty("pattern"), path);
        string content = e.GetProperty("content").GetString()!;
        return new ReplaceNormalizer(regex is null ? null : new Regex(regex, RegexOptions.CultureInvariant), literal, content);
    }

    private static (string? Literal, string? Regex) ParsePattern(JsonElement pattern, string path)
    {
        if (pattern.TryGetProperty("String", out var s)) return (s.GetString()!, null);
        if (pattern.TryGetProperty("Regex", out var r)) return (null, r.GetString()!);
        throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{path}: a pattern is neither {{\"String\"}} nor {{\"Regex\"}}.", path);
    }

    private static IPreTokenizer? ParsePreTokenizer(JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(e, path, "pre_tokenizer");
        switch (type)
        {
            case "Sequence":
                return new SequencePreTokenizer(e.GetProperty("pretokenizers").EnumerateArray()
                    .Select(x => ParsePreTokenizer(x, path)).OfType<IPreTokenizer>().ToArray());
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Json.Bool(e, "add_prefix_space") ?? true, Json.Bool(e, "use_regex") ?? true, path);
            case "Split":
                {
                    var (literal, regex) = ParsePattern(e.GetProperty("pattern"), path);
                    string behaviorName = e.TryGetProperty("behavior", out var b) ? b.GetString()! : "Isolated";
                    if (!Enum.TryParse<SplitBehavior>(behaviorName, out var behavior)) throw Unsupported(path, "split behavior", behaviorName);
                    return new SplitPreTokenizer(new RegexSplitter(regex ?? Regex.Escape(literal!), behavior, Json.Bool(e, "invert") ?? false, path));
                }
            case "Metaspace":
                {
                    char replacement = e.TryGetProperty("replacement", out var r) ? r.GetString()![0] : '\u2581';
                    string scheme = e.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String
                        ? ps.GetString()! : (Json.Bool(e, "add_prefix_space") ?? true) ? "always" : "never";
                    return new MetaspacePreTokenizer(replacement, scheme, Json.Bool(e, "split") ?? true);
                }
            case "Digits":
                return new DigitsPreTokenizer(Json.Bool(e, "individual_digits") ?? false, path);
            case "WhitespaceSplit":
                return new SplitPreTokenizer(new RegexSplitter(@"\s+", SplitBehavior.Removed, false, path));
            case "Whitespace":
                return new SplitPreTokenizer(new RegexSplitter(@"\w+|[^\w\s]+", SplitBehavior.Removed, true, path));
            default:
                throw Unsupported(path, "pre_tokenizer", type);
        }
    }

    private static ITokenDecoder? ParseDecoder(JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(e, path, "decoder");
        switch (type)
        {
            case "Sequence":
                return new SequenceDecoder(e.GetProperty("decoders").EnumerateArray()
                    .Select(x => ParseDecoder(x, path)).OfType<ITokenDecoder>().ToArray());
            case "ByteLevel": return new ByteLevelDecoder();
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "Strip":
                return new StripDecoder(e.GetProperty("content").GetString()![0], e.GetProperty("start").GetInt32(), e.GetProperty("stop").GetInt32());
            case "Replace":
                {
                    var (literal, regex) = ParsePattern(e.GetProperty("pattern"), path);
                    if (literal is null) throw Unsupported(path, "decoder Replace with a regex", regex!);
                    return new ReplaceDecoder(literal, e.GetProperty("content").GetString()!);
                }
            case "Metaspace":
                {
                    char replacement = e.TryGetProperty("replacement", out var r) ? r.GetString()![0] : '\u2581';
                    string scheme = e.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String
                        ? ps.GetString()! : (Json.Bool(e, "add_prefix_space") ?? true) ? "always" : "never";
                    return new MetaspaceDecoder(replacement, scheme != "never");
                }
            default:
                throw Unsupported(path, "decoder", type);
        }
    }

    private static void ParsePostProcessor(JsonElement e, List<int> prefix, List<int> suffix, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string type = TypeOf(e, path, "post_processor");
        switch (type)
        {
            case "Sequence":
                foreach (var p in e.GetProperty("processors").EnumerateArray()) ParsePostProcessor(p, prefix, suffix, path);
                return;
            case "ByteLevel":
                return; // only adjusts offsets
            case "TemplateProcessing":
                {
                    var specials = e.GetProperty("special_tokens");
                    bool seenSequence = false;
                    foreach (var item in e.GetProperty("single").EnumerateArray())
                    {
                        if (item.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
                        if (!item.TryGetProperty("SpecialToken", out var st))
                            throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{path}: a TemplateProcessing item is neither Sequence nor SpecialToken.", path);
                        string name = st.GetProperty("id").GetString()!;
                        if (!specials.TryGetProperty(name, out var spec))
                            throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"{path}: TemplateProcessing uses '{name}', which special_tokens does not define.", path);
                        foreach (var id in spec.GetProperty("ids").EnumerateArray()) (seenSequence ? suffix : prefix).Add(id.GetInt32());
                    }
                    return;
                }
            case "RobertaProcessing":
            case "BertProcessing":
                prefix.Add(e.GetProperty("cls")[1].GetInt32());
                suffix.Add(e.GetProperty("sep")[1].GetInt32());
                return;
            default:
                throw Unsupported(path, "post_processor", type);
        }
    }
}

/// <summary>Small JSON helpers with coded errors.</summary>
internal static class Json
{
    public static JsonElement Read(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var doc = JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true });
            return doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadTokenizerFile, $"'{path}' is not valid JSON: {e.Message}", path, e);
        }
        catch (IOException e)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{path}': {e.Message}", path, e);
        }
    }

    public static JsonElement? ReadOptional(string path) => File.Exists(path) ? Read(path) : null;

    public static bool? Bool(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v)
            ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => null } : null;
}
