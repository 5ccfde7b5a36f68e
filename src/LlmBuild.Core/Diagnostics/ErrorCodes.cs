using System.Reflection;
using System.Text.RegularExpressions;

namespace LlmBuild.Core.Diagnostics;

/// <summary>
/// Every diagnostic code LlmBuild emits. Each area owns a range and declares its codes in its own
/// <c>ErrorCodes.&lt;Area&gt;.cs</c> part as <c>[Code("summary")] public const string Name = "LLMB####";</c>.
/// Ranges: 0001-0099 project and configuration, 0100-0199 checkpoints, 0200-0299 quantization,
/// 0300-0399 graph and MLIR, 0400-0499 bmodel container, 0500-0599 codegen, chips, runtime and verify,
/// 0600-0699 tokenizers, templates and chat, 0700-0799 command line, 0800-0849 serving, 0900-0999 files and internal.
/// The README's table of codes is checked against this list by a test.
/// </summary>
public static partial class ErrorCodes
{
    private static readonly Regex Shape = new("^LLMB[0-9]{4}$", RegexOptions.Compiled);

    public static bool IsValid(string code) => Shape.IsMatch(code);

    /// <summary>All declared codes with their one-line summaries, sorted by code.</summary>
    public static IReadOnlyList<(string Code, string Name, string Summary)> All { get; } =
        typeof(ErrorCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.IsLiteral && f.FieldType == typeof(string))
            .Select(f => ((string)f.GetRawConstantValue()!, f.Name, f.GetCustomAttribute<CodeAttribute>()?.Summary ?? ""))
            .OrderBy(c => c.Item1, StringComparer.Ordinal)
            .ToArray();
}

/// <summary>The one-line summary of a diagnostic code, for the README and <c>llmbuild --codes</c>.</summary>
[AttributeUsage(AttributeTargets.Field)]
public sealed class CodeAttribute(string summary) : Attribute
{
    public string Summary { get; } = summary;
}
