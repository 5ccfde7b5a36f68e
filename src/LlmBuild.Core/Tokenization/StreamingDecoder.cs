namespace LlmBuild.Core.Tokenization;

/// <summary>
/// Decodes generated ids one at a time and returns only text that is final: a token that ends inside a UTF-8
/// character (byte-level BPE, byte fallback) is held back until the character completes. Works for any decoder by
/// decoding the last emitted tokens together with the new ones and returning the difference, so decoder effects
/// that depend on the neighbour (SentencePiece's leading-space strip) come out as in a full decode.
/// </summary>
public sealed class StreamingDecoder
{
    // A UTF-8 character is at most 4 bytes; a run longer than this that still ends in U+FFFD is truly invalid.
    private const int MaxHeldTokens = 8;
    private readonly Tokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly List<int> _context = []; // the ids of the last emitted text
    private readonly List<int> _pending = [];  // ids not yet emitted
    private string _contextText = "";

    internal StreamingDecoder(Tokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Adds one id; returns the text that became final (possibly empty).</summary>
    public string Push(int id)
    {
        _pending.Add(id);
        var all = new int[_context.Count + _pending.Count];
        _context.CopyTo(all);
        _pending.CopyTo(all, _context.Count);
        string text = _tokenizer.Decode(all, _skipSpecialTokens);
        if (text.EndsWith('\uFFFD') && _pending.Count < MaxHeldTokens) return "";
        string emitted = text.StartsWith(_contextText, StringComparison.Ordinal) ? text[_contextText.Length..] : text;
        _context.Clear();
        _context.AddRange(_pending);
        _pending.Clear();
        _contextText = _tokenizer.Decode(_context.ToArray(), _skipSpecialTokens);
        return emitted;
    }

    /// <summary>Returns whatever is still held back (incomplete characters become U+FFFD) and resets.</summary>
    public string Flush()
    {
        string rest = "";
        if (_pending.Count > 0)
        {
            var all = _context.Concat(_pending).ToArray();
            string text = _tokenizer.Decode(all, _skipSpecialTokens);
            rest = text.StartsWith(_contextText, StringComparison.Ordinal) ? text[_contextText.Length..] : text;
        }
        Reset();
        return rest;
    }

    public void Reset()
    {
        _context.Clear();
        _pending.Clear();
        _contextText = "";
    }
}
