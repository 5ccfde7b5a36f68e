using LlmBuild.Core.Models;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>A family is one file: every file of Models/Families/ declares one family, found without a registry edit.</summary>
[TestClass]
public sealed class RegistryTests
{
    [TestMethod]
    public void EveryFamilyFileIsRegisteredAndModelTypesAreUnique()
    {
        string dir = Path.Combine(ExampleBuild.RepoRoot, "src", "LlmBuild.Core", "Models", "Families");
        var files = Directory.GetFiles(dir, "*.cs").Select(Path.GetFileNameWithoutExtension).Order(StringComparer.Ordinal).ToArray();
        Assert.AreEqual(files.Length, ModelFamilies.All.Count, $"families: {string.Join(", ", ModelFamilies.All.Select(f => f.Name))}; files: {string.Join(", ", files)}");
        var types = ModelFamilies.All.SelectMany(f => f.ModelTypes).ToArray();
        Assert.AreEqual(types.Length, types.Distinct().Count(), "no model_type belongs to two families");
        foreach (string type in new[] { "llama", "mistral", "qwen2", "qwen3", "phi3", "minicpm", "chatglm", "gemma2", "gemma3_text", "qwen2_moe", "qwen3_moe" })
            Assert.IsNotNull(ModelFamilies.Get(type));
    }
}
