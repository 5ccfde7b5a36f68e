using System.Text;

namespace LlmBuild.Core.Tokenization;

/// <summary>Turns token strings back into text, one stage of a chain (Hugging Face's decoders: each maps a list of
/// token strings to a new list; the results are concatenated at the end).</summary>
internal interface ITokenDecoder
{
    List<string> DecodeChain(List<string> tokens);
}

internal sealed class ByteLevelDecoder : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>(tokens.Count * 4);
        foreach (var t in tokens) ByteLevelAlphabet.AppendBytes(t, bytes);
        return [Encoding.UTF8.GetString(bytes.ToArray())];
    }
}

internal sealed class ReplaceDecoder(string pattern, string content) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) =>
        tokens.Select(t => pattern.Length == 0 ? t : t.Replace(pattern, content, StringComparison.Ordinal)).ToList();
}

/// <summary>Tokens "&lt;0xAB&gt;" become bytes; a run of them becomes its UTF-8 text, or one U+FFFD per byte when
/// the run is not valid UTF-8.</summary>
internal sealed class ByteFallbackDecoder : ITokenDecoder
{
    private static readonly UTF8Encoding Strict = new(false, true);

    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var run = new List<byte>();
        void Flush()
        {
            if (run.Count == 0) return;
            try { result.Add(Strict.GetString(run.ToArray())); }
            catch (DecoderFallbackException) { result.Add(new string('\uFFFD', run.Count)); }
            run.Clear();
        }
        foreach (var t in tokens)
        {
            if (TryParseByteToken(t, out byte b)) { run.Add(b); continue; }
            Flush();
            result.Add(t);
        }
        Flush();
        return result;
    }

    internal static bool TryParseByteToken(string t, out byte value)
    {
        value = 0;
        return t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
            && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

internal sealed class FuseDecoder : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing copies of a character from each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) => tokens.Select(t =>
    {
        int a = 0;
        while (a < start && a < t.Length && t[a] == content) a++;
        int b = t.Length;
        while (t.Length - b < stop && b > a && t[b - 1] == content) b--;
        return t[a..b];
    }).ToList();
}

/// <summary>'▁' becomes a space; the first token loses a leading space when a prefix space was added.</summary>
internal sealed class MetaspaceDecoder(char replacement, bool stripFirst) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i].Replace(replacement, ' ');
            if (i == 0 && stripFirst && t.StartsWith(' ')) t = t[1..];
            result.Add(t);
        }
        return result;
    }
}

internal sealed class SequenceDecoder(IReadOnlyList<ITokenDecoder> steps) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}
