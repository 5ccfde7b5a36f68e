using System.Reflection;
using System.Xml.Linq;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.Plan;

/// <summary>
/// Every option is declared once, in <see cref="OptionTable"/>. The copies that cannot be made from it at build time —
/// Sdk.props (defaults and comments), the README's property table, the stage targets' option list and
/// <see cref="BuildOptions"/>' typed properties — are compared with it here, so a copy that drifts fails a test.
/// Sdk.props and the README regenerate with LLMBUILD_UPDATE_README=1 dotnet test --filter OptionTableTests.
/// </summary>
[TestClass]
public sealed class OptionTableTests
{
    private static string RepoRoot => LlmBuild.Core.Tests.Diagnostics.ErrorCodesTests.RepoRoot;

    private static void AssertSection(string relativePath, string begin, string end, string expected)
    {
        string path = Path.Combine(RepoRoot, relativePath);
        string text = File.ReadAllText(path);
        int b = text.IndexOf(begin, StringComparison.Ordinal), e = text.IndexOf(end, StringComparison.Ordinal);
        Assert.IsTrue(b >= 0 && e > b, $"{relativePath} has the markers '{begin.Trim()}' and '{end.Trim()}'");
        int start = text.IndexOf('\n', b) + 1;
        if (text[start..e] == expected) return;
        if (Environment.GetEnvironmentVariable("LLMBUILD_UPDATE_README") == "1") File.WriteAllText(path, text[..start] + expected + text[e..]);
        Assert.Fail($"{relativePath}'s option section differs from OptionTable; expected:\n{expected}");
    }

    [TestMethod]
    public void SdkPropsDeclaresEveryOptionWithTheTablesDefaultAndDescription()
    {
        AssertSection("build/LlmBuild.Sdk/Sdk/Sdk.props", "<!-- options:begin", "  <!-- options:end -->", OptionTable.PropsSection());

        // And MSBuild reads what the table says: each property, set only when empty, to the table's default.
        var props = XDocument.Load(Path.Combine(RepoRoot, "build/LlmBuild.Sdk/Sdk/Sdk.props"));
        var declared = props.Descendants("PropertyGroup").Elements()
            .Where(e => OptionTable.All.Any(o => o.Name == e.Name.LocalName))
            .ToDictionary(e => e.Name.LocalName, e => e.Value);
        foreach (var option in OptionTable.All)
        {
            Assert.IsTrue(declared.TryGetValue(option.Name, out string? value), $"Sdk.props declares {option.Name}");
            Assert.AreEqual(option.PropsDefault ?? option.Default, value, option.Name);
        }
    }

    [TestMethod]
    public void ReadmePropertyTableIsTheOptionTable() =>
        AssertSection("README.md", "<!-- options:begin -->", "<!-- options:end -->", OptionTable.MarkdownTable());

    [TestMethod]
    public void StageTargetsPassEveryOptionResolveReads()
    {
        var targets = XDocument.Load(Path.Combine(RepoRoot, "targets/LlmBuild.Stages.targets"));
        var passed = targets.Root!.Elements("ItemGroup").Elements("_LlmOption").Select(e => (string)e.Attribute("Include")!).ToList();
        // The targets add the backend once decided (_LlmResolveCodegenBackend); TpuMlirPath and Verify steer targets only.
        var expected = OptionTable.All.Where(o => o != OptionTable.TpuMlirPath && o != OptionTable.LlmCodegenBackend && o != OptionTable.Verify)
            .Select(o => o.Name).ToList();
        CollectionAssert.AreEqual(expected, passed);
    }

    [TestMethod]
    public void BuildOptionsHoldsTheTablesOptionsWithTheirDefaults()
    {
        var properties = typeof(BuildOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.SetMethod is not null).Select(p => p.Name).ToList();
        CollectionAssert.AreEqual(OptionTable.BuildOptionsFields.Select(o => o.Name).ToList(), properties);
        CollectionAssert.AreEqual(OptionTable.ConvertOptions.ToList(), OptionTable.BuildOptionsFields.ToList(), "BuildOptions holds exactly llm_convert's options");

        var defaults = new BuildOptions { ModelPath = "", SeqLength = 1 };
        var parsed = BuildOptions.Parse(new Dictionary<string, string?> { ["ModelPath"] = "m", ["SeqLength"] = "1" });
        foreach (var option in OptionTable.BuildOptionsFields.Where(o => !o.Required))
        {
            Assert.AreEqual(option.Default, OptionDefinition.Format(option.Value!(defaults)), $"{option.Name}'s initializer");
            Assert.AreEqual(option.Default, OptionDefinition.Format(option.Value!(parsed)), $"{option.Name} when missing");
        }
    }

