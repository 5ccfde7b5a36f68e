using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Templates;

internal enum TokenKind { Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Value, int Line)
{
    public bool Is(string op) => Kind is TokenKind.Operator or TokenKind.Name && Value == op;
    public override string ToString() => Kind == TokenKind.End ? "end of tag" : $"'{Value}'";
}

/// <summary>A piece of the template: literal text, an output tag's tokens, or a statement tag's tokens.</summary>
internal abstract record Chunk(int Line);
internal sealed record TextChunk(string Text, int Line) : Chunk(Line);
internal sealed record OutputChunk(List<Token> Tokens, int Line) : Chunk(Line);
internal sealed record StatementChunk(List<Token> Tokens, int Line) : Chunk(Line);

/// <summary>
/// Splits a Jinja template into text and tags with the whitespace rules transformers renders chat templates with:
/// trim_blocks (the newline after a block or comment tag is dropped), lstrip_blocks (spaces and tabs before a block or
/// comment tag at the start of a line are dropped), and '-' / '+' whitespace control on either side of a tag.
/// </summary>
internal static class JinjaLexer
{
    private static readonly string[] Operators =
        ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

    public static List<Chunk> Tokenize(string source)
    {
        var chunks = new List<Chunk>();
        int pos = 0;
        int line = 1;
        bool lstripNextText = false;  // a '-' closed the previous tag
        bool lineStarting = true;     // the previous tag ended a line (or we are at the start)
        while (pos <= source.Length)
        {
            int open = FindTagStart(source, pos);
            string text = source[pos..(open < 0 ? source.Length : open)];
            if (lstripNextText) text = text.TrimStart();
            lstripNextText = false;
            if (open < 0)
            {
                if (text.Length > 0) chunks.Add(new TextChunk(text, line));
                break;
            }
            char kind = source[open + 1];
            int inner = open + 2;
            char control = inner < source.Length ? source[inner] : '\0';
            if (control == '-') { text = text.TrimEnd(); inner++; }
            else if (control == '+') inner++;
            else if (kind != '{')
            {
                // lstrip_blocks: drop the blanks before a block/comment tag that starts its line.
                int lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && text.AsSpan(lineStart).IndexOfAnyExcept(' ', '\t') < 0)
                    text = text[..lineStart];
            }
            if (text.Length > 0) chunks.Add(new TextChunk(text, line));
            line += Count(source, pos, open);
            int tagLine = line;

            int close;
            bool trimAfter;
            if (kind == '#')
            {
                int end = source.IndexOf("#}", inner, StringComparison.Ordinal);
                if (end < 0) throw Error(tagLine, "a comment '{#' is never closed with '#}'");
                trimAfter = source[end - 1] == '-';
                close = end + 2;
                bool plus = source[end - 1] == '+';
                line += Count(source, open, close);
                pos = AfterTag(source, close, trimAfter, kind, plus, out lineStarting);
                lstripNextText = trimAfter;
                continue;
            }
            string closer = kind == '{' ? "}}" : "%}";
            var tokens = LexTag(source, inner, closer, tagLine, out close, out trimAfter, out bool keepNewline);
            line += Count(source, open, close);
            if (kind == '{') chunks.Add(new OutputChunk(tokens, tagLine));
            else if (tokens.Count == 1 && tokens[0].Is("raw"))
            {
                // {% raw %}...{% endraw %}: everything in between is text.
                int after = AfterTag(source, close, trimAfter, kind, keepNewline, out _);
                int endRaw = FindEndRaw(source, after, out int endRawClose, out bool rawTrimBefore, out bool rawTrimAfter);
                if (endRaw < 0) throw Error(tagLine, "'{% raw %}' is never closed with '{% endraw %}'");
                string raw = source[(trimAfter ? SkipSpace(source, after) : after)..endRaw];
                if (rawTrimBefore) raw = raw.TrimEnd();
                chunks.Add(new TextChunk(raw, tagLine));
                line += Count(source, close, endRawClose);
                pos = AfterTag(source, endRawClose, rawTrimAfter, '%', false, out lineStarting);
                lstripNextText = rawTrimAfter;
                continue;
            }
            else chunks.Add(new StatementChunk(tokens, tagLine));
            pos = AfterTag(source, close, trimAfter, kind, keepNewline, out lineStarting);
            lstripNextText = trimAfter;
        }
        return chunks;
    }

    private static int SkipSpace(string s, int i)
    {
        while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
        return i;
    }

    /// <summary>Position after a tag: trim_blocks eats one newline after block and comment tags.</summary>
    private static int AfterTag(string source, int close, bool trimAfter, char kind, bool plus, out bool lineStarting)
    {
        lineStarting = false;
        if (!trimAfter && !plus && kind != '{' && close < source.Length && source[close] == '\n')
        {
            lineStarting = true;
            return close + 1;
        }
        return close;
    }

    private static int FindEndRaw(string source, int from, out int close, out bool trimBefore, out bool trimAfter)
    {
        for (int i = source.IndexOf("{%", from, StringComparison.Ordinal); i >= 0; i = source.IndexOf("{%", i + 2, StringComparison.Ordinal))
        {
            int j = i + 2;
            trimBefore = j < source.Length && source[j] == '-';
            if (trimBefore || (j < source.Length && source[j] == '+')) j++;
            j = SkipSpace(source, j);
            if (string.CompareOrdinal(source, j, "endraw", 0, 6) != 0) continue;
            j = SkipSpace(source, j + 6);
            trimAfter = j < source.Length && source[j] == '-';
            if (trimAfter || (j < source.Length && source[j] == '+')) j++;
            if (string.CompareOrdinal(source, j, "%}", 0, 2) != 0) continue;
            close = j + 2;
            return i;
        }
        close = -1;
        trimBefore = trimAfter = false;
        return -1;
    }

    private static int FindTagStart(string source, int from)
    {
        for (int i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
            if (source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static int Count(string s, int from, int to)
    {
        int n = 0;
        for (int i = from; i < to && i < s.Length; i++) if (s[i] == '\n') n++;
        return n;
    }

    private static List<Token> LexTag(string s, int i, string closer, int line, out int close, out bool trimAfter, out bool plus)
    {
        var tokens = new List<Token>();
        while (true)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) { if (s[i] == '\n') line++; i++; }
            if (i >= s.Length) throw Error(line, $"a tag is never closed with '{closer}'");
            if ((s[i] == '-' || s[i] == '+') && string.CompareOrdinal(s, i + 1, closer, 0, 2) == 0)
            {
                trimAfter = s[i] == '-';
                plus = s[i] == '+';
                close = i + 3;
                break;
            }
            if (string.CompareOrdinal(s, i, closer, 0, 2) == 0)
            {
                trimAfter = plus = false;
                close = i + 2;
                break;
            }
            char c = s[i];
            if (char.IsLetter(c) || c == '_')
            {
                int start = i;
                while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
                tokens.Add(new Token(TokenKind.Name, s[start..i], line));
            }
            else if (char.IsAsciiDigit(c))
            {
                int start = i;
                while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '_')) i++;
                bool isFloat = false;
                if (i + 1 < s.Length && s[i] == '.' && char.IsAsciiDigit(s[i + 1]))
                {
                    isFloat = true;
                    i++;
                    while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
                }
                if (i < s.Length && (s[i] == 'e' || s[i] == 'E'))
                {
                    int j = i + 1;
                    if (j < s.Length && (s[j] == '+' || s[j] == '-')) j++;
                    if (j < s.Length && char.IsAsciiDigit(s[j]))
                    {
                        isFloat = true;
                        i = j;
                        while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
                    }
                }
                tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, s[start..i].Replace("_", ""), line));
            }
            else if (c == '\'' || c == '"')
            {
                var sb = new StringBuilder();
                int j = i + 1;
                while (true)
                {
                    if (j >= s.Length) throw Error(line, "a string literal is never closed");
                    char d = s[j];
                    if (d == c) break;
                    if (d == '\\' && j + 1 < s.Length)
                    {
                        j++;
                        char e = s[j];
                        switch (e)
                        {
                            case 'n': sb.Append('\n'); break;
                            case 't': sb.Append('\t'); break;
                            case 'r': sb.Append('\r'); break;
                            case '0': sb.Append('\0'); break;
                            case 'b': sb.Append('\b'); break;
                            case 'f': sb.Append('\f'); break;
                            case 'u' or 'x':
                                {
                                    int digits = e == 'u' ? 4 : 2;
                                    if (j + digits >= s.Length || !int.TryParse(s.AsSpan(j + 1, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code))
                                        throw Error(line, $"'\\{e}' must be followed by {digits} hexadecimal digits");
                                    sb.Append((char)code);
                                    j += digits;
                                    break;
                                }
                            case '\\' or '\'' or '"': sb.Append(e); break;
                            case '\n': break;
                            default: sb.Append('\\').Append(e); break;
                        }
                        j++;
                        continue;
                    }
                    if (d == '\n') line++;
                    sb.Append(d);
                    j++;
                }
                tokens.Add(new Token(TokenKind.String, sb.ToString(), line));
                i = j + 1;
            }
            else
            {
                string? op = Operators.FirstOrDefault(o => string.CompareOrdinal(s, i, o, 0, o.Length) == 0);
                if (op is null) throw Error(line, $"unexpected character '{c}'");
                tokens.Add(new Token(TokenKind.Operator, op, line));
                i += op.Length;
            }
        }
        return tokens;
    }

    internal static LlmBuildException Error(int line, string message) =>
        new(ErrorCodes.ChatTemplateSyntax, $"chat template line {line}: {message}.");
}
