using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization;

/// <summary>One piece of text on its way through pre-tokenization; <see cref="AtStart"/> marks the piece that
/// begins the whole input (Metaspace's "first" prepend scheme needs it).</summary>
internal readonly record struct PreToken(string Text, bool AtStart);

/// <summary>Splits (and may rewrite) pieces of normalized text before the model sees them.</summary>
internal interface IPreTokenizer
{
    void PreTokenize(List<PreToken> pieces);
}

/// <summary>How a split pattern's matches relate to the pieces (Hugging Face's SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>
/// Splits on a regular expression. .NET's Regex works on UTF-16 code units, so a character outside the Basic
/// Multilingual Plane (CJK extension B, mathematical letters, emoji) would be seen as two surrogates of category Cs,
/// not as the letter or number it is; Rust's onig/fancy-regex and Python's regex see code points. To match them, each
/// such character is replaced by a stand-in BMP character of the same general category before matching, and the
/// match positions are mapped back.
/// </summary>
internal sealed class RegexSplitter
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly Regex _regex;

    public RegexSplitter(string pattern, SplitBehavior behavior, bool invert, string source)
        : this(TokenizerRegex.Compile(pattern, $"{source}: split pattern", source), behavior, invert)
    {
    }

    public RegexSplitter(Regex regex, SplitBehavior behavior, bool invert)
    {
        _regex = regex;
        Behavior = behavior;
        Invert = invert;
    }

    public SplitBehavior Behavior { get; }
    public bool Invert { get; }

    /// <summary>Splits <paramref name="text"/> and appends the pieces.</summary>
    public void Split(string text, bool atStart, List<PreToken> output)
    {
        if (text.Length == 0) return;
        // Segments: (start, end, isMatch) covering the whole text.
        var segments = new List<(int Start, int End, bool Match)>();
        string subject = StandInForAstral(text, out int[]? map);
        int last = 0;
        for (Match m = _regex.Match(subject); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            int start = map is null ? m.Index : map[m.Index];
            int end = map is null ? m.Index + m.Length : map[m.Index + m.Length];
            if (start > last) segments.Add((last, start, Invert));
            segments.Add((start, end, !Invert));
            last = end;
        }
        if (last < text.Length) segments.Add((last, text.Length, Invert));

        var pieces = new List<(int Start, int End)>();
        switch (Behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var s in segments) pieces.Add((s.Start, s.End));
                break;
            case SplitBehavior.Removed:
                foreach (var s in segments) if (!s.Match) pieces.Add((s.Start, s.End));
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var s in segments)
                {
                    if (s.Match && pieces.Count > 0) pieces[^1] = (pieces[^1].Start, s.End);
                    else pieces.Add((s.Start, s.End));
                }
                break;
            case SplitBehavior.MergedWithNext:
                {
                    int? pending = null;
                    foreach (var s in segments)
                    {
                        if (s.Match)
                        {
                            if (pending is int p) pieces.Add((p, s.Start));
                            pending = s.Start;
                        }
                        else
                        {
                            pieces.Add((pending ?? s.Start, s.End));
                            pending = null;
                        }
                    }
                    if (pending is int q) pieces.Add((q, text.Length));
                    break;
                }
            case SplitBehavior.Contiguous:
                for (int i = 0; i < segments.Count; i++)
                {
                    var s = segments[i];
                    if (s.Match && i > 0 && segments[i - 1].Match) pieces[^1] = (pieces[^1].Start, s.End);
                    else pieces.Add((s.Start, s.End));
                }
                break;
        }
        foreach (var (start, end) in pieces)
            output.Add(new PreToken(text[start..end], atStart && start == 0));
    }

    /// <summary>Replaces every surrogate pair by one BMP character of the same Unicode category; <paramref name="map"/>
    /// maps each index of the result (and its end) to the index in <paramref name="text"/>, or is null when unchanged.</summary>
    internal static string StandInForAstral(string text, out int[]? map)
    {
        map = null;
        int firstSurrogate = -1;
        for (int i = 0; i < text.Length; i++)
            if (char.IsSurrogate(text[i])) { firstSurrogate = i; break; }
        if (firstSurrogate < 0) return text;
        var sb = new StringBuilder(text.Length);
        var positions = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            positions.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]))));
                i++;
            }
            else sb.Append(text[i]);
        }
        positions.Add(text.Length);
        map = positions.ToArray();
        return sb.ToString();
    }

    // A non-ASCII BMP character of each category, none of which any tokenizer pattern names literally.
    private static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u00C0',
        UnicodeCategory.LowercaseLetter => '\u00E0',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u4E00',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00B7',
        UnicodeCategory.MathSymbol => '\u00D7',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u00B4',
        UnicodeCategory.OtherSymbol => '\u00A6',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\u0378', // unassigned
    };
}

