using System.Text;

namespace LlmBuild.Core.Tokenization;

/// <summary>
/// A Hugging Face tokenizer loaded from a model's config folder (<see cref="Load"/>): tokenizer.json, or
/// vocab.json + merges.txt + tokenizer_config.json. Encoding follows the tokenizers library: added tokens are split
/// out first, the rest is normalized, pre-tokenized and run through BPE; the post-processor adds BOS/EOS.
/// Thread-safe after loading.
/// </summary>
public sealed class Tokenizer
{
    private readonly BpeModel _model;
    private readonly INormalizer? _normalizer;
    private readonly IPreTokenizer? _preTokenizer;
    private readonly ITokenDecoder? _decoder;
    private readonly AddedTokenMatcher _rawMatcher;
    private readonly AddedTokenMatcher _normalizedMatcher;
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly Dictionary<string, AddedToken> _addedByContent;
    private readonly int[] _prefix;
    private readonly int[] _suffix;
    private readonly bool _cleanUpSpaces;

    internal Tokenizer(BpeModel model, INormalizer? normalizer, IPreTokenizer? preTokenizer, ITokenDecoder? decoder,
        IReadOnlyList<AddedToken> addedTokens, int[] prefix, int[] suffix, bool cleanUpSpaces, SpecialTokens special,
        IReadOnlySet<int> eosIds, string source)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _decoder = decoder;
        _addedById = new Dictionary<int, AddedToken>();
        _addedByContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        foreach (var t in addedTokens)
        {
            _addedById[t.Id] = t;
            _addedByContent[t.Content] = t;
        }
        AddedTokens = _addedById.Values.OrderBy(t => t.Id).ToArray();
        _rawMatcher = new AddedTokenMatcher(AddedTokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalizedMatcher = new AddedTokenMatcher(AddedTokens.Where(t => t.Normalized)
            .Select(t => (normalizer?.Normalize(t.Content) ?? t.Content, t)));
        _prefix = prefix;
        _suffix = suffix;
        _cleanUpSpaces = cleanUpSpaces;
        Special = special;
        EosIds = eosIds;
        Source = source;
        SpecialIds = AddedTokens.Where(t => t.Special).Select(t => t.Id).ToHashSet();
    }

    /// <summary>Loads the tokenizer of a model config folder (see <see cref="TokenizerLoader"/>).</summary>
    public static Tokenizer Load(string configDir) => TokenizerLoader.Load(configDir);

    /// <summary>The file the tokenizer was read from.</summary>
    public string Source { get; }

    /// <summary>The named special tokens (bos/eos/unk/pad) as the chat template sees them.</summary>
    public SpecialTokens Special { get; }

    /// <summary>Every id that ends generation: generation_config.json's and config.json's eos_token_id and the
    /// tokenizer's eos_token.</summary>
    public IReadOnlySet<int> EosIds { get; }

    /// <summary>Ids of added tokens marked special (skipped by <see cref="Decode"/> with skipSpecialTokens).</summary>
    public IReadOnlySet<int> SpecialIds { get; }

    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>The number of ids: the model's vocabulary plus added tokens (Hugging Face's <c>len(tokenizer)</c>).</summary>
    public int Count => Math.Max(_model.MaxId + 1, AddedTokens.Count == 0 ? 0 : AddedTokens[^1].Id + 1);

    public int? BosId => Special.Bos is { } b ? TokenToId(b) : null;

    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out var t) ? t.Id : _model.TryGetId(token, out int id) ? id : null;

    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var t) ? t.Content : _model.IdToToken(id);

    /// <summary>Encodes text; <paramref name="addSpecialTokens"/> applies the post-processor (e.g. Llama's BOS).
    /// Special tokens written in the text are always recognized, as in Hugging Face.</summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        try
        {
            return EncodeUnchecked(text, addSpecialTokens);
        }
        catch (System.Text.RegularExpressions.RegexMatchTimeoutException e)
        {
            throw TokenizerRegex.Timeout(e, Source);
        }
    }

    private int[] EncodeUnchecked(string text, bool addSpecialTokens)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens) ids.AddRange(_prefix);
        var segments = new List<TextSegment>();
        _rawMatcher.Split(text, true, segments);
        var normalizedSegments = new List<TextSegment>();
        var pieces = new List<PreToken>();
        foreach (var segment in segments)
        {
            if (segment.IsToken) { ids.Add(segment.TokenId); continue; }
            string normalized = _normalizer?.Normalize(segment.Text) ?? segment.Text;
            normalizedSegments.Clear();
            _normalizedMatcher.Split(normalized, segment.AtStart, normalizedSegments);
            foreach (var part in normalizedSegments)
            {
                if (part.IsToken) { ids.Add(part.TokenId); continue; }
                pieces.Clear();
                pieces.Add(new PreToken(part.Text, part.AtStart));
                _preTokenizer?.PreTokenize(pieces);
                foreach (var piece in pieces) _model.Tokenize(piece.Text, ids);
            }
        }
        if (addSpecialTokens) ids.AddRange(_suffix);
        return ids.ToArray();
    }

    /// <summary>Decodes ids to text through the tokenizer's decoder; unknown ids are skipped, as in Hugging Face.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                if (!(skipSpecialTokens && added.Special)) tokens.Add(added.Content);
                continue;
            }
            if (_model.IdToToken(id) is { } token) tokens.Add(token);
        }
        string text = _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.DecodeChain(tokens));
        return _cleanUpSpaces ? CleanUpTokenizationSpaces(text) : text;
    }

    /// <summary>A decoder for generated ids that only ever emits whole characters.</summary>
    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) => new(this, skipSpecialTokens);

    /// <summary>transformers' clean_up_tokenization: removes the space before punctuation and English contractions.</summary>
    internal static string CleanUpTokenizationSpaces(string text)
    {
        var sb = new StringBuilder(text);
        sb.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
          .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");
        return sb.ToString();
    }
}

/// <summary>The special tokens a chat template refers to by name (bos_token, eos_token, unk_token, pad_token).</summary>
public sealed record SpecialTokens(string? Bos, string? Eos, string? Unk, string? Pad);
