using System.Diagnostics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Tokenization.Templates;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>
/// Issue 19, cause 2: a template cannot overflow the stack, hang, exhaust memory or compute a wrapped integer. Each
/// case is a coded error naming the limit, and arrives within a couple of seconds.
/// </summary>
[TestClass]
public sealed class JinjaLimitsTests
{
    private static readonly Dictionary<string, object?> NoVariables = new();

    private static LlmBuildException Fails(string template, JinjaLimits? limits = null)
    {
        var clock = Stopwatch.StartNew();
        var e = Assert.ThrowsExactly<LlmBuildException>(() => JinjaTemplate.Parse(template, limits).Render(NoVariables));
        // Generous: the machine running the tests may be busy; without the limits these cases never end at all.
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed}: {e.Message}");
        return e;
    }

    private static void AssertLimit(string code, string limitName, LlmBuildException e)
    {
        Assert.AreEqual(code, e.Code, e.Message);
        StringAssert.Contains(e.Message, limitName);
    }

    [TestMethod]
    public void ARecursiveMacroHitsTheDepthLimit()
    {
        var e = Fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", e);
        StringAssert.Contains(e.Message, "macro 'f' is called more than 256 levels deep");
        StringAssert.Contains(e.Message, "line 1");
    }

    [TestMethod]
    public void DeeplyNestedBracketsAreRefusedAtParse()
    {
        string template = "{{ " + new string('(', 20_000) + "1" + new string(')', 20_000) + " }}";
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", Fails(template));
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", Fails("{{ " + string.Concat(Enumerable.Repeat("-", 20_000)) + "1 }}"));
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", Fails("{{ " + string.Concat(Enumerable.Repeat("not ", 20_000)) + "1 }}"));
    }

    [TestMethod]
    public void DeeplyNestedBlocksAreRefusedAtParse()
    {
        string template = string.Concat(Enumerable.Repeat("{% if true %}", 20_000)) + "x" + string.Concat(Enumerable.Repeat("{% endif %}", 20_000));
        var e = Fails(template);
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", e);
        StringAssert.Contains(e.Message, "block tags nest more than 256 deep");
    }

    [TestMethod]
    public void LongOperatorChainsAreRefusedAtParse()
    {
        // Left-leaning chains add a level of evaluation per link without any recursion in the parser.
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", Fails("{{ " + string.Join(" + ", Enumerable.Repeat("1", 20_000)) + " }}"));
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", Fails("{{ 'x'" + string.Concat(Enumerable.Repeat("|trim", 20_000)) + " }}"));
        // A chain within the limit still renders.
        Assert.AreEqual("200", JinjaTemplate.Parse("{{ " + string.Join(" + ", Enumerable.Repeat("1", 200)) + " }}").Render(NoVariables));
    }

    [TestMethod]
    public void DeeplyNestedValuesAreACodedErrorWhenPrinted()
    {
        // One level per iteration: 100,000 levels fit the step budget but not the stack of a recursive printer.
        var e = Fails("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}");
        AssertLimit(ErrorCodes.TemplateDepthLimit, "JinjaLimits.MaxDepth", e);
    }

    [TestMethod]
    public void NestedLoopsHitTheStepBudget()
    {
        var e = Fails("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        AssertLimit(ErrorCodes.TemplateStepLimit, "JinjaLimits.MaxSteps", e);
        StringAssert.Contains(e.Message, "10,000,000 steps");
    }

    [TestMethod]
    public void AHundredMillionIterationLoopIsRefused()
    {
        // range() builds its list, so a range longer than the output limit is refused before it is built.
        var e = Fails("{% for i in range(100000000) %}{% endfor %}");
        AssertLimit(ErrorCodes.TemplateOutputLimit, "JinjaLimits.MaxOutputLength", e);
        // Within the length limit the loop still cannot run past the step budget.
        var small = new JinjaLimits { MaxSteps = 100_000 };
        AssertLimit(ErrorCodes.TemplateStepLimit, "JinjaLimits.MaxSteps", Fails("{% for i in range(1000000) %}{{ i }}{% endfor %}", small));
    }

    [TestMethod]
    public void RepeatedWorkOnALargeStringIsCharged()
    {
        // Each upper() reads two million characters: the budget counts them, so the million iterations (hours of
        // work) stop after a handful.
        var e = Fails("{% set s = 'x' * 2000000 %}{% for i in range(1000000) %}{% set t = s.upper() %}{% endfor %}",
            new JinjaLimits { MaxSteps = 2_000_000 });
        AssertLimit(ErrorCodes.TemplateStepLimit, "JinjaLimits.MaxSteps", e);
    }

    [TestMethod]
    [DataRow("{{ 'x' * 3000000000 }}", "a string repeated 3000000000 times")]
    [DataRow("{{ [1, 2] * 3000000 }}", "a list repeated 3000000 times")]
    [DataRow("{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "the concatenated string")]
    [DataRow("{% for i in range(3000) %}{{ 'y' * 2000 }}{% endfor %}", "the rendered text")]
    [DataRow("{{ ('x' * 1000000)|replace('x', 'xxxxxxxxxx') }}", "the replaced string")]
    [DataRow("{{ 'x'|center(100000000) }}", "the centered string")]
    [DataRow("{{ 'a\nb'|indent(100000000) }}", "the indent")]
    [DataRow("{{ [[1]]|tojson(indent=100000000) }}", "the JSON text")]
    public void BuildingTooMuchTextIsRefusedBeforeItIsBuilt(string template, string what)
    {
        var e = Fails(template);
        AssertLimit(ErrorCodes.TemplateOutputLimit, "JinjaLimits.MaxOutputLength", e);
        StringAssert.Contains(e.Message, what);
    }

    [TestMethod]
    [DataRow("{{ 9223372036854775807 + 1 }}", "9223372036854775807 + 1 overflows")]
    [DataRow("{{ -9223372036854775807 - 2 }}", "overflows")]
    [DataRow("{{ 10 ** 100000 }}", "10 ** 100000 overflows")]
    [DataRow("{{ 4294967296 * 4294967296 }}", "overflows")]
    [DataRow("{{ (-9223372036854775807 - 1) // -1 }}", "overflows")]
    [DataRow("{{ -(-9223372036854775807 - 1) }}", "overflows")]
    [DataRow("{{ (-9223372036854775807 - 1)|abs }}", "overflows")]
    [DataRow("{{ 99999999999999999999 }}", "the integer 99999999999999999999 does not fit 64 bits")]
    [DataRow("{{ 1e300|int }}", "does not fit a 64-bit integer")]
    public void IntegerOverflowIsAnError(string template, string fragment)
    {
        var e = Fails(template);
        Assert.AreEqual(ErrorCodes.TemplateIntegerOverflow, e.Code, e.Message);
        StringAssert.Contains(e.Message, fragment);
    }

    [TestMethod]
    public void ArithmeticAtTheEdgesIsExact()
    {
        Assert.AreEqual("9223372036854775807|-9223372036854775808|0|1|-4|1024|0.5",
            JinjaTemplate.Parse("{{ 9223372036854775806 + 1 }}|{{ -9223372036854775807 - 1 }}|{{ (-9223372036854775807 - 1) % -1 }}|{{ 1 ** 100000 }}|{{ -7 // 2 }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}")
                .Render(NoVariables));
        Assert.AreEqual("[0]|[]|[9223372036854775806]", JinjaTemplate.Parse(
            "{{ [0, 1, 2][::9223372036854775807] }}|{{ range(9223372036854775807, 0) | list }}|{{ range(9223372036854775806, 9223372036854775807, 5) | list }}").Render(NoVariables));
    }

    [TestMethod]
    [DataRow("{{ [1, 2]['a':] }}", "expected an integer, got a str")]
    [DataRow("{{ 'a'|round }}", "expected a number, got a str")]
    [DataRow("{{ 'abc'.split(' ', 'x') }}", "expected an integer, got a str")]
    [DataRow("{{ 'x'|indent(99999999999) }}", "the indent")]
    [DataRow("{{ 'a\\uZZ' }}", "hexadecimal digits")]
    [DataRow("{{ [3, 1, m2]|sort }}", "cannot sort a")]
    public void TypeErrorsInsideBuiltinsAreCodedWithTheirLine(string template, string fragment)
    {
        var e = Fails(template);
        StringAssert.Contains(e.Message, fragment);
        StringAssert.Contains(e.Message, "line 1");
    }

    [TestMethod]
    public void RealTemplatesRenderWellWithinTheLimits()
    {
        // Qwen2.5's template over a 200-turn conversation: far from every limit.
        var template = LlmBuild.Core.Tokenization.ChatTemplate.Load(TokenizerFixtures.Fixture("qwen2.5-7b-instruct"));
        var messages = Enumerable.Range(0, 200).Select(i => new LlmBuild.Core.Tokenization.ChatMessage(i % 2 == 0 ? "user" : "assistant", $"message {i} " + new string('z', 500))).ToList();
        var clock = Stopwatch.StartNew();
        string prompt = template.Render(messages, addGenerationPrompt: true);
        Assert.IsTrue(prompt.Length > 100_000);
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromSeconds(5), clock.Elapsed.ToString());
    }
}
