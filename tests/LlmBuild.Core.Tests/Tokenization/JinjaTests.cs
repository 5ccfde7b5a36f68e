using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization.Templates;

namespace LlmBuild.Core.Tests.Tokenization;

[TestClass]
public sealed class JinjaTests
{
    private static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null => null,
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        _ => e.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value)) as IDictionary<string, object?>,
    };

    /// <summary>jinja-cases.json: templates rendered by real Jinja2 in transformers' chat-template environment
    /// (generate_jinja_cases.py). Whitespace control, scoping, filters, tests, methods, printing of values.</summary>
    [TestMethod]
    public void RendersLikeJinja2()
    {
        string path = Path.Combine(TokenizerFixtures.RepoRoot, "tests", "LlmBuild.Core.Tests", "Tokenization", "jinja-cases.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var variables = doc.RootElement.GetProperty("variables").EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value));
        var failures = new List<string>();
        int count = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string template = c.GetProperty("template").GetString()!;
            string expected = c.GetProperty("expected").GetString()!;
            string actual;
            try { actual = JinjaTemplate.Parse(template).Render(variables); }
            catch (LlmBuildException e) { actual = "EXCEPTION " + e.Message; }
            if (actual != expected)
                failures.Add($"{JsonSerializer.Serialize(template)}\n  jinja2: {JsonSerializer.Serialize(expected)}\n  ours:   {JsonSerializer.Serialize(actual)}");
            count++;
        }
        Assert.IsTrue(count >= 30);
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
    }

    [TestMethod]
    [DataRow("{% include 'x' %}", "include")]
    [DataRow("{% extends 'x' %}", "extends")]
    [DataRow("{% filter upper %}x{% endfilter %}", "filter")]
    [DataRow("{{ x|wordwrap }}", "wordwrap")]
    [DataRow("{{ x is fancytest }}", "fancytest")]
    [DataRow("{{ 'a %s' % x }}", "'%' string formatting")]
    [DataRow("{% for x in y recursive %}{% endfor %}", "recursive")]
    public void UnsupportedConstructsAreCodedErrorsNamingThem(string template, string named)
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => JinjaTemplate.Parse(template).Render(new Dictionary<string, object?> { ["x"] = "v" }));
        Assert.AreEqual(ErrorCodes.ChatTemplateUnsupported, e.Code, e.Message);
        StringAssert.Contains(e.Message, named);
    }

    [TestMethod]
    [DataRow("{% if x %}never closed")]
    [DataRow("{{ x ")]
    [DataRow("{% endfor %}")]
    [DataRow("{{ 'unterminated }}")]
    [DataRow("{% frobnicate %}")]
    public void SyntaxErrorsAreCoded(string template)
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => JinjaTemplate.Parse(template));
        Assert.AreEqual(ErrorCodes.ChatTemplateSyntax, e.Code, e.Message);
    }

    [TestMethod]
    public void RenderErrorsAreCoded()
    {
        var vars = new Dictionary<string, object?>();
        var raise = Assert.ThrowsExactly<LlmBuildException>(() => JinjaTemplate.Parse("{{ raise_exception('bad roles') }}").Render(vars));
        Assert.AreEqual(ErrorCodes.ChatTemplateRender, raise.Code);
        StringAssert.Contains(raise.Message, "bad roles");
        var undefinedAttr = Assert.ThrowsExactly<LlmBuildException>(() => JinjaTemplate.Parse("{{ messages[0]['role'] }}").Render(vars));
        Assert.AreEqual(ErrorCodes.ChatTemplateRender, undefinedAttr.Code);
        var typeError = Assert.ThrowsExactly<LlmBuildException>(() => JinjaTemplate.Parse("{{ 'a' + 1 }}").Render(vars));
        Assert.AreEqual(ErrorCodes.ChatTemplateRender, typeError.Code);
    }
}
