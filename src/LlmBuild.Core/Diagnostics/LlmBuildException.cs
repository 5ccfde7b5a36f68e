namespace LlmBuild.Core.Diagnostics;

/// <summary>
/// A user-facing error: bad input, bad configuration, a file that cannot be read. Carries a stable code
/// (<c>LLMB####</c>) and a message that says what went wrong, where, and how to fix it. Anything else that
/// escapes is a bug in LlmBuild.
/// </summary>
public sealed class LlmBuildException : Exception
{
    public LlmBuildException(string code, string message, string? file = null, Exception? inner = null)
        : base(message, inner)
    {
        if (!ErrorCodes.IsValid(code)) throw new ArgumentException($"'{code}' is not an LLMB#### code.", nameof(code));
        Code = code;
        File = file;
    }

    /// <summary>The stable diagnostic code, e.g. <c>LLMB0001</c>.</summary>
    public string Code { get; }

    /// <summary>The file the problem is in, when there is one.</summary>
    public string? File { get; }

    public override string ToString() => $"{Code}: {Message}";
}

/// <summary>A coded warning raised by Core; the caller decides how to surface it (MSBuild log, console).</summary>
public sealed record LlmBuildWarning(string Code, string Message, string? File = null)
{
    public override string ToString() => $"{Code}: {Message}";
}
