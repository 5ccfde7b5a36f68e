using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>No config field left behind: understood, irrelevant, a no-op value, or refused — and unknown ones warned about.</summary>
[TestClass]
public sealed class ConfigFieldAuditTests
{
    private static IEnumerable<string> SupportedConfigs() =>
        Directory.GetFiles(Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures"), "config.json", SearchOption.AllDirectories)
            .Append(Path.Combine(ExampleBuild.ModelDir, "config.json"))
            .Where(f => ModelFamilies.SupportedModelTypes.Contains(((JsonObject)JsonNode.Parse(File.ReadAllText(f))!)["model_type"]?.GetValue<string>()));

    private static List<LlmBuildWarning> Audit(JsonObject root, string source = "config.json")
    {
        var config = ModelConfig.FromJson(root, null, source);
        var warnings = new List<LlmBuildWarning>();
        ConfigFieldAudit.Audit(root, ModelFamilies.Get(config.ModelType), config, source, warnings);
        return warnings;
    }

    [TestMethod]
    public void EveryRealAndFixtureConfigIsAccountedFor()
    {
        int n = 0;
        foreach (string path in SupportedConfigs())
        {
            var warnings = Audit(ModelConfig.ParseObject(path), path);
            foreach (var w in warnings) Console.WriteLine(w.Message);
            Assert.AreEqual(0, warnings.Count, $"{path}: every field is known");
            n++;
        }
        Assert.IsTrue(n >= 10, $"{n} configs audited");
    }

    private static JsonObject Llama() => ModelConfig.ParseObject(Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families", "llama", "config.json"));

    [TestMethod]
    [DataRow("attn_logit_softcapping", "30.0")]
    [DataRow("final_logit_softcapping", "30.0")]
    [DataRow("query_pre_attn_scalar", "256")]
    [DataRow("scale_emb", "12")]
    [DataRow("num_experts", "8")]
    [DataRow("rope_ratio", "500")]
    [DataRow("rmsnorm", "false")]
    [DataRow("layer_types", "[\"sliding_attention\", \"full_attention\", \"full_attention\"]")]
    public void AMathFieldTheFamilyDoesNotImplementIsRefused(string field, string json)
    {
        var root = Llama();
        root[field] = JsonNode.Parse(json);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Audit(root));
        Assert.AreEqual(ErrorCodes.UnsupportedConfigField, e.Code);
        StringAssert.Contains(e.Message, field);
        StringAssert.Contains(e.Message, "llama");
    }

    [TestMethod]
    public void NoOpValuesAreAccepted()
    {
        var root = Llama();
        root["attn_logit_softcapping"] = null;
        root["num_experts"] = 0;
        root["layer_types"] = JsonNode.Parse("[\"full_attention\", \"full_attention\", \"full_attention\"]");
        root["pretraining_tp"] = 1;
        Assert.AreEqual(0, Audit(root).Count);
    }

    [TestMethod]
    public void AnUnknownFieldIsAWarningNamingIt()
    {
        var root = Llama();
        root["brand_new_upstream_knob"] = 3;
        var w = Audit(root).Single();
        Assert.AreEqual(ErrorCodes.UnknownConfigField, w.Code);
        StringAssert.Contains(w.Message, "brand_new_upstream_knob");
    }

    [TestMethod]
    public void AFamilyWithoutSlidingWindowRefusesAWindow()
    {
        var root = ModelConfig.ParseObject(Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families", "minicpm", "config.json"));
        root["sliding_window"] = 16;
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Audit(root));
        StringAssert.Contains(e.Message, "sliding_window");
    }

    /// <summary>The dry run prints every math-relevant fact with the value the build uses.</summary>
    [TestMethod]
    public void TheDryRunPrintsTheMathTheBuildUses()
    {
        string dir = Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families", "gemma3_text");
        var model = Core.Stages.ResolveStage.Resolve(new Dictionary<string, string?> { ["ModelPath"] = dir, ["SeqLength"] = "64", ["Quantize"] = "bf16" }, new List<LlmBuildWarning>());
        string text = Core.Stages.ResolveStage.Describe(model);
        foreach (string expected in new[] { "gelu_pytorch_tanh", "scaling linear x8", "sliding layers theta 10000 unscaled", "6 on 2 of 3 layers",
                     "embeddings x8", "attention scale        0.1767767" })
            StringAssert.Contains(text, expected);
    }

    /// <summary>
    /// For every family's fixture: each math-changing field the family does not implement, set to a value that is not a
    /// no-op, is refused with LLMB0011 naming the field — and the fixture itself keeps building (EveryRealAndFixtureConfig…).
    /// </summary>
    [TestMethod]
    public void EveryFamilyRefusesEachMathFieldItDoesNotImplement()
    {
        var unimplemented = new (string Field, string Value)[]
        {
            ("attn_logit_softcapping", "30.0"), ("final_logit_softcapping", "30.0"), ("query_pre_attn_scalar", "256"),
            ("scale_emb", "12"), ("scale_depth", "1.4"), ("dim_model_base", "256"), ("rope_local_base_freq", "10000"),
            ("num_experts", "8"), ("rope_ratio", "500"), ("rmsnorm", "false"), ("post_layer_norm", "false"), ("pre_seq_len", "128"),
        };
        string root = Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "families");
        int refused = 0;
        foreach (string dir in Directory.GetDirectories(root).Order(StringComparer.Ordinal))
        {
            if (!ModelFamilies.SupportedModelTypes.Contains(Path.GetFileName(dir))) continue;
            var original = ModelConfig.ParseObject(Path.Combine(dir, "config.json"));
            var family = ModelFamilies.Get(original["model_type"]!.GetValue<string>());
            var understood = ConfigFieldAudit.Understood(family);
            foreach (var (field, value) in unimplemented)
            {
                if (understood.Contains(field) || original.ContainsKey(field)) continue;
                var config = (JsonObject)original.DeepClone();
                config[field] = JsonNode.Parse(value);
                var e = Assert.ThrowsExactly<LlmBuildException>(() => Audit(config, dir), $"{family.Name}: {field} = {value}");
                Assert.AreEqual(ErrorCodes.UnsupportedConfigField, e.Code);
                StringAssert.Contains(e.Message, field);
                refused++;
            }
        }
        Assert.IsTrue(refused >= 60, $"{refused} refusals checked");
    }
}
