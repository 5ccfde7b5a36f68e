using System.Collections.Concurrent;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization;

/// <summary>
/// A BPE model: a vocabulary and ranked merges. A word starts as one symbol per character (or, for characters not
/// in the vocabulary, per UTF-8 byte token "&lt;0xAB&gt;" when byte fallback is on, else the unknown token); then the
/// adjacent pair with the lowest merge rank is merged, leftmost first, until no pair has a merge — the order Hugging
/// Face's tokenizers use. A priority queue keeps long words (SentencePiece-style BPE has no pre-tokenizer, so a
/// whole line is one word) at O(n log n).
/// </summary>
internal sealed class BpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int[] _byteTokenIds; // byte value → id of "<0xAB>", or -1
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private const int CacheLimit = 200_000;
    private const int CachedWordMaxLength = 64;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        string? unkToken, bool byteFallback, bool fuseUnk, bool ignoreMerges, string source)
    {
        _vocab = vocab;
        int maxId = vocab.Count == 0 ? -1 : vocab.Values.Max();
        _idToToken = new string?[maxId + 1];
        foreach (var (token, id) in vocab)
        {
            if (id < 0)
                throw new Diagnostics.LlmBuildException(Diagnostics.ErrorCodes.BadTokenizerFile,
                    $"{source}: token '{token}' has a negative id {id}.", source);
            _idToToken[id] = token;
        }
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int a) || !vocab.TryGetValue(right, out int b))
                throw new Diagnostics.LlmBuildException(Diagnostics.ErrorCodes.BadTokenizerFile,
                    $"{source}: merge #{rank} '{left} {right}' uses a token that is not in the vocabulary.", source);
            if (!vocab.TryGetValue(left + right, out int merged))
                throw new Diagnostics.LlmBuildException(Diagnostics.ErrorCodes.BadTokenizerFile,
                    $"{source}: merge #{rank} '{left} {right}' produces '{left + right}', which is not in the vocabulary.", source);
            _merges.TryAdd(Key(a, b), (rank, merged)); // a repeated merge keeps its first (best) rank
        }
        UnkId = unkToken is not null && vocab.TryGetValue(unkToken, out int unk) ? unk : null;
        ByteFallback = byteFallback;
        FuseUnk = fuseUnk;
        IgnoreMerges = ignoreMerges;
        _byteTokenIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteTokenIds[b] = byteFallback && vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
    }

    public int? UnkId { get; }
    public bool ByteFallback { get; }
    public bool FuseUnk { get; }
    public bool IgnoreMerges { get; }
    public int VocabSize => _vocab.Count;
    public int MaxId => _idToToken.Length - 1;

    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Tokenize(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (IgnoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        bool cacheable = word.Length <= CachedWordMaxLength;
        if (cacheable && _cache.TryGetValue(word, out int[]? cached))
        {
            output.AddRange(cached);
            return;
        }
        int[] ids = Merge(InitialSymbols(word));
        if (cacheable)
        {
            if (_cache.Count >= CacheLimit) _cache.Clear();
            _cache.TryAdd(word, ids);
        }
        output.AddRange(ids);
    }

    private List<int> InitialSymbols(string word)
    {
        var symbols = new List<int>(word.Length);
        bool lastWasUnk = false;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            string ch = word.Substring(i, len);
            i += len;
            if (_vocab.TryGetValue(ch, out int id))
            {
                symbols.Add(id);
                lastWasUnk = false;
                continue;
            }
            if (ByteFallback)
            {
                int n = Encoding.UTF8.GetBytes(ch, utf8);
                bool all = true;
                for (int k = 0; k < n; k++) all &= _byteTokenIds[utf8[k]] >= 0;
                if (all)
                {
                    for (int k = 0; k < n; k++) symbols.Add(_byteTokenIds[utf8[k]]);
                    lastWasUnk = false;
                    continue;
                }
            }
            if (UnkId is not int unk)
                throw new Diagnostics.LlmBuildException(Diagnostics.ErrorCodes.BadTokenizerFile,
                    $"The character U+{char.ConvertToUtf32(ch, 0):X4} is not in the vocabulary and the tokenizer has no unknown token.");
            if (!(FuseUnk && lastWasUnk)) symbols.Add(unk);
            lastWasUnk = true;
        }
        return symbols;
    }

    private int[] Merge(List<int> initial)
    {
        int n = initial.Count;
        if (n == 1) return [initial[0]];
        var id = initial.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var queue = new PriorityQueue<int, (int Rank, int Pos)>();
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Key(id[i], id[i + 1]), out var m)) queue.Enqueue(i, (m.Rank, i));

        while (queue.TryDequeue(out int pos, out var priority))
        {
            if (!alive[pos]) continue;
            int right = next[pos];
            if (right < 0) continue;
            // The pair may have changed since it was queued; only merge if it still has this rank.
            if (!_merges.TryGetValue(Key(id[pos], id[right]), out var m) || m.Rank != priority.Rank) continue;
            id[pos] = m.NewId;
            alive[right] = false;
            next[pos] = next[right];
            if (next[right] >= 0) prev[next[right]] = pos;
            if (prev[pos] >= 0 && _merges.TryGetValue(Key(id[prev[pos]], id[pos]), out var left))
                queue.Enqueue(prev[pos], (left.Rank, prev[pos]));
            if (next[pos] >= 0 && _merges.TryGetValue(Key(id[pos], id[next[pos]]), out var after))
                queue.Enqueue(pos, (after.Rank, pos));
        }
        var result = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i]) result.Add(id[i]);
        return result.ToArray();
    }
}
