using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tests.Diagnostics;

[TestClass]
public sealed class ErrorCodesTests
{
    /// <summary>The repository checkout these tests run in (the folder holding LlmBuild.sln).</summary>
    internal static string RepoRoot
    {
        get
        {
            string dir = AppContext.BaseDirectory;
            while (!File.Exists(Path.Combine(dir, "LlmBuild.sln"))) dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("repository root not found");
            return dir;
        }
    }

    /// <summary>The README's table, generated from <see cref="ErrorCodes.All"/>.</summary>
    public static string Table()
    {
        var sb = new StringBuilder();
        sb.Append("| code | name | meaning |\n|---|---|---|\n");
        foreach (var (code, name, summary) in ErrorCodes.All) sb.Append($"| {code} | {name} | {summary} |\n");
        return sb.ToString();
    }

    [TestMethod]
    public void CodesAreUniqueWellFormedAndDocumented()
    {
        var codes = ErrorCodes.All;
        Assert.IsTrue(codes.Count > 10);
        Assert.AreEqual(codes.Count, codes.Select(c => c.Code).Distinct().Count(), "every code is declared once");
        foreach (var (code, name, summary) in codes)
        {
            Assert.IsTrue(ErrorCodes.IsValid(code), code);
            Assert.IsFalse(string.IsNullOrWhiteSpace(summary), $"{code} ({name}) has a [Code] summary");
        }
    }

    [TestMethod]
    public void ReadmeListsEveryCode()
    {
        string readme = File.ReadAllText(Path.Combine(RepoRoot, "README.md"));
        const string begin = "<!-- codes:begin -->\n", end = "<!-- codes:end -->";
        int b = readme.IndexOf(begin, StringComparison.Ordinal), e = readme.IndexOf(end, StringComparison.Ordinal);
        Assert.IsTrue(b >= 0 && e > b, "README has the codes markers");
        string expected = Table();
        if (readme[(b + begin.Length)..e] != expected)
        {
            // Regenerate with LLMBUILD_UPDATE_README=1 dotnet test --filter ReadmeListsEveryCode
            if (Environment.GetEnvironmentVariable("LLMBUILD_UPDATE_README") == "1")
                File.WriteAllText(Path.Combine(RepoRoot, "README.md"), readme[..(b + begin.Length)] + expected + readme[e..]);
            Assert.Fail("README's error-code table is out of date; expected:\n" + expected);
        }
    }

    [TestMethod]
    public void ExceptionRejectsMalformedCodes()
    {
        Assert.ThrowsExactly<ArgumentException>(() => new LlmBuildException("E1", "x"));
        Assert.AreEqual("LLMB0001: bad", new LlmBuildException("LLMB0001", "bad").ToString());
    }
}
