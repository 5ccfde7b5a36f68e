using System.Text.RegularExpressions;
using LlmBuild.Core.Tokenization.Unicode;

namespace LlmBuild.Core.Tokenization;

/// <summary>Rewrites text before pre-tokenization (Hugging Face's normalizers).</summary>
internal interface INormalizer
{
    string Normalize(string text);
}

internal sealed class UnicodeNormalizer(UnicodeForm form) : INormalizer
{
    public string Normalize(string text) => UnicodeNormalization.Normalize(text, form);
}

internal sealed class PrependNormalizer(string prefix) : INormalizer
{
    public string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

internal sealed class ReplaceNormalizer(Regex? pattern, string? literal, string content) : INormalizer
{
    public string Normalize(string text) =>
        literal is not null ? (literal.Length == 0 ? text : text.Replace(literal, content, StringComparison.Ordinal))
        : pattern!.Replace(text, content.Replace("$", "$$"));
}

internal sealed class LowercaseNormalizer : INormalizer
{
    public string Normalize(string text) => text.ToLowerInvariant();
}

internal sealed class StripNormalizer(bool left, bool right) : INormalizer
{
    public string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

internal sealed class SequenceNormalizer(IReadOnlyList<INormalizer> steps) : INormalizer
{
    public string Normalize(string text)
    {
        foreach (var step in steps) text = step.Normalize(text);
        return text;
    }
}
