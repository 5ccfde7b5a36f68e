using LlmBuild.Core.Tokenization.Templates;
namespace LlmBuild.Core.Tokenization;

/// <summary>A token added on top of the model's vocabulary (special tokens such as &lt;|im_end|&gt; among them).</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool Normalized = false,
    bool LStrip = false, bool RStrip = false, bool SingleWord = false);

/// <summary>A run of input text, or an added token found in it.</summary>
internal readonly record struct TextSegment(string Text, int TokenId, bool AtStart)
{
    public bool IsToken => TokenId >= 0;
}

/// <summary>
/// Finds added tokens in text the way Hugging Face's AddedVocabulary does: leftmost-longest matches, not
/// overlapping; a single_word token must not touch word characters; lstrip/rstrip tokens swallow the whitespace
/// beside them. Tokens with normalized=false are matched in the raw text, the others in normalized text (against
/// their own normalized content).
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, List<(string Pattern, AddedToken Token)>> _byFirstChar = new();

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> patterns)
    {
        foreach (var (pattern, token) in patterns)
        {
            if (pattern.Length == 0) continue;
            if (!_byFirstChar.TryGetValue(pattern[0], out var list)) _byFirstChar[pattern[0]] = list = [];
            list.Add((pattern, token));
        }
        foreach (var list in _byFirstChar.Values)
            list.Sort((a, b) => b.Pattern.Length.CompareTo(a.Pattern.Length));
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>Splits <paramref name="text"/> into plain runs and added tokens.</summary>
    public void Split(string text, bool atStart, List<TextSegment> output)
    {
        if (IsEmpty)
        {
            if (text.Length > 0) output.Add(new TextSegment(text, -1, atStart));
            return;
        }
        var matches = new List<(int Start, int End, int Id)>();
        int pos = 0;
        while (pos < text.Length)
        {
            if (!_byFirstChar.TryGetValue(text[pos], out var candidates)) { pos++; continue; }
            (string Pattern, AddedToken Token)? found = null;
            foreach (var c in candidates)
                if (string.CompareOrdinal(text, pos, c.Pattern, 0, c.Pattern.Length) == 0) { found = c; break; }
            if (found is not { } f) { pos++; continue; }
            int start = pos, end = pos + f.Pattern.Length;
            pos = end;
            if (f.Token.SingleWord && ((start > 0 && IsWordChar(text[start - 1])) || (end < text.Length && IsWordChar(text[end]))))
                continue;
            if (f.Token.LStrip)
            {
                int floor = matches.Count > 0 ? matches[^1].End : 0;
                while (start > floor && char.IsWhiteSpace(text[start - 1])) start--;
            }
            if (f.Token.RStrip)
            {
                while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
                pos = end;
            }
            matches.Add((start, end, f.Token.Id));
        }
        int last = 0;
        foreach (var (start, end, id) in matches)
        {
            if (start > last) output.Add(new TextSegment(text[last..start], -1, atStart && last == 0));
            output.Add(new TextSegment(text[start..end], id, false));
            last = end;
        }
        if (last < text.Length) output.Add(new TextSegment(text[last..], -1, atStart && last == 0));
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
}