/// <summary>Hugging Face's Split pre-tokenizer.</summary>
internal sealed class SplitPreTokenizer(RegexSplitter splitter) : IPreTokenizer
{
    public void PreTokenize(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 2);
        foreach (var p in pieces) splitter.Split(p.Text, p.AtStart, result);
        pieces.Clear();
        pieces.AddRange(result);
    }
}

/// <summary>Byte-level: optionally a leading space, optionally GPT-2's split, then bytes mapped to the GPT-2 alphabet.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex, string source) : IPreTokenizer
{
    private readonly RegexSplitter? _splitter = useRegex
        ? new RegexSplitter(RegexSplitter.Gpt2Pattern, SplitBehavior.Isolated, false, source) : null;

    public void PreTokenize(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 2);
        foreach (var p in pieces)
        {
            string text = addPrefixSpace && !p.Text.StartsWith(' ') ? " " + p.Text : p.Text;
            if (_splitter is null) result.Add(p with { Text = text });
            else _splitter.Split(text, p.AtStart, result);
        }
        pieces.Clear();
        foreach (var p in result) pieces.Add(p with { Text = ByteLevelAlphabet.Encode(p.Text) });
    }
}

/// <summary>SentencePiece's metaspace: spaces become '▁', a '▁' is prepended (always, or only to the first piece),
/// and optionally the text is split before each '▁'.</summary>
internal sealed class MetaspacePreTokenizer(char replacement, string prependScheme, bool split) : IPreTokenizer
{
    public void PreTokenize(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 2);
        foreach (var p in pieces)
        {
            string text = p.Text.Replace(' ', replacement);
            bool prepend = prependScheme == "always" || (prependScheme == "first" && p.AtStart);
            if (prepend && !text.StartsWith(replacement)) text = replacement + text;
            if (!split) { result.Add(p with { Text = text }); continue; }
            int start = 0;
            for (int i = 1; i <= text.Length; i++)
            {
                if (i == text.Length || text[i] == replacement)
                {
                    if (i > start) result.Add(new PreToken(text[start..i], p.AtStart && start == 0));
                    start = i;
                }
            }
        }
        pieces.Clear();
        pieces.AddRange(result);
    }
}

/// <summary>Splits digits from other characters (each digit alone when <c>individual_digits</c>).</summary>
internal sealed class DigitsPreTokenizer(bool individualDigits, string source) : IPreTokenizer
{
    // Rust's char::is_numeric: categories Nd, Nl and No.
    private readonly RegexSplitter _splitter = new(individualDigits ? @"\p{N}" : @"\p{N}+", SplitBehavior.Isolated, false, source);

    public void PreTokenize(List<PreToken> pieces)
    {
        var result = new List<PreToken>(pieces.Count * 2);
        foreach (var p in pieces) _splitter.Split(p.Text, p.AtStart, result);
        pieces.Clear();
        pieces.AddRange(result);
    }
}

internal sealed class SequencePreTokenizer(IReadOnlyList<IPreTokenizer> steps) : IPreTokenizer
{
    public void PreTokenize(List<PreToken> pieces)
    {
        foreach (var step in steps) step.PreTokenize(pieces);
    }
}