    [TestMethod]
    public void ParseBindsEachOptionToItsOwnProperty()
    {
        foreach (var option in OptionTable.BuildOptionsFields)
        {
            string value = option.Kind switch
            {
                OptionKind.Switch => "true",
                OptionKind.Choice => option.Choices[^1],
                OptionKind.Integer => option.Name == "NumCore" ? "1" : option.Name == "SeqLength" ? "63" : (option.Minimum + 2).ToString(System.Globalization.CultureInfo.InvariantCulture),
                _ => option.Name == "MaxPixels" ? "28,56" : "some/where",
            };
            var values = new Dictionary<string, string?> { ["ModelPath"] = "m", ["SeqLength"] = "64", [option.Name] = value };
            // The cross-option checks some values need to pass.
            if (option.Name == "SharePrompt") values["MaxPrefillKvLength"] = "8";
            if (option.Name == "NumDevice" || option.Name == "Chip") values["Chip"] = option.Name == "Chip" ? value : "bm1684x";
            BuildOptions parsed = BuildOptions.Parse(values);
            Assert.AreEqual(value, OptionDefinition.Format(option.Value!(parsed)), option.Name);
        }
    }

    [TestMethod]
    public void ChipChoicesAreTheChipProfiles()
    {
        CollectionAssert.AreEqual(ChipProfile.All.Select(c => c.Name).ToList(), OptionTable.Chip.Choices.ToList());
        Assert.AreEqual(ChipProfile.All[0].Name, OptionTable.Chip.Default);
    }

    [TestMethod]
    public void DescriptionsFitAnXmlCommentAndFlagsAreLlmConvertStyle()
    {
        foreach (var option in OptionTable.All)
        {
            Assert.IsFalse(option.Doc.Contains("--", StringComparison.Ordinal), $"{option.Name}'s description goes into an XML comment");
            Assert.IsFalse(option.Doc.Contains('\n'), $"{option.Name}'s description is one line");
            foreach (string flag in option.Flags)
                Assert.IsTrue(flag.StartsWith('-') && flag == flag.ToLowerInvariant() || flag == "-V", $"{option.Name}: {flag}");
            if (option.Kind == OptionKind.Choice && option.Default.Length > 0) CollectionAssert.Contains(option.Choices.ToList(), option.Default);
        }
    }

    [TestMethod]
    [DataRow("SeqLength", "0")]
    [DataRow("SeqLength", "x")]
    [DataRow("QGroupSize", "-1")]
    [DataRow("Quantize", "w3bf16")]
    [DataRow("Chip", "bm1690x")]
    [DataRow("Symmetric", "maybe")]
    [DataRow("MaxPixels", "10")]
    public void BadValuesAreInvalidPropertyErrorsNamingTheOption(string name, string value)
    {
        var values = new Dictionary<string, string?> { ["ModelPath"] = "m", ["SeqLength"] = "8", [name] = value };
        var e = Assert.ThrowsExactly<LlmBuildException>(() => BuildOptions.Parse(values));
        Assert.AreEqual(ErrorCodes.InvalidProperty, e.Code);
        StringAssert.StartsWith(e.Message, $"Property {name}='{value}' is invalid");
    }

    [TestMethod]
    public void OptionsSetInCodeAreCheckedLikeParsedOnes()
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => new BuildOptions { ModelPath = "m", SeqLength = 8, QGroupSize = -1 }.Validate());
        Assert.AreEqual(ErrorCodes.InvalidProperty, e.Code);
        StringAssert.Contains(e.Message, "QGroupSize");
    }

    [TestMethod]
    public void TheGroupSizeRuleHasOneCode()
    {
        foreach (var (bits, group, k) in new[] { (4, 64, 96L), (8, 48, 64L), (4, 0, 49L), (4, 7, 49L) })
            Assert.AreEqual(ErrorCodes.BadGroupSize, Assert.ThrowsExactly<LlmBuildException>(() => GroupSizeRule.Check(bits, group, k, "Weight 'w'")).Code);
        Assert.AreEqual(32, GroupSizeRule.Check(4, 32, 96, "w"));
        Assert.AreEqual(96, GroupSizeRule.Check(8, 0, 96, "w"), "per channel: one group of K");
    }
}
